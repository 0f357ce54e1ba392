"""CLI verbs for the pipeline: compile, run (locally), and the export/deploy steps on their own."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print("error:", message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def compile_command(
    names: list[str] = typer.Option([], "--pipeline", help="Pipeline to compile (repeatable; default: all)."),
    out: Path = typer.Option(Path("build/pipelines"), "--out", help="Output folder."),
) -> None:
    """Compile pipelines to OUT/<pipeline>.yaml (same code and config → same bytes)."""
    from pipelines.cloud import image
    from pipelines.compile import PIPELINES, compile_pipeline

    for name in names or list(PIPELINES):
        try:
            path = compile_pipeline(name, out)
        except ValueError as exc:
            _fail(str(exc))
        console.print(f"compiled {name} → {path}")
    try:  # what build/image.json says of the image the specs name
        done = image.read()["images"].get(image.reference(), {})
    except image.ImageError as exc:
        _fail(str(exc))
    state = ", ".join(event for event in image.EVENTS if event in done) or "not built yet: make image, make push"
    console.print(f"image: {image.reference()} — {state} (a local run needs none)", highlight=False, soft_wrap=True)


def run_command(
    ctx: typer.Context,
    local: bool = typer.Option(True, "--local/--no-local", help="Run on this machine (kfp.local)."),
    source: str | None = typer.Option(None, help="Data source (default: the embedded synthetic data)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Pipeline parameter NAME=VALUE (repeatable)."),
    workdir: Path = typer.Option(Path("build/local"), help="Where the emulator data, artifacts and cache live."),
    keep_endpoint: bool = typer.Option(False, "--keep-endpoint", help="Leave the local endpoint running."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse the outputs of unchanged steps."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the run summary as JSON here."),
    spec: Path | None = typer.Option(
        None, "--spec", help="Run this compiled pipeline spec (YAML) instead of the taxifare pipeline's code."
    ),
) -> None:
    """Run the whole pipeline locally: GCS emulator, kfp.local, a local endpoint. One line per step;
    each task's full log goes to the run's folder (-v shows everything). With --spec, any compiled
    spec of this project's pipelines runs the same way, its parameters checked against the spec's own."""
    from pipelines import params as pipeline_params
    from pipelines.local.console import StepLines
    from pipelines.local.emulator import EmulatorError
    from pipelines.local.run import RunError, run_local

    if not local:
        _fail("only --local runs here; use `taxifare submit --target vertex|kfp` for the cloud")
    pipeline = None
    try:
        if spec is None:
            from pipelines.taxifare import taxifare as declared
        else:
            declared = pipeline_params.load_spec(spec)  # the spec's own parameters
        params = pipeline_params.validate(declared, pipeline_params.parse_assignments(param))
        if spec is not None:
            from kfp import components

            pipeline = components.load_component_from_file(str(spec))
    except pipeline_params.ParameterError as exc:
        _fail(str(exc))
    except FileNotFoundError:
        _fail(f"--spec {spec}: no such file")
    except (OSError, ValueError) as exc:  # a spec kfp cannot load
        _fail(f"--spec {spec}: {exc}")
    if pipeline is not None:
        _note_other_code(spec, pipeline)
    if source is not None:
        params["source"] = source
    verbose = bool((ctx.obj or {}).get("verbose"))
    if not verbose:  # the run's own progress is the step lines; details are in the logs
        logging.getLogger().setLevel(logging.WARNING)
    lines = StepLines(console)
    if not verbose:
        console.print(f"local run of the taxifare pipeline started (work dir {workdir}; -v shows every task's output)")
    try:
        with lines.shown():
            summary = run_local(
                workdir=workdir,
                params=params,
                keep_endpoint=keep_endpoint,
                enable_caching=cache,
                pipeline=pipeline,
                on_event=None if verbose else lines.event,
                verbose=verbose,
            )
    except RunError as exc:
        print_failure(exc)
        raise typer.Exit(code=1) from None
    except (EmulatorError, ValueError) as exc:
        _fail(str(exc))
    _print_summary(summary)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary.as_dict(), indent=2, default=str))


def _note_other_code(spec: Path, pipeline) -> None:
    """Say which steps of a spec were compiled from other code than this checkout's: they run this
    checkout's modules, while their cache entries follow the spec's fingerprints."""
    from components.fingerprint import step_fingerprints
    from pipelines.local.run import code_fingerprints

    here = step_fingerprints()
    other = sorted(
        step for step, value in code_fingerprints(pipeline).items() if here.get(f"components.{step}") != value
    )
    if other:
        err_console.print(
            f"note: {spec} was compiled from other code for {', '.join(other)}; they run this checkout's code "
            "(--no-cache runs them all again)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def print_failure(exc) -> None:
    """The failing step, its error, the last lines of its log and where the whole log is."""
    err_console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
    if exc.log_tail:
        err_console.print(f"last lines of the {exc.step} log:", markup=False, highlight=False)
        for line in exc.log_tail:
            err_console.print("  " + line, markup=False, highlight=False, soft_wrap=True)
    if exc.log_path:
        err_console.print(f"full log: {exc.log_path}", markup=False, highlight=False, soft_wrap=True)
    if exc.run_folder and (exc.run_folder / "index.html").exists():
        err_console.print(f"run page: {exc.run_folder / 'index.html'}", markup=False, highlight=False, soft_wrap=True)


def _print_summary(summary) -> None:
    table = Table(title=f"taxifare local run — {summary.wall_s:.1f} s", title_justify="left")
    table.add_column("step")
    table.add_column("wall s", justify="right")
    table.add_column("start+exit s", justify="right")  # wall minus time in the step's own function
    table.add_column("facts", overflow="fold")
    for name, timing in summary.steps.items():
        facts = summary.facts.get(name) or ({"cached": True} if timing.cached else {})
        shown = {k: v for k, v in facts.items() if not _is_path(v)}  # paths get their own lines below
        table.add_row(
            name,
            "cached" if timing.cached else f"{timing.wall_s:.2f}" if timing.wall_s is not None else "?",
            f"{timing.overhead_s:.2f}" if timing.overhead_s is not None else "",
            ", ".join(f"{k}={_short(v)}" for k, v in shown.items()),
        )
    console.print(table)
    if not math.isnan(summary.predict_rmse) and summary.predict_rmse >= 0:
        console.print(f"endpoint RMSE on the validation sample: {summary.predict_rmse:.3f}")
    paths = {
        "model": summary.facts.get("export", {}).get("uri"),
        "evaluation": summary.facts.get("train", {}).get("evaluation"),
        "tensorboard": summary.facts.get("train", {}).get("tensorboard"),
        "predictions": summary.facts.get("predict", {}).get("predictions"),
        "artifacts": summary.run_dir or summary.pipeline_root,
        "logs": summary.run_folder / "logs" if summary.run_folder else None,
    }
    for label, value in paths.items():
        if value:
            console.print(f"{label + ':':<13}{value}", highlight=False, soft_wrap=True)
    if summary.run_folder and (summary.run_folder / "index.html").exists():
        console.print(f"{'run page:':<13}{summary.run_folder / 'index.html'}  (taxifare ui serves it)", soft_wrap=True)
    if summary.endpoint_kept:
        console.print(
            f"endpoint left running at {summary.endpoint_url}; stop it with "
            f"`taxifare stop-endpoint` (state in {summary.pipeline_root.parent / 'state'})",
            soft_wrap=True,
        )


def _is_path(value) -> bool:
    return isinstance(value, str) and (value.startswith(("gs://", "/")) or "://" in value)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def export_command(
    model_dir: Path = typer.Argument(..., help="Trainer output dir, export/exporter dir, or a SavedModel."),
    bucket: str = typer.Option(..., help="The ML bucket (no gs://)."),
    prefix: str = typer.Option("taxifare", help="Folder inside the bucket."),
) -> None:
    """Publish a SavedModel to gs://BUCKET/PREFIX/models/<version>/ and check it predicts."""
    from trainer import export, predictor, storage

    try:
        result = export.export_model(model_dir, bucket=bucket, prefix=prefix)
    except (export.ExportError, predictor.ModelNotFoundError, storage.StorageError, ValueError) as exc:
        _fail(str(exc))
    console.print_json(json.dumps({"uri": result.uri, "version": result.version}))


