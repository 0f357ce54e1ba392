"""Trainer verbs: ``taxifare train``, ``taxifare predict`` and ``taxifare synth``."""

from __future__ import annotations

from pathlib import Path

import typer

from trainer import schema

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def train_command(ctx: typer.Context) -> None:
    """Train, evaluate and export the model: the lab's trainer.task flags (--output_dir, --train_steps, ...; --help for all)."""
    from trainer import task

    code = task.main(list(ctx.args))
    if code:
        raise typer.Exit(code=code)


def predict_command(
    json_instances: Path = typer.Option(
        ..., "--json-instances", "--json_instances", help="One JSON instance per line, or a single JSON object."
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", "--model_dir", help="A SavedModel, or an export/exporter folder (newest export used)."
    ),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="Instead of a model dir: a prediction URL (the pipeline's predict step)."
    ),
    batch_size: int = typer.Option(100, "--batch-size", min=1, help="Instances per request (with --endpoint)."),
) -> None:
    """Predict fares locally (--model-dir) or through an endpoint (--endpoint): one JSON object
    {"fare_amount": ...} per instance, in order."""
    from trainer import predict

    if (model_dir is None) == (endpoint is None):
        typer.echo("error: give exactly one of --model-dir and --endpoint", err=True)
        raise typer.Exit(code=predict.EXIT_USER_ERROR)
    if endpoint is not None:
        code = predict.run_endpoint(endpoint, json_instances, batch_size=batch_size)
    else:
        code = predict.run(model_dir, json_instances)
    if code:
        raise typer.Exit(code=code)


def synth_command(
    out: Path = typer.Option(Path("build/data/taxi-synth.csv"), "--out", help="CSV file to write."),
    rows: int = typer.Option(10_000, "--rows", min=0, help="Number of trips."),
    layout: str = typer.Option("lab", "--layout", help="lab (7 columns) or dated (8 columns, with pickup time)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same file."),
    header: bool = typer.Option(False, "--header/--no-header", help="Write a header line."),
) -> None:
    """Write synthetic NYC taxi trips (the project's embedded default data)."""
    from trainer import synth

    if layout not in schema.LAYOUTS:
        typer.echo(f"error: --layout {layout!r}: expected one of {', '.join(schema.LAYOUTS)}", err=True)
        raise typer.Exit(code=2)
    path = synth.write_csv(out, rows=rows, layout=layout, seed=seed, header=header)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("train", context_settings=_PASS_THROUGH, add_help_option=False)(train_command)
    app.command("predict")(predict_command)
    app.command("synth")(synth_command)
