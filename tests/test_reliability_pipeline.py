"""A step that fails mid-run, then a re-run with caching: only that step and later ones run again.

The fault is injected into one task process only: a ``sitecustomize`` module on PYTHONPATH (which
every kfp.local task subprocess inherits) points the export step's process at a store nobody
listens on, so export fails with an unreachable store while ingest, validate and train — before
it — and the emulator itself are untouched. The pipeline's code is the real one; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from unittest import mock

import pytest

from pipelines.local.emulator import GcsEmulator, free_port
from pipelines.local.run import RunError, graph_steps, run_local
from pipelines.taxifare import taxifare
from tests.reliability import record
from trainer import storage

pytestmark = pytest.mark.reliability
STEPS = [name for name, _ in graph_steps(taxifare)]

PARAMS = {
    "source": "synthetic://?rows=2000&layout=lab&seed=11",
    "train_steps": 40,
    "smoke_steps": 5,
    "sample_size": 20,
}
FAULTY_STEP = "export"


def _fault_module(folder: Path, step: str, dead_store: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""\
            # Fault injection for one pipeline step: its process sees an unreachable store.
            import os, sys
            argv = sys.argv
            if "--function_to_execute" in argv and argv[argv.index("--function_to_execute") + 1:][:1] == [{step!r}]:
                os.environ["STORAGE_EMULATOR_HOST"] = {dead_store!r}
            """
        )
    )
    return folder


def _bucket_objects(workdir: Path, bucket: str = "taxifare-local") -> dict[str, str]:
    with GcsEmulator(data_dir=workdir / "gcs") as emulator, mock.patch.dict(os.environ, emulator.env()):
        storage._client.cache_clear()
        try:
            return {blob.name: blob.crc32c for blob in storage.client().list_blobs(bucket)}
        finally:
            storage._client.cache_clear()


def _steps_run(workdir: Path) -> list[str]:
    log = workdir / "steps.jsonl"
    return [json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()]


def test_failed_step_then_cached_rerun_repeats_only_that_step_and_later_ones(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    dead_store = f"http://127.0.0.1:{free_port()}"
    faults = _fault_module(tmp_path / "fault", FAULTY_STEP, dead_store)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(faults), os.environ.get("PYTHONPATH")])))

    with pytest.raises(RunError) as failure:
        run_local(workdir=workdir, params=PARAMS)
    message = str(failure.value)
    ran_before_failure = _steps_run(workdir)
    objects_after_failure = _bucket_objects(workdir)

    monkeypatch.delenv("PYTHONPATH")
    summary = run_local(workdir=workdir, params=PARAMS)
    cached = {name: timing.cached for name, timing in summary.steps.items()}
    objects_after_rerun = _bucket_objects(workdir)
    lost_or_changed = {name: crc for name, crc in objects_after_failure.items() if objects_after_rerun.get(name) != crc}
    position = STEPS.index(FAULTY_STEP)
    expected_cached = {name: i < position for i, name in enumerate(STEPS)}
    record(
        "pipeline_fault_rerun",
        f"Pipeline: {FAULTY_STEP} fails (unreachable store in that step only), cached re-run",
        passed=cached == expected_cached and not lost_or_changed and summary.predict_rmse > 0,
        faults_injected=1,
        faulty_step=FAULTY_STEP,
        failure_message=message[:300],
        steps_run_before_failure=ran_before_failure,
        rerun_cached=[n for n, c in cached.items() if c],
        rerun_executed=[n for n, c in cached.items() if not c],
        objects_after_failure=len(objects_after_failure),
        objects_after_rerun=len(objects_after_rerun),
        objects_lost_or_changed=len(lost_or_changed),
        rerun_wall_s=round(summary.wall_s, 1),
        rerun_predict_rmse=round(summary.predict_rmse, 3),
    )

    assert message.startswith(f"step {FAULTY_STEP} failed: StoreUnreachable"), message
    assert dead_store.split("//")[1] in message
    assert ran_before_failure == list(STEPS[: position + 1])
    assert any("/data/" in name for name in objects_after_failure)
    assert not any("/models/" in name for name in objects_after_failure)  # export wrote nothing
    assert cached == expected_cached, cached
    assert not lost_or_changed
    assert any("/models/" in name for name in objects_after_rerun)
    assert summary.predict_rmse > 0
