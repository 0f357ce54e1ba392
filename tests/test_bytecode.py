"""Bytecode at install: the venv's modules have current .pyc files although PYTHONDONTWRITEBYTECODE=1
keeps Python from writing them, and `pipelines.doctor` tells a compiled tree from one that is not."""

import compileall
import os
import py_compile
import subprocess
import sys
from pathlib import Path

from pipelines import doctor

ROOT = Path(__file__).resolve().parents[1]


def test_this_venv_has_current_bytecode_for_tensorflow_kfp_and_aiplatform():
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.doctor"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.startswith("  ")}
    for package in ("tensorflow", "kfp", "google.cloud.aiplatform"):
        assert lines[package].rstrip().endswith("ok"), result.stdout
        sources, current = (int(word) for word in lines[package].split()[1:4:2])
        assert sources > 100 and current == sources, lines[package]


def _tree(base: Path) -> Path:
    """A small site-packages: a package of three modules, one of which Python cannot compile."""
    package = base / "site-packages" / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "sub" / "__init__.py").write_text("from pkg import VALUE\n")
    (package / "sub" / "mod.py").write_text("def f():\n    return 2\n")
    (package / "py2_only.py").write_text("print 'old'\n")
    return base / "site-packages"


def test_doctor_tells_compiled_from_missing_and_stale_bytecode(tmp_path):
    site = _tree(tmp_path)
    before = doctor.check([site], packages=("pkg",))[0]
    assert before.sources == 4 and before.current == 0 and len(before.missing) == 3 and not before.ok
    assert [p.name for p in before.uncompilable] == ["py2_only.py"]

    compileall.compile_dir(site, quiet=2)  # as uv --compile-bytecode does
    after = doctor.check([site], packages=("pkg",))
    assert after[0].ok and after[0].current == 3 and after[0].uncompilable
    assert doctor.report(after, [site])[0] is True

    module = site / "pkg" / "sub" / "mod.py"
    module.write_text("def f():\n    return 3  # edited after the install\n")
    os.utime(module, (module.stat().st_atime, module.stat().st_mtime + 10))
    edited = doctor.check([site], packages=("pkg",))[0]
    assert not edited.ok and edited.stale == [module] and edited.current == 2

    ok, lines = doctor.report([edited], [site])
    assert not ok and any(str(module) in line for line in lines) and "FAIL" in lines[-1]


def test_doctor_accepts_hash_based_pycs_and_checks_their_hash(tmp_path):
    site = _tree(tmp_path)
    compileall.compile_dir(site, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    assert doctor.check([site], packages=("pkg",))[0].ok
    module = site / "pkg" / "__init__.py"
    stat = module.stat()
    module.write_text("VALUE = 2\n")  # same size, same mtime: only the hash tells
    os.utime(module, (stat.st_atime, stat.st_mtime))
    assert doctor.check([site], packages=("pkg",))[0].stale == [module]


def test_doctor_exits_1_on_an_uncompiled_tree_and_names_the_fix(tmp_path):
    site = _tree(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.doctor", "--site-packages", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "FAIL: 3 sources have no current bytecode" in result.stdout
    assert "compileall" in result.stdout and "tensorflow" in result.stdout and "not installed" in result.stdout


def test_make_install_compiles_bytecode_with_every_uv_install():
    """Dry run of the install recipe: every uv command that installs asks for bytecode."""
    result = subprocess.run(
        ["make", "-n", "-B", "install"], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    installs = [line for line in result.stdout.splitlines() if "uv pip sync" in line or "uv pip install" in line]
    assert len(installs) == 2, result.stdout
    assert all("--compile-bytecode" in line for line in installs), installs
    assert any("compileall" in line and "trainer" in line for line in result.stdout.splitlines())
