"""bq:// sources: the table or query they name, and the extract job whose CSV shards are read back from the bucket."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import unquote

from trainer import storage
from trainer.ingest_sources import Fetched, Source, SourceError, query_params

BIGQUERY_ENDPOINT_ENV = "TAXIFARE_BIGQUERY_ENDPOINT"
_BQ_PARAMS = ("project", "location", "query")
_BQ_PROJECT = r"(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
_BQ_TABLE = re.compile(
    rf"^(?P<table_project>{_BQ_PROJECT})\.(?P<dataset>[A-Za-z0-9_]{{1,1024}})\.(?P<table>[A-Za-z0-9_$-]{{1,1024}})$"
)


def parse_bigquery(text: str) -> Source:
    rest = text[len("bq://") :]
    target, _, query = rest.partition("?")
    sql = None
    # The SQL is taken verbatim (percent-decoded, '+' kept) from `query=` to the end.
    head, sep, tail = query.partition("query=")
    if sep and (not head or head.endswith("&")):
        sql = unquote(tail).strip()
        query = head.rstrip("&")
        if not sql:
            raise SourceError("bq:// parameter query is empty: expected a SQL SELECT statement")
    params = query_params(text, query, _BQ_PARAMS[:2])
    if sql is not None:
        if target:
            raise SourceError(
                f"bq:// takes either a table (bq://project.dataset.table) or ?query=…, not both; got {target!r} and a query"
            )
        return Source("bigquery", text, {**params, "query": sql})
    if not target:
        raise SourceError("bq:// needs a table (bq://project.dataset.table) or a query (bq://?query=SELECT …)")
    match = _BQ_TABLE.match(target)
    if not match:
        raise SourceError(
            f"bq:// table {target!r}: expected project.dataset.table (project: 6-30 lowercase "
            "letters, digits or '-'; dataset: letters, digits, '_')"
        )
    return Source("bigquery", text, {**params, **match.groupdict()})


def _bigquery_client(project: str | None, endpoint: str | None):
    from google.cloud import bigquery

    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
    return bigquery.Client(project=project)


def extract_bigquery(
    source: Source,
    *,
    bucket: str | None,
    root: str,
    workdir: Path,
    project: str | None,
    endpoint: str | None,
    progress: bool,
) -> Fetched:
    """Extract the table (or the query's result) as CSV shards under ``<root>/staging/`` and download them.

    ``root`` is the dataset root in ``bucket``; BigQuery can only write to a bucket.
    """
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    if not bucket:
        raise SourceError(f"source {source.text}: BigQuery extracts to a bucket; give --bucket")
    params = source.params
    # Jobs run (and are billed) in ?project=, else the configured project, else the table's.
    job_project = params.get("project") or project or params.get("table_project")
    location = params.get("location")
    token = hashlib.sha256(source.text.encode()).hexdigest()[:16]
    staging = storage.join(root, "staging", f"bq-{token}") + "/"
    # Shards of an earlier extract of the same source are BigQuery's output, not data: replace them.
    for stale in storage.list_blobs(staging):
        storage.delete(stale)
    from google.auth.exceptions import DefaultCredentialsError

    try:
        client = _bigquery_client(job_project, endpoint or os.environ.get(BIGQUERY_ENDPOINT_ENV))
    except DefaultCredentialsError as exc:
        raise SourceError(
            f"source {source.text}: no Google credentials for BigQuery "
            f"(run `gcloud auth application-default login`): {storage.first_line(exc)}"
        ) from None
    try:
        if "query" in params:
            query_job = client.query(params["query"], location=location, job_id_prefix="taxifare_query_")
            query_job.result(max_results=0)
            table = query_job.destination
        else:
            table = bigquery.TableReference.from_string(
                f"{params['table_project']}.{params['dataset']}.{params['table']}"
            )
        config = bigquery.ExtractJobConfig(destination_format="CSV", print_header=False)
        extract = client.extract_table(
            table,
            staging + "part-*.csv",
            job_config=config,
            location=location,
            job_id_prefix="taxifare_extract_",
        )
        extract.result()
    except gexc.GoogleAPICallError as exc:
        raise SourceError(f"source {source.text}: BigQuery {exc.code}: {storage.short_message(exc)}") from None
    uris = [u for u in storage.list_blobs(staging) if u.endswith(".csv")]
    if not uris:
        raise SourceError(f"source {source.text}: BigQuery wrote no file under {staging}")
    files = [storage.download_file(uri, workdir / "bq" / Path(uri).name, progress=progress) for uri in uris]
    return Fetched(files)
