"""Serving benchmark: latency and throughput of the prediction server on loopback.

``python -m pipelines.bench.serve --out build/bench [--model-dir DIR]`` (``make bench-serve``)

Trains a small lab-layout model (unless ``--model-dir`` is given), then measures, in one run:

* the in-process signature call for one instance (the floor any server adds to);
* per server mode (``batch``: micro-batching, ``inline``: one call per request, ``naive``: Keras
  ``model.predict`` per request — the baseline), each started with
  :func:`trainer.server.start_server` on a free loopback port:

  - single-instance request latency, one keep-alive client, sequential requests (p50/p99);
  - single-instance request latency with 8 concurrent keep-alive clients (p50/p99);
  - throughput with 8 concurrent clients sending 100-instance requests (instances/s).

Every response is checked (status 200, one prediction per instance, the first answer equal to
the in-process prediction). All loops are bounded by a request count and a time limit.
Writes ``serve.json`` and ``serve.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from trainer import schema, server

log = logging.getLogger("pipelines.bench.serve")

TARGETS = {
    "single_p50_ms": 2.0,
    "single_p50_over_signature": 5.0,
    "concurrent_p99_ms": 10.0,
    "throughput_instances_per_s": 20_000.0,
}


# --------------------------------------------------------------------------------------------
# A minimal keep-alive HTTP/1.1 client (asyncio protocol): as little client overhead as possible
# so the figures are the server's.
# --------------------------------------------------------------------------------------------
class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None
        self.header_end = -1
        self.need = -1
        self.status = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"server closed the connection: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            start = head.find(b"content-length:")
            if start < 0:
                raise ConnectionError("response without Content-Length")
            stop = head.find(b"\r\n", start)
            length = int(head[start + 15 : stop if stop > 0 else None])
            self.header_end = end + 4
            self.need = self.header_end + length
        if len(self.buffer) >= self.need:
            body = bytes(self.buffer[self.header_end : self.need])
            del self.buffer[: self.need]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((self.status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def _raw_post(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connect(host: str, port: int) -> _Connection:
    _, conn = await asyncio.get_running_loop().create_connection(_Connection, host, port)
    return conn


def _check(status: int, body: bytes, count: int) -> None:
    if status != 200:
        raise RuntimeError(f"server answered {status}: {body[:300]!r}")
    if body.count(b'"fare_amount"') != count:
        raise RuntimeError(f"expected {count} predictions, got {body[:300]!r}")


async def _client_loop(conn: _Connection, raw: bytes, count: int, requests: int, deadline: float, latencies: list):
    clock = time.perf_counter
    for _ in range(requests):
        if clock() > deadline:
            break
        start = clock()
        status, body = await conn.request(raw)
        latencies.append(clock() - start)
        _check(status, body, count)


async def _scenario(
    host, port, path, body: bytes, count: int, clients: int, requests: int, warmup: int, limit_s: float
):
    raw = _raw_post(host, port, path, body)
    conns = [await _connect(host, port) for _ in range(clients)]
    try:
        warm: list[float] = []
        await asyncio.gather(*(_client_loop(c, raw, count, warmup, time.perf_counter() + limit_s, warm) for c in conns))
        latencies: list[float] = []
        started = time.perf_counter()
        deadline = started + limit_s
        await asyncio.gather(*(_client_loop(c, raw, count, requests, deadline, latencies) for c in conns))
        elapsed = time.perf_counter() - started
    finally:
        for c in conns:
            c.transport.close()
    return _summary(latencies, elapsed, count)


def _summary(latencies: list[float], elapsed: float, count: int) -> dict[str, Any]:
    ms = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "instances_per_request": count,
        "seconds": round(elapsed, 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p90_ms": round(float(np.percentile(ms, 90)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "max_ms": round(float(ms.max()), 4),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "instances_per_s": round(len(latencies) * count / elapsed, 1),
    }


def _instances(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Plausible lab-layout trips around the lab's test instance."""
    rng = np.random.default_rng(seed)
    base = schema.LAB_TEST_INSTANCE
    out = []
    for _ in range(count):
        out.append(
            {
                "pickuplon": round(base["pickuplon"] + float(rng.normal(0, 0.02)), 6),
                "pickuplat": round(base["pickuplat"] + float(rng.normal(0, 0.02)), 6),
                "dropofflon": round(base["dropofflon"] + float(rng.normal(0, 0.02)), 6),
                "dropofflat": round(base["dropofflat"] + float(rng.normal(0, 0.02)), 6),
                "passengers": int(rng.integers(1, 7)),
            }
        )
    return out


