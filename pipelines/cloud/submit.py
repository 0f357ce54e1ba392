"""Submit the compiled pipeline to Vertex AI Pipelines or to a Kubeflow Pipelines cluster.

The same spec (``build/pipelines/taxifare.yaml``) goes to both. Parameters are checked against
the spec's declared inputs before anything is sent; the project's settings fill the pipeline's
``project`` / ``region`` / ``bucket`` / ``prefix`` parameters unless given explicitly. A spec whose
image was never pushed from this code (pipelines.cloud.image) is refused before anything is sent.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines import params
from pipelines.cloud import image
from pipelines.compile import check_serving_target
from trainer.config import Settings

log = logging.getLogger(__name__)

VERTEX_DONE = {"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"}
KFP_DONE = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELLED"}
_SETTINGS_PARAMETERS = ("project", "region", "bucket", "prefix")


class SubmitError(RuntimeError):
    """The submission was refused, or the run did not succeed."""


@dataclass
class Submission:
    target: str
    run_id: str
    resource: str
    state: str
    url: str
    parameters: dict[str, Any]

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def succeeded(self) -> bool:
        return self.state in ("PIPELINE_STATE_SUCCEEDED", "SUCCEEDED")


def job_id(pipeline_name: str, now: datetime | None = None) -> str:
    """A readable, unique Vertex job id: ``<pipeline>-YYYYMMDD-HHMMSS`` ([a-z0-9-], ≤128)."""
    now = now or datetime.now(UTC)
    base = re.sub(r"[^a-z0-9-]+", "-", pipeline_name.lower()).strip("-") or "pipeline"
    if not base[0].isalpha():
        base = "p-" + base
    return f"{base[:100]}-{now:%Y%m%d-%H%M%S}"


def pipeline_parameters(
    spec: Mapping, settings: Settings, given: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The parameter values to send: checked and typed ``given``, plus settings and ``defaults``
    for declared parameters not given."""
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    values: dict[str, Any] = {}
    for name in _SETTINGS_PARAMETERS:
        if name in declared:
            values[name] = getattr(settings, name)
    for name, value in (defaults or {}).items():
        if name in declared:
            values[name] = value
    values.update(given)
    checked = params.validate(spec, values)
    check_serving_target(spec, checked)
    return checked


def check_image(spec: Mapping | Iterable[str], platform: str, record: str | Path = image.RECORD) -> None:
    """The spec's image (or these images) must have been pushed (for kfp: or loaded into the
    cluster) from this code; SubmitError naming the image otherwise."""
    try:
        image.check(spec, platform, record)
    except image.ImageError as exc:
        raise SubmitError(str(exc)) from None


def check_pipeline_bucket(settings: Settings) -> None:
    """The pipeline root's bucket must exist: otherwise the SDK would create one itself, in a
    default location and with its own grants, bypassing the least-privilege setup."""
    from trainer import storage

    try:
        storage.check_bucket(settings.bucket)
    except storage.StorageError as exc:
        raise SubmitError(f"pipeline root {settings.pipeline_root}: {exc}; `taxifare setup-gcp` creates it") from None


