"""What a cache must know about the code: a fingerprint per step and a tag for the image.

kfp.local and Vertex AI key a task's cache on its component's command (the function's own source)
and its inputs; the project modules the function imports are in neither. So every step gets one
more input, ``code_fingerprint``, which the pipeline fills with ``step_fingerprints()[module]``
when it is defined (compile time, and each local run): a hash of

* the step's component file (``components/<step>.py``),
* every project module (``trainer/``, ``components/``) the component function imports, and what
  those import in turn, anywhere in the file (functions import lazily), found with ``ast`` —
  the component file's own module-level imports (kfp, the image) only shape the spec,
* the lockfile (``requirements.lock``).

An edit to a module re-runs exactly the steps that import it (and, through their new outputs, the
steps after them); an edit to a module no step imports re-runs nothing.

The image the steps run in (on Vertex AI or a KFP cluster) is tagged with ``image_tag()``: a hash
of everything the image is built from (``trainer/``, ``components/``, ``pipelines/``, the
lockfile, ``pyproject.toml`` and ``container/``; the README the image also carries is left out:
documentation does not change what runs). Nothing here imports kfp or runs any project code: it
reads and parses files, a few tenths of a second for every step.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "components")  # the project code a step can import
LOCKFILE = "requirements.lock"
# What the image is built from (container/Dockerfile copies these).
IMAGE_SOURCES = ("trainer", "components", "pipelines", "container", LOCKFILE, "pyproject.toml")
DIGITS = 16  # hex digits kept: short enough to read, far beyond any collision among versions


def _digest(parts: Iterable[tuple[str, bytes]]) -> str:
    total = hashlib.sha256()
    for name, data in parts:
        total.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return total.hexdigest()[:DIGITS]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b"<missing>"


def _module_file(root: Path, module: str) -> Path | None:
    """The file of a project module (``trainer.storage`` → trainer/storage.py), None outside the project."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _statements(node: ast.AST) -> Iterable[ast.AST]:
    """Every statement under `node`, nested ones included (imports are statements: expressions need
    no visit: far fewer nodes than ``ast.walk`` visits)."""
    todo = [node]
    while todo:
        item = todo.pop()
        yield item
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo += getattr(item, name, None) or []


def _imported(node: ast.AST, module: str, is_package: bool) -> set[str]:
    """Project modules imported anywhere under `node`: ``from trainer import storage`` names both
    trainer (its __init__ runs) and trainer.storage (kept when it is a module)."""
    names: set[str] = set()
    for item in _statements(node):
        if isinstance(item, ast.Import):
            names.update(alias.name for alias in item.names)
        elif isinstance(item, ast.ImportFrom):
            if item.level:  # relative: from the module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (item.level - 1)]
                base = ".".join(package + ([item.module] if item.module else []))
            else:
                base = item.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in item.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


class _Tree:
    """Parses each module once per computation."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.parsed: dict[str, tuple[Path, ast.Module] | None] = {}
        self.imports: dict[str, set[str]] = {}

    def parse(self, module: str) -> tuple[Path, ast.Module] | None:
        if module not in self.parsed:
            path = _module_file(self.root, module)
            self.parsed[module] = (path, ast.parse(path.read_bytes(), str(path))) if path else None
        return self.parsed[module]

    def closure(self, start: set[str]) -> set[Path]:
        """The files of the modules in `start`, of their packages' __init__, and of everything they import."""
        files: set[Path] = set()
        todo, seen = list(start), set()
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            parsed = self.parse(module)
            if parsed is None:
                continue
            path, tree = parsed
            files.add(path)
            parts = module.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__
            if module not in self.imports:
                self.imports[module] = _imported(tree, module, path.name == "__init__.py")
            todo += self.imports[module]
        return files

    def step(self, module: str) -> str:
        path, tree = self.parse(module) or (None, None)
        if tree is None:
            raise ValueError(f"no component module {module!r} under {self.root}")
        functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and _is_component(node)]
        imported: set[str] = set()
        for function in functions:
            imported |= _imported(function, module, False)
        files = {path} | self.closure(imported)
        parts = [(str(f.relative_to(self.root)), f.read_bytes()) for f in sorted(files)]
        return _digest([*parts, (LOCKFILE, _read(self.root / LOCKFILE))])


def _is_component(function: ast.FunctionDef) -> bool:
    """Decorated with ``dsl.component`` / ``component`` (called or not)."""
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "component":
            return True
    return False


def step_modules(root: str | Path = ROOT, tree: _Tree | None = None) -> list[str]:
    """The modules of ``components/`` that define a step (a ``@dsl.component`` function)."""
    tree = tree or _Tree(Path(root))
    modules = []
    for path in sorted((Path(root) / "components").glob("*.py")):
        module = f"components.{path.stem}"
        parsed = tree.parse(module)
        if parsed and any(isinstance(n, ast.FunctionDef) and _is_component(n) for n in parsed[1].body):
            modules.append(module)
    return modules


def step_fingerprint(component_module: str, root: str | Path = ROOT) -> str:
    """The fingerprint of the code the step defined in `component_module` runs."""
    return _Tree(Path(root)).step(component_module)


def step_fingerprints(root: str | Path = ROOT) -> dict[str, str]:
    """component module → fingerprint, for every step (one parse of each file)."""
    tree = _Tree(Path(root))
    return {module: tree.step(module) for module in step_modules(root, tree)}


def image_tag(root: str | Path = ROOT) -> str:
    """The tag of the image built from this code: a hash of every file the image is built from."""
    root = Path(root)
    files: list[Path] = []
    for name in IMAGE_SOURCES:
        path = root / name
        if path.is_dir():
            files += [f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
        else:
            files.append(path)
    return _digest((str(f.relative_to(root)), _read(f)) for f in sorted(files))


def image_reference(configured: str, root: str | Path = ROOT) -> str:
    """The configured image's repository, tagged with the code's ``image_tag``: what ``make image``
    builds, ``make push`` publishes and the compiled spec names (a tag or digest in the configured
    reference is replaced)."""
    repository = configured.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:  # a tag, not a registry port
        repository = repository[: -(len(last) - last.index(":"))]
    return f"{repository}:{image_tag(root)}"
