"""Run the taxifare pipeline end to end on this machine: kfp.local + the GCS emulator + a local endpoint.

This is what ``make run`` does. The bucket is gcp-storage-emulator on a free loopback port, backed
by a directory under the work dir so that a second run finds its objects (and kfp.local's cache
finds its outputs); deploy starts the project's prediction server on loopback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from components.artifacts import STEP_LOG_ENV
from pipelines.local.emulator import GcsEmulator
from trainer import local_endpoint, storage, warm
from trainer.config import load_settings
from trainer.ingest import parse_source

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = Path("build/local")
# The subprocess runner runs no image, so each task names this one in place of the code-tagged
# image: kfp.local's cache key includes the image, whose tag changes with any code change, while a
# local re-run should run again exactly the steps whose own code changed (their code_fingerprint).
LOCAL_IMAGE = "taxifare-local-subprocess"


class RunError(RuntimeError):
    """The local run failed; the message names the step and the reason. ``step``, ``log_path`` and
    ``log_tail`` say where to look; ``run_folder`` holds the run's logs and page."""

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        log_path: Path | None = None,
        log_tail: list[str] | None = None,
        run_folder: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.step, self.log_path, self.log_tail, self.run_folder = step, log_path, log_tail or [], run_folder


@dataclass
class StepTiming:
    name: str
    wall_s: float | None = None
    in_step_s: float | None = None
    cached: bool = False
    startup_s: float | None = None  # the task process's start to the step's own code: Python and imports
    code_fingerprint: str | None = None  # the step's code (components.fingerprint) the cache keyed on

    @property
    def overhead_s(self) -> float | None:
        if self.wall_s is None or self.in_step_s is None:
            return None
        return max(self.wall_s - self.in_step_s, 0.0)


@dataclass
class RunSummary:
    wall_s: float
    pipeline_root: Path
    run_dir: Path | None
    endpoint_url: str | None
    endpoint_kept: bool
    predict_rmse: float
    steps: dict[str, StepTiming] = field(default_factory=dict)
    facts: dict[str, dict] = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)  # the pipeline's returned values by name
    run_folder: Path | None = None  # this run's logs/, summary.json and page (index.html)
    dag: list = field(default_factory=list)  # [(step, [steps it runs after])] in run order
    params: dict = field(default_factory=dict)  # every parameter the run got, defaults included
    defaults: list = field(default_factory=list)  # the names of those left at the pipeline's default

    def as_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 3),
            "pipeline_root": str(self.pipeline_root),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "endpoint_url": self.endpoint_url,
            "endpoint_kept": self.endpoint_kept,
            "predict_rmse": self.predict_rmse,
            "steps": {
                name: {
                    "wall_s": t.wall_s,
                    "in_step_s": t.in_step_s,
                    "overhead_s": t.overhead_s,
                    "startup_s": t.startup_s,
                    "cached": t.cached,
                    "code_fingerprint": t.code_fingerprint,
                }
                for name, t in self.steps.items()
            },
            "facts": self.facts,
            "outputs": self.outputs,
            "run_folder": str(self.run_folder) if self.run_folder else None,
            "params": self.params,
            "defaults": self.defaults,
        }


