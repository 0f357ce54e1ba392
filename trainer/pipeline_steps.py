"""The pipeline's six steps as plain functions over KFP artifact objects.

Each KFP component in ``components/`` is a thin wrapper that calls one ``run_*`` function here.
The functions only need objects with ``.uri``, ``.path`` and ``.metadata`` (``kfp.dsl`` artifacts),
so tests call them directly with artifacts pointing at temporary files.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import namedtuple
from pathlib import Path

import psutil

from trainer import schema, storage

log = logging.getLogger(__name__)

ValidateOutputs = namedtuple("ValidateOutputs", ["layout", "clean_rows", "bad_rows"])
TrainOutputs = namedtuple("TrainOutputs", ["rmse", "tensorboard_dir"])

TARGETS = ("local", "vertex", "kfp")
TRAIN_RUNNERS = ("task", "vertex")

# When set, every step appends {"step", "seconds", "facts"|"error"} to this JSON-lines file, so a
# local run can report per-step times and name the step that failed and why in one line.
STEP_LOG_ENV = "TAXIFARE_STEP_LOG"


def _record(entry: dict) -> None:
    path = os.environ.get(STEP_LOG_ENV)
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(entry, default=str) + "\n")


def step(name: str):
    """Time a step, record its facts (the returned mapping's `facts`) or its error in the step log."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            started = time.time()
            times = {"process_start": psutil.Process().create_time(), "start": started}
            try:
                result, facts = function(*args, **kwargs)
            except Exception as exc:
                ended = time.time()
                error = f"{type(exc).__name__}: {exc}"
                _record({"step": name, "seconds": ended - started, **times, "end": ended, "error": error})
                raise
            ended = time.time()
            _record({"step": name, "seconds": round(ended - started, 3), **times, "end": ended, "facts": facts})
            return result

        return wrapper

    return decorate


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target={target!r}: expected one of {', '.join(TARGETS)}")


def local_path(artifact, workdir: str | os.PathLike) -> Path:
    """A local file or directory holding the artifact's bytes.

    Artifacts in the bucket are read where Cloud Storage FUSE mounts them (``/gcs/…`` on Vertex)
    and otherwise downloaded into `workdir`; local artifacts are used in place.
    """
    uri = artifact.uri
    if not storage.is_gcs(uri):
        return Path(artifact.path)
    mounted = Path(artifact.path)
    if mounted.exists():
        return mounted
    target = Path(workdir) / Path(uri.rstrip("/")).name
    if storage.exists(uri):
        storage.download_file(uri, target)
    else:  # a folder (a model): every object under the prefix
        storage.download_dir(uri, target)
    return target


# -- 1. ingest ---------------------------------------------------------------------------------
@step("ingest")
def run_ingest(*, source, bucket, prefix, valid_source, valid_fraction, train_data, valid_data, project=None) -> None:
    from trainer import ingest

    result = ingest.ingest(
        source,
        bucket=bucket,
        prefix=prefix,
        valid_source=valid_source or None,
        valid_fraction=valid_fraction,
        project=project or None,
    )
    for artifact, split in ((train_data, result.train), (valid_data, result.valid)):
        artifact.uri = split.uri
        artifact.metadata.update(
            {
                "layout": result.layout,
                "rows": split.rows,
                "bytes": split.bytes,
                "crc32c": split.crc32c,
                "uploaded": split.uploaded,
                "source": source,
            }
        )
    log.info("ingested %s: %d train rows, %d valid rows", source, result.train.rows, result.valid.rows)
    return None, {
        "train": train_data.uri,
        "valid": valid_data.uri,
        "train_rows": result.train.rows,
        "valid_rows": result.valid.rows,
        "layout": result.layout,
    }


# -- 2. validate -------------------------------------------------------------------------------
@step("validate")
def run_validate(
    *, train_data, valid_data, max_bad_fraction, smoke_steps, clean_train, clean_valid, quarantine, report
) -> ValidateOutputs:
    from trainer import validate

    with tempfile.TemporaryDirectory(prefix="taxifare-validate-") as workdir:
        train_path = local_path(train_data, Path(workdir) / "train")
        valid_path = local_path(valid_data, Path(workdir) / "valid")
        out_dir = Path(workdir) / "out"
        result = validate.validate(
            train_path,
            valid_path,
            out_dir,
            max_bad_fraction=max_bad_fraction,
            smoke_steps=smoke_steps,
            layout=train_data.metadata.get("layout"),  # as ingest read it: one layout for both splits
            quarantine_uri=quarantine.uri,
        )
        # The quarantine file already went to quarantine.uri inside validate (before any failure).
        for artifact, produced in ((clean_train, result.clean_train), (clean_valid, result.clean_valid)):
            Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(produced, artifact.path)
        Path(report.path).parent.mkdir(parents=True, exist_ok=True)
        Path(report.path).write_text(result.report_markdown)

    counts = {"layout": result.layout, "clean_rows": result.clean_rows}
    clean_train.metadata.update({**counts, "split": "train", "rows": result.clean_train_rows})
    clean_valid.metadata.update({**counts, "split": "valid", "rows": result.clean_valid_rows})
    quarantine.metadata.update({"rows": result.bad_rows, "reasons": result.bad_by_reason})
    facts = {
        "clean_rows": result.clean_rows,
        "bad_rows": result.bad_rows,
        "quarantine": quarantine.uri,
        "report": report.uri,
    }
    return ValidateOutputs(result.layout, result.clean_rows, result.bad_rows), facts


# -- 3. train ----------------------------------------------------------------------------------
@step("train")
def run_train(
    *,
    train_data,
    valid_data,
    train_steps,
    batch_size,
    hidden_units,
    learning_rate,
    seed,
    model,
    metrics,
    evaluation,
    runner="task",
    project="",
    region="",
    machine_type="n1-standard-4",
    replica_count=1,
    accelerator_type="",
    accelerator_count=0,
    embedding_dim=None,
    towers=None,
) -> TrainOutputs:
    """Train in this task (runner task) or as a Vertex AI CustomJob (runner vertex) that runs the
    same trainer command line in the project image and writes to the Model's URI."""
    if runner not in TRAIN_RUNNERS:
        raise ValueError(f"train runner={runner!r}: expected one of {', '.join(TRAIN_RUNNERS)}")
    with tempfile.TemporaryDirectory(prefix="taxifare-train-") as workdir:
        valid_path = local_path(valid_data, Path(workdir) / "valid")  # trainer eval and the HTML report
        if runner == "vertex":
            from trainer import vertex

            vertex.train(
                project=project,
                region=region,
                train_data=train_data.uri,
                eval_data=valid_data.uri,
                output_dir=model.uri,
                train_steps=train_steps,
                batch_size=batch_size,
                hidden_units=hidden_units,
                learning_rate=learning_rate,
                seed=seed,
                machine_type=machine_type,
                replica_count=replica_count,
                accelerator_type=accelerator_type,
                accelerator_count=accelerator_count,
                embedding_dim=embedding_dim,
                towers=towers,
            )
            output_dir = local_path(model, Path(workdir) / "model")
        else:
            output_dir = Path(model.path)
            train_path = local_path(train_data, Path(workdir) / "train")
            _train_here(
                train_path,
                valid_path,
                output_dir,
                train_steps=train_steps,
                batch_size=batch_size,
                hidden_units=hidden_units,
                learning_rate=learning_rate,
                seed=seed,
                embedding_dim=embedding_dim,
                towers=towers,
            )
        results = json.loads((output_dir / "eval_metrics.json").read_text())
        layout = schema.get_layout(results["layout"])
        evaluation_page = _evaluation_html(output_dir, valid_path, layout, results)

    for name in ("rmse", "mae"):
        metrics.log_metric(name, float(results[name]))
    metrics.log_metric("eval_rows", int(results["eval_rows"]))
    _write_metrics_file(metrics)
    Path(evaluation.path).parent.mkdir(parents=True, exist_ok=True)
    Path(evaluation.path).write_text(evaluation_page)
    tensorboard_dir = model.uri.rstrip("/") + "/tensorboard"
    model.metadata.update(
        {
            "framework": "tensorflow",
            "layout": layout.name,
            "rmse": float(results["rmse"]),
            "mae": float(results["mae"]),
            "train_steps": train_steps,
            "tensorboard": tensorboard_dir,
        }
    )
    facts = {
        "rmse": float(results["rmse"]),
        "mae": float(results["mae"]),
        "model": model.uri,
        "evaluation": evaluation.uri,
        "tensorboard": tensorboard_dir,
    }
    return TrainOutputs(float(results["rmse"]), tensorboard_dir), facts


def _train_here(train_path: Path, valid_path: Path, output_dir: Path, **hyper) -> None:
    from trainer import task

    argv = [
        "--train_data_paths",
        str(train_path),
        "--eval_data_paths",
        str(valid_path),
        "--output_dir",
        str(output_dir),
        "--train_steps",
        str(hyper["train_steps"]),
        "--train_batch_size",
        str(hyper["batch_size"]),
        "--hidden_units",
        hyper["hidden_units"],
        "--learning_rate",
        str(hyper["learning_rate"]),
        "--seed",
        str(hyper["seed"]),
    ]
    for switch in ("embedding_dim", "towers"):  # None: the trainer's default
        if hyper.get(switch) is not None:
            argv += [f"--{switch}", str(hyper[switch])]
    code = task.main(argv)
    if code != 0:
        raise RuntimeError(f"trainer exited with code {code} (arguments: {' '.join(argv)})")


def _write_metrics_file(metrics) -> None:
    """Metrics also as a JSON file at the artifact's path: readable without the metadata store, and
    kfp.local's cache treats an output whose file is missing as a miss."""
    Path(metrics.path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics.path).write_text(json.dumps(metrics.metadata, indent=2, sort_keys=True))


def _evaluation_html(output_dir: Path, valid_path: Path, layout: schema.Layout, results: dict) -> str:
    import numpy as np

    from trainer import client, predictor, report

    sample = client.sample_validation_rows(valid_path, layout, size=5000)
    model = predictor.Predictor.load(output_dir)
    fares = np.asarray(model.predict(sample.instances), dtype=np.float64)
    actual = np.asarray(sample.labels, dtype=np.float64)
    distance = report.haversine_km(
        [i[layout.pickup_lon] for i in sample.instances],
        [i[layout.pickup_lat] for i in sample.instances],
        [i[layout.dropoff_lon] for i in sample.instances],
        [i[layout.dropoff_lat] for i in sample.instances],
    )
    shown = {k: results[k] for k in ("rmse", "mae", "eval_rows", "train_rows") if k in results}
    return report.evaluation_html(actual, fares, distance, title=f"taxifare evaluation ({layout.name})", metrics=shown)


# -- 4. export ---------------------------------------------------------------------------------
@step("export")
def run_export(*, trained_model, train_data, bucket, prefix, exported_model) -> None:
    from trainer import export

    with tempfile.TemporaryDirectory(prefix="taxifare-export-") as workdir:
        model_dir = local_path(trained_model, workdir)
        result = export.export_model(
            model_dir,
            bucket=bucket,
            prefix=prefix,
            data_checksums={"train": train_data.metadata.get("crc32c", "")} if train_data.metadata else {},
        )
    exported_model.uri = result.uri
    exported_model.metadata.update(result.metadata)
    return None, {"uri": result.uri, "version": result.version}


# -- 5. deploy ---------------------------------------------------------------------------------
@step("deploy")
def run_deploy(
    *,
    exported_model,
    target,
    endpoint_name,
    project,
    region,
    endpoint,
    machine_type="n1-standard-2",
    min_replicas=1,
    max_replicas=1,
    traffic_percentage=100,
) -> None:
    _check_target(target)
    version = exported_model.metadata.get("version", Path(exported_model.uri.rstrip("/")).name)
    if target == "local":
        from trainer import local_endpoint

        served = local_endpoint.deploy(exported_model.uri, endpoint_name)
        endpoint.uri = served.predict_url
        endpoint.metadata.update(
            {"target": "local", "url": served.predict_url, "model_version": version, "pid": served.pid}
        )
    elif target == "kfp":
        from trainer import k8s
        from trainer.config import load_settings

        served = k8s.deploy_serving(
            name=endpoint_name, model_uri=exported_model.uri, image=load_settings().image, replicas=min_replicas
        )
        endpoint.uri = served.url
        endpoint.metadata.update({"target": "kfp", **served.metadata(), "model_version": version})
    else:
        from trainer import vertex

        deployed = vertex.deploy_model(
            model_uri=exported_model.uri,
            display_name=endpoint_name,
            project=project,
            region=region,
            machine_type=machine_type,
            min_replica_count=min_replicas,
            max_replica_count=max_replicas,
            traffic_percentage=traffic_percentage,
        )
        endpoint.uri = deployed.endpoint_resource_name
        endpoint.metadata.update({"target": "vertex", **deployed.metadata(), "model_version": version})
    return None, {"endpoint": endpoint.uri, "model_version": version}


# -- 6. predict --------------------------------------------------------------------------------
@step("predict")
def run_predict(*, endpoint, valid_data, instances_file, sample_size, batch_size, predictions, metrics) -> float:
    from trainer import client

    if instances_file:
        instances = client.read_instances_file(instances_file)
        labels: list[float | None] = [None] * len(instances)
    else:
        layout = schema.get_layout(valid_data.metadata["layout"])
        with tempfile.TemporaryDirectory(prefix="taxifare-predict-") as workdir:
            sample = client.sample_validation_rows(local_path(valid_data, workdir), layout, sample_size)
        instances = sample.instances + [dict(schema.TEST_INSTANCES[layout.name])]
        labels = sample.labels + [None]

    target = endpoint.metadata.get("target", "local")
    if target in ("local", "kfp"):
        fares = client.predict(endpoint.metadata["url"], instances, batch_size=batch_size)
    else:
        from trainer import vertex

        fares = vertex.predict(endpoint.uri, instances, batch_size=batch_size)

    Path(predictions.path).parent.mkdir(parents=True, exist_ok=True)
    client.write_predictions(predictions.path, instances, fares, labels)
    error = client.rmse(fares, labels)
    labelled = sum(label is not None for label in labels)
    predictions.metadata.update({"instances": len(instances), "labelled": labelled})
    metrics.log_metric("instances", len(instances))
    if math.isnan(error):
        error = -1.0  # no labelled instance; NaN does not survive the executor's JSON
    else:
        metrics.log_metric("rmse", error)
    _write_metrics_file(metrics)
    log.info("predicted %d instances at %s; RMSE on %d labelled: %.3f", len(instances), endpoint.uri, labelled, error)
    return error, {"instances": len(instances), "rmse": error, "predictions": predictions.uri}


# -- sweep: check the hyperparameter sets, pick the best, champion/challenger ------------------
SelectOutputs = namedtuple("SelectOutputs", ["best_index", "best_rmse", "results"])


@step("check_trials")
def run_check_trials(*, trials, seed) -> list:
    from trainer import sweep

    checked = sweep.parse_trials(trials, seed=seed)
    log.info("%d hyperparameter sets: %s", len(checked), checked)
    return checked, {"trials": len(checked)}


@step("select_best")
def run_select_best(*, rmses, models, trials, best_model, leaderboard, plot) -> SelectOutputs:
    """Pick the lowest validation RMSE; the best model artifact points at the winner's files."""
    import base64

    from trainer import sweep

    if not (len(rmses) == len(models) == len(trials)):
        raise ValueError(f"collected {len(rmses)} RMSEs and {len(models)} models for {len(trials)} hyperparameter sets")
    for position, (rmse, model) in enumerate(zip(rmses, models)):
        recorded = (model.metadata or {}).get("rmse")
        if recorded is not None and not math.isclose(float(recorded), float(rmse), rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(
                f"collected outputs disagree at position {position}: RMSE {rmse} but model {model.uri} "
                f"records {recorded}"
            )
    results = [
        sweep.TrialResult(index=i, params=dict(trials[i]), rmse=float(rmses[i]), run=models[i].uri)
        for i in range(len(trials))
    ]
    best = sweep.best_index([r.rmse for r in results])
    winner = models[best]
    best_model.uri = winner.uri
    best_model.metadata.update({**(winner.metadata or {}), "trial": best, **trials[best]})

    names = [n for n in sweep.SWEPT_NAMES if len({str(t.get(n)) for t in trials}) > 1] or list(sweep.SWEPT_NAMES)
    Path(leaderboard.path).parent.mkdir(parents=True, exist_ok=True)
    Path(leaderboard.path).write_text(
        "# taxifare sweep: validation RMSE per hyperparameter set\n\n"
        + sweep.results_markdown(results, list(sweep.SWEPT_NAMES))
        + f"\n\nBest: set {best} (RMSE {results[best].rmse:.4f}), model {winner.uri}\n"
    )
    with tempfile.TemporaryDirectory(prefix="taxifare-sweep-") as workdir:
        png = sweep.plot_rmse(results, Path(workdir) / "rmse.png", names)
        encoded = base64.b64encode(png.read_bytes()).decode()
    Path(plot.path).parent.mkdir(parents=True, exist_ok=True)
    Path(plot.path).write_text(
        "<html><body><h2>taxifare sweep: validation RMSE against each swept parameter</h2>"
        f'<img alt="RMSE per parameter" src="data:image/png;base64,{encoded}"></body></html>'
    )
    table = [{"index": r.index, **r.params, "rmse": r.rmse, "model": r.run} for r in results]
    facts = {
        "best_index": best,
        "best_rmse": results[best].rmse,
        "rmses": [r.rmse for r in results],
        "best_model": winner.uri,
    }
    return SelectOutputs(best, results[best].rmse, table), facts


@step("champion")
def run_champion(
    *,
    best_model,
    valid_data,
    results,
    target,
    endpoint_name,
    project,
    region,
    min_improvement,
    compare_rows,
    batch_size,
    report,
    metrics,
) -> str:
    """Compare the sweep's best model with the one the endpoint serves now; 'deploy' or 'keep'."""
    from trainer import client, sweep

    _check_target(target)
    if compare_rows < 1:
        raise ValueError(f"compare_rows must be >= 1, got {compare_rows}")
    layout = schema.get_layout(valid_data.metadata["layout"])
    with tempfile.TemporaryDirectory(prefix="taxifare-champion-") as workdir:
        sample = client.sample_validation_rows(local_path(valid_data, Path(workdir) / "valid"), layout, compare_rows)
        if not sample.instances:
            raise ValueError(f"no clean validation rows in {valid_data.uri} to compare the models on")
        challenger_rmse = sweep.model_rmse(
            local_path(best_model, Path(workdir) / "model"), sample.instances, sample.labels
        )
    champion = sweep.measure_champion(
        target=target,
        endpoint_name=endpoint_name,
        instances=sample.instances,
        labels=sample.labels,
        project=project,
        region=region,
        batch_size=batch_size,
    )
    decision = sweep.decide(challenger_rmse, champion.rmse, min_improvement)
    best_index = int(best_model.metadata.get("trial", 0))
    # numbers come back from the orchestrator as JSON numbers (64.0): the sets' own types again
    trial_results = [
        sweep.TrialResult(
            index=int(row["index"]),
            params=sweep.parse_trials([{k: row[k] for k in sweep.HPARAM_NAMES if k in row}])[0],
            rmse=row.get("rmse"),
            run=row.get("model", ""),
        )
        for row in results
    ]
    challenger = next((r for r in trial_results if r.index == best_index), None) or sweep.TrialResult(
        index=best_index, params={}, rmse=best_model.metadata.get("rmse"), run=best_model.uri
    )
    challenger.run = best_model.uri
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    Path(report.path).write_text(
        sweep.decision_markdown(
            decision,
            champion=champion,
            challenger=challenger,
            compared_rows=len(sample.instances),
            results=trial_results,
            endpoint_name=endpoint_name,
        )
    )
    metrics.log_metric("challenger_rmse", decision.challenger_rmse)
    if decision.champion_rmse is not None:
        metrics.log_metric("champion_rmse", decision.champion_rmse)
    metrics.log_metric("deploy", 1 if decision.deploy else 0)
    report.metadata.update(decision.as_dict())
    log.info("champion/challenger: %s", decision.reason)
    return decision.verdict, {
        **decision.as_dict(),
        "compared_rows": len(sample.instances),
        "champion": champion.description,
    }
