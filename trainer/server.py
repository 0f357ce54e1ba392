"""The taxifare prediction server: the local endpoint and the Vertex AI custom serving container.

A small ASGI application run by uvicorn (httptools parser, uvloop event loop, orjson).

Vertex custom-container contract, read from the environment when present:

* ``AIP_HTTP_PORT`` (default 8080), ``AIP_HEALTH_ROUTE`` (default ``/health``),
  ``AIP_PREDICT_ROUTE`` (default ``/predict``), ``AIP_STORAGE_URI`` (the model: ``gs://`` URI,
  downloaded with google-cloud-storage, or a local path).
* ``POST {"instances": [{raw fields}, …], "parameters": {…}?}`` →
  ``200 {"predictions": [{"fare_amount": 12.3}, …]}`` in input order.

The TF-Serving/KServe v1 route ``/v1/models/taxifare:predict`` always answers too, and
``/v1/models/taxifare`` (also ``/v1/models/taxifare/metadata`` and ``/metadata``) describes the
loaded model: version, signature, layout, metrics, load time.

The server listens at once and loads the model in the background: health answers 503 until the
model is loaded and warmed, then 200. A client mistake always gets a 4xx JSON body naming the
instance index and field; one bad instance rejects the whole request.

Prediction modes:

* ``batch`` (default): requests are validated on the event loop, then queued; one worker takes
  everything queued (from concurrent requests) and calls the signature once on the lot, in a
  thread so the loop keeps parsing the next requests meanwhile.
* ``inline``: one signature call per request, on the event loop.
* ``naive``: the same validation and routes but Keras ``model.predict`` per request — the
  baseline the serving benchmark compares against, not for use.

This module holds the contract (port, routes), the command line and the subprocess API; the ASGI
application is ``trainer.server_app``, request reading and parsing ``trainer.server_requests``, the
batch and naive back ends ``trainer.server_backends``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.warm import WarmProcess

log = logging.getLogger(__name__)

# The serving app (and with it TensorFlow) is imported only where a server runs: a process that
# starts, finds or stops one (a local run's parent, the deploy step) never loads TensorFlow.
MODEL_NAME = "taxifare"
MODES = ("batch", "inline", "naive")

DEFAULT_PORT = 8080
DEFAULT_HEALTH_ROUTE = "/health"
DEFAULT_PREDICT_ROUTE = "/predict"
TF_SERVING_PREDICT_ROUTE = f"/v1/models/{MODEL_NAME}:predict"
METADATA_ROUTES = (f"/v1/models/{MODEL_NAME}", f"/v1/models/{MODEL_NAME}/metadata", "/metadata")
EXIT_LOAD_FAILED = 3


@dataclass(frozen=True)
class Routes:
    """Where the server answers: Vertex's ``AIP_*`` routes, plus the TF-Serving predict and metadata routes."""

    health: str = DEFAULT_HEALTH_ROUTE
    predict: tuple[str, ...] = (DEFAULT_PREDICT_ROUTE, TF_SERVING_PREDICT_ROUTE)
    metadata: tuple[str, ...] = METADATA_ROUTES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Routes:
        env = os.environ if env is None else env
        predict = env.get("AIP_PREDICT_ROUTE") or DEFAULT_PREDICT_ROUTE
        return cls(
            health=env.get("AIP_HEALTH_ROUTE") or DEFAULT_HEALTH_ROUTE,
            predict=tuple(dict.fromkeys((predict, TF_SERVING_PREDICT_ROUTE))),
        )


# --------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------
def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(
    model_uri: str,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    mode: str = "batch",
    port_file: str | Path | None = None,
    routes: Routes | None = None,
) -> int:
    """Run the server in this process until SIGINT/SIGTERM. Returns the exit code."""
    import uvicorn

    from trainer.server_app import PredictionApp

    exit_code = 0
    server: uvicorn.Server | None = None

    def load_failed(_exc: Exception) -> None:
        nonlocal exit_code
        exit_code = EXIT_LOAD_FAILED
        if server is not None:
            server.should_exit = True

    app = PredictionApp(model_uri, routes=routes or Routes.from_env(), mode=mode, on_load_failure=load_failed)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    log.info("listening on http://%s:%d (health %s)", host, bound_port, app.routes.health)
    if port_file:
        tmp = Path(f"{port_file}.tmp")
        tmp.write_text(str(bound_port))
        tmp.replace(port_file)
    server.run(sockets=[sock])
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.server", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model-dir",
        default=os.environ.get("AIP_STORAGE_URI"),
        help="SavedModel, export/exporter folder or training output dir; local or gs:// (default $AIP_STORAGE_URI)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AIP_HTTP_PORT") or DEFAULT_PORT),
        help="port; 0 picks a free one (default $AIP_HTTP_PORT or 8080)",
    )
    parser.add_argument("--port-file", help="write the bound port to this file once listening")
    parser.add_argument("--mode", choices=MODES, default="batch")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.model_dir:
        parser.error("--model-dir is required when AIP_STORAGE_URI is not set")
    return serve(args.model_dir, host=args.host, port=args.port, mode=args.mode, port_file=args.port_file)


# --------------------------------------------------------------------------------------------
# Python API: a server in a subprocess (the pipeline's local deploy target, tests, benchmarks)
# --------------------------------------------------------------------------------------------
class ServerStartError(RuntimeError):
    """The server process exited or did not become healthy in time."""


