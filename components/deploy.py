"""deploy: serve the exported model at an endpoint."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(
    exported_model: Input[Model],
    target: str,
    endpoint_name: str,
    project: str,
    region: str,
    endpoint: Output[Artifact],
    machine_type: str = "n1-standard-2",
    min_replicas: int = 1,
    max_replicas: int = 1,
    traffic_percentage: int = 100,
    code_fingerprint: str = "",
):
    """Deploys the exported model. target=local starts the project's prediction server on a free
    loopback port (replacing the model an existing local endpoint of that name serves) and waits
    for its health check; target=vertex uploads it to the Model Registry (a new version of the
    model of that name) and deploys it to the endpoint of that name with the given machine type,
    replicas and traffic share; target=kfp runs the serving container as a Deployment + Service
    on the cluster. The endpoint artifact records the URL and the model version."""
    from pathlib import Path

    from components.artifacts import step_log
    from trainer import endpoints

    with step_log("deploy") as facts:
        options = endpoints.DeployOptions(project, region, machine_type, min_replicas, max_replicas, traffic_percentage)
        version = exported_model.metadata.get("version", Path(exported_model.uri.rstrip("/")).name)
        served = endpoints.deploy(target, exported_model.uri, endpoint_name, options, version)
        # a Vertex endpoint is known by its resource name; local and cluster ones by their URL
        endpoint.uri = served.uri
        endpoint.metadata.update(served.as_metadata())
        facts.update(endpoint=endpoint.uri, model_version=version)
