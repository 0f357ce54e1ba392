"""Local prediction: `python -m trainer.predict` and `taxifare predict`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainer import schema

REPO = Path(__file__).resolve().parents[1]


def _run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "trainer.predict", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def _instances_file(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_module_predicts_the_labs_test_json(lab_model_dir, tmp_path):
    test_json = _instances_file(tmp_path / "test.json", [json.dumps(schema.LAB_TEST_INSTANCE)])
    result = _run_module("--model-dir", str(lab_model_dir / "export" / "exporter"), "--json-instances", str(test_json))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert list(json.loads(lines[0])) == ["fare_amount"]
    assert 0 < json.loads(lines[0])["fare_amount"] < 200


def test_json_lines_in_order_and_single_saved_model(lab_model_dir, tmp_path):
    from trainer.predict import predict_file
    from trainer.predictor import find_saved_model

    near = {**schema.LAB_TEST_INSTANCE, "dropofflon": -73.886, "dropofflat": 40.774}
    far = {**schema.LAB_TEST_INSTANCE, "dropofflon": -73.7781, "dropofflat": 40.6413}
    path = _instances_file(
        tmp_path / "i.json", [json.dumps(schema.LAB_TEST_INSTANCE), "", json.dumps(near), json.dumps(far)]
    )
    saved_model = find_saved_model(lab_model_dir)
    from trainer import predict

    runner_out = []

    class _Out:
        def write(self, text):
            runner_out.append(text)

        def flush(self):
            pass

    assert predict.run(saved_model, path, out=_Out()) == 0
    fares = [json.loads(line)["fare_amount"] for line in "".join(runner_out).splitlines()]
    assert fares == pytest.approx(predict_file(lab_model_dir, path))
    assert len(fares) == 3
    # The same instance in another file position gives the same fare; order is kept.
    single = _instances_file(tmp_path / "one.json", [json.dumps(near)])
    assert predict_file(saved_model, single)[0] == pytest.approx(fares[1], rel=1e-5)
    assert fares[1] != pytest.approx(fares[2])


def test_pretty_printed_single_object(lab_model_dir, tmp_path):
    from trainer.predict import predict_file, read_instances

    path = tmp_path / "test.json"
    path.write_text("\n" + json.dumps(schema.LAB_TEST_INSTANCE, indent=2) + "\n")
    assert read_instances(path) == [(2, schema.LAB_TEST_INSTANCE)]
    assert len(predict_file(lab_model_dir, path)) == 1


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"passengers": "two"}, "passengers", "string"),
        ({"pickuplat": None}, "pickuplat", ""),
        ({"dropofflon": float("nan")}, "dropofflon", ""),
        ({"colour": "yellow"}, "colour", ""),
    ],
)
def test_bad_instance_exit_2_names_line_and_field(lab_model_dir, tmp_path, capsys, bad, field, words):
    from trainer import predict

    instance = {**schema.LAB_TEST_INSTANCE, **bad}
    lines = [json.dumps(schema.LAB_TEST_INSTANCE), json.dumps(instance)]
    path = _instances_file(tmp_path / "bad.json", lines)
    assert predict.run(lab_model_dir, path) == 2
    err = capsys.readouterr().err
    assert f"{path}: line 2: field '{field}'" in err
    assert words in err
    assert "Traceback" not in err


def test_missing_field_and_broken_json(lab_model_dir, tmp_path, capsys):
    from trainer import predict

    missing = {k: v for k, v in schema.LAB_TEST_INSTANCE.items() if k != "dropofflat"}
    path = _instances_file(tmp_path / "m.json", ["", json.dumps(missing)])
    assert predict.run(lab_model_dir, path) == 2
    assert "line 2: field 'dropofflat'" in capsys.readouterr().err
    broken = _instances_file(tmp_path / "b.json", [json.dumps(schema.LAB_TEST_INSTANCE), '{"pickuplon": -73.9,'])
    assert predict.run(lab_model_dir, broken) == 2
    assert "line 2: not valid JSON" in capsys.readouterr().err
    good = _instances_file(tmp_path / "g.json", [json.dumps(schema.LAB_TEST_INSTANCE)])
    assert predict.run(tmp_path / "no-model", good) == 2
    assert "no-model" in capsys.readouterr().err


@pytest.mark.slow
def test_module_error_has_no_traceback(lab_model_dir, tmp_path):
    path = _instances_file(tmp_path / "bad.json", [json.dumps({**schema.LAB_TEST_INSTANCE, "passengers": "x"})])
    result = _run_module("--model-dir", str(lab_model_dir), "--json-instances", str(path))
    assert result.returncode == 2
    assert "line 1: field 'passengers'" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_taxifare_predict_dated(dated_model_dir, tmp_path):
    from pipelines.cli import app

    second = {**schema.DATED_TEST_INSTANCE, "pickup_datetime": "2014-06-02 08:15:00 UTC"}
    path = _instances_file(tmp_path / "d.json", [json.dumps(schema.DATED_TEST_INSTANCE), json.dumps(second)])
    result = CliRunner().invoke(app, ["predict", "--model-dir", str(dated_model_dir), "--json-instances", str(path)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and all(set(r) == {"fare_amount"} for r in rows)

    bad = {**schema.DATED_TEST_INSTANCE, "pickup_datetime": "yesterday"}
    path = _instances_file(tmp_path / "bad.json", [json.dumps(schema.DATED_TEST_INSTANCE), json.dumps(bad)])
    result = CliRunner().invoke(app, ["predict", "--model-dir", str(dated_model_dir), "--json-instances", str(path)])
    assert result.exit_code == 2
    assert "line 2: field 'pickup_datetime'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
