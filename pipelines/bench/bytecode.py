"""`import tensorflow` with the venv as installed against the same import after `compileall` over it,
and the subprocess helpers the first-run section shares."""

from __future__ import annotations

import logging
import os
import shlex
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from pipelines.bench.report import REPO_ROOT, load_average

log = logging.getLogger("pipelines.bench.bytecode")

IMPORT_REPEATS = 3
COMPILEALL_TIMEOUT_S = 3600


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def shown(path: Path | str) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    path = Path(path)
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def output_lines(text: str) -> list[str]:
    """The lines a terminal shows: split on newlines only (a carriage return redraws a line)."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def timed_run(argv: list[str], *, cwd: Path, timeout: float) -> tuple[float, int, str]:
    """Wall seconds, exit code and the combined stdout+stderr of one subprocess."""
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
    )
    return time.perf_counter() - started, done.returncode, done.stdout or ""


def site_packages() -> list[Path]:
    """The venv's site-packages directories (purelib and platlib, once each)."""
    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]), Path(paths["platlib"])})


def pyc_files(roots: list[Path]) -> dict[str, tuple[int, int, int]]:
    """Every .pyc under `roots`: path → (mtime_ns, inode, size); a rewritten file changes mtime and inode."""
    found = {}
    for root in roots:
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                if name.endswith(".pyc"):
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    found[path] = (st.st_mtime_ns, st.st_ino, st.st_size)
    return found


def written_pycs(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]) -> list[str]:
    """The .pyc files that are new in `after` or were rewritten since `before` (sorted)."""
    return sorted(path for path, stat in after.items() if before.get(path) != stat)


def import_seconds(repeats: int = IMPORT_REPEATS) -> list[float]:
    """`python -c "import tensorflow"` in a fresh process, `repeats` times."""
    times = []
    for _ in range(repeats):
        wall, code, output = timed_run([sys.executable, "-c", "import tensorflow"], cwd=REPO_ROOT, timeout=600)
        if code != 0:
            raise RuntimeError(f"import tensorflow exited with code {code}: {' '.join(output_lines(output)[-3:])}")
        times.append(round(wall, 3))
    return times


def measure_bytecode(repeats: int = IMPORT_REPEATS) -> dict:
    """`import tensorflow` with the venv as installed, then after compileall over its site-packages."""
    roots = site_packages()
    load = [load_average()[0]]
    before_times = import_seconds(repeats)
    load.append(load_average()[0])
    log.info("import tensorflow, venv as installed: %s s", before_times)
    pycs_before = pyc_files(roots)
    argv = [sys.executable, "-m", "compileall", "-q", "-j", "0", *map(str, roots)]
    seconds, code, output = timed_run(argv, cwd=REPO_ROOT, timeout=COMPILEALL_TIMEOUT_S)
    pycs_after = pyc_files(roots)
    written = written_pycs(pycs_before, pycs_after)
    log.info("compileall: %.1f s, exit %d, %d .pyc written", seconds, code, len(written))
    load.append(load_average()[0])
    after_times = import_seconds(repeats)
    load.append(load_average()[0])
    log.info("import tensorflow after compileall: %s s", after_times)
    before, after = statistics.median(before_times), statistics.median(after_times)
    return {
        "import_tensorflow": {
            "repeats": repeats,
            "before_s": before_times,
            "after_s": after_times,
            "before_median_s": round(before, 3),
            "after_median_s": round(after, 3),
            "ratio": round(before / after, 3),
            # 1-minute load average before and after the imports with the venv as installed, then
            # before and after those after compileall: a busy machine makes either side slower.
            "load_1min": load,
        },
        "compileall": {
            "command": shlex.join(["python", *(shown(a) for a in argv[1:])]),
            "seconds": round(seconds, 2),
            "exit_code": code,  # 1 when some file cannot be compiled (a few packages ship such files)
            "error_lines": len([line for line in output_lines(output) if line.startswith("***")]),
            "pyc_before": len(pycs_before),
            "pyc_after": len(pycs_after),
            "written": len(written),
            "written_examples": [shown(p) for p in written[:10]],
            "site_packages": [shown(p) for p in roots],
        },
    }
