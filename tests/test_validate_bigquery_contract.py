"""Validation in BigQuery: the real google-cloud-bigquery client against recorded REST answers.

``tests/contracts/bigquery_validate.json`` records what BigQuery answers to tables.get for the two
source tables, then to the script's query job (jobs.insert, jobs.get, jobs.getQueryResults with the
last statement's counts). The requests the client sends are checked: the script is exactly the
statements ``trainer.validate_sql`` generates, and its destinations are the quarantine table and
the GCS shard patterns. While the job "runs", the test writes the export's shards into the GCS
emulator, as BigQuery would. What the statements compute is tested in ``tests/test_validate_sql.py``.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from pathlib import Path

import pytest

from trainer import schema, storage
from trainer import validate_sql as vsql
from trainer.validate_bigquery import JOB_PREFIX, validate_bigquery
from trainer.validate_result import ValidationError
from trainer.validate_rows import InvariantError

CONTRACTS = Path(__file__).parent / "contracts"
TRAIN = "taxi-project.course.taxi_train"
VALID = "taxi-project.course.taxi_valid"
TABLE_PATH = r"/bigquery/v2/projects/taxi-project/datasets/course/tables/(?P<table>{})"


def _write(uri: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "object"
        local.write_text(text)
        storage.upload_file(local, uri, overwrite=True)


@pytest.fixture
def export_player(contract_server):
    """Once the script's job is inserted, write one shard per EXPORT DATA statement into the bucket."""
    stop = threading.Event()

    def play():
        while not stop.is_set():
            for insert in contract_server.calls("POST", r"/bigquery/v2/projects/[^/]+/jobs"):
                for uri in re.findall(
                    r"EXPORT DATA OPTIONS \(uri = '([^']+)'", insert.body["configuration"]["query"]["query"]
                ):
                    _write(uri.replace("*", "000000000000"), "10.5,-73.98,40.75,-73.97,40.76,1,k\n")
                return
            stop.wait(0.01)

    player = threading.Thread(target=play, daemon=True)
    player.start()
    yield
    stop.set()
    player.join(5)


def _recorded_table(interaction: int, table: str) -> dict:
    """The recorded tables.get answer of ``interaction``, filled in for ``table`` of taxi-project.course."""
    recorded = json.loads((CONTRACTS / "bigquery_validate.json").read_text())["interactions"][interaction]["response"]
    text = json.dumps(recorded).replace("${project}", "taxi-project").replace("${dataset}", "course")
    return json.loads(text.replace("${table}", table))


def _insert(contract_server) -> dict:
    (insert,) = contract_server.calls("POST", r"/bigquery/v2/projects/taxi-project/jobs")
    return insert.body


def test_validation_runs_as_one_script(contract_server, bucket, export_player):
    contract_server.load("bigquery_validate")
    prefix = f"gs://{bucket}/runs/7/clean/"
    stale = [prefix + "train/train-000000000009.csv", prefix + "valid/valid-000000000001.csv"]
    for uri in stale:
        _write(uri, "old shard\n")
    _write(prefix + "notes.txt", "kept\n")
    result = validate_bigquery(f"bq://{TRAIN}", VALID, prefix, location="US", endpoint=contract_server.url)

    tables = contract_server.calls("GET", r"/bigquery/v2/projects/taxi-project/datasets/course/tables/.*")
    assert [r.path.rsplit("/", 1)[1] for r in tables] == ["taxi_train", "taxi_valid"]
    body = _insert(contract_server)
    assert body["jobReference"]["jobId"].startswith(JOB_PREFIX)
    assert body["jobReference"]["location"] == "US"
    query = body["configuration"]["query"]
    assert query["useLegacySql"] is False
    expected = vsql.validation_sql(
        schema.LAB,
        {"train": TRAIN, "valid": VALID},
        f"{TRAIN}_quarantine",
        prefix,
        dict.fromkeys(schema.LAB.columns, "STRING"),
    )
    assert query["query"] == expected.script
    assert f"CREATE OR REPLACE TABLE `{TRAIN}_quarantine` AS" in query["query"]
    assert f"uri = '{prefix}train/train-*.csv'" in query["query"]
    assert f"uri = '{prefix}valid/valid-*.csv'" in query["query"]
    # the counts come from the script's last statement, read from the parent job's results
    reads = contract_server.calls("GET", rf"/bigquery/v2/projects/taxi-project/queries/{body['jobReference']['jobId']}")
    assert reads and reads[-1].query.get("maxResults") != "0"

    assert result.passed and result.failures == []
    assert result.layout == "lab"
    assert (result.train.rows, result.train.clean, result.train.quarantined, result.train.header_lines) == (
        999,
        970,
        29,
        1,
    )
    assert result.train.reasons == {"fare_out_of_range": 12, "not_a_number": 3, "outside_nyc": 14}
    assert result.valid.reasons == {"zero_length_trip": 2}
    assert result.bad_by_reason == {
        "fare_out_of_range": 12,
        "not_a_number": 3,
        "outside_nyc": 14,
        "zero_length_trip": 2,
    }
    assert (result.clean_rows, result.bad_rows) == (1169, 31)
    assert result.quarantine_table == f"{TRAIN}_quarantine"
    assert result.export_uris == {"train": f"{prefix}train/train-*.csv", "valid": f"{prefix}valid/valid-*.csv"}
    assert result.export_shards == {
        "train": [f"{prefix}train/train-000000000000.csv"],
        "valid": [f"{prefix}valid/valid-000000000000.csv"],
    }
    # an earlier export's shards were removed; other objects under the prefix were not
    assert storage.list_blobs(prefix) == sorted([*sum(result.export_shards.values(), []), prefix + "notes.txt"])
    assert result.train.clean_path == result.export_uris["train"]
    assert result.job_id == body["jobReference"]["jobId"] and result.location == "US"
    assert "| outside_nyc | 14 | 0 |" in result.report_markdown


