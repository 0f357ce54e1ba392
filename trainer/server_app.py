"""The prediction server's ASGI application: health, predict and metadata routes around one loaded model."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from trainer.predictor import InstanceError, Predictor
from trainer.server import MODEL_NAME, MODES
from trainer.server_backends import Batcher, KerasPredict
from trainer.server_requests import RequestError, parse_request, read_body

if TYPE_CHECKING:
    # The routes are the serving contract, defined with the process entry points in trainer.server.
    from trainer.server import Routes

log = logging.getLogger(__name__)

_JSON_HEADERS = [(b"content-type", b"application/json")]


def _dumps(value: Any) -> bytes:
    """JSON bytes; falls back to ASCII escapes for strings orjson refuses (lone surrogates)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=True, default=str).encode()


def resolve_model_dir(model_uri: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory for ``model_uri``: the path itself, or a gs:// prefix downloaded."""
    if not model_uri.startswith("gs://"):
        return Path(model_uri)
    from trainer import storage

    target = Path(cache_dir or tempfile.mkdtemp(prefix="taxifare-model-"))
    log.info("downloading %s to %s", model_uri, target)
    storage.download_dir(model_uri, target)
    return target


@dataclass
class ServerState:
    status: str = "loading"  # loading → ready | failed
    model: Predictor | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    model_uri: str = ""


class PredictionApp:
    """ASGI app: health, predict and metadata routes around one loaded :class:`Predictor`.

    ``routes`` come from the caller (``trainer.server.serve`` reads them from the environment).
    """

    def __init__(
        self,
        model_uri: str,
        routes: Routes,
        mode: str = "batch",
        on_load_failure=None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.routes = routes
        self.mode = mode
        self.state = ServerState(model_uri=model_uri)
        self.on_load_failure = on_load_failure
        self._batcher: Batcher | None = None
        self._naive: KerasPredict | None = None
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
            self._naive = KerasPredict(model)
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
            self._batcher = Batcher(model)
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

    async def _predict(self, scope, receive) -> tuple[int, bytes]:
        body = await read_body(scope, receive)
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
