"""Sweep logic: hyperparameter sets, grids, best pick, champion/challenger, CSV/PNG/Markdown output."""

from __future__ import annotations

import json
import math

import matplotlib.image
import pytest
from kfp import dsl

from components.select_best import select_best
from pipelines import params
from pipelines.taxifare import taxifare
from pipelines.taxifare_sweep import DEFAULT_TRIALS, taxifare_sweep
from trainer import hparams, hypertune, selection, sweep_report

TAXIFARE_PARAMS = params.parameters_of(taxifare)


# -- hyperparameter sets -----------------------------------------------------------------------
def test_trials_are_completed_with_defaults_and_exact_types():
    checked = hparams.parse_sets(
        [{"hidden_units": "64,32", "train_steps": 300.0}, {"hidden_units": [8, 4], "learning_rate": 1}], seed=7
    )
    assert checked[0] == {
        "hidden_units": "64 32",
        "learning_rate": 0.003,
        "batch_size": 512,
        "train_steps": 300,
        "embedding_dim": 0,
        "towers": 5,
        "seed": 7,
    }
    assert isinstance(checked[0]["train_steps"], int)  # 300.0 (a JSON/protobuf number) becomes 300
    assert checked[1]["hidden_units"] == "8 4" and checked[1]["learning_rate"] == 1.0


def test_default_trials_of_the_pipeline_are_valid_and_distinct():
    checked = hparams.parse_sets(DEFAULT_TRIALS, seed=42)
    assert len(checked) >= 3
    assert len({json.dumps(t, sort_keys=True) for t in checked}) == len(checked)


@pytest.mark.parametrize(
    ("trials", "expected"),
    [
        ([], "no hyperparameter sets"),
        ([{"steps": 10}], "hyperparameter set 0: steps: unknown name"),
        ([{}, {"learning_rate": "0.1"}], "hyperparameter set 1: learning_rate: expected a number, got str"),
        ([{"train_steps": 1.5}], "train_steps: Input should be a valid integer"),
        ([{"batch_size": 0}], "batch_size: must be > 0, got 0"),
        ([{"hidden_units": "64 x"}], 'hidden_units: expected layer sizes like "64 32"'),
        ([{"hidden_units": "0"}], "expected positive layer sizes"),
        ([{"batch_size": True}], "expected a number, got bool"),
        (["64 32"], "hyperparameter set 0: expected a dict, got str"),
    ],
)
def test_bad_trials_give_one_clear_error(trials, expected):
    with pytest.raises(hparams.HyperparameterError) as info:
        hparams.parse_sets(trials)
    assert expected in str(info.value)


def test_unknown_trial_name_lists_the_valid_names():
    with pytest.raises(
        hparams.HyperparameterError, match="valid names: train_steps, batch_size, hidden_units, learning_rate"
    ):
        hparams.parse_sets([{"hidden_unit": "8"}])


# -- grids -------------------------------------------------------------------------------------
def test_grid_points_are_the_cartesian_product_in_file_order():
    grid = params.parse_grid({"train_steps": [10, 20], "learning_rate": [1, 0.01]}, TAXIFARE_PARAMS)
    assert len(grid) == 4
    assert grid.points() == [
        {"train_steps": 10, "learning_rate": 1.0},
        {"train_steps": 10, "learning_rate": 0.01},
        {"train_steps": 20, "learning_rate": 1.0},
        {"train_steps": 20, "learning_rate": 0.01},
    ]
    assert isinstance(grid.points()[0]["learning_rate"], float)  # an int for a float parameter is fine


def test_grid_is_checked_against_the_sweep_pipeline_too():
    declared = params.parameters_of(taxifare_sweep)
    grid = params.parse_grid({"min_improvement": [0.0, 0.5], "trials": [[{"train_steps": 5}]]}, declared)
    assert len(grid) == 2
    with pytest.raises(params.ParameterError, match="trials\\[0\\]: expected list"):
        params.parse_grid({"trials": [{"train_steps": 5}]}, declared)


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ({}, "the grid is empty"),
        (None, "the grid is empty"),
        ([1, 2], "expected a mapping of parameter → list of values, got list"),
        ({"train_step": [10]}, "unknown parameter 'train_step'; valid names: project, region, bucket"),
        ({"train_steps": [10, 2.5]}, "wrong value type: train_steps[1]: expected int, got float 2.5"),
        ({"train_steps": ["10"]}, "train_steps[0]: expected int, got str '10'"),
        ({"hidden_units": [64]}, "hidden_units[0]: expected str, got int 64"),
        ({"learning_rate": [True]}, "learning_rate[0]: expected float, got bool True"),
        ({"train_steps": 10}, "train_steps: expected a list of values, got int 10"),
        ({"train_steps": []}, "train_steps: the list of values is empty"),
        ({"train_steps": [10, 10]}, "a value is listed twice"),
    ],
)
def test_bad_grid_gives_one_clear_error(grid, expected):
    with pytest.raises(params.ParameterError) as info:
        params.parse_grid(grid, TAXIFARE_PARAMS, source="grid.yaml")
    assert str(info.value).startswith("grid.yaml: ")
    assert expected in str(info.value)


