"""`taxifare ingest` / `taxifare validate` through the real CLI against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from trainer import synth


@pytest.fixture
def run_cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr


@pytest.mark.parametrize(
    "args, text",
    [
        (["ingest", "synthetic://?rows=ten"], "synthetic:// parameter rows='ten'"),
        (["ingest", "bq://x.y", "--bucket", "b-1"], "bq:// table 'x.y'"),
        (["ingest", "synthetic://?rows=10", "--bucket", "Bad Bucket"], "bucket 'Bad Bucket': only lowercase letters"),
        (
            ["ingest", "/no/such/file.csv", "--local-root", "/tmp/taxifare-cli-test"],
            "source not found: /no/such/file.csv",
        ),
        (["validate", "/no/train.csv", "/no/valid.csv"], "not found: /no/train.csv"),
    ],
)
def test_bad_input_is_one_line(run_cli, gcs_emulator, args, text):
    _one_line_error(run_cli(*args), text)


def test_missing_bucket_is_one_line(run_cli, gcs_emulator):
    result = run_cli("ingest", "synthetic://?rows=10", "--bucket", "missing-bucket-x")
    _one_line_error(result, "bucket gs://missing-bucket-x does not exist")


def test_ingest_then_validate_dataset(run_cli, bucket, tmp_path):
    first = run_cli("ingest", "synthetic://?rows=800&seed=2", "--bucket", bucket, "--prefix", "cli", "--json")
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    assert len(result["uploaded"]) == 3

    again = run_cli("ingest", "synthetic://?rows=800&seed=2", "--bucket", bucket, "--prefix", "cli")
    assert again.exit_code == 0
    assert f"dataset {result['dataset_id']}" in again.stdout
    assert "uploaded 0, skipped 3" in again.stdout

    checked = run_cli(
        "validate", "--dataset", result["dataset_uri"], "--out", str(tmp_path / "v"), "--smoke-steps", "0"
    )
    assert checked.exit_code == 0, checked.output
    assert "train:" in checked.stdout and (tmp_path / "v" / "report.md").is_file()


def test_validate_fails_on_dirty_data(run_cli, tmp_path, gcs_emulator):
    train = synth.write_csv(tmp_path / "train.csv", rows=90, layout="lab", seed=1)
    with open(train, "a") as handle:
        handle.write("oops,1,2\n" * 10)
    valid = synth.write_csv(tmp_path / "valid.csv", rows=50, layout="lab", seed=2)
    result = run_cli("validate", str(train), str(valid), "--out", str(tmp_path / "v"), "--smoke-steps", "0")
    _one_line_error(result, "wrong_column_count=10")
    assert str(tmp_path / "v" / "quarantine.jsonl") in result.stderr


def test_ingest_in_shards_to_a_local_root(run_cli, tmp_path):
    source = "synthetic://?rows=2000&layout=dated&seed=1"
    root = str(tmp_path / "root")
    first = run_cli("ingest", source, "--local-root", root, "--shard-bytes", "40000", "--no-progress", "--json")
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    train = result["train"]
    assert 1 < -(-train["bytes"] // 40000) <= len(train["shards"]) <= -(-train["bytes"] // 40000) + 1
    assert Path(train["uri"]).is_dir()
    assert sorted(p.name for p in Path(train["uri"]).iterdir()) == [Path(s["uri"]).name for s in train["shards"]]

    again = run_cli("ingest", source, "--local-root", root, "--shard-bytes", "40000", "--no-progress")
    assert again.exit_code == 0, again.output
    assert f"in {len(train['shards'])} shards" in again.stdout and "uploaded 0" in again.stdout

    _one_line_error(
        run_cli("ingest", source, "--local-root", root, "--shard-bytes", "0"),
        "shard_bytes=0: expected a positive number of bytes",
    )
