"""``taxifare bench``: every benchmark and the reliability suite in one run (``make bench``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        out: str = typer.Option(
            "build/bench", "--out", help="Where report.md, report.json and each area's figures go."
        ),
        quick: bool = typer.Option(
            False,
            "--quick",
            help="Small sizes: checks the whole bench in a few minutes; figures are not the real ones.",
        ),
        only: str = typer.Option(
            "",
            "--only",
            help="Comma-separated sections to run, e.g. scale,cv (an unknown name lists them all); default all.",
        ),
        reliability: str = typer.Option(
            "run",
            "--reliability",
            help="run: run the reliability suite now; collect: report the figures of its last run.",
        ),
    ) -> None:
        """Run every benchmark (model quality, training throughput, serving, ingest, local pipeline) and the
        reliability suite; write OUT/report.md and OUT/report.json."""
        from pipelines.bench.all import SECTIONS, render_table, run_all

        sections = tuple(s.strip() for s in only.split(",") if s.strip()) or SECTIONS
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise typer.BadParameter(
                f"unknown sections {unknown}; expected some of {', '.join(SECTIONS)}", param_hint="--only"
            )
        if reliability not in ("run", "collect"):
            raise typer.BadParameter("expected run or collect", param_hint="--reliability")
        report = run_all(out, quick=quick, sections=sections, reliability=reliability)
        typer.echo(render_table(report))
        typer.echo(f"wrote {out}/report.md and {out}/report.json")
        failed = [name for name, section in report["sections"].items() if not section.get("ok")]
        if failed:
            typer.echo(f"failed sections: {', '.join(failed)}", err=True)
            raise typer.Exit(1)
