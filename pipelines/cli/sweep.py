"""`taxifare sweep`: one pipeline run per grid point, then a table, a CSV and a plot of the RMSEs.

``--target local`` runs each grid point from the compiled YAML in its own process, with its own
work dir, GCS emulator and endpoint (at most as many at once as there are cores);
``--target vertex`` submits one PipelineJob per point grouped in a Vertex AI Experiment;
``--target kfp`` creates one run per point in a KFP experiment. ``--tuner vertex`` instead runs a
Vertex AI HyperparameterTuningJob over the trainer with the grid as its search space.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipelines.cloud import PLATFORMS

log = logging.getLogger(__name__)
# wide enough for a grid's columns and an error message when the output is not a terminal
console = Console(width=None if Console().is_terminal else 200)
err_console = Console(stderr=True)

DEFAULT_OUT = Path("build/sweep")
RUN_ON = ("local", *PLATFORMS)  # where each grid point runs: this machine or a cloud platform
NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,99}")


def _fail(message: str) -> None:
    err_console.print("[red]error:[/red]", escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def default_name(pipeline: str, now: datetime | None = None) -> str:
    """``<pipeline>-sweep-YYYYMMDD-HHMMSS``: also a valid Vertex experiment and KFP experiment name."""
    now = now or datetime.now(UTC)
    base = re.sub(r"[^a-z0-9-]+", "-", pipeline.lower()).strip("-")
    return f"{base}-sweep-{now:%Y%m%d-%H%M%S}"


# -- the sweep ------------------------------------------------------------------------------------
def prepare(pipeline_name: str, grid_path: Path, fixed: dict):
    """(grid, checked fixed values); every bad input is one ValueError naming it.

    Every point's serving target is checked against the steps the pipeline needs, so a sweep that
    one of its steps cannot serve is refused before any run starts.
    """
    from pipelines import params
    from pipelines.compile import check_serving_target, pipeline_function

    function = pipeline_function(pipeline_name)
    grid = params.load_grid(grid_path, function)
    checked = params.validate(function, fixed)
    both = sorted(set(grid.names) & set(checked))
    if both:
        raise params.ParameterError(f"{', '.join(both)}: given both in the grid and as --param; keep one")
    for point in grid.points():
        check_serving_target(pipeline_name, {**checked, **point})
    return grid, checked


def write_outputs(results: list, grid_names: list[str], out_dir: Path, title: str) -> dict[str, Path]:
    """results.csv, rmse.png and results.json under out_dir."""
    import json

    from trainer import selection, sweep_report

    csv_path = sweep_report.write_results_csv(results, out_dir / "results.csv", grid_names)
    png_path = sweep_report.plot_rmse(results, out_dir / "rmse.png", grid_names, title=title)
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
                for r in selection.rank(results)
            ],
            indent=2,
            default=str,
        )
    )
    return {"csv": csv_path, "png": png_path, "json": json_path}


def results_table(results: list, grid_names: list[str], title: str) -> Table:
    from trainer import selection

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
    for position, result in enumerate(selection.rank(results), start=1):
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
    from pipelines import params
    from pipelines.compile import compile_pipeline
    from pipelines.local.sweep import run_local_sweep
    from trainer import hparams
    from trainer.config import load_settings

    if target not in RUN_ON:
        _fail(f"--target {target!r}: expected one of {', '.join(RUN_ON)}")
    if tuner not in (None, "vertex"):
        _fail(f"--tuner {tuner!r}: the only tuner is vertex")
    try:
        fixed = params.parse_assignments(param)
        if tuner:
            tuning_grid = params.load_grid(grid, hparams.tuner_parameters())
        else:
            checked_grid, fixed = prepare(pipeline, grid, fixed)
    except ValueError as exc:
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
        except (ValueError, RuntimeError) as exc:
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
            except (ValueError, RuntimeError) as exc:
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

    from trainer import hparams

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    try:
        hparams.parse_sets(data)
    except hparams.HyperparameterError as exc:
        raise hparams.HyperparameterError(f"{path}: {exc}") from None
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

    from pipelines import params as pipeline_params
    from pipelines.compile import check_serving_target, compile_pipeline
    from pipelines.local.emulator import EmulatorError
    from pipelines.local.run import RunError, run_local
    from pipelines.taxifare_sweep import DEFAULT_TRIALS, taxifare_sweep
    from trainer import hparams

    try:
        params = pipeline_params.validate(taxifare_sweep, pipeline_params.parse_assignments(param))
        if trials is not None:
            params["trials"] = load_trials(trials)
        if min_improvement is not None:
            params["min_improvement"] = float(min_improvement)
        hparams.parse_sets(params.get("trials", DEFAULT_TRIALS))
        check_serving_target("taxifare_sweep", params)
    except ValueError as exc:
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
