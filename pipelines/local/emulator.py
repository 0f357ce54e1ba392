"""A local GCS API: gcp-storage-emulator in a subprocess on a free loopback port.

Used by the tests, the benchmarks and ``make run``::

    with GcsEmulator(data_dir="build/gcs") as emulator:
        emulator.create_bucket("taxifare-local")
        os.environ.update(emulator.env())
        ...

``data_dir=None`` keeps objects in memory; with a directory they survive a restart, which the
reliability tests use (kill the emulator mid-ingest, start it again on the same port and directory).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
PORT_FILE = ".taxifare-port"


class EmulatorError(RuntimeError):
    """The emulator did not start or stopped unexpectedly."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _emulator_command() -> list[str]:
    script = Path(sys.executable).parent / "gcp-storage-emulator"
    if script.is_file():
        return [str(script)]
    found = shutil.which("gcp-storage-emulator")
    if found:
        return [found]
    return [sys.executable, "-m", "gcp_storage_emulator"]


class GcsEmulator:
    """gcp-storage-emulator as a child process (its own process group, so stop() ends it all)."""

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        project: str = "local-project",
        start_timeout_s: float = 30.0,
        log_path: str | os.PathLike | None = None,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.bind_host = host
        self.port = port
        self.project = project
        self.start_timeout_s = start_timeout_s
        self._log_path = Path(log_path) if log_path is not None else None
        self._log_file = None
        self._proc: subprocess.Popen | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        if self.port is None:
            raise EmulatorError("the emulator has not been started")
        return f"{self.bind_host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` — the value for STORAGE_EMULATOR_HOST."""
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        """Environment variables that point google-cloud-storage at this emulator."""
        return {EMULATOR_ENV: self.url}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------
    def _remembered_port(self) -> int | None:
        """The port this data dir was served on before, when it is free again.

        The emulator stores each object's download link with the address it had when the object
        was written, so objects in a kept data dir are only readable on the same port.
        """
        if self.data_dir is None:
            return None
        port_file = self.data_dir / PORT_FILE
        if not port_file.is_file():
            return None
        port = int(port_file.read_text().strip())
        if _listening(self.bind_host, port):
            logger.warning("port %d of %s is taken; older objects there may not download", port, self.data_dir)
            return None
        return port

    def start(self) -> GcsEmulator:
        if self.running():
            return self
        if self.port is None:
            self.port = self._remembered_port() or free_port(self.bind_host)
        elif _listening(self.bind_host, self.port):
            # Otherwise the readiness probe would be answered by whoever holds the port.
            raise EmulatorError(f"cannot start the GCS emulator on {self.host}: the port is in use")
        storage_args = ["--in-memory"]
        data_args: list[str] = []
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            (self.data_dir / PORT_FILE).write_text(str(self.port))
            data_args, storage_args = ["-d", str(self.data_dir)], []
        cmd = [
            *_emulator_command(),
            *data_args,
            "start",
            "--host",
            self.bind_host,
            "--port",
            str(self.port),
            *storage_args,
            "--quiet",
        ]
        if self._log_path is None:
            handle, name = tempfile.mkstemp(prefix="gcs-emulator-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 — closed in stop()
        logger.debug("starting %s", " ".join(cmd))
        self._proc = subprocess.Popen(
            cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready()
        logger.info("GCS emulator at %s (pid %d)", self.url, self._proc.pid)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        probe = f"{self.url}/storage/v1/b?project={self.project}"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmulatorError(
                    f"gcp-storage-emulator exited with code {self._proc.returncode} on {self.host}: {self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(probe, timeout=1.0) as answer:
                    if answer.status == 200 and self._proc.poll() is None:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        self.stop()
        raise EmulatorError(f"gcp-storage-emulator did not answer on {self.host} within {self.start_timeout_s:.0f} s")

    def _log_tail(self, lines: int = 5) -> str:
        if self._log_path is None or not self._log_path.is_file():
            return "(no log)"
        text = self._log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self, *, kill: bool = False, timeout_s: float = 5.0) -> None:
        """End the emulator's process group; ``kill=True`` sends SIGKILL at once (a crash)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            sig = signal.SIGKILL if kill else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """Simulate a crash: SIGKILL, no clean shutdown."""
        self.stop(kill=True)

    def restart(self) -> GcsEmulator:
        """Stop and start again on the same port and data directory."""
        self.stop()
        return self.start()

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- conveniences ------------------------------------------------------------------------
    def client(self):
        """A google-cloud-storage client bound to this emulator (whatever the environment says)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gcs

        return gcs.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def create_bucket(self, name: str) -> str:
        """Create a bucket (idempotent); returns its name."""
        from google.api_core import exceptions

        client = self.client()
        try:
            client.create_bucket(name)
        except exceptions.Conflict:
            logger.debug("bucket %s already exists", name)
        return name
