"""Validation in BigQuery for ``bq://`` sources: no row passes through the pipeline task.

One query job runs the script of ``trainer.validate_sql`` (the same checks as
``trainer.validate_rows``, generated from ``trainer.schema``): every row of the train and valid
tables is checked once, quarantined rows go to a table (split, reason, detail, the raw fields),
clean rows are exported as headerless CSV shards ``<export_prefix>/<split>/<split>-*.csv``, and the counts
per split and reason come back as the job's result. The outcome is a ``ValidationResult`` like the
local step's (same counts, same failure rule, ``validate._failures``), with the quarantine table
and the shard patterns in place of local files.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter

from trainer import schema, storage
from trainer.ingest_bigquery import BIGQUERY_ENDPOINT_ENV, _bigquery_client, parse_bigquery
from trainer.ingest_sources import SourceError
from trainer.validate import _failures
from trainer.validate_report import reasons_table
from trainer.validate_result import SPLITS, SplitReport, ValidationError, ValidationResult
from trainer.validate_rows import InvariantError
from trainer.validate_sql import REASON_HEADER, SPLIT_BY_KEY, export_uri, validation_sql

logger = logging.getLogger(__name__)

JOB_PREFIX = "taxifare_validate_"


class BigQueryValidationResult(ValidationResult):
    """A ``ValidationResult`` whose clean rows are GCS shards and whose quarantine is a table."""

    quarantine_table: str
    export_uris: dict[str, str]  # split → gs://…/<split>-*.csv
    export_shards: dict[str, list[str]]  # split → the shards the export wrote
    job_id: str
    location: str | None = None


def _table_id(text: str) -> str:
    """``project.dataset.table`` from that text or a ``bq://project.dataset.table`` source."""
    if not text.startswith("bq://"):
        text = "bq://" + text
    try:
        source = parse_bigquery(text)
    except SourceError as exc:
        raise ValidationError(str(exc)) from None
    params = source.params
    if "query" in params:
        raise ValidationError(f"{text}: validation in BigQuery reads tables; save the query's result as a table")
    return f"{params['table_project']}.{params['dataset']}.{params['table']}"


def warehouse_tables(source: str, valid_source: str | None = None) -> dict[str, str | None] | None:
    """For a ``bq://`` table source (and a ``bq://`` table or nothing as ``valid_source``): the
    tables to validate in BigQuery, ``{"train": …, "valid": … or None (split by key)}``. None for
    any other source, which is copied into the bucket and checked by a task (a ``bq://?query=``
    source included: its result is extracted, as before)."""
    sources = [source] + ([valid_source] if valid_source else [])
    if not all(text.startswith("bq://") for text in sources):
        return None
    parsed = [parse_bigquery(text).params for text in sources]
    if any("query" in params for params in parsed):
        return None
    tables = [f"{p['table_project']}.{p['dataset']}.{p['table']}" for p in parsed]
    return {"train": tables[0], "valid": tables[1] if valid_source else None}


def _layout_of(columns: dict[str, dict[str, str]], layout: str | None) -> schema.Layout:
    """The layout every table has all the columns of (``layout`` names it, or it is found)."""
    candidates = [schema.get_layout(layout)] if layout and layout != "auto" else list(schema.LAYOUTS.values())
    for lay in candidates:
        if all(set(lay.columns) <= set(cols) for cols in columns.values()):
            return lay
    described = "; ".join(f"{table}: {', '.join(cols)}" for table, cols in columns.items())
    wanted = " or ".join(f"{lay.name} ({', '.join(lay.columns)})" for lay in candidates)
    raise ValidationError(f"source tables lack the columns of {wanted}: {described}")


def _split_report(split: str, table: str, uri: str, counts: Counter, max_rows: int | None) -> SplitReport:
    header = counts.pop(REASON_HEADER, 0)
    clean = counts.pop(None, 0)
    reasons = dict(sorted(counts.items()))
    quarantined = sum(reasons.values())
    rows = clean + quarantined
    if max_rows is not None and rows + header != max_rows:
        raise InvariantError(
            f"{table}: {max_rows} rows but {clean} clean + {quarantined} quarantined + {header} header"
        )
    return SplitReport(
        name=split,
        source=f"bq://{table}",
        clean_path=uri,
        lines=rows + header,
        rows=rows,
        clean=clean,
        quarantined=quarantined,
        header_lines=header,
        blank_lines=0,
        reasons=reasons,
        bad_fraction=(quarantined / rows) if rows else 0.0,
        final_newline=True,
        clean_crc32c="",  # BigQuery does not report one; the shards' own CRC32C are in GCS
    )


def _shards(export_prefix: str, split: str) -> list[str]:
    """The objects an export of ``split`` to ``export_prefix`` wrote (``<split>/<split>-000000000000.csv``, …)."""
    folder = export_uri(export_prefix, split).rsplit("/", 1)[0] + "/"
    shard = re.compile(rf"{re.escape(split)}-\d+\.csv")
    return [uri for uri in storage.list_blobs(folder) if shard.fullmatch(uri[len(folder) :])]


