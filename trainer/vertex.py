"""Vertex AI: the connection, the Model Registry, endpoints and online prediction."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from trainer.config import Settings, load_settings

log = logging.getLogger(__name__)

# The serving container: the project image running the project's server (trainer.server), which
# reads AIP_HTTP_PORT / AIP_HEALTH_ROUTE / AIP_PREDICT_ROUTE / AIP_STORAGE_URI.
SERVING_COMMAND = ["python", "-m", "trainer.server"]
SERVING_ARGS = ["--host", "0.0.0.0"]
SERVING_PORT = 8080
HEALTH_ROUTE = "/health"
PREDICT_ROUTE = "/predict"
# Vertex AI's prebuilt TensorFlow serving image (TF Serving reads the SavedModel directly).
PREBUILT_TF_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
SERVING_KINDS = ("custom", "prebuilt")

# A public endpoint rejects requests over 1.5 MB; stay well below it.
MAX_REQUEST_BYTES = 1_000_000


class VertexError(RuntimeError):
    """A Vertex AI job or call that did not do what was asked."""


# -- connection --------------------------------------------------------------------------------
def init(project: str, region: str, *, settings: Settings | None = None, staging_bucket: str | None = None) -> None:
    """Point aiplatform at ``project``/``region`` (and the configured ``api_endpoint`` if any).

    Every Vertex AI call of the project starts here. An ``api_endpoint`` in the config sends the
    calls to a private endpoint; an ``http://`` one (a local server speaking the Vertex REST API)
    is called over REST with anonymous credentials.
    """
    from google.cloud import aiplatform

    settings = settings or load_settings()
    kwargs: dict[str, Any] = {"project": project, "location": region}
    if staging_bucket:
        kwargs["staging_bucket"] = staging_bucket
    if settings.api_endpoint:
        kwargs["api_endpoint"] = settings.api_endpoint
        if settings.api_endpoint.startswith("http://"):
            # Plain HTTP only ever reaches a local stand-in for the API: REST, no credentials.
            from google.auth.credentials import AnonymousCredentials

            kwargs["api_transport"] = "rest"
            kwargs["credentials"] = AnonymousCredentials()
    aiplatform.init(**kwargs)


# -- Model Registry and endpoints ----------------------------------------------------------------
@dataclass
class DeployedModel:
    endpoint_resource_name: str
    endpoint_display_name: str
    endpoint_created: bool
    model_resource_name: str
    model_version_id: str
    parent_model: str | None
    traffic_percentage: int
    serving_image: str

    def metadata(self) -> dict:
        return asdict(self)


def _quote_filter(value: str) -> str:
    return json.dumps(value)  # a double-quoted string with quotes and backslashes escaped


def find_model(display_name: str, project: str, region: str):
    """The registered model with this display name (the latest updated if several), or None."""
    from google.cloud import aiplatform

    models = aiplatform.Model.list(
        filter=f"display_name={_quote_filter(display_name)}",
        order_by="update_time desc",
        project=project,
        location=region,
    )
    return models[0] if models else None


def find_endpoint(display_name: str, project: str, region: str):
    """The endpoint with this display name (the latest created if several), or None."""
    from google.cloud import aiplatform

    endpoints = aiplatform.Endpoint.list(
        filter=f"display_name={_quote_filter(display_name)}",
        order_by="create_time desc",
        project=project,
        location=region,
    )
    return endpoints[0] if endpoints else None


def deploy_model(
    *,
    model_uri: str,
    display_name: str,
    project: str,
    region: str,
    endpoint_display_name: str | None = None,
    image: str | None = None,
    serving: str = "custom",
    machine_type: str = "n1-standard-2",
    min_replica_count: int = 1,
    max_replica_count: int = 1,
    traffic_percentage: int = 100,
    labels: dict[str, str] | None = None,
    service_account: str | None = None,
    settings: Settings | None = None,
) -> DeployedModel:
    """Registers the SavedModel at ``model_uri`` and deploys it to an endpoint.

    The model is uploaded as a new version of the registered model with the same display name
    when there is one (else as a new model). Serving is the project image running the project's
    server (``serving="custom"``) or Vertex's prebuilt TensorFlow container (``"prebuilt"``).
    The endpoint with display name ``endpoint_display_name`` (default ``display_name``) is
    reused or created; the new version gets ``traffic_percentage`` of its traffic and the models
    already deployed there share the rest in their current proportions.
    """
    from google.cloud import aiplatform

    if serving not in SERVING_KINDS:
        raise ValueError(f"serving must be one of {', '.join(SERVING_KINDS)}, got {serving!r}")
    if not 0 <= traffic_percentage <= 100:
        raise ValueError(f"traffic_percentage must be within 0..100, got {traffic_percentage}")
    if not 1 <= min_replica_count <= max_replica_count:
        raise ValueError(
            f"need 1 <= min_replica_count <= max_replica_count, got {min_replica_count}..{max_replica_count}"
        )
    if not model_uri.startswith("gs://"):
        raise ValueError(f"model_uri must be a gs:// URI Vertex AI can read, got {model_uri!r}")
    settings = settings or load_settings()
    init(project, region, settings=settings)
    endpoint_display_name = endpoint_display_name or display_name
    labels = labels or {}

    parent = find_model(display_name, project, region)
    parent_name = parent.resource_name if parent is not None else None
    if serving == "custom":
        serving_image = image or settings.image
        container = dict(
            serving_container_image_uri=serving_image,
            serving_container_command=SERVING_COMMAND,
            serving_container_args=SERVING_ARGS,
            serving_container_ports=[SERVING_PORT],
            serving_container_predict_route=PREDICT_ROUTE,
            serving_container_health_route=HEALTH_ROUTE,
        )
    else:
        serving_image = image or PREBUILT_TF_IMAGE
        container = dict(serving_container_image_uri=serving_image)
    model = aiplatform.Model.upload(
        display_name=display_name,
        artifact_uri=model_uri,
        parent_model=parent_name,
        is_default_version=True,
        labels=labels,
        project=project,
        location=region,
        sync=True,
        **container,
    )
    log.info("model %s version %s uploaded (parent %s)", model.resource_name, model.version_id, parent_name)

    endpoint = find_endpoint(endpoint_display_name, project, region)
    created = endpoint is None
    if created:
        endpoint = aiplatform.Endpoint.create(
            display_name=endpoint_display_name, labels=labels, project=project, location=region, sync=True
        )
        log.info("endpoint %s created", endpoint.resource_name)
    endpoint.deploy(
        model=model,
        deployed_model_display_name=f"{display_name}-v{model.version_id}",
        machine_type=machine_type,
        min_replica_count=min_replica_count,
        max_replica_count=max_replica_count,
        traffic_percentage=traffic_percentage,
        service_account=service_account or settings.service_account,
        sync=True,
    )
    log.info(
        "model version %s deployed to %s with %d%% of traffic",
        model.version_id,
        endpoint.resource_name,
        traffic_percentage,
    )
    return DeployedModel(
        endpoint_resource_name=endpoint.resource_name,
        endpoint_display_name=endpoint_display_name,
        endpoint_created=created,
        model_resource_name=model.resource_name,
        model_version_id=str(model.version_id),
        parent_model=parent_name,
        traffic_percentage=traffic_percentage,
        serving_image=serving_image,
    )


# -- prediction --------------------------------------------------------------------------------
def _batches(instances: Sequence[dict], batch_size: int) -> Iterable[list[dict]]:
    batch: list[dict] = []
    size = 0
    for instance in instances:
        instance_bytes = len(json.dumps(instance)) + 1
        if batch and (len(batch) >= batch_size or size + instance_bytes > MAX_REQUEST_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(instance)
        size += instance_bytes
    if batch:
        yield batch


def _fare(prediction: Any, index: int) -> float:
    """One prediction as a fare: the project server answers {"fare_amount": x}; TF Serving x or [x]."""
    value = prediction
    if isinstance(value, dict):
        if "fare_amount" not in value:
            raise VertexError(f"prediction {index} has no fare_amount: {value!r}")
        value = value["fare_amount"]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, (int, float)):
        raise VertexError(f"prediction {index} is not a number: {prediction!r}")
    return float(value)


def predict(
    endpoint: str,
    instances: Sequence[dict],
    *,
    batch_size: int = 100,
    project: str | None = None,
    region: str | None = None,
    settings: Settings | None = None,
) -> list[float]:
    """Fares for ``instances`` from a Vertex AI endpoint (resource name or id), in input order."""
    from google.cloud import aiplatform

    settings = settings or load_settings()
    if endpoint.startswith("projects/"):
        parts = endpoint.split("/")
        project, region = project or parts[1], region or parts[3]
    init(project or settings.project, region or settings.region, settings=settings)
    remote = aiplatform.Endpoint(endpoint_name=endpoint)
    fares: list[float] = []
    for batch in _batches(instances, batch_size):
        response = remote.predict(instances=batch)
        if len(response.predictions) != len(batch):
            raise VertexError(
                f"endpoint {endpoint} answered {len(response.predictions)} predictions for {len(batch)} instances"
            )
        fares.extend(_fare(p, len(fares) + i) for i, p in enumerate(response.predictions))
    return fares