@dataclass
class ServerProcess:
    """A running prediction server started by :func:`start_server`."""

    url: str
    pid: int
    host: str
    port: int
    log_path: str
    routes: Routes
    process: subprocess.Popen | None = field(default=None, repr=False)
    # Health statuses answered while starting (503s while the model loaded, then the 200).
    startup_statuses: list[int] = field(default_factory=list, repr=False)

    @property
    def predict_url(self) -> str:
        return self.url + self.routes.predict[0]

    @property
    def health_url(self) -> str:
        return self.url + self.routes.health

    def stop(self, timeout_s: float = 10.0) -> int | None:
        return stop_server(self.process if self.process is not None else self.pid, timeout_s=timeout_s)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


# Loopback health checks never go through an HTTP proxy from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str, timeout_s: float = 2.0) -> int | None:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def start_server(
    model_uri: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    mode: str = "batch",
    env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    timeout_s: float = 120.0,
    detach: bool = False,
    standby: WarmProcess | None = None,
) -> ServerProcess:
    """Start ``python -m trainer.server`` and wait until its health route answers 200.

    ``port=0`` picks a free port (the server reports the one it bound). ``env`` adds
    environment variables (e.g. ``STORAGE_EMULATOR_HOST`` or ``AIP_*``). ``detach`` puts the
    server in a session of its own so it outlives the calling process (stop it by pid).
    ``standby``: a warm ``server`` process already started (``trainer.warm``, same environment) is
    handed the model instead; its log is the server's.
    """
    run_dir = Path(tempfile.mkdtemp(prefix="taxifare-server-"))
    port_file = run_dir / "port"
    if standby is not None:
        log_path = standby.log_path
    log_path = Path(log_path) if log_path else run_dir / "server.log"
    full_env = {**os.environ, **(env or {})}
    routes = Routes.from_env(full_env)
    if standby is not None:
        standby.hand_over(
            {"model_uri": str(model_uri), "host": host, "port": port, "port_file": str(port_file), "mode": mode}
        )
        return _wait_healthy(None, standby.pid, host, port_file, routes, log_path, timeout_s)
    command = [
        sys.executable,
        "-m",
        "trainer.server",
        "--model-dir",
        str(model_uri),
        "--host",
        host,
        "--port",
        str(port),
        "--port-file",
        str(port_file),
        "--mode",
        mode,
    ]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=detach,
        )
    return _wait_healthy(process, process.pid, host, port_file, routes, log_path, timeout_s)


def pid_alive(pid: int) -> bool:
    """Whether the process runs: neither gone nor a zombie (exited, waiting for its parent to reap it)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _exit_code(process: subprocess.Popen | None, pid: int) -> int | None:
    """The server's exit code once it has exited (-1 when it is not a child of this process)."""
    if process is not None:
        return process.poll()
    return None if pid_alive(pid) else -1


def _wait_healthy(
    process: subprocess.Popen | None,
    pid: int,
    host: str,
    port_file: Path,
    routes: Routes,
    log_path: Path,
    timeout_s: float,
) -> ServerProcess:
    deadline = time.monotonic() + timeout_s
    url = None
    statuses: list[int] = []
    try:
        while time.monotonic() < deadline:
            code = _exit_code(process, pid)
            if code is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                how = f" with code {code}" if code >= 0 else ""  # the code is known for a child only
                raise ServerStartError(f"prediction server exited{how}; log {log_path}:\n{tail}")
            if url is None and port_file.is_file():
                bound = int(port_file.read_text())
                reach = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
                url = f"http://[{reach}]:{bound}" if ":" in reach else f"http://{reach}:{bound}"
            status = _http_status(url + routes.health) if url is not None else None
            if status is not None:
                statuses.append(status)
            if status == 200:
                log.info("prediction server pid %d ready at %s", pid, url)
                return ServerProcess(url, pid, host, bound, str(log_path), routes, process, statuses)
            time.sleep(0.05)
        raise ServerStartError(f"prediction server not healthy after {timeout_s:.0f} s; log {log_path}")
    except BaseException:
        stop_server(process if process is not None else pid)
        raise


def stop_server(server: subprocess.Popen | int, timeout_s: float = 10.0) -> int | None:
    """SIGTERM the server (a Popen or a pid), then SIGKILL if it has not exited in time.

    Returns the exit code when it is known (a child of this process), else None.
    """
    if isinstance(server, subprocess.Popen):
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("prediction server pid %d ignored SIGTERM; killing it", server.pid)
                server.kill()
                server.wait()
        return server.returncode
    import psutil

    try:
        process = psutil.Process(server)
        process.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return None
    try:
        return _wait_ended(process, timeout_s)
    except psutil.TimeoutExpired:
        log.warning("prediction server pid %d ignored SIGTERM; killing it", server)
        try:
            process.kill()
        except psutil.NoSuchProcess:
            return None
        return _wait_ended(process, timeout_s)


def _wait_ended(process, timeout_s: float) -> int | None:
    """Until the process has exited: its exit code when it is a child of this one (reaped here),
    None for another's child — a zombie counts as ended, since only its parent can reap it (a
    warm server started by a local run and stopped by a later deploy task is the run's child)."""
    import psutil

    try:
        if process.ppid() == os.getpid():
            return process.wait(timeout_s)
    except psutil.NoSuchProcess:
        return None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            return None
        if time.monotonic() > deadline:
            raise psutil.TimeoutExpired(timeout_s, process.pid)
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
