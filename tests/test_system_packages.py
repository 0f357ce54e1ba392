"""`make test`'s set-up (.ci/system-packages.sh): each Debian package the tests need is found, or
named in one line when it is missing and nothing can be installed. Run with a PATH that hides tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "system-packages.sh"
# command → package, read from the script's one list
TOOLS = dict(re.findall(r'^\s+"([\w-]+):([\w-]+)"$', SCRIPT.read_text(), re.M))


def _path_without(tmp_path: Path, hidden: set[str]) -> str:
    """A PATH of one folder: the shell, `id`, and every tool of the list but the hidden ones (no apt-get)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("bash", "id", *(c for c in TOOLS if c not in hidden)):
        found = shutil.which(command)
        assert found, f"{command} is missing: make test installs it (.ci/system-packages.sh)"
        (bin_dir / command).symlink_to(found)
    return str(bin_dir)


def _run(path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("bash"), str(SCRIPT), *args],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_list_is_the_four_tools_the_tests_run():
    assert TOOLS == {
        "chromium": "chromium",
        "chromedriver": "chromium-driver",
        "shellcheck": "shellcheck",
        "node": "nodejs",
    }


def test_nothing_missing_is_silent(tmp_path):
    result = _run(_path_without(tmp_path, set()))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("hidden", sorted(TOOLS))
def test_a_missing_tool_is_named_in_one_line_when_nothing_can_install_it(tmp_path, hidden):
    result = _run(_path_without(tmp_path, {hidden}))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"as root run: apt-get install -y {TOOLS[hidden]}" in lines[0]
    assert result.stdout == ""


def test_check_names_every_missing_package(tmp_path):
    result = _run(_path_without(tmp_path, {"chromedriver", "node"}), "--check")
    assert result.returncode == 1
    assert result.stdout.strip() == "missing Debian packages for the tests: chromium-driver nodejs"