def test_bad_share_over_the_limit_fails_with_the_local_rule(contract_server, bucket, export_player):
    contract_server.load("bigquery_validate")
    with pytest.raises(ValidationError) as info:
        validate_bigquery(TRAIN, VALID, f"gs://{bucket}/clean", max_bad_fraction=0.01, endpoint=contract_server.url)
    message = str(info.value)
    assert "train: 29 of 999 rows bad (2.9% > max_bad_fraction 1.0%" in message
    assert "fare_out_of_range=12, not_a_number=3, outside_nyc=14" in message
    assert message.endswith(f"quarantined rows: bq://{TRAIN}_quarantine")
    assert "valid:" not in message  # 1.0% bad is not over 1.0%
    assert info.value.result is not None and not info.value.result.passed


def test_typed_columns_are_read_as_extracted_text(contract_server, bucket, export_player):
    contract_server.load("bigquery_validate")
    typed = {"fare_amount": "FLOAT", "pickup_datetime": "TIMESTAMP", "passenger_count": "INTEGER", "key": "STRING"}
    fields = [{"name": c, "type": typed.get(c, "FLOAT"), "mode": "NULLABLE"} for c in schema.DATED.columns]
    for name, rows in (("taxi_train", "1000"), ("taxi_valid", "201")):
        contract_server.add(
            "GET",
            TABLE_PATH.format(name),
            {
                "kind": "bigquery#table",
                "tableReference": {"projectId": "taxi-project", "datasetId": "course", "tableId": name},
                "schema": {"fields": fields},
                "numRows": rows,
                "type": "TABLE",
                "location": "US",
            },
        )
    result = validate_bigquery(TRAIN, VALID, f"gs://{bucket}/clean", endpoint=contract_server.url)
    assert result.layout == "dated"
    script = _insert(contract_server)["configuration"]["query"]["query"]
    assert f"FORMAT_TIMESTAMP('{schema.DATETIME_FORMAT}', `pickup_datetime`, 'UTC')" in script
    assert "CAST(`passenger_count` AS STRING)" in script


def test_a_table_of_another_shape_is_refused_before_any_job(contract_server, bucket):
    contract_server.load("bigquery_validate")
    contract_server.add(
        "GET",
        TABLE_PATH.format("taxi_valid"),
        {
            "kind": "bigquery#table",
            "tableReference": {"projectId": "taxi-project", "datasetId": "course", "tableId": "taxi_valid"},
            "schema": {"fields": [{"name": "fare", "type": "FLOAT"}, {"name": "key", "type": "STRING"}]},
            "numRows": "5",
            "type": "TABLE",
        },
    )
    with pytest.raises(ValidationError, match=r"source tables lack the columns of lab \(fare_amount, pickuplon"):
        validate_bigquery(TRAIN, VALID, f"gs://{bucket}/clean", endpoint=contract_server.url)
    assert contract_server.calls("POST") == []


def test_a_failed_script_is_one_line(contract_server, bucket):
    contract_server.load("bigquery_validate")
    contract_server.add(
        "POST",
        r"/bigquery/v2/projects/[^/]+/jobs",
        {
            "error": {
                "code": 403,
                "message": "Access Denied: BigQuery BigQuery: Permission denied while writing data to gs://bucket/clean",
                "errors": [{"reason": "accessDenied", "message": "Access Denied"}],
                "status": "PERMISSION_DENIED",
            }
        },
        status=403,
    )
    with pytest.raises(ValidationError) as info:
        validate_bigquery(TRAIN, VALID, f"gs://{bucket}/clean", endpoint=contract_server.url)
    message = str(info.value)
    assert message.startswith("BigQuery 403: Access Denied") and "\n" not in message


