"""``taxifare serve``: the prediction server (the lab's deployed model, served locally)."""

from __future__ import annotations

import os

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        model_dir: str = typer.Option(
            None,
            "--model-dir",
            help="SavedModel, export/exporter folder or training output dir; local path or gs:// "
            "URI. Default: $AIP_STORAGE_URI.",
        ),
        port: int = typer.Option(
            None, "--port", help="Port to listen on; 0 picks a free one. Default: $AIP_HTTP_PORT or 8080."
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; the serving container uses 0.0.0.0."),
        mode: str = typer.Option(
            "batch", "--mode", help="batch (coalesce concurrent requests), inline, or naive (benchmark baseline)."
        ),
        port_file: str = typer.Option(None, "--port-file", help="Write the bound port here once listening."),
    ) -> None:
        """Serve predictions over HTTP: POST {"instances": [...]} to /predict (Vertex AI contract)."""
        from trainer import server

        model_dir = model_dir or os.environ.get("AIP_STORAGE_URI")
        if not model_dir:
            raise typer.BadParameter(
                "--model-dir is required when AIP_STORAGE_URI is not set", param_hint="--model-dir"
            )
        if mode not in server.MODES:
            raise typer.BadParameter(f"expected one of {', '.join(server.MODES)}", param_hint="--mode")
        if port is None:
            port = int(os.environ.get("AIP_HTTP_PORT") or server.DEFAULT_PORT)
        raise typer.Exit(server.serve(model_dir, host=host, port=port, mode=mode, port_file=port_file))
