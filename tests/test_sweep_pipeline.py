"""Sweeps end to end on this machine: the `taxifare_sweep` pipeline from its compiled YAML under
kfp.local (real training, the GCS emulator, a local endpoint), `taxifare sweep` over a 2×2 grid,
and one Vertex AI tuning trial's entry point run locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from typer.testing import CliRunner

from pipelines.cli import app

pytestmark = pytest.mark.slow

SOURCE = "synthetic://?rows=2000&layout=lab&seed=11"
SMALL = {"hidden_units": "16 8", "batch_size": 64}
BAD = {**SMALL, "learning_rate": 0.01, "train_steps": 5}
GOOD = {**SMALL, "learning_rate": 0.01, "train_steps": 300}  # far more steps: clearly the best
BAD_TOO = {**SMALL, "learning_rate": 0.0005, "train_steps": 5}
COMMON = {"source": SOURCE, "smoke_steps": 3, "compare_rows": 300, "sample_size": 40}


def _steps(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep_yaml(tmp_path_factory):
    from kfp import components

    from pipelines.compile import compile_pipeline

    path = compile_pipeline("taxifare_sweep", tmp_path_factory.mktemp("compiled"))
    return components.load_component_from_file(str(path))


def test_sweep_pipeline_picks_the_best_and_guards_the_endpoint(sweep_yaml, tmp_path, monkeypatch):
    from pipelines.local.run import run_local
    from trainer import local_endpoint

    workdir = tmp_path / "work"
    monkeypatch.setenv("TAXIFARE_STATE_DIR", str(workdir / "state"))  # where run_local keeps endpoints
    try:
        # 1. Nothing is served yet: the only (weak) model is deployed.
        first = run_local(
            workdir=workdir,
            pipeline=sweep_yaml,
            keep_endpoint=True,
            params={**COMMON, "trials": [BAD], "min_improvement": 0.5},
        )
        assert first.outputs["Output"] == "deploy"
        assert first.facts["champion"]["champion_rmse"] is None
        served = local_endpoint.get("taxifare")
        assert served is not None and first.facts["deploy"]["endpoint"] == served.predict_url

        # 2. Three configurations; the one with far more steps wins and beats the served model.
        second = run_local(
            workdir=workdir,
            pipeline=sweep_yaml,
            keep_endpoint=True,
            params={**COMMON, "trials": [BAD, GOOD, BAD_TOO], "min_improvement": 0.5},
        )
        trained = [s for s in _steps(workdir) if s["step"] == "train"]
        assert len(trained) == 2  # the weak configuration came from the cache of the first run
        best = second.facts["select_best"]
        assert best["best_index"] == 1
        assert best["best_rmse"] == min(best["rmses"]) and best["best_rmse"] < 0.6 * max(best["rmses"])
        decision = second.facts["champion"]
        assert decision["decision"] == "deploy" == second.outputs["Output"]
        assert decision["challenger_rmse"] <= decision["champion_rmse"] - 0.5
        assert decision["compared_rows"] == 300
        now_served = local_endpoint.get("taxifare")
        assert now_served.model_uri != served.model_uri and now_served.model_uri == second.facts["export"]["uri"]
        assert 0 <= second.facts["predict"]["rmse"] < decision["champion_rmse"]
        run_dir = second.run_dir
        report = (run_dir / "champion" / "report").read_text()
        assert "**Deploy the challenger**" in report
        assert f"{decision['challenger_rmse']:.4f}" in report and f"{decision['champion_rmse']:.4f}" in report
        leaderboard = (run_dir / "select-best" / "leaderboard").read_text()
        assert "Best: set 1" in leaderboard
        assert "data:image/png;base64," in (run_dir / "select-best" / "plot").read_text()

        # 3. Same sweep, but the bar is higher than any gain: the champion stays, nothing is deployed.
        third = run_local(
            workdir=workdir,
            pipeline=sweep_yaml,
            keep_endpoint=True,
            params={**COMMON, "trials": [BAD, GOOD, BAD_TOO], "min_improvement": 100.0},
        )
        assert third.outputs["Output"] == "keep"
        ran = {s["step"] for s in _steps(workdir)}
        assert "champion" in ran and not ran & {"train", "export", "deploy", "predict"}
        kept = third.facts["champion"]
        assert kept["decision"] == "keep" and kept["champion_rmse"] == pytest.approx(kept["challenger_rmse"], abs=1e-4)
        assert local_endpoint.get("taxifare").pid == now_served.pid
        assert "**Keep the champion**" in (third.run_dir / "champion" / "report").read_text()
    finally:
        local_endpoint.stop("taxifare")


def test_bad_hyperparameter_set_fails_before_any_training(sweep_yaml, tmp_path):
    from pipelines.local.run import RunError, run_local

    with pytest.raises(RunError, match=r"check_trials failed: .*hyperparameter set 1: hidden_units: expected"):
        run_local(
            workdir=tmp_path / "work",
            pipeline=sweep_yaml,
            params={**COMMON, "trials": [GOOD, {**GOOD, "hidden_units": "64 x"}]},
        )
    assert not {s["step"] for s in _steps(tmp_path / "work")} & {"ingest", "train"}


def test_cli_sweep_over_a_2x2_grid_writes_table_csv_and_plot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "no-such-dir" / "taxi-train.csv")
    (tmp_path / "grid.yaml").write_text(f"train_steps: [10, 150]\nsource: ['{SOURCE}', '{missing}']\n")
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            "--grid",
            "grid.yaml",
            "--target",
            "local",
            "--name",
            "grid-test",
            "--parallel",
            "2",
            "-p",
            "learning_rate=0.03",
            "-p",
            "hidden_units=16 8",
            "-p",
            "batch_size=64",
            "-p",
            "smoke_steps=3",
            "-p",
            "sample_size=20",
        ],
    )
    # the two points with a missing source fail; the other two finish and are ranked
    assert result.exit_code == 1, result.output
    assert "2 of 4 grid points failed" in result.output
    out = tmp_path / "build" / "sweep" / "grid-test"
    from trainer import sweep_report

    rows = sweep_report.read_results_csv(out / "results.csv")
    assert [(r["rank"], r["train_steps"], r["source"], r["status"]) for r in rows] == [
        ("1", "150", SOURCE, "succeeded"),
        ("2", "10", SOURCE, "succeeded"),
        ("", "10", missing, "failed"),
        ("", "150", missing, "failed"),
    ]
    assert float(rows[0]["rmse"]) < float(rows[1]["rmse"])
    assert all(missing in r["error"] for r in rows[2:])
    assert all(float(r["endpoint_rmse"]) > 0 for r in rows[:2])
    # every point ran in its own work dir, from the compiled YAML
    assert len({r["run"] for r in rows}) == 4 and all(Path(r["run"], "run.log").exists() for r in rows)
    assert (tmp_path / "build" / "pipelines" / "taxifare.yaml").exists()
    image = matplotlib.image.imread(out / "rmse.png")
    assert image.shape[1] > 1.7 * image.shape[0]  # a panel per swept parameter
    table = result.output[result.output.index("taxifare sweep grid-test") :]
    assert table.index("150") < table.index(" 10 ")  # sorted by RMSE


def test_tuning_trial_entry_point_trains_and_reports_to_hypertune(tmp_path):
    from trainer import synth

    train = synth.write_csv(tmp_path / "train.csv", rows=800, layout="lab", seed=1)
    valid = synth.write_csv(tmp_path / "valid.csv", rows=200, layout="lab", seed=2)
    trial_dir = tmp_path / "tuning" / "7" / "model"
    env = {
        **os.environ,
        "AIP_MODEL_DIR": str(trial_dir),
        "CLOUD_ML_TRIAL_ID": "7",
        "CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "hypertune" / "output.metrics"),
    }
    # the arguments as Vertex passes them: the job's own, then --name=value per hyperparameter
    args = [
        "--train_data_paths",
        str(train),
        "--eval_data_paths",
        str(valid),
        "--output_dir",
        str(tmp_path / "base"),
        "--train_steps",
        "20",
        "--hidden_units=16 8",
        "--learning_rate=0.01",
        "--train_batch_size=64",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "trainer.hypertune", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((trial_dir / "eval_metrics.json").read_text())
    assert metrics["hidden_units"] == [16, 8] and metrics["batch_size"] == 64
    assert not (tmp_path / "base").exists()  # the trial wrote to its own folder only
    (line,) = (tmp_path / "hypertune" / "output.metrics").read_text().splitlines()
    reported = json.loads(line)
    assert reported["trial"] == "7" and float(reported["rmse"]) == pytest.approx(metrics["rmse"])


def test_champion_step_measures_the_served_model_through_its_endpoint(lab_model_dir, tmp_path, monkeypatch):
    from kfp import dsl

    from components.champion import champion
    from trainer import local_endpoint, synth

    monkeypatch.setenv("TAXIFARE_STATE_DIR", str(tmp_path / "state"))
    valid = synth.write_csv(tmp_path / "valid.csv", rows=300, layout="lab", seed=4)
    valid_data = dsl.Dataset(name="clean_valid", uri=str(valid), metadata={"layout": "lab"})
    best = dsl.Model(name="best_model", uri=str(lab_model_dir), metadata={"trial": 0, "rmse": 5.0})
    results = [
        {
            "index": 0.0,
            "hidden_units": "32 16",
            "learning_rate": 0.003,
            "batch_size": 256.0,
            "train_steps": 50.0,
            "seed": 7.0,
            "rmse": 5.0,
            "model": str(lab_model_dir),
        }
    ]

    def decide(name: str, min_improvement: float) -> tuple[str, dict, str]:
        report = dsl.Markdown(name="report", uri=str(tmp_path / name / "report"))
        metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / name / "metrics"))
        verdict = champion.python_func(
            best_model=best,
            valid_data=valid_data,
            results=results,
            target="local",
            endpoint_name="champ",
            project="p",
            region="r",
            min_improvement=min_improvement,
            compare_rows=200,
            batch_size=64,
            report=report,
            metrics=metrics,
        )
        return verdict, dict(metrics.metadata), Path(report.path).read_text()

    verdict, metrics, report = decide("alone", 0.5)
    assert verdict == "deploy" and "champion_rmse" not in metrics and metrics["deploy"] == 1
    assert (
        "no model is being served" in report
        and "| 1 | 0 | 50 | 256 | 32 16 | 0.0030 | 0 | 5 | 5.0000 | succeeded |" in report
    )

    local_endpoint.deploy(str(lab_model_dir), "champ")  # the same model now serves: no gain
    try:
        verdict, metrics, report = decide("same-model", 0.01)
        # through the endpoint and in process, the same model scores the same on the same rows
        assert metrics["champion_rmse"] == pytest.approx(metrics["challenger_rmse"], abs=1e-4)
        assert verdict == "keep" and metrics["deploy"] == 0  # no gain cannot meet a bar of 0.01
        assert "**Keep the champion**" in report and "same 200 clean validation rows" in report
    finally:
        local_endpoint.stop("champ")
