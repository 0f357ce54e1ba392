"""trainer.task: the lab's command line, and `taxifare train` passing it through."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from trainer import hparams, task


def test_lab_flags_parse():
    args = task.build_parser().parse_args(
        [
            "--train_data_paths=gs://b/taxi-train*",
            "--eval_data_paths=gs://b/taxi-valid*",
            "--output_dir=out",
            "--train_steps=1000",
            "--train_batch_size=128",
            "--hidden_units=128 32 4",
            "--eval_steps=3",
            "--job-dir=gs://b/job",
        ]
    )
    assert args.hidden_units == (128, 32, 4)
    assert (args.train_steps, args.train_batch_size, args.eval_steps) == (1000, 128, 3)
    assert args.job_dir == "gs://b/job"
    defaults = task.build_parser().parse_args(["--train_data_paths=a", "--eval_data_paths=b", "--output_dir=o"])
    assert defaults.train_batch_size == 512
    assert defaults.train_steps == hparams.DEFAULTS["train_steps"]
    assert defaults.hidden_units == hparams.parse_hidden_units(hparams.DEFAULTS["hidden_units"])
    assert (defaults.layout, defaults.seed, defaults.eval_steps) == ("auto", hparams.DEFAULTS["seed"], None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train_data_paths=a", "--eval_data_paths=b"], "--output_dir"),
        (
            ["--train_data_paths=a", "--eval_data_paths=b", "--output_dir=o", "--hidden_units=64 x"],
            "expected layer sizes like",
        ),
        (["--train_data_paths=a", "--eval_data_paths=b", "--output_dir=o", "--train_steps=0"], "must be > 0"),
        (["--train_data_paths=a", "--eval_data_paths=b", "--output_dir=o", "--layout=csv"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    assert task.main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_input_file_exits_3(tmp_path, capsys):
    code = task.main([f"--train_data_paths={tmp_path}/nope.csv", "--eval_data_paths=x", f"--output_dir={tmp_path}"])
    assert code == task.EXIT_DATA
    assert "nope.csv: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_taxifare_train_passes_lab_flags_through(tmp_path, lab_csvs):
    from pipelines.cli import app

    train, valid = lab_csvs
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "train",
            f"--train_data_paths={train}",
            "--eval_data_paths",
            str(valid),
            "--output_dir",
            str(out),
            "--train_steps=30",
            "--hidden_units",
            "16 8",
            "--learning_rate=0.01",
            "--job-dir",
            "ignored",
            "--layout=lab",
            "--eval_steps=1",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "eval_metrics.json").read_text())
    assert metrics["steps"] == 30
    assert metrics["hidden_units"] == [16, 8]
    assert metrics["learning_rate"] == 0.01
    assert metrics["eval_rows"] == min(4096, metrics["eval_rows"])  # one batch of the valid file
    assert len(list((out / "export" / "exporter").iterdir())) == 1


def test_taxifare_train_usage_error_exit_code():
    from pipelines.cli import app

    result = CliRunner().invoke(app, ["train", "--train_steps=-1"])
    assert result.exit_code == 2


def test_feature_switches_reach_the_model(lab_csvs, tmp_path):
    import json

    from trainer import task

    train, valid = lab_csvs
    out = tmp_path / "out"
    code = task.main(
        [
            "--train_data_paths",
            str(train),
            "--eval_data_paths",
            str(valid),
            "--output_dir",
            str(out),
            "--train_steps",
            "20",
            "--embedding_dim",
            "4",
            "--towers",
            "2",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "eval_metrics.json").read_text())
    assert metrics["rmse"] > 0
    (export,) = (out / "export" / "exporter").iterdir()
    import tensorflow as tf

    variables = [v.name for v in tf.saved_model.load(str(export)).variables]
    assert any("embedding" in name for name in variables), variables[:20]
    assert (
        task.main(
            [
                "--train_data_paths",
                str(train),
                "--eval_data_paths",
                str(valid),
                "--output_dir",
                str(out),
                "--embedding_dim",
                "-1",
            ]
        )
        == 2
    )


def test_an_eager_run_takes_the_same_steps_as_a_compiled_one(lab_csvs, tmp_path):
    """validate's smoke run trains eagerly (--eager): the same losses and metrics as the compiled step."""
    from trainer import predictor

    train, valid = lab_csvs
    results = {}
    for name, extra in (("compiled", []), ("eager", ["--eager"])):
        out = tmp_path / name
        argv = task.command_line(str(train), str(valid), str(out), {"train_steps": 10, "batch_size": 64})
        # Each in a process of its own, as the smoke run and the train step are (no state shared).
        command = [sys.executable, "-m", "trainer.task", *argv, "--eval_steps", "1", *extra]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr[-2000:]
        results[name] = json.loads((out / "eval_metrics.json").read_text())
        assert predictor.Predictor.load(out).predict(
            [{"pickuplon": -73.9, "pickuplat": 40.77, "dropofflon": -73.98, "dropofflat": 40.73, "passengers": 2}]
        )
    assert results["eager"]["steps"] == results["compiled"]["steps"] == 10
    assert results["eager"]["rmse"] == pytest.approx(results["compiled"]["rmse"], rel=1e-4)
    assert results["eager"]["mae"] == pytest.approx(results["compiled"]["mae"], rel=1e-4)
