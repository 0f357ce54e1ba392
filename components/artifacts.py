"""What the step bodies share: artifacts as local files, Metrics files, and the step log."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from trainer import storage

# When set, every step appends {"step", "seconds", "facts"|"error"} to this JSON-lines file, so a
# local run can report per-step times and name the step that failed and why in one line.
STEP_LOG_ENV = "TAXIFARE_STEP_LOG"


def _record(entry: dict) -> None:
    path = os.environ.get(STEP_LOG_ENV)
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(entry, default=str) + "\n")


@contextlib.contextmanager
def step_log(name: str) -> Iterator[dict]:
    """Time the body of a step and record the facts it puts in the yielded dict, or its error."""
    started = time.time()
    times = {"process_start": _process_started(), "start": started}
    facts: dict = {}
    try:
        yield facts
    except Exception as exc:
        ended = time.time()
        _record(
            {"step": name, "seconds": ended - started, **times, "end": ended, "error": f"{type(exc).__name__}: {exc}"}
        )
        raise
    ended = time.time()
    _record({"step": name, "seconds": round(ended - started, 3), **times, "end": ended, "facts": facts})
    _exit_promptly_after_success()


def _process_started() -> float:
    """When this process started, in epoch seconds, to the clock tick: its start tick (from /proc)
    against the boot-time clock. (psutil's create_time adds the boot time, known to the second only.)"""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return psutil.Process().create_time()
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))


# The module a task process runs (`python -m kfp.dsl.executor_main`, locally and in the image).
_EXECUTOR_MAIN = "kfp.dsl.executor_main"
_exit_registered = False


def _exit_promptly_after_success() -> None:
    """A task process that loaded TensorFlow spends 1.5–2.5 s shutting down (its thread pools and
    module teardown) after kfp's executor has written the task's outputs: a step that succeeded
    leaves at once instead, once the executor is done (flush, then ``os._exit(0)``). An uncaught
    exception after the step (the executor failing to write its outputs) still ends the process the
    normal way: traceback and exit status 1. Only in a task process, never in one that imported a
    step's code for another purpose (tests, the CLI)."""
    global _exit_registered
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) != _EXECUTOR_MAIN or _exit_registered:
        return
    _exit_registered = True
    failed = False
    previous_hook = sys.excepthook

    def hook(*exc_info) -> None:
        nonlocal failed
        failed = True
        previous_hook(*exc_info)

    def leave() -> None:
        if failed:
            return
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    sys.excepthook = hook
    atexit.register(leave)  # atexit runs last-registered first: before TensorFlow's own handlers


def local_path(artifact, workdir: str | os.PathLike) -> Path:
    """A local file or directory holding the artifact's bytes.

    Artifacts in the bucket are read where Cloud Storage FUSE mounts them (``/gcs/…`` on Vertex)
    and otherwise downloaded into `workdir`; local artifacts are used in place.
    """
    uri = artifact.uri
    if not storage.is_gcs(uri):
        return Path(artifact.path)
    mounted = Path(artifact.path)
    if mounted.exists():
        return mounted
    target = Path(workdir) / Path(uri.rstrip("/")).name
    if storage.exists(uri):
        storage.download_file(uri, target)
    else:  # a folder (a model): every object under the prefix
        storage.download_dir(uri, target)
    return target


def write_text(artifact, text: str) -> None:
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(text)


def write_metrics_file(metrics) -> None:
    """Metrics also as a JSON file at the artifact's path: readable without the metadata store, and
    kfp.local's cache treats an output whose file is missing as a miss."""
    write_text(metrics, json.dumps(metrics.metadata, indent=2, sort_keys=True))