def deploy_command(
    model_uri: str = typer.Argument(..., help="Exported model: gs:// URI or local folder."),
    name: str = typer.Option("taxifare", help="Endpoint name; an endpoint of that name gets the new model."),
    port: int | None = typer.Option(None, help="Port (default: the old endpoint's, else a free one)."),
    state_dir: Path | None = typer.Option(None, help="Where endpoint state lives (default ~/.cache/taxifare)."),
) -> None:
    """Serve a model at a local loopback endpoint (the pipeline's deploy step, target local)."""
    import os

    from trainer import local_endpoint

    if state_dir:
        os.environ["TAXIFARE_STATE_DIR"] = str(state_dir)
    try:
        endpoint = local_endpoint.deploy(model_uri, name, port=port)
    except (local_endpoint.EndpointStartError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"endpoint {name} serves {model_uri} at {endpoint.predict_url} (pid {endpoint.pid})")


def stop_endpoint_command(
    name: str = typer.Argument("taxifare", help="Endpoint name."),
    state_dir: Path | None = typer.Option(None, help="Where endpoint state lives (default ~/.cache/taxifare)."),
) -> None:
    """Stop a local endpoint started by `deploy` or `run --keep-endpoint`."""
    import os

    from trainer import local_endpoint

    if state_dir:
        os.environ["TAXIFARE_STATE_DIR"] = str(state_dir)
    if local_endpoint.stop(name):
        console.print(f"stopped endpoint {name}")
    else:
        console.print(f"no endpoint {name} is running")


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_command)
    app.command("run")(run_command)
    app.command("export")(export_command)
    app.command("deploy")(deploy_command)
    app.command("stop-endpoint")(stop_endpoint_command)
