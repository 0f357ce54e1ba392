"""The static page of a local run, in the spirit of the KFP UI's run view, and the index of the runs."""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from pipelines.local import run_record
from pipelines.local.page_assets import INDEX_JS, RUN_JS, document, for_comparison

PAGE_FILE = "index.html"
_TEXT_PREVIEW = 12_000  # characters of a text artifact shown on the page


def write_run_page(run_folder: str | Path, record: dict, *, index: bool = True) -> Path:
    """Write `record` as run_folder/run.json and the run's page as run_folder/index.html; returns the page.

    The record is completed first (``run_record.save_record``: the run's name, the outputs of its
    cached steps, the log tail of its failure). With `index`, the runs index next to it is written again.
    """
    run_folder = Path(run_folder)
    run_folder.mkdir(parents=True, exist_ok=True)
    record = run_record.save_record(run_folder, record)
    page = run_folder / PAGE_FILE
    _write_atomic(page, render_run_page(run_folder, record))
    if index:
        write_index(run_folder.parent)
    return page


def write_index(root: str | Path) -> Path:
    """Write root/index.html: every run folder under `root` (the runs folder), newest first, with a
    comparison of the runs ticked; returns the page."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    page = root / PAGE_FILE
    _write_atomic(page, render_index(run_record.load_records(root)))
    return page


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _seconds(value) -> str:
    return f"{value:.1f} s" if run_record.finite(value) else ""


def _when(epoch) -> str:
    if not run_record.finite(epoch):
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _href(target: str | Path, base: Path) -> str:
    """A relative link from the folder `base` to a local file (kept relative for file:// and http)."""
    relative = os.path.relpath(Path(target), base)
    return "/".join(quote(part) for part in Path(relative).parts)


def _kv_table(items: dict, base: Path | None = None) -> str:
    if not items:
        return '<p class="muted small">none</p>'
    rows = []
    for key, value in items.items():
        text = _e(_fmt(value))
        if base is not None and isinstance(value, str) and value.startswith("/") and Path(value).exists():
            text = f'<a href="{_e(_href(value, base))}">{text}</a>'
        rows.append(f"<tr><td>{_e(key)}</td><td>{text}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>'


def _params_table(record: dict) -> str:
    """Every parameter of the run, those left at the pipeline's default marked as such."""
    params, defaults = record.get("params") or {}, set(record.get("defaults") or ())
    if not params:
        return '<p class="muted small">none</p>'
    rows = [
        f'<tr class="{"default" if key in defaults else "given"}"><td>{_e(key)}</td><td>{_e(_fmt(value))}</td>'
        f'<td class="muted small">{"default" if key in defaults else "given"}</td></tr>'
        for key, value in params.items()
    ]
    return f'<table class="kv params">{"".join(rows)}</table>'


def render_dag(steps: Sequence[dict], link_prefix: str = "#step-") -> str:
    """The steps as an inline SVG graph, top to bottom in layers (a step below everything it runs after)."""
    names = [s["name"] for s in steps]
    layer: dict[str, int] = {}
    for step in steps:  # records list steps after the steps they depend on
        parents = [p for p in step.get("after", []) if p in names]
        layer[step["name"]] = 1 + max((layer.get(p, 0) for p in parents), default=-1)
    rows: dict[int, list[dict]] = {}
    for step in steps:
        rows.setdefault(layer[step["name"]], []).append(step)
    width, height, gap_x, gap_y, pad = 220, 58, 20, 34, 10
    columns = max((len(r) for r in rows.values()), default=1)
    total_w = columns * width + (columns - 1) * gap_x + 2 * pad
    total_h = len(rows) * height + (len(rows) - 1) * gap_y + 2 * pad
    where: dict[str, tuple[float, float]] = {}
    for index, row in sorted(rows.items()):
        row_w = len(row) * width + (len(row) - 1) * gap_x
        left = (total_w - row_w) / 2
        for i, step in enumerate(row):
            where[step["name"]] = (left + i * (width + gap_x), pad + index * (height + gap_y))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {total_w:.0f} {total_h:.0f}" '
        f'width="{total_w:.0f}" height="{total_h:.0f}" role="img" aria-label="pipeline graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#9aa0a6"/></marker></defs>',
    ]
    for step in steps:
        x2, y2 = where[step["name"]]
        for parent in step.get("after", []):
            if parent not in where:
                continue
            x1, y1 = where[parent]
            sx, sy, ex, ey = x1 + width / 2, y1 + height, x2 + width / 2, y2 - 2
            mid = (sy + ey) / 2
            parts.append(
                f'<path class="edge" d="M {sx:.1f} {sy:.1f} C {sx:.1f} {mid:.1f}, {ex:.1f} {mid:.1f}, '
                f'{ex:.1f} {ey:.1f}" marker-end="url(#arrow)"/>'
            )
    icons = {"succeeded": "✓", "failed": "✕", "cached": "↻", "not run": "–"}
    for step in steps:
        x, y = where[step["name"]]
        state = step.get("state", "not run")
        sub = _node_caption(step)
        parts.append(
            f'<a href="{_e(link_prefix + step["name"])}"><g class="node s-{state.replace(" ", "-")}" '
            f'data-step="{_e(step["name"])}" data-state="{_e(state)}" transform="translate({x:.1f},{y:.1f})">'
            f"<title>{_e(step['name'])}: {_e(state)}{_e(' · ' + sub if sub else '')}</title>"
            f'<rect width="{width}" height="{height}" rx="8"/>'
            f'<circle cx="22" cy="{height / 2:.0f}" r="11"/>'
            f'<text class="icon" x="22" y="{height / 2 + 4:.0f}" text-anchor="middle">{icons.get(state, "?")}</text>'
            f'<text x="44" y="24">{_e(step["name"])}</text>'
            f'<text class="sub" x="44" y="42">{_e(sub)}</text></g></a>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _node_caption(step: dict) -> str:
    state = step.get("state")
    if state == "cached":
        return "cached" + (" (cache hit)" if step.get("from_run") else "")
    if state == "not run":
        return "not run"
    seconds = _seconds(step.get("wall_s")) or _seconds(step.get("in_step_s"))
    return f"{state} · {seconds}" if seconds else state


def _markdown(text: str) -> str:
    """Markdown to HTML with raw HTML escaped (markdown-it-py, which rich brings); else preformatted."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return f"<pre>{_e(text)}</pre>"
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _read_text(path: Path, limit: int = _TEXT_PREVIEW) -> tuple[str, bool]:
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    return data[:limit].decode("utf-8", "replace"), len(data) > limit


def _size(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


_OPEN_KINDS = ("metrics", "markdown", "html", "model")


def render_artifact(artifact: dict, run_folder: Path) -> str:
    """One artifact in a <details> block (open for what is read: metrics, reports, the evaluation, the model)."""
    name, kind = artifact.get("name", "?"), artifact.get("kind", "file")
    return (
        f'<details class="artifact" data-artifact="{_e(name)}" data-kind="{_e(kind)}"'
        f'{" open" if kind in _OPEN_KINDS else ""}><summary>{_e(name)} <span class="muted small">{_e(kind)}</span>'
        f"</summary>{_artifact_body(artifact, run_folder)}</details>"
    )


def _artifact_body(artifact: dict, run_folder: Path) -> str:
    """Metrics as a table, Markdown rendered, HTML embedded, the rest named with a preview."""
    name, kind, uri = artifact.get("name", "?"), artifact.get("kind", "file"), artifact.get("uri", "")
    metadata = artifact.get("metadata") or {}
    path = Path(uri) if uri and "://" not in uri else None
    exists = path is not None and path.exists()
    where = f"<code>{_e(uri)}</code>"
    if exists:
        where += f" · {_e(_size(path))}" if path.is_file() else ""
        where += f' · <a href="{_e(_href(path, run_folder))}">open</a>' if path.is_file() else ""
    where = f'<p class="small muted">{where}</p>'
    described = _kv_table(metadata) if metadata and kind != "metrics" else ""
    if kind == "metrics":
        values = metadata
        if not values and exists:
            try:
                values = json.loads(path.read_text())
            except (OSError, ValueError):
                values = {}
        rows = "".join(
            f'<tr><td>{_e(k)}</td><td class="num">{_e(_fmt(v))}</td></tr>' for k, v in sorted(values.items())
        )
        return f'{where}<table class="metrics"><tr><th>metric</th><th class="num">value</th></tr>{rows}</table>'
    if path is not None and not exists:
        return where + '<p class="muted small">not on this machine any more</p>'
    if kind == "markdown" and exists:
        text, cut = _read_text(path, 200_000)
        return f'{where}<div class="md">{_markdown(text)}</div>' + ("<p class='muted'>…</p>" if cut else "")
    if kind == "html" and exists:
        page = path.read_text(encoding="utf-8", errors="replace")
        # Embedded whole (the page needs nothing else), sandboxed: no scripts, no access to this page.
        return f'{where}<iframe title="{_e(name)}" sandbox="" srcdoc="{html.escape(page, quote=True)}"></iframe>'
    if kind == "model" and exists:
        board = path / "tensorboard"
        shown = where + described
        if board.is_dir():
            shown += (
                f'<p>TensorBoard log dir: <code class="tensorboard">{_e(board)}</code><br>'
                f'<span class="muted small">view it with <code>make tensorboard LOGDIR={_e(board)}</code></span></p>'
            )
        return shown
    if kind in ("jsonl", "dataset", "file") and exists and path.is_file():
        text, cut = _read_text(path, 4000)
        lines = text.splitlines()[: 5 if kind == "jsonl" else 4]
        return f"{where}{described}<pre>{_e(chr(10).join(lines))}{chr(10) + '…' if cut or len(lines) < len(text.splitlines()) else ''}</pre>"
    return where + described


def _step_section(step: dict, run_folder: Path) -> str:
    state = step.get("state", "not run")
    name = step["name"]
    log = run_record.log_file(run_folder, name)
    bits = [f'<span class="pill {state.replace(" ", "-")}">{_e(state)}</span>']
    if run_record.finite(step.get("wall_s")):
        bits.append(f'<span>wall <b class="duration">{_seconds(step["wall_s"])}</b></span>')
    if run_record.finite(step.get("in_step_s")):
        bits.append(f'<span class="muted">in step {_seconds(step["in_step_s"])}</span>')
    bits.append(f'<span class="muted">cache hit: {"yes" if state == "cached" else "no"}</span>')
    if step.get("code_fingerprint"):
        bits.append(
            f'<span class="muted small" title="the step\'s code, part of its cache key">code {_e(step["code_fingerprint"])}</span>'
        )
    if step.get("from_run"):
        bits.append(f'<span class="muted small">outputs of run {_e(step["from_run"])}</span>')
    if log.is_file():
        bits.append(f'<a class="log" href="{_e(_href(log, run_folder))}">log</a>')
    body = [
        f'<section class="card step" id="step-{_e(name)}" data-step="{_e(name)}" data-state="{_e(state)}">',
        f'<div class="step-head"><h2>{_e(name)}</h2>{"".join(bits)}</div>',
    ]
    if step.get("error"):
        body.append(f'<h3>error</h3><pre class="error">{_e(step["error"])}</pre>')
    if step.get("facts"):
        body.append("<h3>facts</h3>" + _kv_table(step["facts"], run_folder))
    if step.get("outputs"):
        body.append("<h3>output parameters</h3>" + _kv_table(step["outputs"], run_folder))
    if state == "cached" and not step.get("artifacts") and not step.get("facts"):
        body.append('<p class="muted small">answered from the cache; its outputs are those of an earlier run.</p>')
    if state == "not run":
        body.append('<p class="muted small">did not run.</p>')
    for artifact in step.get("artifacts") or []:
        body.append(render_artifact(artifact, run_folder))
    body.append("</section>")
    return "".join(body)


def render_run_page(run_folder: Path, record: dict) -> str:
    run_folder = Path(run_folder)
    status = record.get("status", "?")
    steps = record.get("steps") or []
    rmse = record.get("rmse")
    header = [
        '<header><div><div class="crumbs small"><a href="../index.html">all runs</a></div>',
        f'<h1>{_e(record.get("pipeline", ""))} · <span class="run-id">{_e(record.get("run", ""))}</span></h1></div>',
        f'<span class="pill {_e(status)}" id="status">{_e(status)}</span>',
        f'<div><div class="muted small">started</div>{_e(_when(record.get("started")))}</div>',
        f'<div><div class="muted small">duration</div>{_e(_seconds(record.get("wall_s")))}</div>',
    ]
    if rmse is not None:
        header.append(
            f'<div><div class="muted small">endpoint RMSE (validation sample)</div>'
            f'<span class="big" id="rmse">{rmse:.3f}</span></div>'
        )
    header.append("</header>")
    left = [f'<div class="dag card"><h2>graph</h2>{render_dag(steps)}</div>']
    right = []
    failure = record.get("failure")
    if failure:
        log = run_record.log_file(run_folder, failure.get("step") or "")
        log_link = f' · <a href="{_e(_href(log, run_folder))}">full log</a>' if log.is_file() else ""
        right.append(
            '<section class="card failure" id="failure">'
            f'<h2>step <span id="failed-step">{_e(failure.get("step") or "?")}</span> failed</h2>'
            f'<pre class="error">{_e(failure.get("error", ""))}</pre>'
            + (
                f"<h3>last lines of its log{log_link}</h3><pre class='log-tail'>{_e(failure['log_tail'])}</pre>"
                if failure.get("log_tail")
                else f"<p class='small'>{log_link[3:]}</p>"
            )
            + "</section>"
        )
    right.append(f'<section class="card" id="params"><h2>input parameters</h2>{_params_table(record)}</section>')
    outputs = dict(record.get("outputs") or {})
    endpoint = record.get("endpoint") or {}
    if endpoint.get("url"):
        outputs["endpoint"] = endpoint["url"] + ("" if endpoint.get("kept") else " (stopped)")
    right.append(f'<section class="card" id="outputs"><h2>run outputs</h2>{_kv_table(outputs)}</section>')
    right += [_step_section(step, run_folder) for step in steps]
    links = [f'record <a href="{run_record.RECORD_FILE}">{run_record.RECORD_FILE}</a>']
    run_log = run_folder / run_record.LOG_DIR / run_record.RUN_LOG
    if run_log.is_file():
        links.append(
            f'the whole run\'s output <a class="run-log" href="{_e(_href(run_log, run_folder))}">{run_log.name}</a>'
        )
    if record.get("artifacts_dir"):
        links.append(f"artifacts in <code>{_e(record['artifacts_dir'])}</code>")
    links.append(f"page written {_e(_when(time.time()))}")
    body = (
        "".join(header)
        + f"<main><div>{''.join(left)}</div><div>{''.join(right)}</div></main>"
        + f"<footer>{' · '.join(links)}</footer>"
    )
    return document(f"{record.get('pipeline', '')} {record.get('run', '')} · {status}", body, RUN_JS)


def render_index(records: Sequence[dict]) -> str:
    rows = []
    for i, record in enumerate(records):
        run = record.get("run") or record.get("_dir")
        folder = record.get("_dir") or run
        defaults = set(record.get("defaults") or ())
        given = {k: v for k, v in (record.get("params") or {}).items() if k not in defaults}
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(given.items()))
        if defaults:
            params += f" (and {len(defaults)} at their default)"
        failed = (record.get("failure") or {}).get("step")
        status = record.get("status", "?") + (f" ({failed})" if failed else "")
        rmse = record.get("rmse")
        rows.append(
            f'<tr data-run="{_e(run)}"><td><input type="checkbox" class="pick" value="{_e(run)}"'
            f'{" checked" if i < 2 else ""} aria-label="compare {_e(run)}"></td>'
            f'<td><a href="{_e(quote(folder))}/{PAGE_FILE}">{_e(run)}</a></td>'
            f'<td><span class="pill {_e(record.get("status", ""))}">{_e(status)}</span></td>'
            f"<td>{_e(_when(record.get('started')))}</td>"
            f'<td class="num">{_e(_seconds(record.get("wall_s")))}</td>'
            f'<td class="num rmse">{_e(f"{rmse:.3f}" if run_record.finite(rmse) else "")}</td>'
            f'<td class="params">{_e(params)}</td></tr>'
        )
    payload = json.dumps(run_record.json_safe([for_comparison(r) for r in records])).replace("<", "\\u003c")
    table = (
        '<table class="runs"><tr><th>compare</th><th>run</th><th>status</th><th>started</th><th>wall</th>'
        f"<th>RMSE</th><th>parameters</th></tr>{''.join(rows)}</table>"
        if rows
        else '<p class="muted">No runs yet: <code>make run</code> writes one.</p>'
    )
    body = (
        f"<header><h1>local runs</h1><span class='muted'>{len(records)} run{'s' if len(records) != 1 else ''}, "
        "newest first</span></header>"
        f'<div style="padding:20px 24px"><section class="card"><h2>runs</h2>{table}</section>'
        '<section class="card"><h2>comparison</h2><div id="compare"></div></section></div>'
        f'<script type="application/json" id="runs-data">{payload}</script>'
        f"<footer>page written {_e(_when(time.time()))}</footer>"
    )
    return document("taxifare local runs", body, INDEX_JS)
