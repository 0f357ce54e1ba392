"""Where a model is served — local, kfp or vertex — decided once, for deploy, predict and the champion.

Each serving target says which serving steps it can do. ``require`` checks a target against the
steps a pipeline needs before anything trains; deploy, predict and the champion lookup go through
the same ``get(target)``, so the up-front check and the steps cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The serving steps a pipeline may need from a target.
DEPLOY, PREDICT, CHAMPION = "deploy", "predict", "champion"
STEP_DOCS = {
    DEPLOY: "serve an exported model at a named endpoint",
    PREDICT: "send instances to that endpoint",
    CHAMPION: "measure the model a named endpoint serves now (the champion/challenger decision)",
}


class TargetError(ValueError):
    """A serving target that does not exist or cannot do a step a pipeline needs."""


@dataclass
class Endpoint:
    """What deploy hands to predict: the target, where to send requests, and what is served."""

    target: str
    uri: str  # a URL (local, kfp) or a Vertex AI endpoint resource name
    model_version: str = ""
    metadata: dict = field(default_factory=dict)

    def as_metadata(self) -> dict:
        return {"target": self.target, "url": self.uri, "model_version": self.model_version, **self.metadata}

    @classmethod
    def from_metadata(cls, uri: str, metadata: Mapping[str, Any]) -> Endpoint:
        extra = {k: v for k, v in metadata.items() if k not in ("target", "url", "model_version")}
        # local and kfp endpoints are called at their URL; Vertex ones by resource name (the URI)
        target = metadata.get("target", "local")
        address = metadata.get("url", uri) if target != "vertex" else uri
        return cls(target, address, metadata.get("model_version", ""), extra)


@dataclass
class Served:
    """The model an endpoint serves now, and how to reach it."""

    endpoint: Endpoint
    description: str
    model: str


@dataclass(frozen=True)
class DeployOptions:
    """How to serve, for the targets that size their endpoints."""

    project: str = ""
    region: str = ""
    machine_type: str = "n1-standard-2"
    min_replicas: int = 1
    max_replicas: int = 1
    traffic_percentage: int = 100


class _Local:
    """The project's prediction server on a loopback port of this machine."""

    name = "local"
    label = "local endpoint"
    steps = frozenset({DEPLOY, PREDICT, CHAMPION})

    def deploy(self, model_uri: str, endpoint_name: str, options: DeployOptions) -> Endpoint:
        from trainer import local_endpoint

        served = local_endpoint.deploy(model_uri, endpoint_name)
        return Endpoint(self.name, served.predict_url, metadata={"pid": served.pid})

    def predict(self, endpoint: Endpoint, instances: list[dict], batch_size: int, options: DeployOptions) -> list:
        from trainer import client

        return client.predict(endpoint.uri, instances, batch_size=batch_size)

    def serving(self, endpoint_name: str, options: DeployOptions) -> Served | None:
        from trainer import local_endpoint

        served = local_endpoint.get(endpoint_name)
        if served is None:
            return None
        return Served(Endpoint(self.name, served.predict_url), f"local endpoint {served.predict_url}", served.model_uri)


class _Kfp:
    """A Deployment + Service of the serving container on the KFP cluster."""

    name = "kfp"
    label = "cluster Service"
    # Nothing records which model a cluster Service serves, so there is no champion to measure.
    steps = frozenset({DEPLOY, PREDICT})

    def deploy(self, model_uri: str, endpoint_name: str, options: DeployOptions) -> Endpoint:
        from trainer import k8s
        from trainer.config import load_settings

        served = k8s.deploy_serving(
            name=endpoint_name, model_uri=model_uri, image=load_settings().image, replicas=options.min_replicas
        )
        return Endpoint(self.name, served.url, metadata=served.metadata())

    predict = _Local.predict  # the same server behind a cluster Service: the same client


class _Vertex:
    """A Vertex AI endpoint serving a Model Registry version."""

    name = "vertex"
    label = "Vertex AI endpoint"
    steps = frozenset({DEPLOY, PREDICT, CHAMPION})

    def deploy(self, model_uri: str, endpoint_name: str, options: DeployOptions) -> Endpoint:
        from trainer import vertex

        deployed = vertex.deploy_model(
            model_uri=model_uri,
            display_name=endpoint_name,
            project=options.project,
            region=options.region,
            machine_type=options.machine_type,
            min_replica_count=options.min_replicas,
            max_replica_count=options.max_replicas,
            traffic_percentage=options.traffic_percentage,
        )
        return Endpoint(self.name, deployed.endpoint_resource_name, metadata=deployed.metadata())

    def predict(self, endpoint: Endpoint, instances: list[dict], batch_size: int, options: DeployOptions) -> list:
        from trainer import vertex

        project_region = {"project": options.project, "region": options.region} if options.project else {}
        return vertex.predict(endpoint.uri, instances, batch_size=batch_size, **project_region)

    def serving(self, endpoint_name: str, options: DeployOptions) -> Served | None:
        from trainer import vertex

        found = vertex.find_endpoint(endpoint_name, options.project, options.region)
        if found is None or not found.gca_resource.deployed_models:
            return None
        model = found.gca_resource.deployed_models[0].model
        return Served(Endpoint(self.name, found.resource_name), f"Vertex AI endpoint {found.resource_name}", model)


TARGETS: dict[str, Any] = {t.name: t for t in (_Local(), _Vertex(), _Kfp())}


def get(target: str):
    """The serving target of that name; TargetError listing the valid ones otherwise."""
    try:
        return TARGETS[target]
    except KeyError:
        raise TargetError(f"target={target!r}: expected one of {', '.join(TARGETS)}") from None


def require(target: str, steps: Iterable[str]):
    """The target, if it can do every one of ``steps``; else one line saying what it cannot do."""
    chosen = get(target)
    missing = [step for step in steps if step not in chosen.steps]
    if missing:
        able = [name for name, t in TARGETS.items() if all(step in t.steps for step in steps)]
        raise TargetError(
            f"target={target!r} cannot do the {' and '.join(missing)} step "
            f"({'; '.join(STEP_DOCS[s] for s in missing)}); targets that can do all of "
            f"{', '.join(steps)}: {', '.join(able) or 'none'}"
        )
    return chosen


def deploy(target: str, model_uri: str, endpoint_name: str, options: DeployOptions, model_version: str) -> Endpoint:
    endpoint = require(target, [DEPLOY]).deploy(model_uri, endpoint_name, options)
    endpoint.model_version = model_version
    return endpoint


def predict(endpoint: Endpoint, instances: list[dict], batch_size: int, options: DeployOptions = DeployOptions()):
    return require(endpoint.target, [PREDICT]).predict(endpoint, instances, batch_size, options)


def serving(target: str, endpoint_name: str, options: DeployOptions) -> Served | None:
    """What the endpoint of that name serves now (None: nothing yet)."""
    return require(target, [CHAMPION]).serving(endpoint_name, options)