def test_sources_must_be_tables():
    with pytest.raises(ValidationError, match="reads tables"):
        validate_bigquery("bq://?query=SELECT%201", VALID, "gs://b/c", client=object())
    with pytest.raises(ValueError, match="gs://"):
        validate_bigquery(TRAIN, VALID, "/local/dir", client=object())


def test_counts_must_add_up_to_the_tables_rows(contract_server, bucket, export_player):
    contract_server.load("bigquery_validate")
    contract_server.add("GET", TABLE_PATH.format("taxi_valid"), {**_recorded_table(1, "taxi_valid"), "numRows": "202"})
    with pytest.raises(InvariantError, match="taxi_valid: 202 rows but 199 clean \\+ 2 quarantined \\+ 0 header"):
        validate_bigquery(TRAIN, VALID, f"gs://{bucket}/clean", endpoint=contract_server.url)


def test_an_export_that_wrote_nothing_is_caught(contract_server, bucket):
    contract_server.load("bigquery_validate")
    with pytest.raises(InvariantError, match="reported 970 clean train rows but wrote no shard"):
        validate_bigquery(TRAIN, VALID, f"gs://{bucket}/clean", endpoint=contract_server.url)


def test_pipeline_steps_keep_a_bigquery_table_in_the_warehouse(
    contract_server, bucket, export_player, tmp_path, monkeypatch
):
    """The ingest and validate steps on a bq:// table: ingest copies nothing, validate splits the one
    table by key, checks and exports it in one query job, and hands the train step the shards."""
    from kfp.dsl import Dataset, Markdown

    from components.ingest import ingest
    from components.validate import validate
    from trainer.ingest_bigquery import BIGQUERY_ENDPOINT_ENV

    contract_server.load("bigquery_validate")
    both_splits = {**_recorded_table(0, "taxi_train"), "numRows": "1201"}  # the one table holds both splits' rows
    contract_server.add("GET", TABLE_PATH.format("taxi_train"), both_splits)
    monkeypatch.setenv(BIGQUERY_ENDPOINT_ENV, contract_server.url)
    monkeypatch.chdir(tmp_path)

    def artifact(kind, name):
        return kind(name=name, uri=str(tmp_path / name), metadata={})

    train, valid = artifact(Dataset, "train"), artifact(Dataset, "valid")
    ingest.python_func(
        source=f"bq://{TRAIN}",
        bucket=bucket,
        prefix="runs",
        valid_source="",
        valid_fraction=0.2,
        project="",
        train_data=train,
        valid_data=valid,
    )
    assert train.uri == valid.uri == f"bq://{TRAIN}"
    prefix = train.metadata["export_prefix"]
    assert prefix.startswith(f"gs://{bucket}/runs/data/bq-") and train.metadata["valid_fraction"] == 0.2
    assert storage.list_blobs(f"gs://{bucket}/runs/") == []  # no row was copied

    clean_train, clean_valid, quarantine = (artifact(Dataset, n) for n in ("clean_train", "clean_valid", "quarantine"))
    report = artifact(Markdown, "report")
    outputs = validate.python_func(
        train_data=train,
        valid_data=valid,
        max_bad_fraction=0.05,
        smoke_steps=10,
        clean_train=clean_train,
        clean_valid=clean_valid,
        quarantine=quarantine,
        report=report,
    )
    script = _insert(contract_server)["configuration"]["query"]["query"]
    assert script.startswith(f"CREATE TEMP FUNCTION {vsql.CRC32_FUNCTION}(")
    assert script.count(f"FROM `{TRAIN}`") == 1 and "taxi_valid" not in script
    assert (outputs.clean_rows, outputs.bad_rows) == (1169, 31)
    assert clean_train.uri == f"{prefix}/train" and clean_valid.uri == f"{prefix}/valid"
    assert storage.list_blobs(clean_train.uri + "/") == [f"{prefix}/train/train-000000000000.csv"]
    assert quarantine.uri == f"bq://{TRAIN}_quarantine" and quarantine.metadata["rows"] == 31
    assert "the rows stay in BigQuery" in Path(report.path).read_text()


def test_the_cli_validates_a_bigquery_table_in_place(contract_server, bucket, export_player, monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app
    from trainer.ingest_bigquery import BIGQUERY_ENDPOINT_ENV

    contract_server.load("bigquery_validate")
    monkeypatch.setenv(BIGQUERY_ENDPOINT_ENV, contract_server.url)
    runner = CliRunner()
    missing = runner.invoke(app, ["validate", f"bq://{TRAIN}", f"bq://{VALID}"])
    assert missing.exit_code == 2 and "needs --export gs://" in missing.output
    done = runner.invoke(app, ["validate", f"bq://{TRAIN}", f"bq://{VALID}", "--export", f"gs://{bucket}/clean"])
    assert done.exit_code == 0, done.output
    assert f"train: 999 rows, 970 clean → gs://{bucket}/clean/train/train-*.csv (1 shard)" in done.output
    assert f"quarantine: bq://{TRAIN}_quarantine" in done.output
