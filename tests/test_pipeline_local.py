"""The whole pipeline under kfp.local against the GCS emulator and a local endpoint."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from components import fingerprint
from pipelines.compile import compile_pipeline
from pipelines.local.emulator import GcsEmulator
from pipelines.local.run import RunError, graph_steps, run_local
from pipelines.taxifare import taxifare
from tests.fixtures.code import copy_of_the_code
from trainer import storage
from trainer.ingest import SourceError
from trainer.synth import write_csv

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

SMALL = {
    "source": "synthetic://?rows=3000&layout=lab&seed=7",
    "train_steps": 150,
    "smoke_steps": 5,
    "sample_size": 50,
}


def _bucket_objects(workdir: Path, bucket: str = "taxifare-local") -> dict[str, str]:
    """name → crc32c of every object the run left in the (persistent) emulator bucket."""
    with GcsEmulator(data_dir=workdir / "gcs") as emulator, mock.patch.dict(os.environ, emulator.env()):
        return {blob.name: blob.crc32c for blob in storage.client().list_blobs(bucket)}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline-run")
    return workdir, run_local(workdir=workdir, params=SMALL)


def test_full_run_every_step_and_artifact(first_run):
    workdir, summary = first_run
    assert list(summary.steps) == [name for name, _ in graph_steps(taxifare)]
    assert not any(t.cached for t in summary.steps.values())
    assert all(t.wall_s > 0 and t.overhead_s is not None for t in summary.steps.values())
    facts = summary.facts
    assert facts["ingest"]["train_rows"] + facts["ingest"]["valid_rows"] == 3000
    assert facts["ingest"]["train"].startswith("gs://taxifare-local/taxifare/data/")
    assert facts["validate"]["clean_rows"] + facts["validate"]["bad_rows"] == 3000
    assert facts["export"]["uri"].startswith("gs://taxifare-local/taxifare/models/")
    assert 0 < summary.predict_rmse < 15 and math.isfinite(summary.predict_rmse)
    predictions = Path(facts["predict"]["predictions"]).read_text().splitlines()
    assert len(predictions) == 51  # the validation sample plus the lab's test.json instance
    last = json.loads(predictions[-1])
    assert "label" not in last and last["fare_amount"] > 2.5
    evaluation = Path(facts["train"]["evaluation"]).read_text()
    assert evaluation.count("data:image/png;base64,") == 2
    # The run stopped the endpoint it started.
    assert summary.endpoint_kept is False
    state = workdir / "state" / "endpoints" / "taxifare.json"
    assert not state.exists()
    objects = _bucket_objects(workdir)
    version = facts["export"]["version"]
    assert f"taxifare/models/{version}/saved_model.pb" in objects
    assert f"taxifare/models/{version}/taxifare_model.json" in objects


def test_rerun_reuses_cached_steps(first_run):
    workdir, first = first_run
    before = _bucket_objects(workdir)
    again = run_local(workdir=workdir, params=SMALL)
    for name in ("ingest", "validate", "train", "export"):
        assert again.steps[name].cached, f"{name} should come from the cache"
    # each step's code fingerprint is recorded beside its cache flag, the same as the first run's
    fingerprints = fingerprint.step_fingerprints()
    for name, timing in again.steps.items():
        assert timing.code_fingerprint == first.steps[name].code_fingerprint == fingerprints[f"components.{name}"]
        assert again.as_dict()["steps"][name]["code_fingerprint"] == timing.code_fingerprint
    for name in ("deploy", "predict"):
        assert not again.steps[name].cached, f"{name} must run again: the endpoint is live state"
    assert again.predict_rmse == pytest.approx(first.predict_rmse)
    assert _bucket_objects(workdir) == before  # nothing uploaded, nothing changed


def _cli_run(*args: str, cwd: Path | None = None, env: dict | None = None) -> dict:
    """`taxifare run … --json` in its own process; the run's summary."""
    summary = Path(args[args.index("--workdir") + 1]) / "summary-cli.json"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", *args, "--json", str(summary)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(summary.read_text())


def test_compiled_yaml_runs_locally_with_a_parameter_override(tmp_path):
    path = compile_pipeline("taxifare", tmp_path / "compiled")
    small = {**SMALL, "source": "synthetic://?rows=1500&layout=dated&seed=3", "train_steps": 50}
    overrides = [item for name, value in small.items() for item in ("-p", f"{name}={value}")]
    summary = _cli_run("--spec", str(path), *overrides, "--workdir", str(tmp_path / "run"), "--no-cache")
    assert math.isfinite(summary["predict_rmse"]) and summary["predict_rmse"] > 0
    assert summary["facts"]["ingest"]["layout"] == "dated"
    assert summary["params"]["train_steps"] == 50
    # the fingerprints the spec was compiled with are those of this code, recorded per step
    fingerprints = fingerprint.step_fingerprints()
    assert {name: step["code_fingerprint"] for name, step in summary["steps"].items()} == {
        name: fingerprints[f"components.{name}"] for name in summary["steps"]
    }
    assert (Path(summary["run_folder"]) / "index.html").exists()


