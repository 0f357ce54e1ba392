"""Is the environment's bytecode compiled and current? ``python -m pipelines.doctor`` (``make doctor``).

``PYTHONDONTWRITEBYTECODE=1`` is set on these machines, in CI and in the project image, so Python
never writes ``.pyc`` files itself: when the installer did not compile them (``uv pip sync``
without ``--compile-bytecode``), every new process compiles TensorFlow's ~1,800 modules again
(``import tensorflow`` ~16 s instead of ~6 s on 2 cores). This check reads the header of the
``.pyc`` that this interpreter would load for every ``.py`` file under site-packages and compares
it with the source, as the import system does: same magic number, and the source's mtime and
size (timestamp pycs) or its hash (checked-hash pycs). Sources that Python cannot compile at all
(a few packages ship such files) are listed but do not fail the check.

Exit status 0 when every compilable source has current bytecode, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

# Reported one by one; everything else under site-packages is summed up as one line.
KEY_PACKAGES = ("tensorflow", "keras", "kfp", "google.cloud.aiplatform", "google.cloud.storage", "numpy")

# Past this many missing pycs whose source compiles, the rest are not compiled to tell: it fails anyway.
_PROBE_LIMIT = 50


@dataclass
class Bytecode:
    """What one tree of sources (a package, or the rest of site-packages) has."""

    name: str
    root: Path | None
    sources: int = 0
    current: int = 0
    stale: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    uncompilable: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.root is not None and not self.stale and not self.missing

    def line(self) -> str:
        if self.root is None:
            return f"{self.name:<26} not installed"
        verdict = "ok" if self.ok else "NOT COMPILED" if not self.current else "INCOMPLETE"
        extra = f", {len(self.uncompilable)} not compilable" if self.uncompilable else ""
        return (
            f"{self.name:<26} {self.sources:>6} sources {self.current:>6} current {len(self.stale):>5} stale "
            f"{len(self.missing):>6} missing{extra}  {verdict}"
        )


def pyc_state(source: Path) -> str:
    """'current', 'stale' or 'missing': the bytecode the import system would use for `source`."""
    cached = Path(importlib.util.cache_from_source(str(source)))
    try:
        with open(cached, "rb") as handle:
            header = handle.read(16)
    except OSError:
        return "missing"
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return "stale"
    flags = int.from_bytes(header[4:8], "little")
    if flags & 0b1:  # hash-based (PEP 552)
        if not flags & 0b10:  # unchecked: the import system uses it as it is
            return "current"
        try:
            digest = importlib.util.source_hash(source.read_bytes())
        except OSError:
            return "stale"
        return "current" if digest == header[8:16] else "stale"
    try:
        stat = source.stat()
    except OSError:
        return "stale"
    mtime = int.from_bytes(header[8:12], "little")
    size = int.from_bytes(header[12:16], "little")
    current = mtime == (int(stat.st_mtime) & 0xFFFFFFFF) and size == (stat.st_size & 0xFFFFFFFF)
    return "current" if current else "stale"


def _compiles(source: Path) -> bool:
    try:
        compile(source.read_bytes(), str(source), "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OSError):
        return False
    return True


def _sources(root: Path, skip: tuple[Path, ...] = ()):
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and here / d not in skip)
        for name in sorted(files):
            if name.endswith(".py") and here / name not in skip:
                yield here / name


def check_tree(root: Path, name: str | None = None, skip: tuple[Path, ...] = ()) -> Bytecode:
    """The bytecode state of every .py file under `root` (a folder or one module file), minus `skip`."""
    root = Path(root)
    result = Bytecode(name or root.name, root)
    probes = 0
    for source in _sources(root, skip):
        result.sources += 1
        state = pyc_state(source)
        if state == "current":
            result.current += 1
        elif state == "stale":
            result.stale.append(source)
        elif probes >= _PROBE_LIMIT:
            result.missing.append(source)
        elif _compiles(source):
            probes += 1
            result.missing.append(source)
        else:
            result.uncompilable.append(source)
    return result


def site_packages() -> list[Path]:
    """This interpreter's site-packages folders (purelib and platlib, once each)."""
    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]), Path(paths["platlib"])})


def package_root(name: str, roots: list[Path]) -> Path | None:
    """Where package `name` (dotted) lives under one of `roots`: its folder or its module file."""
    parts = name.split(".")
    for base in roots:
        folder = base.joinpath(*parts)
        if folder.is_dir():
            return folder
        module = folder.with_suffix(".py")
        if module.is_file():
            return module
    return None


def check(roots: list[Path] | None = None, packages: tuple[str, ...] = KEY_PACKAGES) -> list[Bytecode]:
    """One entry per key package (in the order given), then one for everything else under `roots`."""
    roots = roots or site_packages()
    results = []
    located = []
    for name in packages:
        where = package_root(name, roots)
        if where is None:
            results.append(Bytecode(name, None))
            continue
        located.append(where)
        results.append(check_tree(where, name))
    rest = Bytecode("everything else", roots[0])
    for base in roots:
        part = check_tree(base, skip=tuple(located))
        rest.sources += part.sources
        rest.current += part.current
        rest.stale += part.stale
        rest.missing += part.missing
        rest.uncompilable += part.uncompilable
    results.append(rest)
    return results


def report(results: list[Bytecode], roots: list[Path]) -> tuple[bool, list[str]]:
    """(ok, lines): ok when every installed package and the rest have current bytecode."""
    tag = sys.implementation.cache_tag
    opt = f", optimization level {sys.flags.optimize}" if sys.flags.optimize else ""
    lines = [f"bytecode ({tag}{opt}) in {', '.join(str(r) for r in roots)}:"]
    lines += ["  " + r.line() for r in results]
    installed = [r for r in results if r.root is not None]
    ok = all(r.ok for r in installed)
    for r in installed:
        for path in (r.stale + r.missing)[:3]:
            lines.append(f"  {r.name}: no current bytecode for {path}")
        for path in r.uncompilable[:3]:
            lines.append(f"  {r.name}: Python cannot compile {path} (not counted)")
    if ok:
        lines.append("ok: every compilable source has current bytecode")
    else:
        bad = sum(len(r.stale) + len(r.missing) for r in installed)
        lines.append(
            f"FAIL: {bad} sources have no current bytecode, so every process compiles them again; "
            "run `make install` (uv pip sync --compile-bytecode) or "
            f"`{sys.executable} -m compileall -q {' '.join(str(r) for r in roots)}`"
        )
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--site-packages",
        type=Path,
        action="append",
        help="Folder to check (repeatable; default: this interpreter's site-packages).",
    )
    args = parser.parse_args(argv)
    roots = args.site_packages or site_packages()
    ok, lines = report(check(roots), roots)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
