"""The record of a local run: a JSON-serialisable dict built from a finished or a failed run."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

# The run folder is where the run's page, record and task logs (``logs/<task>.log``) live; the
# artifacts dir is kfp.local's ``<pipeline_root>/<pipeline>-<time>/`` (``RunSummary.run_dir``),
# whose ``<task>/executor_output.json`` files name each task's output parameters and artifacts.
# They may be the same folder. A record, built by ``record_from_summary`` (a finished run) or
# ``record_from_failure`` (a failed one)::
#
#   {
#     "schema": "taxifare-run/1",
#     "pipeline": "taxifare",
#     "run": "20261202-025408",                       # the run folder's name (set by save_record)
#     "artifacts_dir": "/…/pipeline_root/taxifare-2026-12-02-02-54-09-765601" | None,
#     "status": "succeeded" | "failed",
#     "started": 1796179400.1,                        # epoch seconds
#     "wall_s": 68.5,
#     "params": {"train_steps": 20, ...},             # every input parameter the run got, defaults included
#     "defaults": ["hidden_units", ...],              # the names of those left at the pipeline's default
#     "outputs": {"Output": 9.69},                    # the pipeline's returned values
#     "rmse": 9.69 | None,                            # the endpoint's RMSE on the validation sample
#     "endpoint": {"url": "http://127.0.0.1:…/predict", "kept": False} | None,
#     "steps": [{
#         "name": "train", "after": ["validate"],
#         "state": "succeeded" | "failed" | "cached" | "not run",
#         "wall_s": 24.3, "in_step_s": 21.7,          # None when cached or not run
#         "facts": {...},                             # the step log's facts of the step
#         "outputs": {...},                           # its output parameters (executor_output.json)
#         "error": None | "ValueError: …",
#         "from_run": None | "20261202-024300",       # cached: the earlier run whose outputs were reused
#         "code_fingerprint": None | "5f7852bb705dedf1",  # the step's code, part of its cache key
#         "artifacts": [{"name": "metrics", "kind": "metrics" | "markdown" | "html" | "model"
#                        | "dataset" | "jsonl" | "file" | "folder" | "remote", "uri": "/abs/path" | "gs://…",
#                        "metadata": {...}}],
#     }, ...],
#     "failure": None | {"step": "validate", "error": "…", "log_tail": "…last lines…"},
#   }
#
# A task's log is linked when ``run_folder/logs/<task>.log`` exists (and ``logs/run.log``, the
# orchestrator's own output); a failure with no ``log_tail`` gets the last lines of its task's log.

SCHEMA = "taxifare-run/1"
RECORD_FILE = "run.json"
LOG_DIR = "logs"
RUN_LOG = "run.log"
STATES = ("succeeded", "failed", "cached", "not run")
TAIL_LINES = 40


def log_file(run_folder: Path, task: str) -> Path:
    """Where run_local keeps a task's output: logs/<task>.log, the name made file-safe."""
    return Path(run_folder) / LOG_DIR / (re.sub(r"[^A-Za-z0-9_.-]+", "-", task) + ".log")


def record_from_summary(
    summary,
    params: dict | None = None,
    *,
    pipeline: str = "taxifare",
    dag: Sequence[tuple[str, Sequence[str]]] | None = None,
    started: float | None = None,
    defaults: Sequence[str] | None = None,
) -> dict:
    """The record of a finished run from run_local's RunSummary and the parameters it ran with
    (default: ``summary.params`` when it has them, and ``summary.defaults``: those at their default).

    `dag` is ``[(step, [steps it runs after]), …]`` (default: ``summary.dag``, the run's own graph).
    Output parameters and artifacts come from ``summary.run_dir`` (kfp.local's folder of the run).
    """
    dag = list(dag or summary.dag)
    artifacts_dir = Path(summary.run_dir) if summary.run_dir else None
    if params is None:
        params = getattr(summary, "params", None) or {}
    if defaults is None:
        defaults = getattr(summary, "defaults", None) or []
    steps = []
    for name, after in dag:
        timing = summary.steps.get(name)
        if timing is None:
            state = "not run"
        elif timing.cached:
            state = "cached"
        else:
            state = "succeeded"
        step = _step(name, after, state)
        if timing is not None and not timing.cached:
            step["wall_s"] = timing.wall_s
            step["in_step_s"] = timing.in_step_s
        step["facts"] = dict(summary.facts.get(name) or {})
        step["code_fingerprint"] = getattr(timing, "code_fingerprint", None)
        _add_task_outputs(step, artifacts_dir)
        steps.append(step)
    rmse = summary.predict_rmse
    started = started if started is not None else time.time() - summary.wall_s
    record = {
        "schema": SCHEMA,
        "pipeline": pipeline,
        "run": f"{pipeline}-{_stamp(started)}",
        "artifacts_dir": str(artifacts_dir) if artifacts_dir else None,
        "status": "succeeded",
        "started": started,
        "wall_s": round(summary.wall_s, 3),
        "params": dict(params),
        "defaults": sorted(defaults),
        "outputs": dict(summary.outputs or {}),
        "rmse": rmse if finite(rmse) and rmse >= 0 else None,
        "endpoint": {"url": summary.endpoint_url, "kept": bool(summary.endpoint_kept)}
        if summary.endpoint_url
        else None,
        "steps": steps,
        "failure": None,
    }
    return json_safe(record)


