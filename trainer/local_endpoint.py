"""Local endpoints: the project's prediction server run as a background process on loopback.

The pipeline's deploy step (target ``local``) starts one per endpoint name and records it in a
small state file, so a later deploy replaces the model an existing endpoint serves and
``taxifare run`` can stop what it started.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trainer import server, warm

log = logging.getLogger(__name__)

EndpointStartError = server.ServerStartError


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
        return self.base_url + server.DEFAULT_PREDICT_ROUTE

    def alive(self) -> bool:
        return server.pid_alive(self.pid)


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


def _port_free(host: str, port: int) -> bool:
    """Whether the server could bind the port now (it binds with SO_REUSEADDR, as here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        server.stop_server(endpoint.pid, timeout_s=timeout_s)
        log.info("stopped endpoint %s (pid %d)", name, endpoint.pid)
    path.unlink(missing_ok=True)
    return was_running


def prestart() -> warm.WarmProcess:
    """Start a prediction server now, before the model exists (a warm ``server``, trainer.warm): the
    next `deploy` hands it the model instead of starting a process and waiting for its TensorFlow
    import. A local run starts one when it starts and stops it when it ends, if nobody took it."""
    return warm.prestart("server")


def stop_standby() -> bool:
    """Stop the warm server if no deploy took it; True when there was one."""
    return warm.stop_unused("server")


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
    state = _state_file(name)
    previous = get(name)
    if previous is not None:
        log.info("replacing model %s at endpoint %s (%s)", previous.model_uri, name, previous.base_url)
        stop(name)
        if port is None and _port_free(host, previous.port):
            port = previous.port
    log_path = state_dir() / f"{name}.log"
    # detach: the server outlives the pipeline task that started it. A standby (prestart) is
    # detached already and writes its own log.
    started = server.start_server(
        model_uri,
        host=host,
        port=port or 0,
        log_path=log_path,
        timeout_s=timeout_s,
        detach=True,
        standby=warm.claim("server"),
    )
    endpoint = LocalEndpoint(
        name=name,
        host=host,
        port=started.port,
        pid=started.pid,
        model_uri=str(model_uri),
        log_path=started.log_path,
        started_at=time.time(),
    )
    state.write_text(json.dumps(asdict(endpoint), indent=2))
    log.info("endpoint %s serves %s at %s", name, model_uri, endpoint.predict_url)
    return endpoint