def test_unknown_name_error_lists_every_valid_name():
    with pytest.raises(params.ParameterError) as info:
        params.parse_grid({"steps": [1], "lr": [0.1]}, TAXIFARE_PARAMS)
    message = str(info.value)
    assert "unknown parameters 'steps', 'lr'" in message
    for name in TAXIFARE_PARAMS:
        assert name in message


def test_load_grid_reads_yaml_and_names_the_file(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("train_steps: [100, 300]\nhidden_units: ['64 32', '32 16']\n")
    grid = params.load_grid(path, TAXIFARE_PARAMS)
    assert grid.names == ["train_steps", "hidden_units"] and len(grid) == 4
    path.write_text("train_steps: [100, 300\n")
    with pytest.raises(params.ParameterError, match="grid.yaml: not valid YAML"):
        params.load_grid(path, TAXIFARE_PARAMS)
    path.write_text("")
    with pytest.raises(params.ParameterError, match="grid.yaml: the grid is empty"):
        params.load_grid(path, TAXIFARE_PARAMS)
    with pytest.raises(params.ParameterError, match="no such grid file"):
        params.load_grid(tmp_path / "missing.yaml", TAXIFARE_PARAMS)


def test_fixed_parameters_are_checked_the_same_way():
    assert params.validate(TAXIFARE_PARAMS, {"source": "synthetic://?rows=10"}, strict=True) == {
        "source": "synthetic://?rows=10"
    }
    with pytest.raises(params.ParameterError, match="parameter 'smoke_steps'"):
        params.validate(TAXIFARE_PARAMS, {"smoke_steps": "ten"}, strict=True)


# -- best pick ---------------------------------------------------------------------------------
def test_best_is_the_lowest_rmse_and_ties_go_to_the_earliest():
    assert selection.best_index([3.0, 2.5, 4.0]) == 1
    assert selection.best_index([3.0, 2.0, 2.0, 2.0]) == 1
    assert selection.best_index([float("nan"), None, 5.0, float("inf"), -1.0]) == 2
    with pytest.raises(selection.SweepError, match="no usable RMSE"):
        selection.best_index([float("nan"), None])


def test_rank_puts_failures_last_and_breaks_ties_by_index():
    results = [
        selection.TrialResult(0, {"a": 1}, rmse=3.0),
        selection.TrialResult(1, {"a": 2}, error="trainer exited with code 2"),
        selection.TrialResult(2, {"a": 3}, rmse=2.0),
        selection.TrialResult(3, {"a": 4}, rmse=2.0),
    ]
    assert [r.index for r in selection.rank(results)] == [2, 3, 0, 1]


# -- champion / challenger ---------------------------------------------------------------------
def test_no_champion_deploys():
    decision = selection.decide(3.2, None, min_improvement=0.5)
    assert decision.deploy and decision.verdict == "deploy" and decision.threshold is None


@pytest.mark.parametrize(
    ("challenger", "champion", "min_improvement", "deploy"),
    [
        (3.0, 4.0, 0.5, True),  # better by more than asked
        (3.5, 4.0, 0.5, True),  # better by exactly min_improvement
        (2.1 - 0.1, 2.1, 0.1, True),  # exactly, with float rounding
        (3.6, 4.0, 0.5, False),  # better, but not by enough
        (4.0, 4.0, 0.0, True),  # not worse, no improvement asked
        (4.1, 4.0, 0.0, False),  # worse
    ],
)
def test_champion_challenger_decision_both_ways(challenger, champion, min_improvement, deploy):
    decision = selection.decide(challenger, champion, min_improvement)
    assert decision.deploy is deploy
    assert decision.threshold == pytest.approx(champion - min_improvement)
    assert ("deploy the challenger" if deploy else "keep the champion") in decision.reason


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((3.0, 4.0, -0.1), "min_improvement"),
        ((float("nan"), 4.0, 0.0), "challenger RMSE"),
        ((3.0, float("inf"), 0.0), "champion RMSE"),
    ],
)
def test_decision_rejects_nonsense(args, expected):
    with pytest.raises(selection.SweepError, match=expected):
        selection.decide(*args)