def record_from_failure(
    *,
    params: dict,
    defaults: Sequence[str] = (),
    step: str | None,
    error: str,
    log_tail: str | Sequence[str] = "",
    artifacts_dir: str | Path | None = None,
    step_records: Iterable[dict] = (),
    wall_s: float | None = None,
    started: float | None = None,
    pipeline: str = "taxifare",
    dag: Sequence[tuple[str, Sequence[str]]],
    fingerprints: dict[str, str] | None = None,
) -> dict:
    """The record of a failed run: the failed step (None when no step is to blame), its error and the
    last lines of its log (or '': write_run_page then reads them from the run folder's log of the
    step); `step_records` are the step log's records (``{"step", "seconds", "start", "end",
    "facts"|"error"}``) so that the steps that finished show their times and facts; `artifacts_dir`
    is kfp.local's folder of the run, when known; `fingerprints` the steps' code fingerprints. Steps before the failed one without a record were
    answered from the cache; steps after it did not run.
    """
    dag = list(dag)
    artifacts_dir = Path(artifacts_dir) if artifacts_dir else None
    by_step = {r["step"]: r for r in step_records if "step" in r}
    if step is None:  # the step log may still name it
        step = next((r["step"] for r in reversed(list(by_step.values())) if r.get("error")), None)
    order = [name for name, _ in dag]
    failed_at = order.index(step) if step in order else None
    upstream = _upstream(dag, step) if step in order else set()
    steps = []
    for index, (name, after) in enumerate(dag):
        record = by_step.get(name)
        if name == step or (record is not None and record.get("error")):
            state = "failed"
        elif record is not None:
            state = "succeeded"
        elif failed_at is not None and index < failed_at and name in upstream:
            state = "cached"
        else:
            state = "not run"
        entry = _step(name, after, state)
        entry["code_fingerprint"] = (fingerprints or {}).get(name)
        if record is not None:
            entry["in_step_s"] = _round(record.get("seconds"))
            entry["wall_s"] = _wall(record, by_step, order)
            entry["facts"] = dict(record.get("facts") or {})
            entry["error"] = record.get("error")
        if name == step and not entry["error"]:
            entry["error"] = error
        if state in ("succeeded", "failed"):
            _add_task_outputs(entry, artifacts_dir)
        steps.append(entry)
    tail = log_tail if isinstance(log_tail, str) else "\n".join(log_tail)
    if started is None:
        starts = [r.get("start") for r in by_step.values() if finite(r.get("start"))]
        started = min(starts) if starts else time.time() - (wall_s or 0.0)
    if wall_s is None:
        wall_s = time.time() - started
    record = {
        "schema": SCHEMA,
        "pipeline": pipeline,
        "run": f"{pipeline}-{_stamp(started)}",
        "artifacts_dir": str(artifacts_dir) if artifacts_dir else None,
        "status": "failed",
        "started": started,
        "wall_s": _round(wall_s),
        "params": dict(params),
        "defaults": sorted(defaults),
        "outputs": {},
        "rmse": None,
        "endpoint": None,
        "steps": steps,
        "failure": {"step": step, "error": error, "log_tail": tail},
    }
    return json_safe(record)


def read_log_tail(path: str | Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - 64_000, 0))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _step(name: str, after: Sequence[str], state: str) -> dict:
    return {
        "name": name,
        "after": list(after),
        "state": state,
        "wall_s": None,
        "in_step_s": None,
        "facts": {},
        "outputs": {},
        "error": None,
        "from_run": None,
        "code_fingerprint": None,
        "artifacts": [],
    }


def _upstream(dag: Sequence[tuple[str, Sequence[str]]], step: str) -> set[str]:
    parents = {name: list(after) for name, after in dag}
    seen: set[str] = set()
    todo = list(parents.get(step, []))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += parents.get(name, [])
    return seen