def submit_vertex(
    template: str | Path,
    settings: Settings,
    parameters: Mapping[str, Any] | None = None,
    *,
    enable_caching: bool = True,
    labels: Mapping[str, str] | None = None,
    run_id: str | None = None,
    wait: bool = False,
    poll_interval_s: float = 30.0,
    timeout_s: float | None = None,
    on_state: Callable[[str], None] | None = None,
    image_record: str | Path = image.RECORD,
) -> Submission:
    """Submits ``template`` as a Vertex AI PipelineJob under the settings' project and bucket.

    ``pipeline_root`` is ``gs://BUCKET/PREFIX/pipeline_root``; the job runs as the configured
    service account. With ``wait`` the state is followed until the run ends; a run that does not
    succeed raises SubmitError.
    """
    from google.cloud import aiplatform

    from trainer import vertex

    spec = params.load_spec(template)
    name = spec.get("pipelineInfo", {}).get("name", Path(template).stem)
    # Deploy and predict go to Vertex AI when the pipeline has a target switch and none was given.
    values = pipeline_parameters(spec, settings, parameters or {}, defaults={"target": "vertex"})
    check_image(spec, "vertex", image_record)
    run_id = run_id or job_id(name)
    check_pipeline_bucket(settings)
    vertex.init(settings.project, settings.region, settings=settings)
    job = aiplatform.PipelineJob(
        display_name=name,
        template_path=str(template),
        job_id=run_id,
        pipeline_root=settings.pipeline_root,
        parameter_values=values,
        enable_caching=enable_caching,
        labels={"pipeline": name, "submitted-by": "taxifare-cli", **(labels or {})},
        project=settings.project,
        location=settings.region,
    )
    job.submit(service_account=settings.service_account)
    state = job.gca_resource.state.name
    url = (
        f"https://console.cloud.google.com/vertex-ai/locations/{settings.region}/pipelines/runs/"
        f"{run_id}?project={settings.project}"
    )
    submission = Submission("vertex", run_id, job.resource_name, state, url, values)
    log.info("submitted %s as %s", template, job.resource_name)
    if wait:
        submission.state = _follow(lambda: job.state.name, VERTEX_DONE, poll_interval_s, timeout_s, on_state)
        if not submission.succeeded:
            error = job.gca_resource.error
            detail = f": {error.message}" if error and error.message else ""
            raise SubmitError(f"pipeline job {job.resource_name} ended {submission.state}{detail}")
    return submission


def submit_kfp(
    template: str | Path,
    settings: Settings,
    host: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    enable_caching: bool = True,
    pipeline_root: str | None = None,
    namespace: str | None = None,
    wait: bool = False,
    poll_interval_s: float = 10.0,
    timeout_s: float | None = None,
    on_state: Callable[[str], None] | None = None,
    image_record: str | Path = image.RECORD,
) -> Submission:
    """Creates a run of ``template`` on the Kubeflow Pipelines API at ``host``.

    ``pipeline_root`` defaults to the cluster's own artifact store; pass the bucket's
    ``settings.pipeline_root`` when the cluster can write to GCS.
    """
    import kfp

    spec = params.load_spec(template)
    name = spec.get("pipelineInfo", {}).get("name", Path(template).stem)
    values = pipeline_parameters(spec, settings, parameters or {})
    check_image(spec, "kfp", image_record)
    client = kfp.Client(host=host, namespace=namespace)
    result = client.create_run_from_pipeline_package(
        str(template),
        arguments=values,
        run_name=run_name or job_id(name),
        experiment_name=experiment,
        namespace=namespace,
        enable_caching=enable_caching,
        pipeline_root=pipeline_root,
    )
    run_id = result.run_id
    run = client.get_run(run_id)
    submission = Submission(
        "kfp",
        run_id,
        f"{host.rstrip('/')}/apis/v2beta1/runs/{run_id}",
        str(run.state),
        f"{host.rstrip('/')}/#/runs/details/{run_id}",
        values,
    )
    log.info("created run %s of %s on %s", run_id, template, host)
    if wait:
        submission.state = _follow(
            lambda: str(client.get_run(run_id).state), KFP_DONE, poll_interval_s, timeout_s, on_state
        )
        if not submission.succeeded:
            error = client.get_run(run_id).error
            detail = f": {error.message}" if error is not None and getattr(error, "message", None) else ""
            raise SubmitError(f"run {run_id} on {host} ended {submission.state}{detail}")
    return submission


def _follow(
    get_state: Callable[[], str],
    done: set[str],
    poll_interval_s: float,
    timeout_s: float | None,
    on_state: Callable[[str], None] | None,
) -> str:
    started = time.monotonic()
    last = None
    while True:
        state = get_state()
        if state != last:
            log.info("state: %s", state)
            if on_state:
                on_state(state)
            last = state
        if state in done:
            return state
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise SubmitError(f"still {state} after {timeout_s:.0f} s")
        time.sleep(poll_interval_s)
