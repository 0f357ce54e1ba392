"""`taxifare sweep`: one pipeline run per grid point, then a table, a CSV and a plot of the RMSEs.

``--target local`` runs each grid point from the compiled YAML in its own process, with its own
work dir, GCS emulator and endpoint (at most as many at once as there are cores);
``--target vertex`` submits one PipelineJob per point grouped in a Vertex AI Experiment;
``--target kfp`` creates one run per point in a KFP experiment. ``--tuner vertex`` instead runs a
Vertex AI HyperparameterTuningJob over the trainer with the grid as its search space.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)
# wide enough for a grid's columns and an error message when the output is not a terminal
console = Console(width=None if Console().is_terminal else 200)
err_console = Console(stderr=True)

DEFAULT_OUT = Path("build/sweep")
TARGETS = ("local", "vertex", "kfp")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,99}")


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=2)


def default_name(pipeline: str, now: datetime | None = None) -> str:
    """``<pipeline>-sweep-YYYYMMDD-HHMMSS``: also a valid Vertex experiment and KFP experiment name."""
    now = now or datetime.now(UTC)
    base = re.sub(r"[^a-z0-9-]+", "-", pipeline.lower()).strip("-")
    return f"{base}-sweep-{now:%Y%m%d-%H%M%S}"


def local_workers(requested: int | None, points: int, available: int | None = None) -> int:
    """How many grid points run at once locally: what was asked, capped by the cores and the points."""
    from trainer.config import usable_cores

    available = available or usable_cores()
    if requested is not None and requested < 1:
        raise ValueError(f"--parallel must be >= 1, got {requested}")
    wanted = requested or available
    if wanted > available:
        log.warning("--parallel %d is more than the %d cores here; running %d at a time", wanted, available, available)
    return max(1, min(wanted, available, points))


# -- one grid point, in a worker process ---------------------------------------------------------
def run_point_local(index: int, template: str, workdir: str, params: dict, enable_caching: bool = True) -> dict:
    """Run the compiled pipeline for one grid point; never raises, the error goes into the result.

    Runs in its own process: kfp.local's configuration and the emulator's environment variables
    are process-wide. Its output (kfp.local is talkative) goes to WORKDIR/run.log.
    """
    workdir_path = Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    log_path = workdir_path / "run.log"
    with open(log_path, "ab") as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    started = time.time()
    result = {"index": index, "params": params, "run": str(workdir_path), "log": str(log_path)}
    try:
        from kfp import components

        from pipelines.local.emulator import EmulatorError
        from pipelines.local.run import RunError, run_local

        pipeline = components.load_component_from_file(template)
        try:
            summary = run_local(workdir=workdir_path, params=params, pipeline=pipeline, enable_caching=enable_caching)
        except (RunError, EmulatorError, ValueError) as exc:
            result.update(error=str(exc), wall_s=time.time() - started)
            return result
    except Exception as exc:  # a worker reports every failure as its row instead of dying
        logging.exception("grid point %d failed", index)
        result.update(error=f"{type(exc).__name__}: {exc}", wall_s=time.time() - started)
        return result
    result.update(wall_s=summary.wall_s, **run_metrics(summary.facts, summary.outputs, summary.predict_rmse))
    if result.get("rmse") is None:
        result["error"] = "the run finished but reported no validation RMSE"
    return result


def run_metrics(facts: dict, outputs: dict, predict_rmse: float) -> dict:
    """A local run's validation RMSE and the other figures worth a column."""
    metrics: dict = {}
    rmse = None
    if "select_best" in facts:  # the sweep pipeline: its best training
        rmse = facts["select_best"].get("best_rmse")
        champion = facts.get("champion", {})
        metrics.update(decision=champion.get("decision"), champion_rmse=champion.get("champion_rmse"))
    elif "train" in facts:
        rmse = facts["train"].get("rmse")
        metrics["mae"] = facts["train"].get("mae")
    if predict_rmse is not None and math.isfinite(predict_rmse) and predict_rmse >= 0:
        metrics["endpoint_rmse"] = predict_rmse
    return {"rmse": rmse, "metrics": {k: v for k, v in metrics.items() if v is not None}}