def measure_server(handle: server.ServerProcess, expected: float, scale: float, limit_s: float) -> dict[str, Any]:
    """The three loopback scenarios against one running server."""
    host, port = "127.0.0.1", handle.port
    path = handle.routes.predict[0]
    single = orjson.dumps({"instances": [schema.LAB_TEST_INSTANCE]})
    batch = orjson.dumps({"instances": _instances(100)})

    async def run() -> dict[str, Any]:
        conn = await _connect(host, port)
        status, body = await conn.request(_raw_post(host, port, path, single))
        conn.transport.close()
        _check(status, body, 1)
        got = orjson.loads(body)["predictions"][0]["fare_amount"]
        if not math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-4):
            raise RuntimeError(f"server predicted {got}, in-process signature {expected}")
        return {
            "single": await _scenario(host, port, path, single, 1, 1, int(3000 * scale), 200, limit_s),
            "concurrent_single": await _scenario(host, port, path, single, 1, 8, int(1000 * scale), 50, limit_s),
            "throughput_100": await _scenario(host, port, path, batch, 100, 8, int(600 * scale), 20, limit_s),
        }

    import uvloop

    return uvloop.run(run())


# --------------------------------------------------------------------------------------------
# In-process reference and the model
# --------------------------------------------------------------------------------------------
def measure_in_process(model_dir: Path, calls: int = 3000) -> tuple[dict[str, Any], float]:
    from trainer.predictor import Predictor

    predictor = Predictor.load(model_dir)
    instance = schema.LAB_TEST_INSTANCE
    columns = predictor.to_columns([instance])
    for _ in range(200):
        predictor.predict_columns(columns)
    times = []
    clock = time.perf_counter
    for _ in range(calls):
        start = clock()
        predictor.predict_columns(columns)
        times.append(clock() - start)
    full = []
    for _ in range(calls // 3):
        start = clock()
        predictor.predict([instance])
        full.append(clock() - start)
    result = {
        "signature_call_p50_ms": round(statistics.median(times) * 1000, 4),
        "signature_call_p99_ms": round(float(np.percentile(np.array(times) * 1000, 99)), 4),
        "validate_and_call_p50_ms": round(statistics.median(full) * 1000, 4),
        "calls": calls,
    }
    return result, predictor.predict([instance])[0]


def train_model(out: Path, steps: int) -> Path:
    from trainer import synth, task

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    train = synth.write_csv(data / "taxi-train.csv", rows=20_000, layout="lab", seed=1)
    valid = synth.write_csv(data / "taxi-valid.csv", rows=2_000, layout="lab", seed=2)
    output_dir = out / "model"
    code = task.main(
        [
            "--train_data_paths",
            str(train),
            "--eval_data_paths",
            str(valid),
            "--output_dir",
            str(output_dir),
            "--train_steps",
            str(steps),
            "--seed",
            "1",
        ]
    )
    if code != 0:
        raise RuntimeError(f"training failed with exit code {code}")
    return output_dir


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def _verdicts(report: dict[str, Any], mode: str) -> dict[str, Any]:
    figures = report["servers"][mode]
    signature = report["in_process"]["signature_call_p50_ms"]
    single = figures["single"]["p50_ms"]
    values = {
        "single_p50_ms": single,
        "single_p50_over_signature": round(single / signature, 2),
        "concurrent_p99_ms": figures["concurrent_single"]["p99_ms"],
        "throughput_instances_per_s": figures["throughput_100"]["instances_per_s"],
    }
    met = {
        "single_p50_ms": values["single_p50_ms"] <= TARGETS["single_p50_ms"],
        "single_p50_over_signature": values["single_p50_over_signature"] <= TARGETS["single_p50_over_signature"],
        "concurrent_p99_ms": values["concurrent_p99_ms"] <= TARGETS["concurrent_p99_ms"],
        "throughput_instances_per_s": values["throughput_instances_per_s"] >= TARGETS["throughput_instances_per_s"],
    }
    return {"mode": mode, "values": values, "targets": TARGETS, "met": met, "all_met": all(met.values())}


def _markdown(report: dict[str, Any]) -> str:
    ip = report["in_process"]
    lines = [
        "# Serving benchmark",
        "",
        f"Model: `{report['model_dir']}` (layout {report['layout']}, version {report['model_version']}).",
        f"Machine: {report['machine']['cpus']} CPUs, load average before/after "
        f"{report['machine']['loadavg_before']} / {report['machine']['loadavg_after']}.",
        "",
        f"In-process signature call, one instance: p50 **{ip['signature_call_p50_ms']} ms** "
        f"(p99 {ip['signature_call_p99_ms']} ms); with validation: p50 {ip['validate_and_call_p50_ms']} ms.",
        "",
        "| server mode | single p50 ms | single p99 ms | ×signature | 8 clients p50 ms | 8 clients p99 ms "
        "| 8×100-instance inst/s | 8×100 p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, figures in report["servers"].items():
        s, c, t = figures["single"], figures["concurrent_single"], figures["throughput_100"]
        lines.append(
            f"| {mode} | {s['p50_ms']} | {s['p99_ms']} | {s['p50_ms'] / ip['signature_call_p50_ms']:.2f} "
            f"| {c['p50_ms']} | {c['p99_ms']} | {t['instances_per_s']:,.0f} | {t['p99_ms']} |"
        )
    verdict = report["verdict"]
    lines += [
        "",
        f"Targets for the default mode (`{verdict['mode']}`):",
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
    ]
    ops = {"throughput_instances_per_s": "≥"}
    for name, target in verdict["targets"].items():
        lines.append(
            f"| {name} | {verdict['values'][name]} | {ops.get(name, '≤')} {target} "
            f"| {'yes' if verdict['met'][name] else 'NO'} |"
        )
    if "naive" in report["servers"] and report["servers"]["naive"]:
        naive = report["servers"]["naive"]
        best = report["servers"][verdict["mode"]]
        lines += [
            "",
            f"The naive baseline (Keras `model.predict` per request) against `{verdict['mode']}`: "
            f"single-instance p50 {naive['single']['p50_ms'] / best['single']['p50_ms']:.0f}× longer, "
            f"throughput {best['throughput_100']['instances_per_s'] / naive['throughput_100']['instances_per_s']:.0f}× "
            "lower.",
        ]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/bench", help="where serve.json and serve.md go")
    parser.add_argument("--model-dir", help="a trained model (default: train a small one under --out)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--modes", default="batch,inline,naive", help="server modes to measure, comma-separated")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts (e.g. 0.1 for a smoke run)")
    parser.add_argument("--limit-s", type=float, default=20.0, help="time limit per scenario")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]

    work = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=out))
    model_dir = Path(args.model_dir) if args.model_dir else train_model(work, args.train_steps)
    from trainer.predictor import Predictor, find_saved_model

    saved_model = find_saved_model(model_dir)
    in_process, expected = measure_in_process(saved_model)
    log.info("in-process: %s", in_process)
    described = Predictor.load(saved_model, warm_up=False)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    servers: dict[str, Any] = {}
    for mode in modes:
        # The baseline costs ~30 ms a request: fewer requests keep the run short.
        scale = args.scale * (0.02 if mode == "naive" else 1.0)
        with server.start_server(saved_model, mode=mode, log_path=work / f"server-{mode}.log") as handle:
            servers[mode] = measure_server(handle, expected, scale, args.limit_s)
        log.info("%s: %s", mode, json.dumps(servers[mode]))

    default_mode = "batch" if "batch" in servers else modes[0]
    report: dict[str, Any] = {
        "command": "python -m pipelines.bench.serve " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model_dir": str(saved_model),
        "layout": described.layout,
        "model_version": described.version,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": loadavg_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "in_process": in_process,
        "servers": servers,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report["verdict"] = _verdicts(report, default_mode)
    (out / "serve.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "serve.md").write_text(_markdown(report))
    log.info("wrote %s and %s", out / "serve.json", out / "serve.md")
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
