"""The one command line of the project: ``taxifare <verb>``.

Verbs follow the lab: synth, train, predict, ingest, validate, export, deploy, serve; and
around them: run, compile, submit, sweep, config, setup-gcp, bench. Each area registers its
verbs from its own module so that the CLI stays a thin layer over plain functions.
"""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(
    name="taxifare",
    help="taxifare pipelines: the taxifare model as Kubeflow Pipelines components.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that each define register(app). Listed here so `taxifare --help` shows every verb.
_AREAS = (
    "pipelines.cli.trainer",
    "pipelines.cli.serve",
    "pipelines.cli.pipeline",
    "pipelines.cli.cloud",
    "pipelines.cli.sweep",
    "pipelines.cli.bench",
    "pipelines.cli.data",
    "pipelines.cli.ui",
)


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging; `run` shows every task's output."),
) -> None:
    ctx.obj = {"verbose": verbose}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _name in _AREAS:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()
