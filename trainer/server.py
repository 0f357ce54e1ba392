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
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from trainer import predictor as predictor_mod
from trainer.predictor import InstanceError, Predictor

log = logging.getLogger(__name__)

MODEL_NAME = "taxifare"
# Vertex AI public endpoints refuse requests over 1.5 MB; refuse them here too, before parsing.
MAX_BODY_BYTES = 1_572_864
DEFAULT_PORT = 8080
DEFAULT_HEALTH_ROUTE = "/health"
DEFAULT_PREDICT_ROUTE = "/predict"
TF_SERVING_PREDICT_ROUTE = f"/v1/models/{MODEL_NAME}:predict"
METADATA_ROUTES = (f"/v1/models/{MODEL_NAME}", f"/v1/models/{MODEL_NAME}/metadata", "/metadata")
MODES = ("batch", "inline", "naive")
# Upper bound on instances coalesced into one signature call in batch mode.
MAX_BATCH_INSTANCES = 8192
EXIT_LOAD_FAILED = 3


def _dumps(value: Any) -> bytes:
    """JSON bytes; falls back to ASCII escapes for strings orjson refuses (lone surrogates)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=True, default=str).encode()


class RequestError(Exception):
    """A client mistake: answered with ``status`` and a JSON body, never a 5xx."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}
        self.headers = headers or []


@dataclass(frozen=True)
class Routes:
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


