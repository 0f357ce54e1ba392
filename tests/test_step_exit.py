"""A task process leaves at once after its step succeeded (components.artifacts.step_log), and still
fails the normal way — traceback, exit status 1 — when anything after the step raises."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

AS_TASK = "import importlib.machinery, sys\nsys.modules['__main__'].__spec__ = importlib.machinery.ModuleSpec('kfp.dsl.executor_main', None)\n"


def _run(body: str, *, as_task: bool = True) -> subprocess.CompletedProcess:
    code = (AS_TASK if as_task else "") + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


STEP = """
import atexit
from components.artifacts import step_log
atexit.register(print, "normal shutdown", flush=True)  # registered first: runs last
with step_log("demo") as facts:
    facts["rows"] = 1
print("executor output written", flush=False)
"""


def test_a_task_that_succeeded_leaves_before_the_normal_shutdown():
    result = _run(STEP)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["executor output written"]  # flushed; the later handler never ran


def test_an_error_after_the_step_still_fails_the_task():
    result = _run(STEP + "raise RuntimeError('could not write the executor output')\n")
    assert result.returncode == 1
    assert "RuntimeError: could not write the executor output" in result.stderr
    assert "normal shutdown" in result.stdout


@pytest.mark.parametrize("as_task", [True, False])
def test_a_failed_step_fails_the_task(as_task):
    result = _run(STEP.replace('facts["rows"] = 1', "raise ValueError('bad row 3')"), as_task=as_task)
    assert result.returncode == 1 and "ValueError: bad row 3" in result.stderr


def test_outside_a_task_process_nothing_changes():
    result = _run(STEP, as_task=False)
    assert result.returncode == 0 and result.stdout.splitlines() == ["executor output written", "normal shutdown"]


def test_the_step_log_knows_when_the_task_process_started(tmp_path):
    import json
    import os
    import time

    log = tmp_path / "steps.jsonl"
    before = time.time()
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STEP)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TAXIFARE_STEP_LOG": str(log)},
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    # To the clock tick (10 ms), not to the second: after the parent started it, before the step began.
    assert before - 0.02 <= record["process_start"] <= record["start"] <= record["end"]