def test_decision_markdown_records_the_decision_and_both_figures():
    decision = selection.decide(3.25, 4.5, 0.5)
    text = sweep_report.decision_markdown(
        decision,
        champion=selection.Champion(4.5, "local endpoint http://127.0.0.1:1234/predict", "gs://b/p/models/1"),
        challenger=selection.TrialResult(1, {"train_steps": 300}, rmse=3.1, run="/root/train/model"),
        compared_rows=300,
        results=[
            selection.TrialResult(0, {"train_steps": 5}, rmse=9.0),
            selection.TrialResult(1, {"train_steps": 300}, rmse=3.1),
        ],
        endpoint_name="taxifare",
    )
    assert "**Deploy the challenger**" in text
    assert "3.2500" in text and "4.5000" in text and "min_improvement: 0.5" in text
    assert "same 300 clean validation rows" in text and "gs://b/p/models/1" in text
    assert "| 1 | 1 | 300 | — | — | — | — | — | 3.1000 | succeeded |" in text  # the sweep table, best first


# -- CSV and PNG -------------------------------------------------------------------------------
def _results():
    return [
        selection.TrialResult(0, {"train_steps": 10, "hidden_units": "8"}, rmse=6.0, metrics={"mae": 4.0}, wall_s=3.0),
        selection.TrialResult(1, {"train_steps": 10, "hidden_units": "16 8"}, rmse=5.0, metrics={"mae": 3.5}),
        selection.TrialResult(2, {"train_steps": 300, "hidden_units": "8"}, error="step train failed: boom"),
        selection.TrialResult(3, {"train_steps": 300, "hidden_units": "16 8"}, rmse=3.0, metrics={"mae": 2.0}),
    ]


def test_results_csv_is_ranked_with_failures_and_their_errors(tmp_path):
    path = sweep_report.write_results_csv(
        _results(), tmp_path / "sweep" / "results.csv", ["train_steps", "hidden_units"]
    )
    rows = sweep_report.read_results_csv(path)
    assert [r["index"] for r in rows] == ["3", "1", "0", "2"]
    assert [r["rank"] for r in rows] == ["1", "2", "3", ""]
    assert rows[0]["rmse"] == "3.0" and rows[0]["mae"] == "2.0" and rows[0]["hidden_units"] == "16 8"
    assert rows[-1]["status"] == "failed" and rows[-1]["error"] == "step train failed: boom"
    assert list(rows[0])[:5] == ["rank", "index", "train_steps", "hidden_units", "rmse"]


