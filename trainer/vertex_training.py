"""Training on Vertex AI: the trainer as a CustomJob in the project image, its worker pools, the wait."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainer import storage
from trainer.config import Settings, load_settings
from trainer.vertex import VertexError, init

log = logging.getLogger(__name__)

POLL_ENV = "TAXIFARE_VERTEX_POLL_S"
DEFAULT_POLL_S = 30.0
JOB_DONE_STATES = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


def trainer_args(
    *, train_data: str, eval_data: str, output_dir: str, hyper: Mapping[str, Any], layout: str = "auto"
) -> list[str]:
    """The trainer's command line (the lab's flags) with gs:// locations as their /gcs/ mounts."""
    from trainer import task

    paths = (storage.fuse_path(train_data), storage.fuse_path(eval_data), storage.fuse_path(output_dir))
    return task.command_line(*paths, hyper, layout=layout)


def worker_pool_specs(
    *,
    image: str,
    args: Sequence[str],
    machine_type: str = "n1-standard-4",
    replica_count: int = 1,
    accelerator_type: str = "",
    accelerator_count: int = 0,
) -> list[dict]:
    """Vertex worker pools for the trainer: a chief, plus ``replica_count - 1`` workers.

    Vertex sets TF_CONFIG in every replica from these pools, which is what the trainer's
    MultiWorkerMirroredStrategy reads.
    """
    if replica_count < 1:
        raise ValueError(f"replica_count must be at least 1, got {replica_count}")
    if bool(accelerator_type) != (accelerator_count > 0):
        raise ValueError(
            "accelerator_type and accelerator_count go together: got "
            f"accelerator_type={accelerator_type!r}, accelerator_count={accelerator_count}"
        )
    machine_spec: dict[str, Any] = {"machine_type": machine_type}
    if accelerator_type:
        machine_spec.update(accelerator_type=accelerator_type, accelerator_count=accelerator_count)
    pool = {
        "machine_spec": machine_spec,
        "replica_count": 1,
        "container_spec": {"image_uri": image, "command": ["python", "-m", "trainer.task"], "args": list(args)},
    }
    pools = [pool]
    if replica_count > 1:
        pools.append({**pool, "replica_count": replica_count - 1})
    return pools


@dataclass
class CustomJobResult:
    resource_name: str
    state: str
    display_name: str
    worker_pool_specs: list[dict] = field(default_factory=list)

    def metadata(self) -> dict:
        return {"custom_job": self.resource_name, "state": self.state}


def run_custom_job(
    *,
    project: str,
    region: str,
    display_name: str,
    args: Sequence[str],
    staging_bucket: str,
    image: str | None = None,
    machine_type: str = "n1-standard-4",
    replica_count: int = 1,
    accelerator_type: str = "",
    accelerator_count: int = 0,
    base_output_dir: str | None = None,
    service_account: str | None = None,
    labels: dict[str, str] | None = None,
    wait: bool = True,
    poll_interval_s: float | None = None,
    timeout_s: float | None = None,
    settings: Settings | None = None,
) -> CustomJobResult:
    """Trains as a Vertex AI CustomJob in the project image; with ``wait``, until it ends.

    Raises VertexError when the job fails, is cancelled or expires (with Vertex's message).
    """
    from google.cloud import aiplatform

    settings = settings or load_settings()
    init(project, region, settings=settings, staging_bucket=staging_bucket)
    specs = worker_pool_specs(
        image=image or settings.image,
        args=args,
        machine_type=machine_type,
        replica_count=replica_count,
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
    )
    job = aiplatform.CustomJob(
        display_name=display_name,
        worker_pool_specs=specs,
        base_output_dir=base_output_dir,
        staging_bucket=staging_bucket,
        labels=labels or {},
        project=project,
        location=region,
    )
    job.submit(service_account=service_account or settings.service_account)
    log.info("custom job %s submitted (%d replica(s), %s)", job.resource_name, replica_count, machine_type)
    state = job.gca_resource.state.name
    if wait:
        state = _wait_for_job(job, poll_interval_s, timeout_s)
    return CustomJobResult(job.resource_name, state, display_name, specs)


def train(
    *,
    project: str,
    region: str,
    train_data: str,
    eval_data: str,
    output_dir: str,
    hyper: Mapping[str, Any],
    display_name: str = "taxifare-train",
    machine_type: str = "n1-standard-4",
    replica_count: int = 1,
    accelerator_type: str = "",
    accelerator_count: int = 0,
    labels: dict[str, str] | None = None,
    poll_interval_s: float | None = None,
    settings: Settings | None = None,
) -> CustomJobResult:
    """The trainer as a CustomJob on gs:// data, writing its OUTPUT_DIR to ``output_dir`` (gs://).

    What a pipeline's train step calls to train on Vertex AI machines (several replicas, GPUs)
    rather than in the task itself; waits for the job and raises VertexError if it fails.
    """
    for name, uri in (("train_data", train_data), ("eval_data", eval_data), ("output_dir", output_dir)):
        if not uri.startswith("gs://"):
            raise ValueError(f"{name} must be a gs:// URI a Vertex AI job can read, got {uri!r}")
    settings = settings or load_settings()
    args = trainer_args(train_data=train_data, eval_data=eval_data, output_dir=output_dir, hyper=hyper)
    return run_custom_job(
        project=project,
        region=region,
        display_name=display_name,
        args=args,
        staging_bucket=settings.staging_bucket,
        base_output_dir=output_dir.rstrip("/") + "/job",
        machine_type=machine_type,
        replica_count=replica_count,
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        labels=labels,
        poll_interval_s=poll_interval_s,
        settings=settings,
    )


def _wait_for_job(job, poll_interval_s: float | None, timeout_s: float | None) -> str:
    if poll_interval_s is None:  # how often to ask Vertex AI for the job's state
        poll_interval_s = float(os.environ.get(POLL_ENV, DEFAULT_POLL_S))
    started = time.monotonic()
    while True:
        state = job.state.name
        if state in JOB_DONE_STATES:
            break
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise VertexError(f"custom job {job.resource_name} still {state} after {timeout_s:.0f} s")
        time.sleep(poll_interval_s)
    if state != "JOB_STATE_SUCCEEDED":
        error = job.gca_resource.error
        detail = f": {error.message}" if error and error.message else ""
        raise VertexError(f"custom job {job.resource_name} ended {state}{detail}")
    log.info("custom job %s succeeded", job.resource_name)
    return state
