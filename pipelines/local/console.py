"""A quiet local run: each task's output filed in its own log, one live line per step on the console."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# What kfp.local prints around each task (kfp/local/task_dispatcher.py, orchestrator/task_executor.py).
_EXECUTING = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_CACHE_HIT = re.compile(r"Task (\S+) cache hit")

RUNNING, DONE, CACHED, FAILED = "running", "done", "cached", "failed"


@dataclass
class TaskState:
    name: str
    state: str = RUNNING
    started: float = 0.0
    ended: float | None = None

    @property
    def elapsed_s(self) -> float:
        return (self.ended or time.time()) - self.started


def log_name(task: str) -> str:
    """The log file of a task inside the run's ``logs/`` folder."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", task) + ".log"


class TaskLogs(io.TextIOBase):
    """A text stream for kfp.local's output: lines go to the log of the task the writing thread
    runs (kfp.local streams a task's output from the thread that dispatched it), others to
    ``run.log``; task starts, ends and cache hits become events for the console."""

    def __init__(self, log_dir: Path, on_event: Callable[[str, str], None], echo=None) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._on_event = on_event
        self._echo = echo
        self._lock = threading.RLock()
        self._task_of_thread: dict[int, str] = {}
        self._partial: dict[int, str] = {}
        self._files: dict[str, io.TextIOWrapper] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        with self._lock:
            *lines, rest = (self._partial.pop(thread, "") + text).split("\n")
            self._partial[thread] = rest
            for line in lines:
                self._line(thread, line)
            if self._echo is not None:
                self._echo.write(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.flush()
            if self._echo is not None:
                self._echo.flush()

    def _file(self, task: str | None):
        name = log_name(task) if task else "run.log"
        if name not in self._files:
            self._files[name] = open(self.log_dir / name, "a")  # noqa: SIM115 — closed in close()
        return self._files[name]

    def _line(self, thread: int, line: str) -> None:
        plain = _ANSI.sub("", line)
        started = _EXECUTING.search(plain)
        if started:
            self._task_of_thread[thread] = started.group(1)
            self._on_event(started.group(1), RUNNING)
        handle = self._file(self._task_of_thread.get(thread))
        handle.write(plain + "\n")
        finished = _FINISHED.search(plain)
        if finished:
            self._on_event(finished.group(1), DONE if finished.group(2) == "SUCCESS" else FAILED)
            handle.flush()
            self._task_of_thread.pop(thread, None)
        cached = _CACHE_HIT.search(plain)
        if cached:
            self._on_event(cached.group(1).strip("'"), CACHED)

    def close(self) -> None:
        with self._lock:
            for thread, rest in list(self._partial.items()):
                if rest:
                    self._line(thread, rest)
            self._partial.clear()
            for handle in self._files.values():
                handle.close()
            self._files.clear()
        super().close()

    def tail(self, task: str, lines: int = 15) -> list[str]:
        """The last lines of a task's log (for the failure message)."""
        path = self.log_dir / log_name(task)
        if not path.exists():
            return []
        return path.read_text(errors="replace").splitlines()[-lines:]


class StepLines:
    """The console side: one line per step. In a terminal a live table (rich) that updates in place;
    elsewhere one printed line as each step ends."""

    SYMBOLS = {RUNNING: "…", DONE: "✓", CACHED: "↺", FAILED: "✗"}

    def __init__(self, console) -> None:
        from rich.console import Console

        # bound to the real stdout now: during the run sys.stdout is the task logs
        self.console = Console(file=console.file, force_terminal=console.is_terminal or None)
        self.tasks: dict[str, TaskState] = {}
        self._live = None
        self._lock = threading.Lock()

    def event(self, task: str, state: str) -> None:
        with self._lock:
            now = time.time()
            current = self.tasks.get(task)
            if state == RUNNING or current is None:
                current = self.tasks[task] = TaskState(task, RUNNING, now)
            if state != RUNNING:
                current.state, current.ended = state, now
                if self._live is None:
                    self.console.print(self._line(current), highlight=False)
            if self._live is not None:
                self._live.update(self._render())

    def _line(self, task: TaskState) -> str:
        elapsed = "" if task.state == CACHED else f"{task.elapsed_s:6.1f} s"
        return f"{self.SYMBOLS[task.state]} {task.name:<14} {task.state:<8} {elapsed}"

    def _render(self):
        from rich.text import Text

        return Text("\n".join(self._line(t) for t in self.tasks.values()) or "starting…")

    @contextlib.contextmanager
    def shown(self) -> Iterator[StepLines]:
        if not self.console.is_terminal:
            yield self
            return
        from rich.live import Live

        live = Live(
            self._render(), console=self.console, refresh_per_second=4, redirect_stdout=False, redirect_stderr=False
        )
        with live:
            self._live = live
            stop = threading.Event()

            def tick() -> None:  # the running step's elapsed time moves between events
                while not stop.wait(0.5):
                    with self._lock:
                        live.update(self._render())

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            try:
                yield self
            finally:
                stop.set()
                ticker.join()
                live.update(self._render())
                self._live = None


@contextlib.contextmanager
def captured(log_dir: Path, on_event: Callable[[str, str], None], *, verbose: bool) -> Iterator[TaskLogs]:
    """Route kfp.local's stdout, stderr and log records into per-task logs for the duration.

    ``verbose`` also echoes everything to the real stdout, as kfp.local prints it.
    """
    logs = TaskLogs(log_dir, on_event, echo=sys.stdout if verbose else None)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = logging.StreamHandler(logs)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(logs), contextlib.redirect_stderr(logs):
            yield logs
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logs.close()