def test_an_edit_reruns_exactly_the_steps_whose_code_imports_it(tmp_path):
    """On a copy of the code (first on the path of the run and of its tasks): an unchanged re-run
    takes every cacheable step from the cache; an edit to a module only the train step imports
    re-runs train and the steps after it; an edit to a module no step imports re-runs nothing."""
    copy = copy_of_the_code(tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    args = [item for name, value in SMALL.items() for item in ("-p", f"{name}={value}")]

    def run() -> dict:
        summary = _cli_run(*args, "--workdir", str(tmp_path / "work"), cwd=copy, env=env)
        return {name: step for name, step in summary["steps"].items()}

    def edit(module: str) -> set[str]:
        """Append a comment to `module`; the steps whose fingerprint changes."""
        before = fingerprint.step_fingerprints(copy)
        with open(copy / module, "a") as out:
            out.write("\n# edited\n")
        after = fingerprint.step_fingerprints(copy)
        return {m.removeprefix("components.") for m in after if after[m] != before[m]}

    cacheable = {"ingest", "validate", "train", "export"}  # deploy and predict never are
    first = run()
    assert not any(step["cached"] for step in first.values())
    unchanged = run()
    assert {name for name, step in unchanged.items() if step["cached"]} == cacheable

    assert edit("trainer/report.py") & cacheable == {"train"}  # the evaluation report: train only
    edited = run()
    assert {name for name, step in edited.items() if step["cached"]} == {"ingest", "validate"}
    assert edited["train"]["code_fingerprint"] != unchanged["train"]["code_fingerprint"]
    assert all(edited[n]["code_fingerprint"] == unchanged[n]["code_fingerprint"] for n in edited if n != "train")

    assert edit("trainer/hypertune.py") == set()  # a Vertex tuning trial's entry point: no step imports it
    assert {name for name, step in run().items() if step["cached"]} == cacheable


def test_missing_source_fails_in_the_ingest_step_and_loses_nothing(first_run):
    workdir, _ = first_run
    before = _bucket_objects(workdir)
    with pytest.raises(RunError, match=r"step ingest failed: .*/no/such/trips\.csv") as caught:
        run_local(workdir=workdir, params={**SMALL, "source": "/no/such/trips.csv"})
    assert "\n" not in str(caught.value)
    assert _bucket_objects(workdir).items() >= before.items()


@pytest.mark.parametrize(
    "source, expected",
    [("synthetic://?rows=lots", "rows='lots'"), ("bq://not a table", "project.dataset.table")],
)
def test_malformed_source_fails_before_anything_runs(tmp_path, source, expected):
    with pytest.raises(SourceError, match=expected):
        run_local(workdir=tmp_path, params={**SMALL, "source": source})
    assert not (tmp_path / "gcs").exists()


def test_too_many_bad_rows_fail_validation_naming_the_quarantine(first_run, tmp_path):
    workdir, _ = first_run
    dirty = tmp_path / "dirty.csv"
    write_csv(dirty, rows=400, layout="lab", seed=11)
    lines = dirty.read_text().splitlines()
    lines[1::4] = [line.replace(",", ",oops,", 1) for line in lines[1::4]]  # 25 % have an extra column
    dirty.write_text("\n".join(lines) + "\n")
    before = _bucket_objects(workdir)
    with pytest.raises(RunError, match=r"step validate failed: .*wrong_column_count.*quarantine") as caught:
        run_local(workdir=workdir, params={**SMALL, "source": str(dirty), "max_bad_fraction": 0.05})
    quarantine = Path(str(caught.value).rsplit("quarantined rows: ", 1)[1])
    assert quarantine.exists()
    assert len(quarantine.read_text().splitlines()) >= 100
    assert _bucket_objects(workdir).items() >= before.items()


def test_bad_bucket_name_fails_before_anything_runs(tmp_path):
    with pytest.raises(storage.BucketNameError, match="Bad_Bucket"):
        run_local(workdir=tmp_path, params={**SMALL, "bucket": "Bad_Bucket"})
    assert not (tmp_path / "gcs").exists()


def test_cli_reports_a_bad_source_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--workdir", str(tmp_path), "--source", "synthetic://?layout=x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "layout" in error_lines[0]