# -- the sweep ------------------------------------------------------------------------------------
def prepare(pipeline_name: str, grid_path: Path, fixed: dict):
    """(pipeline parameters, grid, checked fixed values); every bad input is one SweepError."""
    from pipelines.compile import pipeline_function
    from trainer import sweep

    function = pipeline_function(pipeline_name)
    parameters = sweep.pipeline_parameters(function)
    grid = sweep.load_grid(grid_path, parameters)
    checked = sweep.check_parameters(fixed, parameters, where="--param")
    both = sorted(set(grid.names) & set(checked))
    if both:
        raise sweep.SweepError(f"{', '.join(both)}: given both in the grid and as --param; keep one")
    return parameters, grid, checked


def run_local_sweep(
    template: Path,
    points: list[dict],
    fixed: dict,
    out_dir: Path,
    *,
    parallel: int | None = None,
    enable_caching: bool = True,
    on_done=None,
) -> list:
    """Every grid point as its own local pipeline run (separate processes); results in point order."""
    from trainer import sweep

    workers = local_workers(parallel, len(points))
    runs_dir = out_dir / "runs"
    log.info("%d grid points, %d at a time; work dirs under %s", len(points), workers, runs_dir)
    results: list[sweep.TrialResult | None] = [None] * len(points)
    # spawn: a fresh interpreter per worker, nothing of this process's state (threads, TF) inherited
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {
            pool.submit(
                run_point_local,
                i,
                str(template.resolve()),
                str((runs_dir / f"point-{i:03d}").resolve()),
                {**fixed, **point},
                enable_caching,
            ): i
            for i, point in enumerate(points)
        }
        for future in as_completed(futures):
            i = futures[future]
            raw = future.result()
            result = sweep.TrialResult(
                index=i,
                params=points[i],
                rmse=raw.get("rmse"),
                metrics=raw.get("metrics", {}),
                error=raw.get("error", ""),
                wall_s=raw.get("wall_s"),
                run=raw.get("run", ""),
            )
            results[i] = result
            if on_done:
                on_done(result)
    return results


def write_outputs(results: list, grid_names: list[str], out_dir: Path, title: str) -> dict[str, Path]:
    """results.csv, rmse.png and results.json under out_dir."""
    import json

    from trainer import sweep

    csv_path = sweep.write_results_csv(results, out_dir / "results.csv", grid_names)
    png_path = sweep.plot_rmse(results, out_dir / "rmse.png", grid_names, title=title)
    json_path = out_dir / "results.json"
    json_path.write_text(
        json.dumps(
            [
                {
                    "index": r.index,
                    "params": r.params,
                    "rmse": r.rmse,
                    "metrics": r.metrics,
                    "status": r.status,
                    "error": r.error,
                    "wall_s": r.wall_s,
                    "run": r.run,
                }
                for r in sweep.rank(results)
            ],
            indent=2,
            default=str,
        )
    )
    return {"csv": csv_path, "png": png_path, "json": json_path}


def results_table(results: list, grid_names: list[str], title: str) -> Table:
    from trainer import sweep

    metric_names = sorted({k for r in results for k in r.metrics})
    table = Table(title=title)
    table.add_column("rank", justify="right")
    table.add_column("#", justify="right")
    for name in grid_names:
        table.add_column(name)
    table.add_column("rmse", justify="right")
    for name in metric_names:
        table.add_column(name, justify="right")
    table.add_column("wall s", justify="right")
    table.add_column("status", overflow="fold")
    for position, result in enumerate(sweep.rank(results), start=1):
        status = f"[red]failed:[/red] {result.error}" if result.error else result.status
        table.add_row(
            str(position) if result.ok else "",
            str(result.index),
            *(_short(result.params.get(n)) for n in grid_names),
            _short(result.rmse),
            *(_short(result.metrics.get(n)) for n in metric_names),
            f"{result.wall_s:.1f}" if result.wall_s is not None else "",
            status,
        )
    return table


