"""`taxifare run --spec FILE`: a compiled spec's parameters are checked against the spec's own
declaration, and every mistake is one error line naming it, before anything runs (no pipeline run
here: the slow suite runs a spec for real, see test_pipeline_local)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from components import fingerprint
from pipelines.cli import app
from pipelines.compile import compile_pipeline

runner = CliRunner()


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    return {name: compile_pipeline(name, out) for name in ("taxifare", "taxifare_sweep")}


def _run(workdir, *args):
    result = runner.invoke(app, ["run", "--workdir", str(workdir), *args])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result, errors


@pytest.mark.parametrize(
    "spec, param, named",
    [
        ("taxifare", "train_stepz=5", "unknown parameter 'train_stepz'"),
        ("taxifare", "train_steps=many", "parameter 'train_steps': Input should be a valid integer"),
        ("taxifare", "learning_rate=fast", "parameter 'learning_rate': Input should be a valid number"),
        # the sweep's spec has no train_steps (its trials carry them): checked against that spec
        ("taxifare_sweep", "train_steps=5", "unknown parameter 'train_steps'"),
        ("taxifare_sweep", "trials=[1, 2", "parameter 'trials': Input should be a valid list"),
    ],
)
def test_a_bad_parameter_is_one_error_line_before_anything_runs(specs, tmp_path, spec, param, named):
    result, errors = _run(tmp_path / "work", "--spec", str(specs[spec]), "-p", param)
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and named in errors[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "work").exists()  # no emulator, no run folder, no task


def test_a_missing_or_foreign_spec_is_one_error_line(tmp_path):
    result, errors = _run(tmp_path / "work", "--spec", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and errors == [f"error: --spec {tmp_path / 'nope.yaml'}: no such file"]
    other = tmp_path / "notes.yaml"
    other.write_text("title: not a pipeline\n")
    result, errors = _run(tmp_path / "work", "--spec", str(other))
    assert result.exit_code == 2 and len(errors) == 1 and "not a compiled KFP pipeline spec" in errors[0]
    broken = tmp_path / "broken.yaml"
    broken.write_text("root: [unclosed\n")
    result, errors = _run(tmp_path / "work", "--spec", str(broken))
    assert result.exit_code == 2 and len(errors) == 1 and "not YAML" in errors[0], result.output
    assert not (tmp_path / "work").exists()


def test_a_spec_compiled_from_other_code_is_named_step_by_step(specs, tmp_path):
    """A bad bucket stops the run before anything starts; the note comes before it."""
    stop = ["-p", "bucket=Bad_Bucket"]
    result, errors = _run(tmp_path / "work", "--spec", str(specs["taxifare"]), *stop)
    assert result.exit_code == 2 and "Bad_Bucket" in errors[0] and "note:" not in result.output
    train = fingerprint.step_fingerprint("components.train")
    other = tmp_path / "other.yaml"
    other.write_text(specs["taxifare"].read_text().replace(train, "0123456789abcdef"))
    result, errors = _run(tmp_path / "work", "--spec", str(other), *stop)
    assert result.exit_code == 2 and "Bad_Bucket" in errors[0]
    assert f"note: {other} was compiled from other code for train;" in " ".join(result.output.split())