def test_plot_has_one_panel_per_swept_parameter(tmp_path):
    path = sweep_report.plot_rmse(_results(), tmp_path / "rmse.png", ["train_steps", "hidden_units"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 1.7 * height  # two panels side by side
    single = sweep_report.plot_rmse(_results(), tmp_path / "one.png", ["train_steps"])
    assert matplotlib.image.imread(single).shape[1] < width


def test_plot_with_no_successful_point_still_writes_a_figure(tmp_path):
    failed = [selection.TrialResult(0, {"train_steps": 1}, error="boom")]
    assert sweep_report.plot_rmse(failed, tmp_path / "none.png", ["train_steps"]).stat().st_size > 0


# -- select_best step with real KFP artifacts --------------------------------------------------
def _model(tmp_path, name, rmse):
    artifact = dsl.Model(name=name, uri=str(tmp_path / name), metadata={"rmse": rmse})
    (tmp_path / name).mkdir()
    return artifact


def _output(cls, tmp_path, name):
    return cls(name=name, uri=str(tmp_path / "out" / name), metadata={})


def test_select_best_points_at_the_winner_and_writes_leaderboard_and_plot(tmp_path):
    trials = hparams.parse_sets([{"train_steps": 5}, {"train_steps": 300}, {"train_steps": 6}], seed=1)
    models = [_model(tmp_path, f"m{i}", r) for i, r in enumerate([9.0, 3.0, 8.5])]
    best, board, plot = (
        _output(dsl.Model, tmp_path, "best"),
        _output(dsl.Markdown, tmp_path, "board"),
        _output(dsl.HTML, tmp_path, "plot"),
    )
    out = select_best.python_func(
        rmses=[9.0, 3.0, 8.5], models=models, trials=trials, best_model=best, leaderboard=board, plot=plot
    )
    assert (out.best_index, out.best_rmse) == (1, 3.0)
    assert best.uri == models[1].uri and best.metadata["train_steps"] == 300 and best.metadata["trial"] == 1
    assert [row["index"] for row in out.results] == [0, 1, 2]
    assert "Best: set 1 (RMSE 3.0000)" in open(board.path).read()
    assert "data:image/png;base64," in open(plot.path).read()


def test_select_best_refuses_collected_outputs_that_disagree(tmp_path):
    trials = hparams.parse_sets([{}, {}])
    models = [_model(tmp_path, "a", 3.0), _model(tmp_path, "b", 4.0)]
    kwargs = dict(
        best_model=_output(dsl.Model, tmp_path, "best"),
        leaderboard=_output(dsl.Markdown, tmp_path, "b"),
        plot=_output(dsl.HTML, tmp_path, "p"),
    )
    with pytest.raises(ValueError, match="disagree at position 0"):
        select_best.python_func(rmses=[4.0, 3.0], models=models, trials=trials, **kwargs)
    with pytest.raises(ValueError, match="collected 1 RMSEs and 2 models for 2"):
        select_best.python_func(rmses=[4.0], models=models, trials=trials, **kwargs)


# -- hyperparameter-tuning trial hook -----------------------------------------------------------
def test_trial_arguments_use_the_trial_folder_and_fuse_paths():
    argv = [
        "--train_data_paths",
        "gs://b/p/train.csv",
        "--eval_data_paths=gs://b/p/valid.csv",
        "--output_dir",
        "gs://b/p/tuning/out",
        "--hidden_units=64 32",
    ]
    args = hypertune.trial_argv(argv, {"AIP_MODEL_DIR": "gs://b/p/tuning/job/7/model/"})
    assert args[:4] == [
        "--train_data_paths",
        "/gcs/b/p/train.csv",
        "--eval_data_paths=/gcs/b/p/valid.csv",
        "--hidden_units=64 32",
    ]
    assert args[-2:] == ["--output_dir", "/gcs/b/p/tuning/job/7/model"]
    assert hypertune.trial_argv(["--output_dir", "/tmp/x"], {}) == ["--output_dir", "/tmp/x"]


def test_metric_is_reported_with_cloudml_hypertune(tmp_path, monkeypatch):
    metric_file = tmp_path / "hypertune" / "output.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(metric_file))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    assert hypertune.report_hypertune_metric(3.25, global_step=300) == metric_file
    (line,) = metric_file.read_text().splitlines()
    record = json.loads(line)
    assert record["rmse"] == "3.25" and record["trial"] == "7" and record["global_step"] == "300"
    assert math.isclose(float(record["rmse"]), 3.25)


# -- the compiled sweep pipeline ---------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_spec(tmp_path_factory):
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path_factory.mktemp("compiled")
    result = CliRunner().invoke(app, ["compile", "--pipeline", "taxifare_sweep", "--out", str(out)])
    assert result.exit_code == 0, result.output
    path = out / "taxifare_sweep.yaml"
    return path, yaml.safe_load(path.read_text())


def test_sweep_compiles_to_its_yaml_with_the_same_bytes_twice(sweep_spec, tmp_path):
    from pipelines.compile import compile_pipeline

    path, spec = sweep_spec
    assert spec["pipelineInfo"]["name"] == "taxifare-sweep"
    assert compile_pipeline("taxifare_sweep", tmp_path).read_bytes() == path.read_bytes()


def test_sweep_graph_trains_in_parallel_then_guards_the_deploy(sweep_spec):
    _, spec = sweep_spec
    root = spec["root"]["dag"]["tasks"]
    assert {"check-trials", "ingest", "validate", "select-best", "champion"} <= set(root)
    assert "check-trials" in root["ingest"]["dependentTasks"]  # bad sets fail before any data moves
    (loop,) = [t for t in root.values() if "parameterIterator" in t]
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("check-trials-Output")
    assert loop["iteratorPolicy"]["parallelismLimit"] >= 2
    loop_tasks = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert list(loop_tasks) == ["train"]
    select_inputs = root["select-best"]["inputs"]
    assert set(select_inputs["parameters"]) >= {"rmses", "trials"} and "models" in select_inputs["artifacts"]
    (condition,) = [t for t in root.values() if "triggerPolicy" in t]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--champion-Output'] == 'deploy'"
    )
    guarded = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert set(guarded) == {"export", "deploy", "predict"}
    assert root["champion"]["cachingOptions"] == {}  # never a cached decision


def test_sweep_parameters_are_typed_documented_and_defaulted(sweep_spec):
    _, spec = sweep_spec
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert set(declared) == set(params.parameters_of(taxifare_sweep))
    for name, definition in declared.items():
        assert "defaultValue" in definition, name
        assert definition.get("description"), f"{name} is not documented"
    assert declared["min_improvement"]["parameterType"] == "NUMBER_DOUBLE"
    assert declared["trials"]["parameterType"] == "LIST"
    assert declared["trials"]["defaultValue"] == DEFAULT_TRIALS


# -- the CLI's own logic -----------------------------------------------------------------------
def test_local_workers_never_exceed_the_cores_or_the_points():
    from pipelines.local.sweep import local_workers

    assert local_workers(None, 4, available=2) == 2
    assert local_workers(8, 4, available=2) == 2
    assert local_workers(1, 4, available=2) == 1
    assert local_workers(None, 1, available=8) == 1
    with pytest.raises(ValueError, match="--parallel must be >= 1"):
        local_workers(0, 4, available=2)


def test_run_metrics_read_the_taxifare_and_the_sweep_pipelines():
    from pipelines.local.sweep import run_metrics

    taxifare_run = run_metrics({"train": {"rmse": 4.2, "mae": 3.1}}, {"Output": 4.4}, 4.4)
    assert taxifare_run == {"rmse": 4.2, "metrics": {"mae": 3.1, "endpoint_rmse": 4.4}}
    sweep_run = run_metrics(
        {
            "train": {"rmse": 9.0},
            "select_best": {"best_rmse": 3.0},
            "champion": {"decision": "keep", "champion_rmse": 2.9},
        },
        {"Output": "keep"},
        math.nan,
    )
    assert sweep_run == {"rmse": 3.0, "metrics": {"decision": "keep", "champion_rmse": 2.9}}
    assert run_metrics({}, {}, -1.0) == {"rmse": None, "metrics": {}}


@pytest.mark.parametrize(
    ("args", "files", "expected"),
    [
        (["sweep", "--grid", "grid.yaml"], {"grid.yaml": "{}"}, "grid.yaml: the grid is empty"),
        (
            ["sweep", "--grid", "grid.yaml", "-p", "train_steps=5"],
            {"grid.yaml": "train_steps: [1, 2]"},
            "train_steps: given both in the grid and as --param",
        ),
        (
            ["sweep", "--grid", "grid.yaml", "--target", "cloud"],
            {"grid.yaml": "train_steps: [1]"},
            "--target 'cloud': expected one of local, vertex, kfp",
        ),
        (
            ["sweep", "--grid", "grid.yaml", "--pipeline", "nope"],
            {"grid.yaml": "train_steps: [1]"},
            "unknown pipeline 'nope'",
        ),
        (
            ["sweep", "--grid", "grid.yaml", "--pipeline", "taxifare_sweep"],
            {"grid.yaml": "min_improvement: ['a']"},
            "min_improvement[0]: expected float, got str 'a'",
        ),
        (
            ["sweep", "--grid", "grid.yaml", "--name", "My_Sweep"],
            {"grid.yaml": "train_steps: [1]"},
            "--name 'My_Sweep': use lowercase letters, digits and '-'",
        ),
        (
            ["sweep-run", "--trials", "t.yaml"],
            {"t.yaml": "- {hidden_units: '16 x'}"},
            "t.yaml: hyperparameter set 0: hidden_units",
        ),
        (["sweep-run", "--trials", "t.yaml"], {"t.yaml": "[]"}, "no hyperparameter sets"),
        (["sweep-run", "-p", "min_improvment=1"], {}, "unknown parameter 'min_improvment' valid parameters: project"),
    ],
)
def test_cli_input_errors_stop_before_anything_runs(tmp_path, monkeypatch, args, files, expected):
    from typer.testing import CliRunner

    from pipelines.cli import app

    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert not (tmp_path / "build" / "sweep").exists() or not any((tmp_path / "build" / "sweep").rglob("runs"))
    assert not (tmp_path / "build" / "local-sweep").exists()
