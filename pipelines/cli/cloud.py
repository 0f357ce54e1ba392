"""CLI verbs for the cloud: config, submit (Vertex AI Pipelines or a KFP cluster), setup-gcp."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipelines.cloud import PLATFORMS

console = Console()
err_console = Console(stderr=True)

DEFAULT_TEMPLATE = Path("build/pipelines/taxifare.yaml")


# typer shows an Enum's members as the choices of --target
Target = Enum("Target", {name: name for name in PLATFORMS}, type=str)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def _settings(config: Path | None, **overrides):
    from trainer.config import ConfigError, load_settings

    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        _fail(str(exc))


def config_command(
    config: Path | None = typer.Option(
        None, "--config", help="Config file (default $TAXIFARE_CONFIG or taxifare.yaml)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Print the effective configuration: each value and where it came from (validated)."""
    from components.fingerprint import image_reference
    from trainer.config import describe

    settings = _settings(config)
    # what make image builds and the compiled spec names: the repository tagged with the code's hash
    rows = [*describe(settings, config), ("code_image", image_reference(settings.image), "image + code hash")]
    if json_out:
        console.print_json(json.dumps({name: value for name, value, _ in rows}))
        return
    table = Table(title="taxifare configuration", show_lines=False)
    out = Console()  # sized at call time ($COLUMNS)
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for name, value, source in rows:
        table.add_row(name, value or "-", source)
    out.print(table)


def submit_command(
    target: Target = typer.Option(..., "--target", help="vertex (Vertex AI Pipelines) or kfp (a KFP cluster)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Pipeline parameter NAME=VALUE (repeatable)."),
    params_file: Path | None = typer.Option(
        None, "--params-file", help="YAML/JSON mapping of pipeline parameters (--param wins)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the run; exit non-zero unless it succeeds."),
    api_endpoint: str | None = typer.Option(None, "--api-endpoint", help="Vertex AI API endpoint (overrides config)."),
    host: str | None = typer.Option(None, "--host", help="KFP API URL, e.g. http://localhost:8080 (target kfp)."),
    experiment: str | None = typer.Option(None, "--experiment", help="KFP experiment name (target kfp)."),
    template: Path = typer.Option(DEFAULT_TEMPLATE, "--template", help="Compiled pipeline spec to submit."),
    compile_first: bool = typer.Option(True, "--compile/--no-compile", help="Compile the taxifare pipeline first."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Let unchanged steps reuse earlier results."),
    run_id: str | None = typer.Option(None, "--run-id", help="Job id / run name (default <pipeline>-<UTC time>)."),
    pipeline_root: str | None = typer.Option(
        None, "--pipeline-root", help="KFP only: artifact root (default: the cluster's store)."
    ),
    poll_interval: float = typer.Option(30.0, "--poll-interval", help="Seconds between state checks with --wait."),
    config: Path | None = typer.Option(None, "--config", help="Config file."),
) -> None:
    """Submit the compiled pipeline to Vertex AI Pipelines or a Kubeflow Pipelines cluster."""
    from pipelines import params
    from pipelines.cloud import submit

    settings = _settings(config, api_endpoint=api_endpoint)
    if target is Target.kfp and not host:
        _fail("--host is required with --target kfp (the KFP API URL, e.g. http://localhost:8080)")
    if target is Target.vertex and (host or experiment):
        _fail("--host and --experiment are for --target kfp")
    try:
        given = {**_read_params_file(params_file), **params.parse_assignments(param)}
    except params.ParameterError as exc:
        _fail(str(exc))
    if compile_first:
        from pipelines.compile import compile_pipeline

        if template != DEFAULT_TEMPLATE:
            _fail("--template with --compile would be overwritten; add --no-compile to submit it as it is")
        template = compile_pipeline("taxifare", DEFAULT_TEMPLATE.parent)
    elif not template.is_file():
        _fail(f"{template} does not exist; run `taxifare compile` (or drop --no-compile)")

    def show_state(state: str) -> None:
        console.print(f"state: {state}")

    try:
        if target is Target.vertex:
            result = submit.submit_vertex(
                template,
                settings,
                given,
                enable_caching=cache,
                run_id=run_id,
                wait=wait,
                poll_interval_s=poll_interval,
                on_state=show_state,
            )
        else:
            result = submit.submit_kfp(
                template,
                settings,
                host,
                given,
                experiment=experiment,
                run_name=run_id,
                enable_caching=cache,
                pipeline_root=pipeline_root,
                wait=wait,
                poll_interval_s=poll_interval,
                on_state=show_state,
            )
    except params.ParameterError as exc:
        _fail(str(exc))
    except submit.SubmitError as exc:
        _fail(str(exc), code=1)
    console.print(f"submitted {template} to {target.value}: {result.resource}", highlight=False, soft_wrap=True)
    console.print(f"state: {result.state}", highlight=False)
    console.print(f"follow it at {result.url}", highlight=False, soft_wrap=True)


def _read_params_file(path: Path | None) -> dict:
    import yaml

    from pipelines.params import ParameterError

    if path is None:
        return {}
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"--params-file {path}: {exc}") from None
    if not isinstance(values, dict):
        raise ParameterError(f"--params-file {path}: expected a mapping of parameter names to values")
    return values


def setup_gcp_command(
    apply: bool = typer.Option(False, "--apply", help="Run the commands (default: print them)."),
    account_name: str = typer.Option("taxifare-pipelines", "--account-name", help="Service account name to create."),
    repository: str = typer.Option("taxifare", "--repository", help="Artifact Registry repository for the image."),
    submitter: str | None = typer.Option(
        None, "--submitter", help="Member allowed to run as the account, e.g. user:me@example.com."
    ),
    config: Path | None = typer.Option(None, "--config", help="Config file."),
) -> None:
    """Create the bucket, a dedicated service account and least-privilege bindings (dry run by default)."""
    from pipelines.cloud import setup_gcp

    settings = _settings(config)
    steps = setup_gcp.plan(settings, account_name=account_name, repository=repository, submitter=submitter)
    if not apply:
        console.print("# dry run: these commands would run (add --apply to run them)", highlight=False)
        console.print(setup_gcp.script(steps), highlight=False, markup=False, soft_wrap=True)
        return
    try:
        setup_gcp.apply(steps, echo=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
    except (setup_gcp.SetupError, FileNotFoundError) as exc:
        _fail(str(exc), code=1)
    console.print(
        f"done: bucket gs://{settings.bucket}, service account {setup_gcp.service_account_email(settings, account_name)}"
    )


def register(app: typer.Typer) -> None:
    app.command("config")(config_command)
    app.command("submit")(submit_command)
    app.command("setup-gcp")(setup_gcp_command)
