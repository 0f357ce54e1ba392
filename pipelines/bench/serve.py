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
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pipelines.bench import loopback_client as client
from pipelines.bench.report import Row, load_average, machine, number
from trainer import schema, server

log = logging.getLogger("pipelines.bench.serve")

TARGETS = {
    "single_p50_ms": 2.0,
    "single_p50_over_signature": 5.0,
    "concurrent_p99_ms": 10.0,
    "throughput_instances_per_s": 20_000.0,
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
        conn = await client.connect(host, port)
        status, body = await conn.request(client.raw_post(host, port, path, single))
        conn.transport.close()
        client.check(status, body, 1)
        got = orjson.loads(body)["predictions"][0]["fare_amount"]
        if not math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-4):
            raise RuntimeError(f"server predicted {got}, in-process signature {expected}")
        return {
            "single": await client.scenario(host, port, path, single, 1, 1, int(3000 * scale), 200, limit_s),
            "concurrent_single": await client.scenario(host, port, path, single, 1, 8, int(1000 * scale), 50, limit_s),
            "throughput_100": await client.scenario(host, port, path, batch, 100, 8, int(600 * scale), 20, limit_s),
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


def report_rows(report: dict[str, Any]) -> list[Row]:
    """The summary-table rows of `taxifare bench`: the default mode against the signature call, its
    targets, and the naive server when it was measured."""
    verdict = report["verdict"]
    best, ip = report["servers"][verdict["mode"]], report["in_process"]
    single, concurrent, batch = best["single"], best["concurrent_single"], best["throughput_100"]
    targets, met = verdict["targets"], verdict["met"]
    rows = [
        Row(
            "Serving, 1 instance",
            f"p50 **{number(single['p50_ms'], 3)} ms**, p99 {number(single['p99_ms'], 3)} ms",
            f"in-process signature call p50 {number(ip['signature_call_p50_ms'], 3)} ms",
            f"**{single['p50_ms'] / ip['signature_call_p50_ms']:.1f}×** the signature call",
        ),
        Row(
            "Serving, 8 clients",
            f"p99 {number(concurrent['p99_ms'], 2)} ms (1 instance); "
            f"**{number(batch['instances_per_s'])} instances/s** (100-instance requests)",
            f"targets: p99 ≤ {targets['concurrent_p99_ms']:.0f} ms, "
            f"≥ {targets['throughput_instances_per_s']:,.0f} instances/s",
            "both met" if met["concurrent_p99_ms"] and met["throughput_instances_per_s"] else "**not met**",
        ),
    ]
    naive = report["servers"].get("naive")
    if naive:
        rows.append(
            Row(
                "Serving vs naive server",
                f"naive (`model.predict` per request): p50 {number(naive['single']['p50_ms'], 2)} ms, "
                f"{naive['throughput_100']['instances_per_s']:,.0f} instances/s",
                f"ours {number(single['p50_ms'], 3)} ms, {number(batch['instances_per_s'])} instances/s",
                f"p50 **{naive['single']['p50_ms'] / single['p50_ms']:.0f}×** lower, throughput "
                f"**{batch['instances_per_s'] / naive['throughput_100']['instances_per_s']:.0f}×** higher",
            )
        )
    return rows


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
    loadavg_before = load_average()

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
        "machine": machine(loadavg_before),
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
