"""Sweeps in the cloud: pipeline runs grouped in a Vertex AI Experiment or a KFP experiment, and a
Vertex AI HyperparameterTuningJob over the trainer.

Every call is the real SDK call (aiplatform, kfp.Client); tests point them at recorded REST
contracts.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.fingerprint import image_reference
from pipelines import params
from pipelines.cloud import submit
from pipelines.params import Grid
from trainer import hparams, hypertune, storage
from trainer.config import Settings, load_settings
from trainer.selection import SweepError, TrialResult

log = logging.getLogger(__name__)

VERTEX_SUCCEEDED = "PIPELINE_STATE_SUCCEEDED"
TUNING_METRIC = hypertune.HYPERTUNE_METRIC_TAG


def _vertex_job_id(experiment: str, index: int) -> str:
    return f"{experiment[:120]}-{index:03d}"


# -- pipeline runs in a Vertex AI Experiment -----------------------------------------------------
def run_vertex_sweep(
    template: str | Path,
    points: list[dict],
    fixed: Mapping[str, Any],
    *,
    experiment: str,
    wait: bool = True,
    enable_caching: bool = True,
    settings: Settings | None = None,
    poll_interval_s: float = 30.0,
    timeout_s: float | None = None,
) -> list[TrialResult]:
    """One PipelineJob per grid point, all associated with the Vertex AI Experiment `experiment`.

    The pipeline's parameters become the experiment run's parameters and its Metrics artifacts its
    metrics. With `wait`, each run is followed to its end and its validation RMSE read from the
    train task's Metrics artifact; a run that fails is a row with its error.
    """
    from google.cloud import aiplatform

    from trainer import vertex

    settings = settings or load_settings()
    spec = params.load_spec(template)
    name = spec.get("pipelineInfo", {}).get("name", Path(template).stem)
    # every point is checked before the first job is submitted
    values = [
        submit.pipeline_parameters(spec, settings, {**fixed, **point}, defaults={"target": "vertex"})
        for point in points
    ]
    submit.check_image(spec, "vertex")
    vertex.init(settings.project, settings.region, settings=settings)
    results: list[TrialResult] = []
    jobs: list[tuple[TrialResult, Any, float]] = []
    for index, (point, parameter_values) in enumerate(zip(points, values)):
        result = TrialResult(index=index, params=point)
        results.append(result)
        job = aiplatform.PipelineJob(
            display_name=f"{name}-{index:03d}",
            template_path=str(template),
            job_id=_vertex_job_id(experiment, index),
            pipeline_root=settings.pipeline_root,
            parameter_values=parameter_values,
            enable_caching=enable_caching,
            labels={"pipeline": name, "sweep": experiment[:63], "submitted-by": "taxifare-cli"},
            project=settings.project,
            location=settings.region,
        )
        started = time.time()
        try:
            job.submit(service_account=settings.service_account, experiment=experiment)
        except Exception as exc:  # noqa: BLE001 — one refused point must not stop the others; it becomes its row
            log.error("grid point %d was not submitted: %s", index, exc)
            result.error = f"not submitted: {type(exc).__name__}: {exc}"
            continue
        result.run = job.resource_name
        result.state = job.gca_resource.state.name
        log.info("grid point %d: %s in experiment %s", index, job.resource_name, experiment)
        jobs.append((result, job, started))
    if wait:
        for result, job, started in jobs:
            _follow_vertex(result, job, poll_interval_s, timeout_s)
            result.wall_s = time.time() - started
    return results


def _follow_vertex(result: TrialResult, job, poll_interval_s: float, timeout_s: float | None) -> None:
    try:
        state = submit._follow(lambda: job.state.name, submit.VERTEX_DONE, poll_interval_s, timeout_s, None)
    except submit.SubmitError as exc:
        result.error = f"{job.resource_name}: {exc}"
        return
    result.state = state
    if state != VERTEX_SUCCEEDED:
        error = job.gca_resource.error
        result.error = f"{state}" + (f": {error.message}" if error and error.message else "")
        failed = [
            t
            for t in job.gca_resource.job_detail.task_details
            if t.state.name == "FAILED" and t.error and t.error.message
        ]
        if failed:
            result.error += f" ({failed[-1].task_name}: {failed[-1].error.message})"
        return
    result.rmse, result.metrics = vertex_run_metrics(job.gca_resource)
    if result.rmse is None:
        result.error = "the run succeeded but no train task reported an RMSE"


def vertex_run_metrics(pipeline_job) -> tuple[float | None, dict]:
    """The validation RMSE of a finished run (the best of its train tasks) and other figures,
    from the Metrics artifacts in the job's task details."""
    train_rmses, metrics = [], {}
    for task in pipeline_job.job_detail.task_details:
        for artifact_list in task.outputs.values():
            for artifact in artifact_list.artifacts:
                if artifact.schema_title != "system.Metrics":
                    continue
                values = dict(artifact.metadata)
                if task.task_name == "train" and "rmse" in values:
                    train_rmses.append((float(values["rmse"]), values))
                elif task.task_name == "predict" and "rmse" in values:
                    metrics["endpoint_rmse"] = float(values["rmse"])
                elif task.task_name == "champion":
                    metrics.update({k: float(v) for k, v in values.items() if k in ("champion_rmse", "deploy")})
    if not train_rmses:
        return None, metrics
    rmse, values = min(train_rmses, key=lambda item: item[0])
    if "mae" in values:
        metrics["mae"] = float(values["mae"])
    return rmse, metrics


