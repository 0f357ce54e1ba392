"""The prediction server as a separate process under abuse and under load.

* ≥ 10,000 requests from a seeded generator of malformed and valid bodies (plus malformed HTTP,
  wrong methods and routes, oversize bodies): never a 5xx, the process alive and healthy after,
  every 200 answering one finite fare per instance.
* 60 s of load from 8 keep-alive clients: zero errors, server RSS after the run within 10 % of
  its RSS after warm-up.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import statistics
import threading
import time
from collections import Counter

import httpx
import psutil
import pytest

from tests.reliability import record
from trainer import schema, server, server_requests

pytestmark = pytest.mark.reliability

FUZZ_REQUESTS = 10_000
LOAD_SECONDS = float(os.environ.get("TAXIFARE_RELIABILITY_LOAD_S", "60"))
LOAD_CLIENTS = 8
MAX_RSS_GROWTH = 0.10
FIELDS = list(schema.LAB.serving_fields)


@pytest.fixture(scope="module")
def server_process(lab_model_dir, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("reliability-server") / "server.log"
    handle = server.start_server(lab_model_dir, log_path=log_path)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def lab_predictor(lab_model_dir):
    from trainer.predictor import Predictor

    return Predictor.load(lab_model_dir)


def _rss(pid: int) -> int:
    process = psutil.Process(pid)
    return process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))


# -- the fuzz generator --------------------------------------------------------------------------
def _trip(rng: random.Random) -> dict:
    return {
        "pickuplon": rng.uniform(-74.02, -73.78),
        "pickuplat": rng.uniform(40.63, 40.85),
        "dropofflon": rng.uniform(-74.02, -73.78),
        "dropofflat": rng.uniform(40.63, 40.85),
        "passengers": rng.randint(1, 6),
    }


# Values that are not numbers (a 400 always), and finite numbers far outside any trip (the
# contract checks types and finiteness, not plausibility: 200 or 400, never a 5xx or a non-finite fare).
_NOT_NUMBERS = [None, True, False, "", "12.5", "abc", "nan", [], [1.0], {}, {"v": 1}, "\u0000", "∞", "-73.9\u200b"]
_FAR_NUMBERS = [-1e308, 1e308, 0, -0.0, 2**70, -(2**70), 1e-320]
_ODD_VALUES = _NOT_NUMBERS + _FAR_NUMBERS
_BAD_LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"]
_FAR_LITERALS = [b"123456789012345678901234567890", b"-1e300"]


def _bad_instance(rng: random.Random) -> tuple[object, str]:
    """(instance, expectation): "bad" must be a 400, "either" a 200 or a 400."""
    trip = _trip(rng)
    choice = rng.randrange(7)
    if choice == 0:
        del trip[rng.choice(FIELDS)]
    elif choice == 1:
        trip[rng.choice(["fare_amount", "key", "pickup_datetime", "Pickuplon", ""])] = 1.0
    elif choice == 2:
        trip[rng.choice(FIELDS)] = rng.choice(_NOT_NUMBERS)
    elif choice == 3:
        trip[rng.choice(FIELDS)] = rng.choice(_FAR_NUMBERS)
        return trip, "either"
    elif choice == 4:
        return rng.choice(_ODD_VALUES), "bad"  # an instance that is not an object
    elif choice == 5:
        return list(trip.values()), "bad"  # positional instead of named
    else:
        trip = {k: str(v) for k, v in trip.items()}
    return trip, "bad"


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice(_ODD_VALUES)
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.randrange(-(10**9), 10**9)
    if kind == 4:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        "".join(rng.choice("abcdefinstaces_") for _ in range(rng.randrange(1, 10))): _random_json(rng, depth + 1)
        for _ in range(rng.randrange(4))
    }


def fuzz_body(rng: random.Random) -> tuple[str, bytes, int | str]:
    """(category, body, expectation): "bad" (a 4xx with an error message), or the instance count
    of a request that may be served (then a 200 must carry that many finite fares; category
    "valid" must be served)."""
    kind = rng.randrange(16)
    if kind <= 2:
        trips = [_trip(rng) for _ in range(rng.randint(1, 40))]
        return "valid", json.dumps({"instances": trips}).encode(), len(trips)
    if kind <= 5:
        trips = [_trip(rng) for _ in range(rng.randint(1, 10))]
        index = rng.randrange(len(trips))
        trips[index], expect = _bad_instance(rng)
        return "bad_instance", json.dumps({"instances": trips}).encode(), len(trips) if expect == "either" else "bad"
    if kind == 6:
        trip = json.dumps(_trip(rng)).encode()
        field = rng.choice(FIELDS).encode()
        far = rng.random() < 0.3
        literal = rng.choice(_FAR_LITERALS if far else _BAD_LITERALS)
        start = trip.index(b'"' + field + b'": ') + len(field) + 4
        end = min(i for i in (trip.find(b",", start), trip.find(b"}", start)) if i >= 0)
        return (
            "non_finite_literal",
            b'{"instances": [' + trip[:start] + literal + trip[end:] + b"]}",
            1 if far else "bad",
        )
    if kind == 7:
        return "random_json", json.dumps(_random_json(rng)).encode(), "bad"
    if kind == 8:
        request = {"instances": _random_json(rng)}
        if rng.random() < 0.5:
            request[rng.choice(["parameters", "signature_name", "inputs"])] = _random_json(rng)
        return "odd_envelope", json.dumps(request).encode(), "bad"
    if kind == 9:
        return "random_bytes", rng.randbytes(rng.randrange(300)), "bad"
    if kind == 10:
        valid = json.dumps({"instances": [_trip(rng)]}).encode()
        return "truncated_json", valid[: rng.randrange(len(valid))], "bad"
    if kind == 11:
        depth = rng.choice([50, 2_000, 100_000])
        return "deep_nesting", b'{"instances": ' + b"[" * depth + b"]" * depth + b"}", "bad"
    if kind == 12:
        return "not_utf8", b'{"instances": [{"pickuplon": "\xff\xfe"}]}', "bad"
    if kind == 13:
        return "empty", b"", "bad"
    if kind == 14:
        dated = dict(schema.DATED_TEST_INSTANCE)
        if rng.random() < 0.5:
            dated["pickup_datetime"] = rng.choice(["", "yesterday", "2013-02-30 25:61:00 UTC", 20130101])
        return "other_layout", json.dumps({"instances": [dated]}).encode(), "bad"
    # Oversize: just over the 1.5 MB limit (every few hundred requests, to keep the run short).
    if rng.random() < 0.02:
        return "oversize", b'{"instances": [' + b" " * (server_requests.MAX_BODY_BYTES + 1) + b"]}", "bad"
    return "empty_list", b'{"instances": []}', "bad"


def _raw_http(port: int, payload: bytes) -> int | None:
    """Send raw bytes; the status line's code, or None when the server just closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data[9:12])


