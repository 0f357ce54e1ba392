"""The prediction server: real servers (subprocesses on loopback) serving real trained exports."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.local.emulator import free_port
from trainer import schema, server, server_app, server_backends, server_requests, storage
from trainer.predictor import Predictor

LAB = schema.LAB_TEST_INSTANCE
DATED = schema.DATED_TEST_INSTANCE


# ----------------------------------------------------------------------------- helpers
def _trips(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "pickuplon": LAB["pickuplon"] + float(rng.normal(0, 0.03)),
            "pickuplat": LAB["pickuplat"] + float(rng.normal(0, 0.03)),
            "dropofflon": LAB["dropofflon"] + float(rng.normal(0, 0.03)),
            "dropofflat": LAB["dropofflat"] + float(rng.normal(0, 0.03)),
            "passengers": int(rng.integers(1, 7)),
        }
        for _ in range(count)
    ]


def _fares(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert all(set(p) == {"fare_amount"} for p in predictions)
    return [p["fare_amount"] for p in predictions]


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-4) for x, y in zip(a, b))


def _raw_exchange(port: int, request: bytes, timeout_s: float = 10.0) -> tuple[int, dict, bytes]:
    """Send raw bytes, read one response (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body


def _assert_graceful_exit(code: int | None, log_path: Path) -> None:
    """uvicorn shuts down cleanly on SIGTERM, then re-raises the signal as its exit status."""
    text = log_path.read_text(errors="replace")
    assert code == -signal.SIGTERM, text[-2000:]
    assert "Application shutdown complete" in text, text[-2000:]


def _wait_for_port_file(process: subprocess.Popen, port_file: Path, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        if port_file.is_file():
            return int(port_file.read_text())
        time.sleep(0.02)
    raise AssertionError("server never reported its port")


def _wait_ready(url: str, timeout_s: float = 120.0) -> list[int]:
    """Poll a health URL until 200; returns every status seen (connection refusals excluded)."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url, timeout=5).status_code
        except httpx.TransportError:
            time.sleep(0.02)
            continue
        seen.append(status)
        if status == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{url} not healthy in time; saw {seen[-5:]}")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lab_predictor(lab_model_dir) -> Predictor:
    return Predictor.load(lab_model_dir)


@pytest.fixture(scope="module")
def lab_server(lab_model_dir):
    handle = server.start_server(lab_model_dir)
    try:
        yield handle
    finally:
        code = handle.stop()
    _assert_graceful_exit(code, Path(handle.log_path))


@pytest.fixture(scope="module")
def client(lab_server):
    with httpx.Client(base_url=lab_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def dated_cli_server(dated_model_dir, tmp_path_factory):
    """The dated model served by ``taxifare serve`` (the CLI), port chosen by the server."""
    port_file = tmp_path_factory.mktemp("dated-serve") / "port"
    log_path = port_file.with_name("server.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIP_")}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "serve",
                "--model-dir",
                str(dated_model_dir),
                "--port",
                "0",
                "--port-file",
                str(port_file),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        port = _wait_for_port_file(process, port_file)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url + "/health")
        yield url
    finally:
        code = server.stop_server(process)
    _assert_graceful_exit(code, log_path)


# ----------------------------------------------------------------------------- routes and answers
def test_health_and_head(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ready"}
    head = client.head("/health")
    assert head.status_code == 200 and head.content == b""


def test_predict_single_lab_instance_matches_in_process(client, lab_predictor):
    fares = _fares(client.post("/predict", json={"instances": [LAB]}))
    assert _close(fares, lab_predictor.predict([LAB]))


def test_batch_answers_in_input_order_on_both_predict_routes(client, lab_predictor):
    trips = _trips(250, seed=3)
    expected = lab_predictor.predict(trips)
    assert _close(_fares(client.post("/predict", json={"instances": trips})), expected)
    tf_serving = client.post(
        "/v1/models/taxifare:predict",
        json={"signature_name": "serving_default", "instances": trips, "parameters": {}},
    )
    assert _close(_fares(tf_serving), expected)


def test_metadata_reports_version_signature_layout_and_load_time(client, lab_model_dir, lab_predictor):
    for route in ("/v1/models/taxifare", "/v1/models/taxifare/metadata", "/metadata"):
        response = client.get(route)
        assert response.status_code == 200
        info = response.json()
        assert info["status"] == "ready"
        assert info["version"] == lab_predictor.version
        assert Path(info["path"]).parent == lab_model_dir / "export" / "exporter"
        assert info["layout"] == "lab"
        assert info["signature"]["inputs"] == {f: "float32" for f in schema.LAB.serving_fields}
        assert info["signature"]["outputs"] == {"fare_amount": "float32"}
        assert info["load_seconds"] > 0 and info["ready_at"] >= info["loaded_at"] > 0
        assert info["metrics"]["rmse"] > 0
        assert info["model_version_status"] == [{"version": lab_predictor.version, "state": "AVAILABLE"}]


@pytest.mark.parametrize(
    "method,path,status,allow",
    [
        ("GET", "/predict", 405, "POST"),
        ("PUT", "/v1/models/taxifare:predict", 405, "POST"),
        ("POST", "/health", 405, "GET, HEAD"),
        ("DELETE", "/v1/models/taxifare", 405, "GET, HEAD"),
        ("GET", "/", 404, None),
        ("POST", "/v1/models/other:predict", 404, None),
        ("GET", "/predict/extra", 404, None),
    ],
)
def test_unknown_routes_and_wrong_methods(client, method, path, status, allow):
    response = client.request(method, path, json={"instances": [LAB]} if method in ("POST", "PUT") else None)
    assert response.status_code == status
    assert "error" in response.json()
    assert response.headers.get("allow") == allow


# ----------------------------------------------------------------------------- client mistakes
def _nan_body(field: str, literal: str) -> bytes:
    text = json.dumps({"instances": [LAB, dict(LAB, **{field: 0.0})]})
    return text.replace(f'"{field}": 0.0', f'"{field}": {literal}').encode()


BAD_REQUESTS = [
    ("not json", b"this is not json", "not JSON", None, None),
    ("truncated json", b'{"instances": [', "not JSON", None, None),
    ("not utf-8", b'{"instances": ["\xff\xfe"]}', "not JSON", None, None),
    ("empty body", b"", "empty body", None, None),
    ("a list body", json.dumps([LAB]).encode(), "JSON object", None, None),
    ("no instances", b'{"instance": []}', 'no "instances"', None, None),
    ("instances not a list", json.dumps({"instances": LAB}).encode(), "must be a list", None, None),
    ("instances null", b'{"instances": null}', "must be a list", None, None),
    ("empty instances", b'{"instances": []}', "is empty", None, None),
    ("unknown top-level key", json.dumps({"instances": [LAB], "x": 1}).encode(), "unknown top-level", None, None),
    (
        "unknown signature",
        json.dumps({"instances": [LAB], "signature_name": "predict"}).encode(),
        "unknown signature_name",
        None,
        None,
    ),
    (
        "parameters not an object",
        json.dumps({"instances": [LAB], "parameters": [1]}).encode(),
        "parameters",
        None,
        None,
    ),
    ("NaN literal", _nan_body("pickuplat", "NaN"), "finite", 1, "pickuplat"),
    ("Infinity literal", _nan_body("pickuplon", "Infinity"), "finite", 1, "pickuplon"),
    ("-Infinity literal", _nan_body("dropofflat", "-Infinity"), "finite", 1, "dropofflat"),
    ("1e999", _nan_body("dropofflon", "1e999"), "finite", 1, "dropofflon"),
    ("huge integer", _nan_body("passengers", "1" + "0" * 40), "float32 range", 1, "passengers"),
    (
        "string for number",
        json.dumps({"instances": [LAB, LAB, dict(LAB, passengers="2")]}).encode(),
        "got a string",
        2,
        "passengers",
    ),
    ("boolean for number", json.dumps({"instances": [dict(LAB, pickuplat=True)]}).encode(), "boolean", 0, "pickuplat"),
    ("null for number", json.dumps({"instances": [dict(LAB, pickuplat=None)]}).encode(), "null", 0, "pickuplat"),
    (
        "missing field",
        json.dumps({"instances": [LAB, {k: v for k, v in LAB.items() if k != "dropofflat"}]}).encode(),
        "missing",
        1,
        "dropofflat",
    ),
    ("unknown field", json.dumps({"instances": [dict(LAB, key="k1")]}).encode(), "unknown field", 0, "key"),
    ("instance not an object", json.dumps({"instances": [LAB, [1, 2, 3, 4, 5]]}).encode(), "JSON object", 1, None),
    (
        "lone surrogate field name",
        json.dumps({"instances": [dict(LAB, **{"\ud800": 1})]}).encode(),
        "unknown field",
        0,
        "\ud800",
    ),
    ("deeply nested", b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON", None, None),
]


@pytest.mark.parametrize("body,message,index,field", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_are_400_naming_instance_and_field(client, body, message, index, field):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()
    assert message in error["error"]
    if index is not None:
        assert error["index"] == index and error["field"] == field
        assert f"instance {index}" in error["error"]
    # The connection and the server are fine afterwards.
    assert client.post("/predict", json={"instances": [LAB]}).status_code == 200


def test_body_at_the_limit_is_served_and_one_byte_more_is_413(lab_server):
    body = json.dumps({"instances": [LAB] * 100}).encode()
    at_limit = body + b" " * (server_requests.MAX_BODY_BYTES - len(body))
    head = "POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    status, _, answer = _raw_exchange(lab_server.port, head.format(len(at_limit)).encode() + at_limit)
    assert status == 200 and len(json.loads(answer)["predictions"]) == 100
    over = at_limit + b" "
    status, _, answer = _raw_exchange(lab_server.port, head.format(len(over)).encode() + over)
    assert status == 413 and "exceeds" in json.loads(answer)["error"]


def test_declared_oversize_body_is_refused_before_it_is_sent(lab_server):
    request = (
        "POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    status, _, answer = _raw_exchange(lab_server.port, request)  # no body follows: answered anyway
    assert status == 413 and str(50 * 1024 * 1024) in json.loads(answer)["error"]


def test_streamed_body_without_length_is_counted_and_refused(client):
    def chunks():
        yield b'{"instances": ['
        for _ in range(400):
            yield json.dumps(LAB).encode() + b"," + b" " * 4000

    response = client.post("/predict", content=chunks())  # chunked transfer encoding
    assert response.status_code == 413
    small = client.post("/predict", content=iter([b'{"instances": ', json.dumps([LAB]).encode(), b"}"]))
    assert small.status_code == 200


# ----------------------------------------------------------------------------- fuzzing
_LAB_FIELDS = list(schema.LAB.serving_fields)
# Any code point, lone surrogates included (JSON can carry them as \ud800 escapes).
_text = st.text(st.characters(exclude_categories=[]), max_size=8)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
)
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4), max_leaves=12
)
_value = st.one_of(
    st.floats(min_value=-74.1, max_value=-73.7), st.floats(min_value=40.6, max_value=40.9), st.integers(1, 6), _json
)
_instance = st.one_of(
    st.fixed_dictionaries({f: _value for f in _LAB_FIELDS}),
    st.dictionaries(st.sampled_from(_LAB_FIELDS + ["key", "fare_amount"]) | _text, _value, max_size=7),
    _json,
)
_request = st.one_of(
    st.fixed_dictionaries({"instances": st.lists(_instance, max_size=6)}, optional={"parameters": _json}),
    st.dictionaries(st.sampled_from(["instances", "parameters", "signature_name"]), _json, max_size=3),
    _json,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        _request.map(lambda r: json.dumps(r, allow_nan=True).encode()),
        st.binary(max_size=200),
    )
)
def test_fuzzed_bodies_never_get_a_5xx(client, body):
    response = client.post("/predict", content=body)
    assert response.status_code in (200, 400), (response.status_code, response.text, body[:300])
    payload = response.json()
    if response.status_code == 200:
        sent = json.loads(body)["instances"]
        fares = [p["fare_amount"] for p in payload["predictions"]]
        assert len(fares) == len(sent) and all(math.isfinite(f) for f in fares)
    else:
        assert isinstance(payload["error"], str) and payload["error"]


# ----------------------------------------------------------------------------- concurrency
def test_concurrent_clients_get_their_own_answers_in_order(lab_server, lab_predictor):
    requests = [_trips(1 + (i * 7) % 60, seed=100 + i) for i in range(120)]
    expected = [lab_predictor.predict(trips) for trips in requests]

    async def run():
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=lab_server.url, limits=limits, timeout=60) as c:
            return await asyncio.gather(*(c.post("/predict", json={"instances": t}) for t in requests))

    responses = asyncio.run(run())
    for response, want in zip(responses, expected):
        assert _close(_fares(response), want)
    stats = httpx.get(lab_server.url + "/metadata").json()["batching"]
    assert stats["calls"] <= stats["instances"]


def test_the_batcher_coalesces_queued_requests_into_one_call(lab_predictor):
    batches = [_trips(n, seed=n) for n in (1, 5, 17, 3)]

    async def run():
        batcher = server_backends.Batcher(lab_predictor)
        batcher.start()
        try:
            results = await asyncio.gather(*(batcher.predict(lab_predictor.to_columns(b), len(b)) for b in batches))
        finally:
            batcher.close()
        return results, batcher.calls

    results, calls = asyncio.run(run())
    assert calls == 1
    for got, trips in zip(results, batches):
        assert _close(got.tolist(), lab_predictor.predict(trips))


# ----------------------------------------------------------------------------- loading and readiness
async def _asgi(app, method: str, path: str, body: bytes = b""):
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _lifespan_startup(app):
    queue: asyncio.Queue = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})
    sent = []

    async def send(message):
        sent.append(message)

    task = asyncio.ensure_future(app({"type": "lifespan"}, queue.get, send))
    while not sent:
        await asyncio.sleep(0.01)
    assert sent == [{"type": "lifespan.startup.complete"}]
    return queue, task


def test_health_is_503_until_the_model_is_loaded_then_200(lab_model_dir):
    app = server_app.PredictionApp(str(lab_model_dir), routes=server.Routes())
    body = json.dumps({"instances": [LAB]}).encode()

    async def run():
        assert (await _asgi(app, "GET", "/health"))[0] == 503
        assert (await _asgi(app, "POST", "/predict", body))[0] == 503
        queue, task = await _lifespan_startup(app)
        await app._load_task
        health = await _asgi(app, "GET", "/health")
        predicted = await _asgi(app, "POST", "/predict", body)
        await queue.put({"type": "lifespan.shutdown"})
        await task
        return health, predicted

    health, predicted = asyncio.run(run())
    assert health == (200, b'{"status":"ready"}')
    assert predicted[0] == 200 and len(json.loads(predicted[1])["predictions"]) == 1


def test_a_model_that_cannot_load_keeps_health_503_and_reports_why(tmp_path):
    failures = []
    app = server_app.PredictionApp(str(tmp_path / "missing"), routes=server.Routes(), on_load_failure=failures.append)

    async def run():
        await _lifespan_startup(app)
        await app._load_task
        return await _asgi(app, "GET", "/health")

    status, body = asyncio.run(run())
    assert status == 503
    assert json.loads(body)["status"] == "failed" and "does not exist" in json.loads(body)["error"]
    assert len(failures) == 1


def test_server_process_exits_with_a_clear_error_when_the_model_is_missing(tmp_path):
    with pytest.raises(server.ServerStartError, match="exited with code 3") as caught:
        server.start_server(tmp_path, timeout_s=120)
    assert "no SavedModel" in str(caught.value)


def test_the_server_process_answers_503_while_loading(lab_server):
    # The port is reported before the model loads (importing TensorFlow alone takes seconds):
    # start_server saw 503s, then the 200 it waited for.
    seen = lab_server.startup_statuses
    assert seen[0] == 503 and seen[-1] == 200 and set(seen) <= {200, 503}


def test_naive_baseline_predicts_the_same_fares(lab_predictor):
    trips = _trips(20, seed=9)
    naive = server_backends.KerasPredict(lab_predictor)
    columns = lab_predictor.to_columns(trips)
    assert _close(naive(columns).tolist(), lab_predictor.predict(trips))


# ----------------------------------------------------------------------------- Vertex and the CLI
def test_routes_from_environment():
    assert server.Routes.from_env({}) == server.Routes()
    routes = server.Routes.from_env({"AIP_HEALTH_ROUTE": "/ping", "AIP_PREDICT_ROUTE": "/v1/endpoints/1:predict"})
    assert routes.health == "/ping"
    assert routes.predict == ("/v1/endpoints/1:predict", server.TF_SERVING_PREDICT_ROUTE)


def test_vertex_contract_with_a_gs_model_through_the_emulator(gcs_emulator, lab_model_dir, lab_predictor, tmp_path):
    gcs_emulator.create_bucket("vertex-models")
    storage.upload_dir(lab_model_dir / "export", "gs://vertex-models/taxifare/run-1/export")
    port = free_port()
    env = {
        **os.environ,
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": "/v1/endpoints/42/deployedModels/7",
        "AIP_PREDICT_ROUTE": "/v1/endpoints/42/deployedModels/7:predict",
        "AIP_STORAGE_URI": "gs://vertex-models/taxifare/run-1",
    }
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainer.server"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url + env["AIP_HEALTH_ROUTE"])
        trips = _trips(30, seed=5)
        expected = lab_predictor.predict(trips)
        assert _close(_fares(httpx.post(url + env["AIP_PREDICT_ROUTE"], json={"instances": trips})), expected)
        assert _close(_fares(httpx.post(url + "/v1/models/taxifare:predict", json={"instances": trips})), expected)
        assert httpx.post(url + "/predict", json={"instances": trips}).status_code == 404
        assert httpx.get(url + "/health").status_code == 404
        info = httpx.get(url + "/v1/models/taxifare").json()
        assert info["model_uri"] == env["AIP_STORAGE_URI"]
        assert info["version"] == lab_predictor.version
    finally:
        code = server.stop_server(process.pid)
    _assert_graceful_exit(code, log_path)
    downloaded = Path(info["path"]).parents[2]
    assert "downloading gs://vertex-models/taxifare/run-1" in log_path.read_text()
    assert downloaded.name.startswith("taxifare-model-") and not downloaded.exists()  # removed at shutdown


def test_taxifare_serve_cli_serves_the_dated_model(dated_cli_server, dated_model_dir):
    dated = Predictor.load(dated_model_dir)
    trips = [DATED, dict(DATED, pickup_datetime="2014-06-01 03:00:00 UTC", passenger_count=5)]
    response = httpx.post(dated_cli_server + "/predict", json={"instances": trips})
    assert _close(_fares(response), dated.predict(trips))
    info = httpx.get(dated_cli_server + "/metadata").json()
    assert info["layout"] == "dated" and info["signature"]["inputs"]["pickup_datetime"] == "string"


@pytest.mark.parametrize(
    "value,message",
    [
        ("2011-13-28 20:42:59 UTC", "is not a time like"),
        ("tomorrow", "is not a time like"),
        (20110128, "expected a string"),
    ],
)
def test_dated_bad_pickup_datetime_is_400(dated_cli_server, value, message):
    trips = [DATED, DATED, dict(DATED, pickup_datetime=value)]
    response = httpx.post(dated_cli_server + "/predict", json={"instances": trips})
    assert response.status_code == 400
    error = response.json()
    assert (error["index"], error["field"]) == (2, "pickup_datetime") and message in error["error"]


def test_lab_instances_sent_to_the_dated_model_are_400(dated_cli_server):
    response = httpx.post(dated_cli_server + "/predict", json={"instances": [LAB]})
    assert response.status_code == 400 and response.json()["field"] == "pickup_datetime"


def test_serve_cli_without_a_model_is_a_usage_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIP_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "--model-dir" in result.stderr