def _short(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def sweep_command(
    grid: Path = typer.Option(..., "--grid", help="YAML mapping pipeline parameter → list of values."),
    target: str = typer.Option("local", "--target", help="local | vertex | kfp."),
    pipeline: str = typer.Option("taxifare", "--pipeline", help="Which pipeline each grid point runs."),
    param: list[str] = typer.Option([], "--param", "-p", help="Fixed pipeline parameter NAME=VALUE (repeatable)."),
    parallel: int | None = typer.Option(None, "--parallel", help="Points at once (local: at most the cores)."),
    tuner: str | None = typer.Option(None, "--tuner", help="vertex: a Vertex AI HyperparameterTuningJob instead."),
    name: str | None = typer.Option(
        None, "--name", help="Sweep name (default <pipeline>-sweep-<time>); also the Vertex/KFP experiment."
    ),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help="Results go to OUT/<name>/."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse the outputs of unchanged steps."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Cloud targets: wait for every run and collect metrics."),
    host: str | None = typer.Option(None, "--host", help="KFP API URL (--target kfp)."),
    train_data: str | None = typer.Option(None, "--train-data", help="--tuner: gs:// training CSV(s)."),
    eval_data: str | None = typer.Option(None, "--eval-data", help="--tuner: gs:// validation CSV(s)."),
    max_trials: int | None = typer.Option(None, "--max-trials", help="--tuner: trials (default: grid size)."),
    poll_interval: float = typer.Option(30.0, "--poll-interval", help="Cloud targets: seconds between state checks."),
    api_endpoint: str | None = typer.Option(None, "--api-endpoint", help="Vertex AI API endpoint (default: config)."),
) -> None:
    """Sweep pipeline parameters: one run per grid point, a table sorted by RMSE, CSV and PNG."""
    from pipelines.cli.pipeline import parse_params
    from pipelines.compile import compile_pipeline
    from trainer import sweep
    from trainer.config import load_settings

    if target not in TARGETS:
        _fail(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    if tuner not in (None, "vertex"):
        _fail(f"--tuner {tuner!r}: the only tuner is vertex")
    try:
        fixed = parse_params(param)
        if tuner:
            tuning_grid = sweep.load_grid(grid, sweep.tuner_parameters())
        else:
            _, checked_grid, fixed = prepare(pipeline, grid, fixed)
    except (sweep.SweepError, ValueError) as exc:
        _fail(str(exc))
    try:
        settings = load_settings(api_endpoint=api_endpoint)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        _fail(f"config: {exc}")
    name = name or default_name(pipeline if not tuner else "taxifare-tuning")
    if not NAME_PATTERN.fullmatch(name):
        # it names the Vertex AI Experiment, the job ids and the folder: the strictest rules of the three
        _fail(f"--name {name!r}: use lowercase letters, digits and '-', starting with a letter (at most 100)")
    out_dir = out / name
    out_dir.mkdir(parents=True, exist_ok=True)

    if tuner:
        from pipelines.cloud import sweep as sweep_cloud

        try:
            job = sweep_cloud.run_tuning_job(
                tuning_grid,
                name=name,
                train_data=train_data,
                eval_data=eval_data,
                fixed=fixed,
                max_trials=max_trials,
                parallel_trials=parallel,
                wait=wait,
                settings=settings,
            )
        except (sweep.SweepError, ValueError, RuntimeError) as exc:
            _fail(str(exc))
        console.print(f"hyperparameter tuning job {job.resource_name}: {job.state}")
        results = job.results
        grid_names = tuning_grid.names
    else:
        template = compile_pipeline(pipeline)
        points = checked_grid.points()
        grid_names = checked_grid.names
        console.print(f"sweep {name}: {len(points)} runs of {template} ({target})")
        if target == "local":

            def progress(result) -> None:
                done = f"rmse {result.rmse:.4f}" if result.ok else f"[red]failed[/red]: {result.error}"
                console.print(f"  point {result.index} {result.params}: {done}", highlight=False)

            try:
                results = run_local_sweep(
                    template, points, fixed, out_dir, parallel=parallel, enable_caching=cache, on_done=progress
                )
            except ValueError as exc:
                _fail(str(exc))
        else:
            from pipelines.cloud import sweep as sweep_cloud

            try:
                if target == "vertex":
                    results = sweep_cloud.run_vertex_sweep(
                        template,
                        points,
                        fixed,
                        experiment=name,
                        wait=wait,
                        enable_caching=cache,
                        poll_interval_s=poll_interval,
                        settings=settings,
                    )
                else:
                    if not host:
                        _fail("--target kfp needs --host (the KFP API URL)")
                    results = sweep_cloud.run_kfp_sweep(
                        template,
                        points,
                        fixed,
                        host=host,
                        experiment=name,
                        wait=wait,
                        enable_caching=cache,
                        poll_interval_s=poll_interval,
                        settings=settings,
                    )
            except (sweep.SweepError, ValueError, RuntimeError) as exc:
                _fail(str(exc))

    title = f"taxifare sweep {name}"
    console.print(results_table(results, grid_names, title))
    paths = write_outputs(results, grid_names, out_dir, title)
    console.print(f"table: {paths['csv']}  plot: {paths['png']}")
    failed = [r for r in results if r.error]
    if failed:
        err_console.print(f"{len(failed)} of {len(results)} grid points failed")
        raise typer.Exit(code=1)


def load_trials(path: Path) -> list:
    """Hyperparameter sets from a YAML/JSON file (a list of dicts), checked before anything runs."""
    import yaml

    from trainer import sweep

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise sweep.SweepError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise sweep.SweepError(f"{path}: not valid YAML: {exc}") from None
    try:
        sweep.parse_trials(data)
    except sweep.SweepError as exc:
        raise sweep.SweepError(f"{path}: {exc}") from None
    return data


def sweep_run_command(
    trials: Path | None = typer.Option(
        None, "--trials", help="YAML list of hyperparameter sets (default: the pipeline's own)."
    ),
    min_improvement: float | None = typer.Option(
        None, "--min-improvement", help="Deploy only when the best model beats the served one by this much RMSE."
    ),
    param: list[str] = typer.Option([], "--param", "-p", help="Pipeline parameter NAME=VALUE (repeatable)."),
    workdir: Path = typer.Option(Path("build/local-sweep"), help="Emulator data, artifacts, cache and endpoints."),
    keep_endpoint: bool = typer.Option(
        False,
        "--keep-endpoint",
        help="Leave the endpoint running: the next run "
        "compares against it (without it the next run finds no champion).",
    ),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse the outputs of unchanged steps."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the run summary as JSON here."),
) -> None:
    """Run the taxifare_sweep pipeline locally (from its compiled YAML): train every set, pick the best,
    deploy it only if it beats the model the endpoint serves."""
    import json

    from kfp import components

    from pipelines.cli.pipeline import parse_params
    from pipelines.compile import compile_pipeline
    from pipelines.local.emulator import EmulatorError
    from pipelines.local.run import RunError, run_local
    from pipelines.taxifare_sweep import DEFAULT_TRIALS, taxifare_sweep
    from trainer import sweep

    try:
        params = sweep.check_parameters(parse_params(param), sweep.pipeline_parameters(taxifare_sweep), where="--param")
        if trials is not None:
            params["trials"] = load_trials(trials)
        if min_improvement is not None:
            params["min_improvement"] = float(min_improvement)
        sweep.parse_trials(params.get("trials", DEFAULT_TRIALS))
    except (sweep.SweepError, ValueError) as exc:
        _fail(str(exc))
    pipeline = components.load_component_from_file(str(compile_pipeline("taxifare_sweep")))
    try:
        summary = run_local(
            workdir=workdir, params=params, pipeline=pipeline, keep_endpoint=keep_endpoint, enable_caching=cache
        )
    except (RunError, EmulatorError, ValueError) as exc:
        _fail(str(exc))
    best, decision = summary.facts.get("select_best", {}), summary.facts.get("champion", {})
    if best:
        table = Table(title=f"taxifare_sweep — {summary.wall_s:.1f} s")
        table.add_column("set", justify="right")
        table.add_column("validation rmse", justify="right")
        for index, rmse in sorted(enumerate(best.get("rmses", [])), key=lambda item: (item[1], item[0])):
            table.add_row(f"{index}{' (best)' if index == best.get('best_index') else ''}", f"{rmse:.4f}")
        console.print(table)
    if decision:
        console.print(f"decision: {decision['decision']} — {decision['reason']}")
    if summary.run_dir:
        console.print(f"report: {summary.run_dir / 'champion' / 'report'}")
        console.print(f"leaderboard: {summary.run_dir / 'select-best' / 'leaderboard'}")
    if summary.endpoint_kept:
        console.print(
            f"endpoint left running at {summary.endpoint_url}; stop it with "
            f"`taxifare stop-endpoint --state-dir {workdir / 'state'}`"
        )
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary.as_dict(), indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
    app.command("sweep-run")(sweep_run_command)
