"""The Markdown validation report: counts per split and per reason, the first quarantined lines, the smoke run."""

from __future__ import annotations

import json
from pathlib import Path

from trainer import schema
from trainer.validate_result import SPLITS, SmokeResult, SplitReport

_EXAMPLES = 5


def _examples(quarantine_path: Path, limit: int = _EXAMPLES) -> list[dict]:
    found = []
    with open(quarantine_path) as handle:
        for line in handle:
            if len(found) >= limit:
                break
            found.append(json.loads(line))
    return found


def _md_cell(text: str | None) -> str:
    if text is None:
        return "*(binary)*"
    text = text if len(text) <= 80 else text[:77] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def reasons_table(reports: dict[str, SplitReport]) -> list[str]:
    """Markdown lines: quarantined rows per reason and split (none when nothing was quarantined)."""
    reasons = sorted({r for rep in reports.values() for r in rep.reasons})
    if not reasons:
        return []
    lines = ["", "## Quarantined rows by reason", "", "| reason | train | valid |", "|---|---:|---:|"]
    for reason in reasons:
        counts = " | ".join(str(reports[s].reasons.get(reason, 0)) for s in SPLITS)
        lines.append(f"| {reason} | {counts} |")
    return lines


def render_report(
    layout: schema.Layout,
    reports: dict[str, SplitReport],
    max_bad_fraction: float,
    failures: list[str],
    quarantine_path: Path,
    smoke: SmokeResult | None,
    smoke_note: str,
    quarantine_where: str | None = None,
) -> str:
    verdict = "PASSED" if not failures else "FAILED"
    lines = [
        "# Data validation",
        "",
        f"**{verdict}** — layout `{layout.name}`, max_bad_fraction {max_bad_fraction:.1%}.",
        "",
        "| split | lines | rows | clean | quarantined | bad share | header | blank |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rep in reports.values():
        lines.append(
            f"| {rep.name} | {rep.lines} | {rep.rows} | {rep.clean} | {rep.quarantined} | "
            f"{rep.bad_fraction:.2%} | {rep.header_lines} | {rep.blank_lines} |"
        )
    if table := reasons_table(reports):
        lines += [
            *table,
            "",
            f"Quarantine file: `{quarantine_where or quarantine_path}`",
            "",
            "First quarantined lines:",
            "",
        ]
        lines += ["| split | line | reason | detail | text |", "|---|---:|---|---|---|"]
        for entry in _examples(quarantine_path):
            lines.append(
                f"| {entry['split']} | {entry['line']} | {entry['reason']} | "
                f"{entry['detail'].replace('|', '/')} | {_md_cell(entry.get('text'))} |"
            )
    for rep in reports.values():
        if not rep.final_newline:
            lines += ["", f"Note: the last line of {rep.name} ({rep.source}) has no newline."]
    if failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    lines += ["", "## Smoke run", ""]
    if smoke is not None:
        lines += [
            f"{smoke.steps} training steps on {smoke.train_rows} rows (eval {smoke.valid_rows}) in "
            f"{smoke.seconds:.1f} s; export `{smoke.export_dir}` reloaded; test instance → "
            f"fare {smoke.prediction:.2f}.",
        ]
    else:
        lines.append(smoke_note)
    return "\n".join(lines) + "\n"
