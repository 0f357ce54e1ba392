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
):
    """Deploys the exported model. target=local starts the project's prediction server on a free
    loopback port (replacing the model an existing local endpoint of that name serves) and waits
    for its health check; target=vertex uploads it to the Model Registry (a new version of the
    model of that name) and deploys it to the endpoint of that name with the given machine type,
    replicas and traffic share; target=kfp runs the serving container as a Deployment + Service
    on the cluster. The endpoint artifact records the URL and the model version."""
    from trainer.pipeline_steps import run_deploy

    run_deploy(
        exported_model=exported_model,
        target=target,
        endpoint_name=endpoint_name,
        project=project,
        region=region,
        endpoint=endpoint,
        machine_type=machine_type,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        traffic_percentage=traffic_percentage,
    )
