"""Local endpoints: the project's prediction server run as a background process on loopback.

The pipeline's deploy step (target ``local``) starts one per endpoint name and records it in a
small state file, so a later deploy replaces the model an existing endpoint serves and
``taxifare run`` can stop what it started.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from trainer.emulator import free_port

log = logging.getLogger(__name__)

HEALTH_ROUTE = "/health"
PREDICT_ROUTE = "/predict"


class EndpointStartError(RuntimeError):
    """The server process exited or never became healthy."""


@dataclass
class LocalEndpoint:
    name: str
    host: str
    port: int
    pid: int
    model_uri: str
    log_path: str
    started_at: float

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def predict_url(self) -> str:
        return self.base_url + PREDICT_ROUTE

    def alive(self) -> bool:
        return _pid_alive(self.pid)


def state_dir() -> Path:
    """Where endpoint state files live (``$TAXIFARE_STATE_DIR``, else ~/.cache/taxifare)."""
    root = Path(os.environ.get("TAXIFARE_STATE_DIR") or Path.home() / ".cache" / "taxifare")
    path = root / "endpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _state_file(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"endpoint name {name!r} must be a plain, non-empty name")
    return state_dir() / f"{name}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state where /proc exists.
    status = Path(f"/proc/{pid}/stat")
    if status.exists():
        try:
            return status.read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False
    return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def get(name: str) -> LocalEndpoint | None:
    """The running endpoint of that name, or None."""
    path = _state_file(name)
    if not path.exists():
        return None
    endpoint = LocalEndpoint(**json.loads(path.read_text()))
    return endpoint if endpoint.alive() else None


def stop(name: str, timeout_s: float = 10.0) -> bool:
    """Stop the endpoint of that name; True when one was running."""
    path = _state_file(name)
    if not path.exists():
        return False
    endpoint = LocalEndpoint(**json.loads(path.read_text()))
    was_running = endpoint.alive()
    if was_running:
        _terminate(endpoint.pid, timeout_s)
        log.info("stopped endpoint %s (pid %d)", name, endpoint.pid)
    path.unlink(missing_ok=True)
    return was_running


def _terminate(pid: int, timeout_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def deploy(
    model_uri: str,
    name: str = "taxifare",
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout_s: float = 120.0,
) -> LocalEndpoint:
    """Serve `model_uri` (local path or gs://) at a loopback endpoint named `name`.

    An endpoint already running under that name is replaced, keeping its port when it is free.
    """
    previous = get(name)
    if previous is not None:
        log.info("replacing model %s at endpoint %s (%s)", previous.model_uri, name, previous.base_url)
        stop(name)
        if port is None and _port_free(host, previous.port):
            port = previous.port
    port = port or free_port(host)
    log_path = state_dir() / f"{name}.log"
    command = [
        sys.executable, "-m", "trainer.server",
        "--model-dir", model_uri, "--host", host, "--port", str(port),
    ]  # fmt: skip
    with open(log_path, "ab") as log_file:
        # A session of its own: the server outlives the pipeline task that started it.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = LocalEndpoint(
        name=name,
        host=host,
        port=port,
        pid=process.pid,
        model_uri=model_uri,
        log_path=str(log_path),
        started_at=time.time(),
    )
    _state_file(name).write_text(json.dumps(asdict(endpoint), indent=2))
    _wait_healthy(endpoint, process, timeout_s)
    log.info("endpoint %s serves %s at %s", name, model_uri, endpoint.predict_url)
    return endpoint


def _wait_healthy(endpoint: LocalEndpoint, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    url = endpoint.base_url + HEALTH_ROUTE
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            _state_file(endpoint.name).unlink(missing_ok=True)
            tail = Path(endpoint.log_path).read_text(errors="replace")[-2000:]
            raise EndpointStartError(f"prediction server exited with code {code}; log {endpoint.log_path}:\n{tail}")
        try:
            if requests.get(url, timeout=1.0).status_code == 200:
                return
        except requests.ConnectionError:
            pass  # not listening yet
        time.sleep(0.1)
    stop(endpoint.name)
    raise EndpointStartError(f"prediction server at {url} not healthy after {timeout_s:.0f} s; log {endpoint.log_path}")
