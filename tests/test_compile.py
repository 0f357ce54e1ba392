"""The compiled pipeline spec: loads, has the six tasks in order, documents every parameter, and
knows the code: each task takes its step's code fingerprint and runs the image tagged with the code."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp import components

from components import fingerprint
from components.base import BASE_IMAGE
from pipelines.compile import compile_pipeline
from pipelines.taxifare import taxifare
from tests.fixtures.code import copy_of_the_code

REPO = Path(__file__).resolve().parents[1]

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


def _task_fingerprints(spec) -> dict[str, str]:
    """task → the code_fingerprint constant it takes, over every dag of the spec (loops included)."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {
        name: task["inputs"]["parameters"]["code_fingerprint"]["runtimeValue"]["constant"]
        for dag in dags
        for name, task in dag["tasks"].items()
        if "componentRef" in task and "code_fingerprint" in task.get("inputs", {}).get("parameters", {})
    }


@pytest.mark.parametrize("name", ["taxifare", "taxifare_sweep"])
def test_every_task_takes_its_steps_code_fingerprint_and_runs_the_code_tagged_image(tmp_path, name):
    _, spec = _compile(tmp_path, name)
    executors = spec["deploymentSpec"]["executors"]
    table = fingerprint.step_fingerprints()
    got = _task_fingerprints(spec)
    leaves = {n for n, c in spec["components"].items() if "executorLabel" in c}
    assert len(got) == len(leaves)  # every task that runs code, none forgotten
    for task, value in got.items():
        assert value == table[f"components.{task.replace('-', '_')}"], task
    assert {e["container"]["image"] for e in executors.values()} == {BASE_IMAGE}
    assert BASE_IMAGE.endswith(":" + fingerprint.image_tag())


def _compile_in(copy: Path, out: Path) -> dict:
    """Compile the taxifare pipeline from the code in `copy` (it comes first on the path)."""
    code = (
        "import sys; from pipelines.compile import compile_pipeline; print(compile_pipeline('taxifare', sys.argv[1]))"
    )
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)], cwd=copy, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1]).read_bytes()


def test_the_yaml_changes_when_a_steps_code_changes_and_only_then(tmp_path):
    copy = copy_of_the_code(tmp_path / "repo")
    first = _compile_in(copy, tmp_path / "a")
    (copy / "README.md").write_text("only documentation changed\n")  # no step's code, not in the image
    assert _compile_in(copy, tmp_path / "b") == first
    with open(copy / "trainer" / "ingest.py", "a") as out:  # imported by the ingest step only
        out.write("\n# a change to the ingest code\n")
    changed = _compile_in(copy, tmp_path / "c")
    assert changed != first
    before, after = yaml.safe_load(first), yaml.safe_load(changed)
    moved = {task for task, value in _task_fingerprints(after).items() if value != _task_fingerprints(before)[task]}
    assert moved == {"ingest"}
    images = {e["container"]["image"] for e in after["deploymentSpec"]["executors"].values()}
    assert images == {f"{BASE_IMAGE.rsplit(':', 1)[0]}:{fingerprint.image_tag(copy)}"} != {BASE_IMAGE}
