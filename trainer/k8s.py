"""Serve a model on a Kubernetes (KFP) cluster: the project image as a Deployment + Service.

The serving container is the same one Vertex AI runs: the project image's ``serve`` entrypoint
reading ``AIP_HTTP_PORT`` / ``AIP_HEALTH_ROUTE`` / ``AIP_PREDICT_ROUTE`` / ``AIP_STORAGE_URI``.
A second deploy with the same name updates the Deployment in place (rolling update to the new
model) and keeps the Service, so clients keep one address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

SERVING_PORT = 8080
HEALTH_ROUTE = "/health"
PREDICT_ROUTE = "/predict"
APP_LABEL = "taxifare-serving"
RUN_AS_USER = 1000  # the image's non-root user


class ClusterError(RuntimeError):
    """The cluster refused the objects or the Deployment did not become ready."""


@dataclass
class ClusterEndpoint:
    name: str
    namespace: str
    url: str
    model_uri: str
    image: str
    created: bool

    def metadata(self) -> dict:
        return asdict(self)


def api_client(host: str | None = None):
    """A kubernetes ApiClient: ``host`` as given, else in-cluster config, else ~/.kube/config."""
    from kubernetes import client, config

    if host:
        configuration = client.Configuration()
        configuration.host = host
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def _labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP_LABEL,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "taxifare-pipelines",
    }


def manifests(
    *,
    name: str,
    model_uri: str,
    image: str,
    namespace: str = "kubeflow",
    replicas: int = 1,
    env: Mapping[str, str] | None = None,
    cpu: str = "500m",
    memory: str = "1Gi",
    service_account: str | None = None,
):
    """The V1Deployment and V1Service for serving ``model_uri`` with ``image``."""
    from kubernetes import client

    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    labels = _labels(name)
    environment = {
        "AIP_HTTP_PORT": str(SERVING_PORT),
        "AIP_HEALTH_ROUTE": HEALTH_ROUTE,
        "AIP_PREDICT_ROUTE": PREDICT_ROUTE,
        "AIP_STORAGE_URI": model_uri,
        **(env or {}),
    }
    probe = client.V1Probe(
        http_get=client.V1HTTPGetAction(path=HEALTH_ROUTE, port=SERVING_PORT), period_seconds=5, failure_threshold=3
    )
    container = client.V1Container(
        name="server",
        image=image,
        image_pull_policy="IfNotPresent",  # kind clusters get the image by `kind load docker-image`
        args=["serve"],
        ports=[client.V1ContainerPort(container_port=SERVING_PORT, name="http")],
        env=[client.V1EnvVar(name=k, value=v) for k, v in environment.items()],
        readiness_probe=probe,
        # the model is downloaded and loaded before health answers 200: give it time
        liveness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path=HEALTH_ROUTE, port=SERVING_PORT),
            initial_delay_seconds=60,
            period_seconds=10,
        ),
        resources=client.V1ResourceRequirements(requests={"cpu": cpu, "memory": memory}, limits={"memory": memory}),
        security_context=client.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
        volume_mounts=[client.V1VolumeMount(name="tmp", mount_path="/tmp")],
    )
    deployment = client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(
            name=name, namespace=namespace, labels=labels, annotations={"taxifare/model-uri": model_uri}
        ),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app.kubernetes.io/instance": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels, annotations={"taxifare/model-uri": model_uri}),
                spec=client.V1PodSpec(
                    containers=[container],
                    service_account_name=service_account,
                    volumes=[client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource())],
                ),
            ),
        ),
    )
    service = client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=client.V1ServiceSpec(
            selector={"app.kubernetes.io/instance": name},
            ports=[client.V1ServicePort(name="http", port=80, target_port=SERVING_PORT)],
            type="ClusterIP",
        ),
    )
    return deployment, service


def _exists(read, name: str, namespace: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise ClusterError(f"reading {name} in {namespace}: {exc.status} {exc.reason}") from None
    return True


def deploy_serving(
    *,
    name: str,
    model_uri: str,
    image: str,
    namespace: str = "kubeflow",
    replicas: int = 1,
    env: Mapping[str, str] | None = None,
    host: str | None = None,
    wait: bool = True,
    timeout_s: float = 300.0,
    poll_interval_s: float = 2.0,
    **resources,
) -> ClusterEndpoint:
    """Creates (or updates) the Deployment + Service and, with ``wait``, waits until all replicas are ready."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    deployment, service = manifests(
        name=name, model_uri=model_uri, image=image, namespace=namespace, replicas=replicas, env=env, **resources
    )
    api = api_client(host)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    try:
        created = not _exists(apps.read_namespaced_deployment, name, namespace)
        if created:
            apps.create_namespaced_deployment(namespace, deployment)
        else:
            apps.patch_namespaced_deployment(name, namespace, deployment)
        if _exists(core.read_namespaced_service, name, namespace):
            core.patch_namespaced_service(name, namespace, service)
        else:
            core.create_namespaced_service(namespace, service)
    except ApiException as exc:
        raise ClusterError(
            f"deploying {name} to namespace {namespace}: {exc.status} {exc.reason}: {(exc.body or '')[:300]}"
        ) from None
    log.info("%s deployment %s/%s serving %s", "created" if created else "updated", namespace, name, model_uri)
    if wait:
        _wait_ready(apps, name, namespace, replicas, timeout_s, poll_interval_s)
    return ClusterEndpoint(
        name=name,
        namespace=namespace,
        url=f"http://{name}.{namespace}.svc.cluster.local{PREDICT_ROUTE}",
        model_uri=model_uri,
        image=image,
        created=created,
    )


def _wait_ready(apps, name: str, namespace: str, replicas: int, timeout_s: float, poll_interval_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = apps.read_namespaced_deployment_status(name, namespace).status
        ready = (status.ready_replicas or 0) if status else 0
        updated = (status.updated_replicas or 0) if status else 0
        if ready >= replicas and updated >= replicas:
            log.info("deployment %s/%s ready (%d/%d)", namespace, name, ready, replicas)
            return
        if time.monotonic() > deadline:
            raise ClusterError(
                f"deployment {namespace}/{name}: {ready}/{replicas} replicas ready after {timeout_s:.0f} s"
            )
        time.sleep(poll_interval_s)


def delete_serving(name: str, namespace: str = "kubeflow", host: str | None = None) -> None:
    """Deletes the Deployment and Service (missing ones are fine)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = api_client(host)
    for delete in (client.AppsV1Api(api).delete_namespaced_deployment, client.CoreV1Api(api).delete_namespaced_service):
        try:
            delete(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise ClusterError(f"deleting {name} in {namespace}: {exc.status} {exc.reason}") from None