def run_local(
    *,
    workdir: str | Path = DEFAULT_WORKDIR,
    params: dict | None = None,
    keep_endpoint: bool = False,
    enable_caching: bool = True,
    runner=None,
    pipeline=None,
    on_event=None,
    verbose: bool = False,
) -> RunSummary:
    """Run the `taxifare` pipeline locally; returns timings, the endpoint and where the artifacts are.

    `pipeline` may be the pipeline loaded back from its compiled YAML
    (``kfp.components.load_component_from_file``); by default it is the Python definition.
    Each task's output goes to ``WORKDIR/runs/<run>/logs/<task>.log`` (and, with ``verbose``, to
    stdout as kfp.local prints it); ``on_event(task, state)`` hears each task start, end or cache hit.
    """
    from kfp import local

    from pipelines import params as pipeline_params
    from pipelines.local import console, page, run_record

    if pipeline is None:
        from pipelines.taxifare import taxifare as pipeline
    runner = runner or local.SubprocessRunner(use_venv=False)
    if isinstance(runner, local.SubprocessRunner):
        pipeline = without_images(pipeline)

    workdir = Path(workdir).resolve()
    settings = load_settings()
    params = {"bucket": settings.bucket, "project": settings.project, "region": settings.region, **(params or {})}
    params.setdefault("prefix", settings.prefix)
    if params.get("target", "local") != "local":
        raise RunError(f"a local run deploys locally; target={params['target']!r} needs `taxifare submit`")
    bucket = params["bucket"]
    # Malformed parameters fail here, before any process or bucket is touched.
    storage.check_bucket_name(bucket)
    for name in ("source", "valid_source"):
        if params.get(name):
            parse_source(params[name])
    effective, defaults = pipeline_params.effective(pipeline, params)
    pipeline_root = workdir / "pipeline_root"
    step_log = workdir / "steps.jsonl"
    run_folder = _new_run_folder(workdir / "runs")
    pipeline_root.mkdir(parents=True, exist_ok=True)
    step_log.unlink(missing_ok=True)

    saved_env = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "TAXIFARE_STATE_DIR", STEP_LOG_ENV)}
    started = time.time()
    emulator = GcsEmulator(data_dir=workdir / "gcs", log_path=workdir / "gcs-emulator.log")
    endpoint_name = params.get("endpoint_name", "taxifare")
    dag = graph_steps(pipeline)
    try:
        os.environ["TAXIFARE_STATE_DIR"] = str(workdir / "state")
        if any(name == "validate" for name, _ in dag):
            # validate hands its whole smoke run to a process that has imported TensorFlow while
            # the emulator started and ingest ran (trainer.warm).
            warm.prestart("trainer")
        emulator.start()
        os.environ.update(emulator.env())
        os.environ[STEP_LOG_ENV] = str(step_log)
        emulator.create_bucket(bucket)
        if any(name == "deploy" for name, _ in dag):
            # The endpoint's process imports TensorFlow while the steps before deploy run.
            local_endpoint.prestart()
        # kfp.local says, per task, that the UI display name means nothing locally; we know.
        warnings.filterwarnings("ignore", message=r".*have no effect in the current local runner")
        # and, per task, that the project image is not a Python image: the venv is that image's twin.
        warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom")
        local.init(
            runner=runner,
            pipeline_root=str(pipeline_root),
            enable_caching=enable_caching,
            cache_root=str(workdir / "cache"),
        )
        before = set(pipeline_root.iterdir())
        pipeline_started = time.time()
        fingerprints = code_fingerprints(pipeline)
        pipeline_name = pipeline.pipeline_spec.pipeline_info.name
        cache_hits: set[str] = set()

        def events(task: str, state: str) -> None:
            if state == console.CACHED:
                cache_hits.add(task.replace("-", "_"))
            if on_event is not None:
                on_event(task, state)

        try:
            with console.captured(run_folder / "logs", events, verbose=verbose) as logs:
                result = pipeline(**params)
        except RuntimeError as exc:
            step, message = _failure(exc, step_log)
            task = next((t for t in (step, (step or "").replace("_", "-")) if t and logs.tail(t)), step)
            log_path = run_folder / "logs" / console.log_name(task) if task else None
            new_dirs = sorted(set(pipeline_root.iterdir()) - before)
            record = run_record.record_from_failure(
                params=effective,
                defaults=defaults,
                step=step,
                error=message,
                log_tail=logs.tail(task) if task else [],
                artifacts_dir=new_dirs[-1] if new_dirs else None,
                step_records=_read_step_log(step_log),
                wall_s=time.time() - started,
                started=started,
                pipeline=pipeline_name,
                dag=dag,
                fingerprints=fingerprints,
            )
            page.write_run_page(run_folder, record)
            raise RunError(
                message,
                step=step,
                log_path=log_path,
                log_tail=logs.tail(task) if task else [],
                run_folder=run_folder,
            ) from None
        outputs = _pipeline_outputs(result)
        rmse = _as_float(outputs.get("Output"))
        endpoint = local_endpoint.get(endpoint_name)
        new_dirs = sorted(set(pipeline_root.iterdir()) - before)
        run_dir = new_dirs[-1] if new_dirs else None
        summary = RunSummary(
            wall_s=time.time() - started,
            pipeline_root=pipeline_root,
            run_dir=run_dir,
            endpoint_url=endpoint.predict_url if endpoint else None,
            endpoint_kept=keep_endpoint and endpoint is not None,
            predict_rmse=rmse,
            steps=step_timings(_read_step_log(step_log), pipeline_started, [n for n, _ in dag], cache_hits),
        )
        for name, timing in summary.steps.items():
            timing.code_fingerprint = fingerprints.get(name)
        summary.facts = {r["step"]: r.get("facts", {}) for r in _read_step_log(step_log)}
        summary.outputs = outputs
        summary.run_folder, summary.params, summary.defaults, summary.dag = run_folder, effective, defaults, dag
        (run_folder / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2, default=str))
        record = run_record.record_from_summary(summary, pipeline=pipeline_name, dag=dag, started=started)
        page.write_run_page(run_folder, record)
        return summary
    finally:
        if not keep_endpoint:
            local_endpoint.stop(endpoint_name)
        local_endpoint.stop_standby()
        warm.stop_unused("trainer")
        emulator.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def without_images(pipeline):
    """The pipeline (a Python definition or one loaded from a compiled spec) with every task's
    image replaced by LOCAL_IMAGE, for the subprocess runner."""
    from google.protobuf import json_format
    from kfp import components

    spec = json_format.MessageToDict(pipeline.pipeline_spec)
    for executor in spec.get("deploymentSpec", {}).get("executors", {}).values():
        if "container" in executor:
            executor["container"]["image"] = LOCAL_IMAGE
    return components.load_component_from_text(json.dumps(spec))


