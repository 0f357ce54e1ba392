"""One hyperparameter definition: every surface shows the same names and defaults (trainer.hparams)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from components.train import train
from pipelines import params
from pipelines.compile import compile_pipeline
from pipelines.taxifare import taxifare
from pipelines.taxifare_sweep import taxifare_sweep
from trainer import hparams, hypertune, model, task, vertex_training


def _parse_trainer(argv):
    """The trainer's own parser over a command line: hyperparameter name → value as the pipelines carry it."""
    args = task.build_parser().parse_args(argv)
    return {h.name: h.text(getattr(args, h.flag)) if h.type is str else getattr(args, h.flag) for h in hparams.HPARAMS}


DEFAULTS = hparams.DEFAULTS
PATHS = ["--train_data_paths", "t.csv", "--eval_data_paths", "v.csv", "--output_dir", "out"]


def test_the_trainer_command_line_has_every_hyperparameter_with_its_default():
    assert _parse_trainer(PATHS) == DEFAULTS
    flags = {a.dest for a in task.build_parser()._actions}
    assert {h.flag for h in hparams.HPARAMS} <= flags


def test_the_trainer_config_has_one_field_per_flag_with_the_same_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(model.TrainConfig)}
    for h in hparams.HPARAMS:
        assert fields[h.flag] == h.check(h.default), h.name
    # and the trainer's parsed defaults are what the config holds
    args = task.build_parser().parse_args(PATHS)
    assert {h.flag: getattr(args, h.flag) for h in hparams.HPARAMS} == hparams.config_defaults()


def test_the_pipelines_train_parameters_default_like_the_trainer(tmp_path):
    declared = params.parameters_of(taxifare)
    taken = [n for n in hparams.NAMES if n in declared]
    assert taken == ["train_steps", "batch_size", "hidden_units", "learning_rate", "seed"]
    for name in taken:
        assert declared[name] == (hparams.BY_NAME[name].type, DEFAULTS[name]), name
    # the compiled spec says the same, with the trainer's docs
    spec = params.load_spec(compile_pipeline("taxifare", tmp_path))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    for name in taken:
        assert inputs[name]["defaultValue"] == DEFAULTS[name], name
        assert inputs[name]["description"] == hparams.BY_NAME[name].doc, name
    # the train task gets every hyperparameter: the ones the pipeline does not take as constants
    train_inputs = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert set(hparams.NAMES) <= set(train_inputs)
    for name in set(hparams.NAMES) - set(taken):
        assert train_inputs[name]["runtimeValue"]["constant"] == DEFAULTS[name], name


def test_the_train_component_takes_every_hyperparameter_and_sets_none_of_their_defaults():
    signature = inspect.signature(train.python_func).parameters
    for name in hparams.NAMES:
        assert signature[name].annotation is hparams.BY_NAME[name].type, name
        assert signature[name].default is inspect.Parameter.empty, name


def test_vertex_job_arguments_are_the_trainers_own_command_line():
    args = vertex_training.trainer_args(
        train_data="gs://b/t.csv", eval_data="gs://b/v.csv", output_dir="gs://b/out", hyper={}
    )
    assert args[:6] == [
        "--train_data_paths",
        "/gcs/b/t.csv",
        "--eval_data_paths",
        "/gcs/b/v.csv",
        "--output_dir",
        "/gcs/b/out",
    ]
    assert _parse_trainer(args) == DEFAULTS
    given = {"train_steps": 7, "hidden_units": "16 8", "learning_rate": 0.5, "towers": 2}
    assert _parse_trainer(
        vertex_training.trainer_args(train_data="gs://b/t", eval_data="gs://b/v", output_dir="gs://b/o", hyper=given)
    ) == {
        **DEFAULTS,
        **given,
    }


def test_sweep_sets_and_tuning_grids_default_like_the_trainer():
    assert hparams.parse_sets([{}]) == [DEFAULTS]
    assert hparams.parse_sets([{}], seed=7) == [{**DEFAULTS, "seed": 7}]
    assert hparams.tuner_parameters() == {h.name: (h.type, h.default) for h in hparams.HPARAMS}
    # the sweep pipeline documents the same defaults
    assert f"train_steps {DEFAULTS['train_steps']!r}" in taxifare_sweep.pipeline_func.__doc__
    # a tuning trial passes the flags through to the trainer's parser
    argv = hypertune.trial_argv([*PATHS, *hparams.flags({"batch_size": 64})], {})
    assert _parse_trainer(argv) == {**DEFAULTS, "batch_size": 64}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("train_steps", "0", "must be > 0"),
        ("train_batch_size", "many", "expected int"),
        ("hidden_units", "64 -1", "positive layer sizes"),
        ("learning_rate", "0", "must be > 0"),
        ("embedding_dim", "-1", "must be >= 0"),
        ("towers", "0", "must be > 0"),
    ],
)
def test_one_rule_per_hyperparameter_in_the_trainer_and_in_sweep_sets(name, text, message, capsys):
    assert task.main([*PATHS, f"--{name}", text]) == 2
    assert message in capsys.readouterr().err
    pipeline_name = next(h.name for h in hparams.HPARAMS if h.flag == name)
    value = text if hparams.BY_NAME[pipeline_name].type is str else None
    if value is None:
        try:
            value = hparams.BY_NAME[pipeline_name].type(text)
        except ValueError:
            return  # not a number at all: the set's own type check, tested in test_sweep
    with pytest.raises(hparams.HyperparameterError, match=message):
        hparams.parse_sets([{pipeline_name: value}])