def resolve_model_dir(model_uri: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory for ``model_uri``: the path itself, or a gs:// prefix downloaded."""
    if not model_uri.startswith("gs://"):
        return Path(model_uri)
    from trainer import storage

    target = Path(cache_dir or tempfile.mkdtemp(prefix="taxifare-model-"))
    log.info("downloading %s to %s", model_uri, target)
    storage.download_dir(model_uri, target)
    return target


# --------------------------------------------------------------------------------------------
# Prediction back ends
# --------------------------------------------------------------------------------------------
class _Batcher:
    """Coalesces validated columns from concurrent requests into single signature calls."""

    def __init__(self, model: Predictor):
        self.model = model
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="taxifare-predict")
        self.task: asyncio.Task | None = None
        self.calls = 0
        self.instances = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def predict(self, columns: dict[str, np.ndarray], count: int) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((columns, count, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            total = items[0][1]
            while total < MAX_BATCH_INSTANCES and not self.queue.empty():
                item = self.queue.get_nowait()
                items.append(item)
                total += item[1]
            if len(items) == 1:
                columns = items[0][0]
            else:
                columns = {name: np.concatenate([item[0][name] for item in items]) for name in items[0][0]}
            try:
                fares = await loop.run_in_executor(self.executor, self.model.predict_columns, columns)
            except Exception as exc:  # noqa: BLE001 — a model failure: every waiting request gets a 500
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.calls += 1
            self.instances += total
            start = 0
            for _, count, future in items:
                if not future.done():  # the client may have gone away
                    future.set_result(fares[start : start + count])
                start += count

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


class _KerasPredict:
    """The naive baseline: the SavedModel wrapped as a Keras model, ``model.predict`` per request."""

    def __init__(self, model: Predictor):
        import keras

        signature = model.signature
        output_key = model.output_key

        class SavedModelWrapper(keras.Model):
            def call(self, inputs):
                return signature(**inputs)[output_key]

        self.model = SavedModelWrapper()

    def __call__(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.model.predict(columns, verbose=0)).reshape(-1)


# --------------------------------------------------------------------------------------------
# The ASGI application
# --------------------------------------------------------------------------------------------
_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass
class ServerState:
    status: str = "loading"  # loading → ready | failed
    model: Predictor | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    model_uri: str = ""


class PredictionApp:
    """ASGI app: health, predict and metadata routes around one loaded :class:`Predictor`."""

    def __init__(
        self,
        model_uri: str,
        routes: Routes | None = None,
        mode: str = "batch",
        on_load_failure=None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.routes = routes or Routes.from_env()
        self.mode = mode
        self.state = ServerState(model_uri=model_uri)
        self.on_load_failure = on_load_failure
        self._batcher: _Batcher | None = None
        self._naive: _KerasPredict | None = None
        self._load_task: asyncio.Future | None = None
        self._download_dir: Path | None = None  # where a gs:// model was downloaded
        self._get_routes = {self.routes.health: self._health}
        for route in self.routes.metadata:
            self._get_routes[route] = self._metadata
        self._post_routes = {route: self._predict for route in self.routes.predict}

    # ------------------------------------------------------------------ loading
    def _load(self) -> Predictor:
        if self.state.model_uri.startswith("gs://"):
            self._download_dir = Path(tempfile.mkdtemp(prefix="taxifare-model-"))
        local = resolve_model_dir(self.state.model_uri, self._download_dir)
        model = Predictor.load(local)
        if self.mode == "naive":
            self._naive = _KerasPredict(model)
            self._naive(model.to_columns([model.example_instance()]))
        return model

    async def _load_in_background(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(None, self._load)
        except Exception as exc:  # noqa: BLE001 — any load failure is reported by health and ends the server
            self.state.status = "failed"
            self.state.error = f"{type(exc).__name__}: {exc}"
            log.error("cannot load model %s: %s", self.state.model_uri, self.state.error)
            if self.on_load_failure is not None:
                self.on_load_failure(exc)
            return
        if self.mode == "batch":
            self._batcher = _Batcher(model)
            self._batcher.start()
        self.state.model = model
        self.state.ready_at = time.time()
        self.state.status = "ready"
        log.info("serving %s (%s mode) on %s", model.path, self.mode, ", ".join(self.routes.predict))

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._load_task = asyncio.ensure_future(self._load_in_background())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._batcher is not None:
                    self._batcher.close()
                if self._load_task is not None and not self._load_task.done():
                    self._load_task.cancel()
                if self._download_dir is not None:
                    try:
                        shutil.rmtree(self._download_dir)
                    except OSError as exc:
                        log.warning("could not remove the downloaded model %s: %s", self._download_dir, exc)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ HTTP
    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope, receive, send) -> None:
        path = scope["path"]
        method = scope["method"]
        try:
            if method == "POST" and path in self._post_routes:
                status, body = await self._post_routes[path](scope, receive)
            elif method in ("GET", "HEAD") and path in self._get_routes:
                status, body = self._get_routes[path]()
            elif path in self._post_routes:
                raise RequestError(405, f"{method} not allowed on {path}; use POST", [(b"allow", b"POST")])
            elif path in self._get_routes:
                raise RequestError(405, f"{method} not allowed on {path}; use GET", [(b"allow", b"GET, HEAD")])
            else:
                raise RequestError(
                    404,
                    f"no route {path}; predictions are at {', '.join(self.routes.predict)}",
                )
            headers = _JSON_HEADERS
        except RequestError as exc:
            status, body, headers = exc.status, _dumps(exc.body), _JSON_HEADERS + exc.headers
        except Exception:  # a server bug: logged, answered 500, the server keeps running
            log.exception("error handling %s %s", method, path)
            status, body, headers = 500, b'{"error":"internal server error"}', _JSON_HEADERS
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def _health(self) -> tuple[int, bytes]:
        state = self.state
        if state.status == "ready":
            return 200, b'{"status":"ready"}'
        return 503, _dumps({"status": state.status, "error": state.error})

    def _metadata(self) -> tuple[int, bytes]:
        state = self.state
        info: dict[str, Any] = {
            "name": MODEL_NAME,
            "status": state.status,
            "mode": self.mode,
            "model_uri": state.model_uri,
            "routes": {"health": self.routes.health, "predict": list(self.routes.predict)},
            "started_at": state.started_at,
            "ready_at": state.ready_at,
        }
        if state.error:
            info["error"] = state.error
        if state.model is not None:
            info.update(state.model.describe())
            info["model_version_status"] = [{"version": state.model.version, "state": "AVAILABLE"}]
        if self._batcher is not None:
            info["batching"] = {"calls": self._batcher.calls, "instances": self._batcher.instances}
        return 200, _dumps(info)

    async def _read_body(self, scope, receive) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise RequestError(400, "Content-Length is not a number") from None
                if length > MAX_BODY_BYTES:
                    raise RequestError(
                        413, f"request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes"
                    )
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise RequestError(413, f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _predict(self, scope, receive) -> tuple[int, bytes]:
        body = await self._read_body(scope, receive)
        model = self.state.model
        if model is None:
            return 503, orjson.dumps({"error": f"model not ready ({self.state.status})"})
        instances = parse_request(body)
        try:
            columns = model.to_columns(instances)
        except InstanceError as exc:
            raise RequestError(400, str(exc), index=exc.index, field=exc.field) from None
        count = len(instances)
        if self._batcher is not None:
            fares = await self._batcher.predict(columns, count)
        elif self._naive is not None:
            fares = self._naive(columns)
        else:
            fares = model.predict_columns(columns)
        if len(fares) != count:
            raise RuntimeError(f"model returned {len(fares)} values for {count} instances")
        key = model.output_key
        return 200, orjson.dumps({"predictions": [{key: x} for x in fares.tolist()]})


def parse_request(body: bytes) -> list:
    """The ``instances`` of a prediction request body, or a RequestError saying what is wrong."""
    if not body:
        raise RequestError(400, 'empty body; expected JSON {"instances": [...]}')
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses NaN/Infinity literals and integers beyond 64 bits; the standard parser
        # accepts them, so such bodies get the precise per-field message below.
        try:
            request = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise RequestError(400, f"body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError(400, 'body must be a JSON object {"instances": [...]}')
    if "instances" not in request:
        raise RequestError(400, 'body has no "instances" list')
    unknown = sorted(set(request) - {"instances", "parameters", "signature_name"})
    if unknown:
        raise RequestError(400, f"unknown top-level keys {unknown}; expected instances and parameters")
    # TF-Serving clients may name the signature; there is only one.
    signature_name = request.get("signature_name", predictor_mod.SIGNATURE_NAME)
    if signature_name != predictor_mod.SIGNATURE_NAME:
        raise RequestError(
            400, f"unknown signature_name {signature_name!r}; the model has {predictor_mod.SIGNATURE_NAME!r}"
        )
    parameters = request.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise RequestError(400, '"parameters" must be a JSON object')
    instances = request["instances"]
    if not isinstance(instances, list):
        raise RequestError(400, f'"instances" must be a list, got {predictor_mod.json_type(instances)}')
    if not instances:
        raise RequestError(400, '"instances" is empty; send at least one instance')
    return instances


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

    exit_code = 0
    server: uvicorn.Server | None = None

    def load_failed(_exc: Exception) -> None:
        nonlocal exit_code
        exit_code = EXIT_LOAD_FAILED
        if server is not None:
            server.should_exit = True

    app = PredictionApp(model_uri, routes=routes, mode=mode, on_load_failure=load_failed)
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
) -> ServerProcess:
    """Start ``python -m trainer.server`` and wait until its health route answers 200.

    ``port=0`` picks a free port (the server reports the one it bound). ``env`` adds
    environment variables (e.g. ``STORAGE_EMULATOR_HOST`` or ``AIP_*``). ``detach`` puts the
    server in a session of its own so it outlives the calling process (stop it by pid).
    """
    run_dir = Path(tempfile.mkdtemp(prefix="taxifare-server-"))
    port_file = run_dir / "port"
    log_path = Path(log_path) if log_path else run_dir / "server.log"
    full_env = {**os.environ, **(env or {})}
    routes = Routes.from_env(full_env)
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
    deadline = time.monotonic() + timeout_s
    url = None
    statuses: list[int] = []
    try:
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise ServerStartError(f"prediction server exited with code {code}; log {log_path}:\n{tail}")
            if url is None and port_file.is_file():
                bound = int(port_file.read_text())
                reach = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
                url = f"http://[{reach}]:{bound}" if ":" in reach else f"http://{reach}:{bound}"
            status = _http_status(url + routes.health) if url is not None else None
            if status is not None:
                statuses.append(status)
            if status == 200:
                log.info("prediction server pid %d ready at %s", process.pid, url)
                return ServerProcess(url, process.pid, host, bound, str(log_path), routes, process, statuses)
            time.sleep(0.05)
        raise ServerStartError(f"prediction server not healthy after {timeout_s:.0f} s; log {log_path}")
    except BaseException:
        stop_server(process)
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
        return process.wait(timeout_s)
    except psutil.NoSuchProcess:
        return None
    except psutil.TimeoutExpired:
        log.warning("prediction server pid %d ignored SIGTERM; killing it", server)
        process.kill()
        return process.wait(timeout_s)


if __name__ == "__main__":
    sys.exit(main())