_MALFORMED_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost x\r\n\r\n",
    b"POST /predict HTTP/9.9\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # a TLS ClientHello
]


def test_ten_thousand_fuzzed_requests_never_get_a_5xx_and_the_server_survives(server_process, lab_predictor):
    handle = server_process
    rng = random.Random(20261126)
    bodies = [fuzz_body(rng) for _ in range(FUZZ_REQUESTS)]
    statuses: Counter = Counter()
    by_category: dict[str, Counter] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def worker(part: list) -> None:
        with httpx.Client(base_url=handle.url, timeout=30) as client:
            for category, body, count in part:
                response = client.post(handle.routes.predict[0], content=body)
                problem = None
                status = response.status_code
                if status >= 500:
                    problem = f"{category}: {status} {response.text[:200]} for {body[:120]!r}"
                elif status == 200:
                    fares = [p["fare_amount"] for p in response.json()["predictions"]]
                    if count == "bad":
                        problem = f"{category}: 200 for a bad request {body[:120]!r}"
                    elif len(fares) != count or not all(f is not None and math.isfinite(f) for f in fares):
                        problem = f"{category}: 200 with fares {fares[:5]} for {count} instances"
                elif isinstance(count, int) and category == "valid":
                    problem = f"{category}: {status} for a valid request: {response.text[:200]}"
                elif not response.json().get("error"):
                    problem = f"{category}: {status} without an error message"
                with lock:
                    statuses[response.status_code] += 1
                    by_category.setdefault(category, Counter())[response.status_code] += 1
                    if problem:
                        failures.append(problem)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(bodies[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)

    # Wrong methods and routes, and malformed HTTP on raw sockets.
    with httpx.Client(base_url=handle.url, timeout=10) as client:
        for method, path in [
            ("GET", "/predict"),
            ("PUT", "/predict"),
            ("DELETE", "/health"),
            ("POST", "/nope"),
            ("GET", "/../../etc/passwd"),
            ("PATCH", "/v1/models/taxifare:predict"),
        ]:
            status = client.request(method, path).status_code
            statuses[status] += 1
            by_category.setdefault("method_or_route", Counter())[status] += 1
            if status >= 500:
                failures.append(f"{method} {path}: {status}")
    raw_outcomes = Counter()
    for payload in _MALFORMED_HTTP:
        status = _raw_http(handle.port, payload)
        raw_outcomes["closed" if status is None else status] += 1
        if status is not None and status >= 500:
            failures.append(f"malformed HTTP {payload[:40]!r}: {status}")
    seconds = time.perf_counter() - started

    alive = handle.process.poll() is None
    health = httpx.get(handle.health_url, timeout=5).status_code if alive else None
    answer = (
        httpx.post(handle.predict_url, json={"instances": [schema.LAB_TEST_INSTANCE]}, timeout=5) if alive else None
    )
    correct = (
        answer is not None
        and answer.status_code == 200
        and math.isclose(
            answer.json()["predictions"][0]["fare_amount"],
            lab_predictor.predict([schema.LAB_TEST_INSTANCE])[0],
            rel_tol=1e-5,
        )
    )
    tried = sum(statuses.values()) + len(_MALFORMED_HTTP)
    record(
        "endpoint_fuzz",
        "Fuzzed requests against the server process",
        passed=not failures and alive and health == 200 and correct,
        requests_tried=tried,
        seconds=round(seconds, 1),
        responses_5xx=sum(n for s, n in statuses.items() if s >= 500),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        by_category={k: {str(s): n for s, n in sorted(v.items())} for k, v in sorted(by_category.items())},
        malformed_http={str(k): v for k, v in raw_outcomes.items()},
        oversize_413=by_category.get("oversize", Counter()).get(413, 0),
        server_alive_after=alive,
        health_after=health,
        correct_prediction_after=correct,
        problems=failures[:20],
    )
    assert tried >= FUZZ_REQUESTS
    assert not failures, failures[:20]
    assert by_category["oversize"] and set(by_category["oversize"]) == {413}
    assert alive and health == 200 and correct


def test_sixty_seconds_of_load_from_eight_clients_no_errors_no_memory_growth(server_process):
    handle = server_process
    pid = handle.pid
    errors: list[str] = []
    counts = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=handle.url, timeout=10) as client:
            while not stop.is_set():
                size = rng.choice([1, 1, 1, 10, 100])
                trips = [_trip(rng) for _ in range(size)]
                try:
                    response = client.post(handle.routes.predict[0], json={"instances": trips})
                    ok = response.status_code == 200 and len(response.json()["predictions"]) == size
                    problem = None if ok else f"{response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                with lock:
                    counts["requests"] += 1
                    counts["instances"] += size
                    if problem:
                        errors.append(problem)

    samples: list[tuple[float, int]] = []
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(LOAD_CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() - started < LOAD_SECONDS:
            time.sleep(1.0)
            samples.append((time.monotonic() - started, _rss(pid)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    elapsed = time.monotonic() - started

    # Baseline: after warm-up (the first sixth of the run); end: the last sixth.
    warm = [rss for t, rss in samples if LOAD_SECONDS / 6 <= t < LOAD_SECONDS / 3]
    tail = [rss for t, rss in samples if t >= LOAD_SECONDS * 5 / 6]
    baseline, end = statistics.median(warm), statistics.median(tail)
    growth = (end - baseline) / baseline
    alive = handle.process.poll() is None
    record(
        "endpoint_load",
        f"{LOAD_CLIENTS} clients for {LOAD_SECONDS:.0f} s against the server process",
        passed=not errors and growth <= MAX_RSS_GROWTH and alive,
        clients=LOAD_CLIENTS,
        seconds=round(elapsed, 1),
        requests=counts["requests"],
        instances=counts["instances"],
        requests_per_s=round(counts["requests"] / elapsed, 1),
        errors=len(errors),
        rss_after_warmup_mib=round(baseline / 2**20, 1),
        rss_at_end_mib=round(end / 2**20, 1),
        rss_max_mib=round(max(r for _, r in samples) / 2**20, 1),
        rss_growth=round(growth, 4),
        rss_growth_limit=MAX_RSS_GROWTH,
        server_alive_after=alive,
        first_errors=errors[:10],
    )
    assert not errors, errors[:10]
    assert counts["requests"] > 1000
    assert growth <= MAX_RSS_GROWTH, f"RSS grew {growth:.1%} ({baseline / 2**20:.0f} → {end / 2**20:.0f} MiB)"
    assert alive