def code_fingerprints(pipeline) -> dict[str, str]:
    """step → the code fingerprint its task takes as input (components.fingerprint), read from the
    pipeline's spec (names as the steps log them); steps without one are left out."""
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag] + [component.dag for component in spec.components.values() if component.HasField("dag")]
    found = {}
    for dag in dags:
        for name, task in dag.tasks.items():
            if "code_fingerprint" in task.inputs.parameters:
                value = task.inputs.parameters["code_fingerprint"].runtime_value.constant
                if value.string_value:
                    found[name.replace("-", "_")] = value.string_value
    return found


def graph_steps(pipeline) -> list[tuple[str, list[str]]]:
    """The pipeline's steps in run order with the steps each runs after, read from its spec:
    loops and conditions flattened, names as the steps log them (``select-best`` → ``select_best``)."""
    spec = pipeline.pipeline_spec

    def nested(task) -> dict:
        return spec.components[task.component_ref.name].dag.tasks

    def leaves(tasks) -> list[str]:
        return [leaf for name, task in tasks.items() for leaf in (leaves(nested(task)) if nested(task) else [name])]

    edges: dict[str, set[str]] = {}

    def walk(tasks, outside: set[str]) -> None:
        for name, task in tasks.items():
            after = set(outside)
            for dependency in task.dependent_tasks:
                after |= set(leaves({dependency: tasks[dependency]}))
            if nested(task):
                walk(nested(task), after)
            else:
                edges[name] = after

    walk(spec.root.dag.tasks, set())
    order: list[str] = []
    while len(order) < len(edges):
        ready = [name for name, after in edges.items() if name not in order and after <= set(order)]
        order += ready or [name for name in edges if name not in order]  # no cycle comes out of a spec
    return [(name.replace("-", "_"), sorted(a.replace("-", "_") for a in edges[name])) for name in order]


def step_timings(
    records: list[dict], run_started: float, order: list[str], cache_hits: set[str]
) -> dict[str, StepTiming]:
    """Per-step wall time (from the previous step's end, or the run's start, to this step's end),
    the time inside the step's own code, and the difference: what orchestration costs. Steps
    answered from the cache are marked; steps that did not run (a condition) are left out."""
    by_step = {r["step"]: r for r in records}
    timings: dict[str, StepTiming] = {}
    previous_end = run_started
    for name in order:
        record = by_step.get(name)
        if record is None:
            if name in cache_hits:
                timings[name] = StepTiming(name, cached=True)
            continue
        startup = record["start"] - record["process_start"] if "process_start" in record else None
        timings[name] = StepTiming(
            name,
            wall_s=round(record["end"] - previous_end, 3),
            in_step_s=record["seconds"],
            startup_s=round(startup, 3) if startup is not None else None,
        )
        previous_end = record["end"]
    return timings


def _pipeline_outputs(result) -> dict:
    """The finished pipeline's returned values by name ({} when it returns nothing)."""
    outputs = getattr(result, "outputs", None) or {}
    return dict(outputs)


def _as_float(value) -> float:
    """The `taxifare` pipeline returns the endpoint RMSE; other pipelines (the sweep) return other
    things, which the summary keeps in `outputs` while predict_rmse is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_step_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _failure(exc: Exception, step_log: Path) -> tuple[str | None, str]:
    """The failed step and one line naming it and its error, from the step log the steps write."""
    for record in reversed(_read_step_log(step_log)):
        if record.get("error"):
            return record["step"], f"step {record['step']} failed: {record['error']}"
    named = re.search(r"Task '([^']+)' finished with status FAILURE", str(exc))
    return (named.group(1) if named else None), f"pipeline failed: {exc}"


def _new_run_folder(runs: Path) -> Path:
    """``RUNS/<UTC time>``: a new folder per run, in the order they started."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    folder = runs / stamp
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = runs / f"{stamp}-{suffix}"
    folder.mkdir(parents=True)
    return folder