def _markdown(lay: schema.Layout, reports: dict[str, SplitReport], max_bad: float, failures, quarantine, uris) -> str:
    verdict = "PASSED" if not failures else "FAILED"
    lines = [
        "# Data validation (BigQuery)",
        "",
        f"**{verdict}** — layout `{lay.name}`, max_bad_fraction {max_bad:.1%}.",
        "",
        "| split | source | rows | clean | quarantined | bad share | header | clean shards |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for rep in reports.values():
        lines.append(
            f"| {rep.name} | `{rep.source}` | {rep.rows} | {rep.clean} | {rep.quarantined} | "
            f"{rep.bad_fraction:.2%} | {rep.header_lines} | `{uris[rep.name]}` |"
        )
    if table := reasons_table(reports):
        lines += [*table, "", f"Quarantine table: `{quarantine}` (split, reason, detail and the raw fields)."]
    if failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def validate_bigquery(
    train: str,
    valid: str | None,
    export_prefix: str,
    *,
    valid_fraction: float | None = None,
    quarantine_table: str | None = None,
    layout: str | None = None,
    max_bad_fraction: float = 0.05,
    project: str | None = None,
    location: str | None = None,
    endpoint: str | None = None,
    client=None,
) -> BigQueryValidationResult:
    """Validate the ``train`` and ``valid`` tables (``bq://project.dataset.table`` or
    ``project.dataset.table``) in BigQuery — or, with ``valid=None``, the one table ``train`` split
    by ingest's rule (``valid_fraction`` of the keys' buckets to valid); clean rows land in ``<export_prefix>/<split>/<split>-*.csv``.

    ``quarantine_table`` defaults to ``<train table>_quarantine`` (replaced on each run), and
    shards of an earlier export to ``export_prefix`` are deleted before the job. Jobs run
    in ``project`` (else the train table's project) at ``location``. Raises ValidationError (with
    ``.result``) when a split is empty or its bad share exceeds ``max_bad_fraction``.
    """
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import DefaultCredentialsError

    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction={max_bad_fraction}: expected a number from 0 to 1")
    if valid is None:
        if valid_fraction is None or not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"valid_fraction={valid_fraction}: one table is split by key; expected 0 < f < 1")
        tables = {SPLIT_BY_KEY: _table_id(train)}
    else:
        tables = {"train": _table_id(train), "valid": _table_id(valid)}
    first = next(iter(tables.values()))
    quarantine = _table_id(quarantine_table) if quarantine_table else first + "_quarantine"
    uris = {split: export_uri(export_prefix, split) for split in SPLITS}
    # Shards of an earlier export to the same prefix are BigQuery's output, not data: a smaller
    # export would leave some of them behind, so they go first.
    for split in SPLITS:
        for stale in _shards(export_prefix, split):
            storage.delete(stale)
    if client is None:
        job_project = project or first.split(".", 1)[0]
        try:
            client = _bigquery_client(job_project, endpoint or os.environ.get(BIGQUERY_ENDPOINT_ENV))
        except DefaultCredentialsError as exc:
            raise ValidationError(
                "no Google credentials for BigQuery (run `gcloud auth application-default login`): "
                + storage.first_line(exc)
            ) from None
    try:
        found = {split: client.get_table(table) for split, table in tables.items()}
        columns = {tables[s]: {f.name: f.field_type for f in t.schema} for s, t in found.items()}
        lay = _layout_of(columns, layout)
        types = {}
        for cols in columns.values():
            for name in lay.columns:
                if types.setdefault(name, cols[name]) != cols[name]:
                    raise ValidationError(f"column {name} is {types[name]} in one table and {cols[name]} in another")
        sql = validation_sql(lay, tables, quarantine, export_prefix, types, valid_fraction)
        job = client.query(sql.script, location=location, job_id_prefix=JOB_PREFIX)
        counted = {split: Counter() for split in SPLITS}
        for row in job.result():
            counted[row["split"]][row["reason"]] += row["row_count"]
    except gexc.GoogleAPICallError as exc:
        raise ValidationError(f"BigQuery {exc.code}: {storage.short_message(exc)}") from None

    def table_rows(table) -> int | None:
        return None if table.streaming_buffer else table.num_rows

    if SPLIT_BY_KEY in tables:
        reports = {split: _split_report(split, first, uris[split], counted[split], None) for split in SPLITS}
        total, seen = table_rows(found[SPLIT_BY_KEY]), sum(r.lines for r in reports.values())
        if total is not None and seen != total:
            raise InvariantError(f"{first}: {total} rows but the splits account for {seen}")
    else:
        reports = {
            split: _split_report(split, tables[split], uris[split], counted[split], table_rows(found[split]))
            for split in SPLITS
        }
    shards = {split: _shards(export_prefix, split) for split in SPLITS}
    for split, rep in reports.items():
        if rep.clean and not shards[split]:
            raise InvariantError(f"{uris[split]}: BigQuery reported {rep.clean} clean {split} rows but wrote no shard")
    failures = _failures(reports, max_bad_fraction)
    result = BigQueryValidationResult(
        layout=lay.name,
        train=reports["train"],
        valid=reports["valid"],
        max_bad_fraction=max_bad_fraction,
        passed=not failures,
        failures=failures,
        quarantine=f"bq://{quarantine}",
        quarantine_uri=f"bq://{quarantine}",
        report_path="",
        report_markdown=_markdown(lay, reports, max_bad_fraction, failures, quarantine, uris),
        quarantine_table=quarantine,
        export_uris=uris,
        export_shards=shards,
        job_id=job.job_id,
        location=job.location,
    )
    for rep in reports.values():
        logger.info(
            "%s: %d rows, %d clean, %d quarantined %s", rep.name, rep.rows, rep.clean, rep.quarantined, rep.reasons
        )
    if failures:
        raise ValidationError(
            "validation failed: " + "; ".join(failures) + f"; quarantined rows: bq://{quarantine}", result
        )
    return result
