"""Processes started before their work is known: they import TensorFlow while a local run's earlier
steps go on, and the step that needs one hands it its work instead of starting a process and
waiting for the import (several seconds a process on these machines).

Two kinds: ``server`` (the endpoint's prediction server: the deploy step hands it the model,
``trainer.local_endpoint``) and ``trainer`` (it calls one function of the trainer package: validate's
smoke run hands it the whole smoke run — train, export, reload, predict — ``trainer.validate_smoke``). A local run starts one of each when it starts and stops those
nobody took when it ends. A warm process is registered in ``$TAXIFARE_STATE_DIR/warm/<kind>.json``;
one step takes it (a rename decides) when it was started with the same environment as the step's.

    python -m trainer.warm KIND FOLDER --owner PID

imports what KIND needs, writes FOLDER/ready, waits for FOLDER/request.json and does the work; it
gives up (exit 0) when PID is no longer its parent or after IDLE_S without a request.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

READY = "ready"  # written once everything the kind needs is imported
REQUEST = "request.json"  # the work, written whole then renamed
RESULT = "result.json"  # a trainer's answer: {"result": …} or {"error": {"type", "message"}}
LOG = "process.log"
IDLE_S = 1800.0
# What each kind imports before its work is known.
IMPORTS = {"server": ("tensorflow", "uvicorn", "trainer.server_app"), "trainer": ("tensorflow", "trainer.task")}
# What each kind's work reads from the environment: a warm process serves a step only when these
# are the same in both (a server: the bucket it downloads the model from, Vertex's routes; a
# trainer: TensorFlow's cluster and settings).
_ENV_PREFIXES = {"server": ("AIP_", "STORAGE_EMULATOR_HOST"), "trainer": ("TF_", "CLOUD_ML_")}


@dataclass
class WarmProcess:
    kind: str
    pid: int
    folder: str
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def log_path(self) -> str:
        return str(Path(self.folder) / LOG)

    def ready(self) -> bool:
        return (Path(self.folder) / READY).exists()

    def hand_over(self, request: dict) -> None:
        """Give the process its work (it never reads half a request)."""
        tmp = Path(self.folder) / f"{REQUEST}.tmp"
        tmp.write_text(json.dumps(request))
        tmp.replace(Path(self.folder) / REQUEST)

    def alive(self) -> bool:
        from trainer import server

        return server.pid_alive(self.pid)


def _env(kind: str) -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES[kind])}


def registry() -> Path:
    """Where warm processes are registered (``$TAXIFARE_STATE_DIR/warm``, else ~/.cache/taxifare/warm)."""
    root = Path(os.environ.get("TAXIFARE_STATE_DIR") or Path.home() / ".cache" / "taxifare")
    path = root / "warm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start(kind: str, folder: str | Path) -> WarmProcess:
    """Start a warm process of `kind` in FOLDER (its log is there); returns at once, unregistered."""
    if kind not in IMPORTS:
        raise ValueError(f"warm process kind {kind!r}: expected one of {', '.join(IMPORTS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOG, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainer.warm", kind, str(folder), "--owner", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a server it becomes may outlive the run that started it
        )
    return WarmProcess(kind, process.pid, str(folder), process)


def prestart(kind: str) -> WarmProcess:
    """Start a warm process of `kind` and register it for the next step that needs one."""
    stop_unused(kind)
    warm = start(kind, tempfile.mkdtemp(prefix=f"{kind}-", dir=registry()))
    record = {"kind": kind, "pid": warm.pid, "folder": warm.folder, "env": _env(kind)}
    (registry() / f"{kind}.json").write_text(json.dumps(record, indent=2))
    log.info("warm %s process pid %d started (%s)", kind, warm.pid, warm.folder)
    return warm


def claim(kind: str) -> WarmProcess | None:
    """The registered warm process of `kind`, taken (one step gets it), or None when there is none,
    it is gone, or it was started with another environment (then it is stopped)."""
    path = registry() / f"{kind}.json"
    claimed = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        path.rename(claimed)
    except FileNotFoundError:
        return None
    record = json.loads(claimed.read_text())
    claimed.unlink()
    warm = WarmProcess(kind, record["pid"], record["folder"])
    if not warm.alive():
        return None
    if record["env"] != _env(kind):
        log.info("warm %s pid %d was started with another environment; stopping it", kind, warm.pid)
        _stop(warm)
        return None
    return warm


def stop_unused(kind: str) -> bool:
    """Stop the registered warm process of `kind` if nobody took it; True when there was one."""
    warm = claim(kind)
    if warm is None:
        return False
    _stop(warm)
    return True


def _stop(warm: WarmProcess, timeout_s: float = 10.0) -> None:
    from trainer import server

    server.stop_server(warm.pid, timeout_s=timeout_s)
    shutil.rmtree(warm.folder, ignore_errors=True)


def call(warm: WarmProcess, function: str, kwargs: dict, timeout_s: float = 3600.0) -> tuple[object, str]:
    """Have a warm ``trainer`` process call FUNCTION ("module:name") with JSON `kwargs`; returns its
    result (as JSON: a pydantic model as its dump) and the process's output. An exception raised
    there is raised here again, of its own type when that can be made from its message."""
    warm.hand_over({"function": function, "kwargs": kwargs})
    result_path = Path(warm.folder) / RESULT
    deadline = time.monotonic() + timeout_s
    while not result_path.exists():
        if not warm.alive() and not result_path.exists():
            output = Path(warm.log_path).read_text(errors="replace")
            raise RuntimeError(
                f"the warm trainer (pid {warm.pid}) exited without a result; its output:\n{output[-3000:]}"
            )
        if time.monotonic() > deadline:
            _stop(warm)
            raise RuntimeError(f"the warm trainer (pid {warm.pid}) did not finish {function} in {timeout_s:.0f} s")
        time.sleep(0.02)
    output = Path(warm.log_path).read_text(errors="replace")
    answer = json.loads(result_path.read_text())
    shutil.rmtree(warm.folder, ignore_errors=True)
    if "error" in answer:
        raise _rebuilt(answer["error"]["type"], answer["error"]["message"])
    return answer["result"], output


def _rebuilt(type_name: str, message: str) -> Exception:
    module, _, name = type_name.partition(":")
    try:
        kind = getattr(importlib.import_module(module), name)
        if isinstance(kind, type) and issubclass(kind, Exception):
            return kind(message)
    except (ImportError, AttributeError, TypeError):
        pass
    return RuntimeError(f"{name}: {message}")


# -- the warm process itself ---------------------------------------------------------------------
def _wait_for_request(folder: Path, owner: int, idle_s: float) -> dict | None:
    request_path = folder / REQUEST
    deadline = time.monotonic() + idle_s
    while not request_path.exists():
        if os.getppid() != owner or time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return json.loads(request_path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.warm", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=sorted(IMPORTS))
    parser.add_argument("folder")
    parser.add_argument("--owner", type=int, default=0, help="leave when this pid is no longer the parent")
    parser.add_argument("--idle-s", type=float, default=IDLE_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for module in IMPORTS[args.kind]:
        importlib.import_module(module)
    folder = Path(args.folder)
    (folder / READY).write_text(str(os.getpid()))
    log.info("warm %s: ready (%s)", args.kind, folder / REQUEST)
    request = _wait_for_request(folder, args.owner or os.getppid(), args.idle_s)
    if request is None:
        log.info("warm %s: no work handed over; leaving", args.kind)
        return 0
    if args.kind == "server":
        from trainer import server

        return server.serve(**request)
    module, _, name = request["function"].partition(":")
    try:
        result = getattr(importlib.import_module(module), name)(**request["kwargs"])
        answer = {"result": result.model_dump() if hasattr(result, "model_dump") else result}
    except Exception as exc:  # reported to the caller, which raises it again
        log.exception("warm trainer: %s failed", request["function"])
        answer = {"error": {"type": f"{type(exc).__module__}:{type(exc).__qualname__}", "message": str(exc)}}
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    tmp = folder / f"{RESULT}.tmp"
    tmp.write_text(json.dumps(answer, default=str))
    tmp.replace(folder / RESULT)
    os._exit(0)  # the work is done and reported: no TensorFlow shutdown to wait for


if __name__ == "__main__":
    sys.exit(main())