# -- pipeline runs in a KFP experiment -----------------------------------------------------------
def run_kfp_sweep(
    template: str | Path,
    points: list[dict],
    fixed: Mapping[str, Any],
    *,
    host: str,
    experiment: str,
    wait: bool = True,
    enable_caching: bool = True,
    settings: Settings | None = None,
    poll_interval_s: float = 10.0,
    timeout_s: float | None = None,
) -> list[TrialResult]:
    """One KFP run per grid point in the KFP experiment `experiment`.

    The KFP API reports run states, not metric values (those live in the cluster's metadata
    store and UI), so rows carry the final state and the run's address.
    """
    import kfp

    settings = settings or load_settings()
    spec = params.load_spec(template)
    name = spec.get("pipelineInfo", {}).get("name", Path(template).stem)
    for point in points:  # every point checked before the first run is created
        submit.pipeline_parameters(spec, settings, {**fixed, **point})
    submit.check_image(spec, "kfp")
    results = []
    submissions = []
    for index, point in enumerate(points):
        result = TrialResult(index=index, params=point)
        results.append(result)
        try:
            submission = submit.submit_kfp(
                template,
                settings,
                host,
                {**fixed, **point},
                experiment=experiment,
                run_name=f"{name}-{index:03d}",
                enable_caching=enable_caching,
            )
        except Exception as exc:  # noqa: BLE001 — one refused point must not stop the others; it becomes its row
            result.error = f"not submitted: {type(exc).__name__}: {exc}"
            continue
        result.run, result.state = submission.url, submission.state
        submissions.append((result, submission, time.time()))
    if wait:
        client = kfp.Client(host=host)
        for result, submission, started in submissions:
            try:
                state = submit._follow(
                    lambda run_id=submission.run_id: str(client.get_run(run_id).state),
                    submit.KFP_DONE,
                    poll_interval_s,
                    timeout_s,
                    None,
                )
            except submit.SubmitError as exc:
                result.error = str(exc)
                continue
            result.state, result.wall_s = state, time.time() - started
            if state != "SUCCEEDED":
                result.error = f"run ended {state}"
    return results


# -- Vertex AI hyperparameter tuning -------------------------------------------------------------
@dataclass
class TuningOutcome:
    resource_name: str
    state: str
    results: list[TrialResult] = field(default_factory=list)


def parameter_spec(grid: Grid) -> dict:
    """Vertex search space from a grid: numbers → discrete values, strings → categories."""
    from google.cloud.aiplatform import hyperparameter_tuning as hpt

    space = {}
    for name, values in grid.values.items():
        flag = hparams.FLAGS[name]
        if all(isinstance(v, str) for v in values):
            space[flag] = hpt.CategoricalParameterSpec(values=list(values))
        else:
            numbers = sorted(float(v) for v in values)
            wide = numbers[0] > 0 and numbers[-1] / numbers[0] >= 10
            space[flag] = hpt.DiscreteParameterSpec(values=numbers, scale="log" if wide else "linear")
    return space


