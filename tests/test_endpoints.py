"""One serving dispatch (trainer.endpoints): deploy, predict and the champion step, and the up-front
refusal of a target that cannot do a step a pipeline needs — before anything trains."""

from __future__ import annotations

import pytest
from kfp import dsl, local
from typer.testing import CliRunner

from components.check_trials import check_trials
from pipelines import taxifare, taxifare_sweep
from pipelines.cli import app
from pipelines.compile import check_serving_target, compile_pipeline
from trainer import endpoints

REASON = r"target='kfp' cannot do the champion step \(measure the model a named endpoint serves now"


def test_every_target_says_what_it_can_do():
    assert list(endpoints.TARGETS) == ["local", "vertex", "kfp"]
    for name in endpoints.TARGETS:
        endpoints.require(name, taxifare.SERVING_STEPS)  # every target can deploy and predict
    for name in ("local", "vertex"):
        endpoints.require(name, taxifare_sweep.SERVING_STEPS)
    with pytest.raises(
        endpoints.TargetError, match=REASON + r".*targets that can do all of champion, deploy, predict: local, vertex"
    ):
        endpoints.require("kfp", taxifare_sweep.SERVING_STEPS)
    with pytest.raises(endpoints.TargetError, match="target='gpu': expected one of local, vertex, kfp"):
        endpoints.get("gpu")


def test_the_error_is_one_line():
    with pytest.raises(endpoints.TargetError) as info:
        endpoints.require("kfp", taxifare_sweep.SERVING_STEPS)
    assert "\n" not in str(info.value)


def test_the_champion_step_goes_through_the_same_dispatch():
    with pytest.raises(endpoints.TargetError, match=REASON):
        endpoints.serving("kfp", "taxifare", endpoints.DeployOptions())


def test_the_pipelines_check_their_default_and_given_targets():
    check_serving_target("taxifare", {})  # default target local
    check_serving_target("taxifare", {"target": "kfp"})
    check_serving_target("taxifare_sweep", {"target": "vertex"})
    with pytest.raises(endpoints.TargetError, match=REASON):
        check_serving_target("taxifare_sweep", {"target": "kfp"})


def test_a_compiled_spec_is_checked_before_submission(tmp_path):
    from pipelines import params
    from pipelines.cloud import submit
    from trainer.config import load_settings

    spec = params.load_spec(compile_pipeline("taxifare_sweep", tmp_path))
    with pytest.raises(endpoints.TargetError, match=REASON):
        submit.pipeline_parameters(spec, load_settings(), {"target": "kfp"})
    assert submit.pipeline_parameters(spec, load_settings(), {"target": "vertex"})["target"] == "vertex"


def test_the_sweep_pipelines_first_step_refuses_the_target_before_any_training(tmp_path):
    """check_trials — the step before ingest and every training — runs the same check in the task."""
    with pytest.raises(endpoints.TargetError, match=REASON):
        check_trials.python_func(trials=[{}], seed=1, target="kfp", serving_steps=list(taxifare_sweep.SERVING_STEPS))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    assert check_trials(trials=[{}], seed=1, target="local", serving_steps=["champion"]).output[0]["seed"] == 1
    with pytest.raises(RuntimeError, match="check-trials"):
        check_trials(trials=[{}], seed=1, target="kfp", serving_steps=list(taxifare_sweep.SERVING_STEPS))
    assert dsl  # the component is a real KFP component run by kfp.local


@pytest.mark.parametrize(
    "args, grid",
    [
        (["sweep-run", "-p", "target=kfp", "--workdir", "{tmp}/work"], None),
        (["sweep", "--pipeline", "taxifare_sweep", "-p", "target=kfp"], "min_improvement: [0.0, 0.5]\n"),
        (["sweep", "--pipeline", "taxifare_sweep", "--target", "vertex"], "target: [local, kfp]\n"),
    ],
)
def test_the_cli_refuses_a_sweep_its_target_cannot_serve_before_anything_runs(args, grid, tmp_path):
    if grid is not None:
        (tmp_path / "grid.yaml").write_text(grid)
        args = [*args, "--grid", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot do the champion step" in lines[0], result.output
    assert not (tmp_path / "work").exists()
    assert not (tmp_path / "out").exists()