def _wall(record: dict, by_step: dict, order: list[str]) -> float | None:
    """Wall time of a step as run_local counts it: from the previous recorded step's end."""
    end = record.get("end")
    if not isinstance(end, int | float):
        return None
    earlier = [
        by_step[n].get("end")
        for n in order[: order.index(record["step"])]
        if n in by_step and isinstance(by_step[n].get("end"), int | float)
    ]
    begin = max(earlier) if earlier else record.get("start")
    if not isinstance(begin, int | float):
        return None
    return round(end - begin, 3)


def _add_task_outputs(step: dict, artifacts_dir: Path | None) -> None:
    """Output parameters and artifacts from kfp.local's executor_output.json of the task."""
    if artifacts_dir is None:
        return
    produced = artifacts_dir / step["name"] / "executor_output.json"
    try:
        data = json.loads(produced.read_text())
    except (OSError, ValueError):
        return
    step["outputs"] = dict(data.get("parameterValues") or {})
    for name, entry in sorted((data.get("artifacts") or {}).items()):
        for artifact in entry.get("artifacts") or []:
            uri = artifact.get("uri") or ""
            step["artifacts"].append(
                {"name": name, "kind": artifact_kind(name, uri), "uri": uri, "metadata": artifact.get("metadata") or {}}
            )


def artifact_kind(name: str, uri: str) -> str:
    """How the page shows an artifact: by its name and, for local files, its first bytes."""
    if name == "metrics" or name.endswith("_metrics"):
        return "metrics"  # its values are in the metadata, with or without a file
    if "://" in uri:
        return "remote"
    path = Path(uri)
    if path.is_dir():
        return "model" if (path / "saved_model.pb").exists() or (path / "export").is_dir() else "folder"
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return "missing"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "html"
    if name in ("report", "decision") or name.endswith("_report") or text.startswith(b"# "):
        return "markdown"
    if text.startswith(b"{") and b"\n{" in head:
        return "jsonl"
    if name in ("train_data", "valid_data", "clean_train", "clean_valid", "quarantine") or name.endswith("_data"):
        return "dataset"
    return "file"


def _fill_cached_steps(record: dict, root: Path) -> None:
    """Cached steps: facts and artifacts from the newest earlier run with the same parameters."""
    cached = [s for s in record["steps"] if s["state"] == "cached" and not s["artifacts"]]
    if not cached:
        return
    for earlier in load_records(root):
        if earlier["_dir"] == record["run"] or earlier.get("params") != record["params"]:
            continue
        if (earlier.get("started") or 0) >= (record.get("started") or 0):
            continue
        steps = {s["name"]: s for s in earlier.get("steps", [])}
        for step in cached:
            source = steps.get(step["name"])
            if step["from_run"] or source is None:
                continue
            if source["state"] == "succeeded" or (source["state"] == "cached" and source.get("from_run")):
                step["from_run"] = source.get("from_run") or earlier["_dir"]
                step["facts"] = step["facts"] or dict(source.get("facts") or {})
                step["outputs"] = step["outputs"] or dict(source.get("outputs") or {})
                step["artifacts"] = list(source.get("artifacts") or [])


def load_records(root: str | Path) -> list[dict]:
    """Every run record under `root` (``*/run.json``), newest first."""
    records = []
    for path in Path(root).glob(f"*/{RECORD_FILE}"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("schema") == SCHEMA:
            record["_dir"] = path.parent.name
            records.append(record)
    records.sort(key=lambda r: (r.get("started") or 0, r["_dir"]), reverse=True)
    return records


def save_record(run_folder: Path, record: dict) -> dict:
    """Complete `record` for its run folder and write it as run_folder/run.json; returns what was written.

    The record's ``run`` becomes the folder's name; cached steps get the facts and artifacts of the
    newest earlier run in the same runs folder that ran with the same parameters (``from_run`` names
    it); a failure without a log tail gets the last lines of its task's log.
    """
    record = json_safe({k: v for k, v in record.items() if not k.startswith("_")})
    record["run"] = run_folder.name
    _fill_cached_steps(record, run_folder.parent)
    failure = record.get("failure")
    if failure and failure.get("step") and not failure.get("log_tail"):
        failure["log_tail"] = read_log_tail(log_file(run_folder, failure["step"]))
    (run_folder / RECORD_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
    return record


def finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _round(value, digits: int = 3):
    return round(value, digits) if finite(value) else None


def json_safe(value):
    """NaN and infinities become None (JSON has neither); paths and other objects become strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d-%H-%M-%S")