def run_tuning_job(
    grid: Grid,
    *,
    name: str,
    train_data: str | None,
    eval_data: str | None,
    fixed: Mapping[str, Any] | None = None,
    max_trials: int | None = None,
    parallel_trials: int | None = None,
    settings: Settings | None = None,
    machine_type: str = "n1-standard-4",
    wait: bool = True,
) -> TuningOutcome:
    """A Vertex AI HyperparameterTuningJob over the trainer, with the grid as its search space.

    Each trial runs the project image's ``python -m trainer.hypertune`` (the trainer's command line
    writing into the trial's own folder) and reports the validation RMSE with cloudml-hypertune;
    the job minimises it with grid search. Blocks until the job ends (the SDK's own polling).
    """
    from google.cloud import aiplatform

    from trainer import vertex, vertex_training

    if not (train_data and eval_data):
        raise SweepError(
            "--tuner vertex needs --train-data and --eval-data: gs:// CSVs the trials read "
            "(e.g. the clean train/valid splits of a pipeline run)"
        )
    for uri in (train_data, eval_data):
        if not uri.startswith("gs://"):
            raise SweepError(f"{uri!r}: tuning trials read their data from the bucket; expected gs://…")
    fixed = params.validate(hparams.tuner_parameters(), dict(fixed or {}))
    both = sorted(set(fixed) & set(grid.names))
    if both:
        raise SweepError(f"{', '.join(both)}: given both in the grid and as --param; keep one")
    trials = max_trials or len(grid)
    if trials < 1:
        raise SweepError(f"--max-trials must be >= 1, got {trials}")
    parallel = max(1, min(parallel_trials or trials, trials))

    settings = settings or load_settings()
    base_output = f"gs://{settings.bucket}/{settings.prefix}/tuning/{name}"
    args = [
        "--train_data_paths",
        storage.fuse_path(train_data),
        "--eval_data_paths",
        storage.fuse_path(eval_data),
        # replaced by each trial's own AIP_MODEL_DIR (see trainer.hypertune.trial_argv)
        "--output_dir",
        storage.fuse_path(base_output),
    ]
    args += hparams.flags(fixed)  # the swept ones come from the tuner as --<flag>=<value>
    # the trials run the image built from this code (the one the compiled spec names), once pushed
    trial_image = image_reference(settings.image)
    submit.check_image([trial_image], "vertex")
    pools = vertex_training.worker_pool_specs(image=trial_image, args=args, machine_type=machine_type)
    for pool in pools:
        pool["container_spec"]["command"] = ["python", "-m", "trainer.hypertune"]

    vertex.init(settings.project, settings.region, settings=settings, staging_bucket=f"gs://{settings.bucket}")
    custom_job = aiplatform.CustomJob(
        display_name=f"{name}-trial",
        worker_pool_specs=pools,
        base_output_dir=base_output,
        project=settings.project,
        location=settings.region,
        labels={"sweep": name[:63], "submitted-by": "taxifare-cli"},
    )
    job = aiplatform.HyperparameterTuningJob(
        display_name=name,
        custom_job=custom_job,
        metric_spec={TUNING_METRIC: "minimize"},
        parameter_spec=parameter_spec(grid),
        max_trial_count=trials,
        parallel_trial_count=parallel,
        max_failed_trial_count=trials,  # a failed grid point is a row of the table, not the end of the job
        search_algorithm="grid",
        project=settings.project,
        location=settings.region,
        labels={"sweep": name[:63], "submitted-by": "taxifare-cli"},
    )
    if not wait:
        log.info("the tuning job is followed until it ends (Vertex AI's SDK has no submit-only call for it)")
    try:
        job.run(service_account=settings.service_account)
    except RuntimeError as exc:  # the SDK raises when the job ends FAILED or CANCELLED
        log.error("tuning job %s: %s", job.resource_name, exc)
    outcome = TuningOutcome(job.resource_name, job.gca_resource.state.name)
    outcome.results = tuning_results(job.trials)
    if outcome.state != "JOB_STATE_SUCCEEDED" and not outcome.results:
        error = job.gca_resource.error
        raise RuntimeError(
            f"tuning job {job.resource_name} ended {outcome.state}"
            + (f": {error.message}" if error and error.message else "")
        )
    return outcome


def tuning_results(trials) -> list[TrialResult]:
    """Rows from the job's trials: the grid values each trial got, its final RMSE or why it failed."""
    by_flag = {flag: name for name, flag in hparams.FLAGS.items()}
    kinds = hparams.tuner_parameters()
    results = []
    for position, trial in enumerate(trials):
        point = {}
        for parameter in trial.parameters:
            name = by_flag.get(parameter.parameter_id, parameter.parameter_id)
            value = parameter.value
            if kinds.get(name, (None,))[0] is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            point[name] = value
        metrics = {m.metric_id: float(m.value) for m in trial.final_measurement.metrics}
        rmse = metrics.pop(TUNING_METRIC, None)
        state = trial.state.name
        result = TrialResult(
            index=int(trial.id) if str(trial.id).isdigit() else position,
            params=point,
            rmse=rmse,
            metrics=metrics,
            run=trial.name or trial.id,
            state=state,
        )
        if state != "SUCCEEDED" or rmse is None or not math.isfinite(rmse):
            result.error = trial.infeasible_reason or f"trial {trial.id} ended {state} without an {TUNING_METRIC}"
        results.append(result)
    return results
