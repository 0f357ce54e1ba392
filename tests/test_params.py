"""Pipeline parameters validated against the pipeline's declaration before submission."""

# no `from __future__ import annotations`: kfp reads the component annotations as types

import pytest
from kfp import compiler, dsl

from pipelines import params
from pipelines.params import ParameterError


@dsl.component(base_image="python:3.11")
def _echo(text: str, times: int) -> str:
    return text * times


@dsl.pipeline(name="tiny")
def tiny(text: str, times: int = 2, ratio: float = 0.5, dry_run: bool = False, tags: list = []):  # noqa: B006
    _echo(text=text, times=times)


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return path


@pytest.fixture(scope="module")
def taxifare_yaml(tmp_path_factory):
    from pipelines.compile import compile_pipeline

    return compile_pipeline("taxifare", tmp_path_factory.mktemp("compiled"))


@pytest.mark.parametrize("source", ["function", "yaml"])
def test_text_values_are_typed(source, tiny_yaml):
    pipeline = tiny if source == "function" else tiny_yaml
    values = params.parse_assignments(["text=hi", "times=3", "ratio=0.25", "dry_run=true", 'tags=["a","b"]'])
    assert params.validate(pipeline, values) == {
        "text": "hi",
        "times": 3,
        "ratio": 0.25,
        "dry_run": True,
        "tags": ["a", "b"],
    }


@pytest.mark.parametrize("source", ["function", "yaml"])
def test_unknown_name_lists_the_valid_parameters(source, tiny_yaml):
    pipeline = tiny if source == "function" else tiny_yaml
    with pytest.raises(ParameterError) as info:
        params.validate(pipeline, {"text": "x", "timez": "3"})
    message = str(info.value)
    assert "unknown parameter 'timez'" in message
    for line in ("text: str required", "times: int = 2", "ratio: float = 0.5", "dry_run: bool = False"):
        assert line in message


@pytest.mark.parametrize("source", ["function", "yaml"])
def test_wrong_types_and_missing_required(source, tiny_yaml):
    pipeline = tiny if source == "function" else tiny_yaml
    with pytest.raises(ParameterError) as info:
        params.validate(pipeline, {"times": "three", "ratio": "abc", "dry_run": "maybe"})
    message = str(info.value)
    assert "parameter 'times': Input should be a valid integer" in message and "'three'" in message
    assert "parameter 'ratio': Input should be a valid number" in message
    assert "parameter 'dry_run': Input should be a valid boolean" in message
    assert "parameter 'text' is required" in message


def test_taxifare_function_and_compiled_spec_agree(taxifare_yaml):
    from pipelines.taxifare import taxifare

    from_function = params.parameters_of(taxifare)
    from_spec = params.parameters_of(taxifare_yaml)
    assert "train_steps" in from_function and "bucket" in from_function
    assert from_spec == from_function


def test_taxifare_bad_parameters_fail(taxifare_yaml):
    with pytest.raises(ParameterError, match=r"unknown parameter 'train_step'[\s\S]*train_steps: int = "):
        params.validate(taxifare_yaml, {"train_step": "100"})
    with pytest.raises(ParameterError, match="parameter 'learning_rate': Input should be a valid number"):
        params.validate(taxifare_yaml, {"learning_rate": "fast"})
    assert params.validate(taxifare_yaml, {"train_steps": "100"}) == {"train_steps": 100}


@pytest.mark.parametrize(
    "items, message",
    [
        (["train_steps"], "expected NAME=VALUE"),
        (["=3"], "expected NAME=VALUE"),
        (["a=1", "a=2"], "given twice"),
    ],
)
def test_malformed_assignments(items, message):
    with pytest.raises(ParameterError, match=message):
        params.parse_assignments(items)


def test_value_may_contain_equals():
    assert params.parse_assignments(["source=synthetic://?rows=10&seed=1"]) == {"source": "synthetic://?rows=10&seed=1"}


def test_a_pipeline_loaded_from_its_yaml_declares_the_same_parameters(tmp_path):
    from kfp import components

    from pipelines.compile import compile_pipeline
    from pipelines.taxifare import taxifare

    loaded = components.load_component_from_file(str(compile_pipeline("taxifare", tmp_path)))
    assert params.parameters_of(loaded) == params.parameters_of(taxifare)
    values, defaults = params.effective(loaded, {"train_steps": 7})
    assert values["train_steps"] == 7 and "train_steps" not in defaults and "hidden_units" in defaults
