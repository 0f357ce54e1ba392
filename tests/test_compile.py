"""The compiled pipeline spec: loads, has the six tasks in order, documents every parameter."""

import inspect

import yaml
from kfp import components

from pipelines.compile import compile_pipeline
from pipelines.taxifare import taxifare

STEPS = ["ingest", "validate", "train", "export", "deploy", "predict"]


def _compile(tmp_path, name="taxifare"):
    path = compile_pipeline(name, tmp_path)
    return path, yaml.safe_load(path.read_text())


def test_compiles_to_build_yaml_and_twice_gives_same_bytes(tmp_path):
    first = compile_pipeline("taxifare", tmp_path / "a")
    second = compile_pipeline("taxifare", tmp_path / "b")
    assert first.name == "taxifare.yaml"
    assert first.read_bytes() == second.read_bytes()


def test_six_tasks_in_order(tmp_path):
    _, spec = _compile(tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(STEPS)
    for earlier, later in zip(STEPS, STEPS[1:]):
        assert earlier in tasks[later].get("dependentTasks", []), f"{later} must run after {earlier}"
    display = {name: task["taskInfo"]["name"] for name, task in tasks.items()}
    assert display["ingest"] == "ingest to GCS"
    assert all(display[n] for n in STEPS)


def test_every_parameter_has_default_and_description(tmp_path):
    _, spec = _compile(tmp_path)
    declared = spec["root"]["inputDefinitions"]["parameters"]
    signature = inspect.signature(taxifare.pipeline_func)
    assert set(declared) == set(signature.parameters)
    for name, definition in declared.items():
        assert "defaultValue" in definition, f"{name} has no default"
        assert definition.get("description"), f"{name} is not documented"
    for name in (
        "project",
        "region",
        "bucket",
        "source",
        "train_steps",
        "batch_size",
        "hidden_units",
        "learning_rate",
        "max_bad_fraction",
    ):
        assert name in declared


def test_deploy_and_predict_are_never_cached(tmp_path):
    _, spec = _compile(tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    for name in ("deploy", "predict"):
        assert tasks[name]["cachingOptions"] == {}, name  # enableCache absent = false
    assert tasks["train"]["cachingOptions"]["enableCache"] is True


def test_yaml_loads_back_as_a_pipeline(tmp_path):
    path, _ = _compile(tmp_path)
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "taxifare"
    assert set(inspect.signature(taxifare.pipeline_func).parameters) <= set(loaded.component_spec.inputs)
