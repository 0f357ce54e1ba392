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
):
    """Deploys the exported model. target=local starts the project's prediction server on a free
    loopback port (replacing the model an existing local endpoint of that name serves) and waits
    for its health check; target=vertex uploads it to the Model Registry and deploys it to a
    Vertex AI endpoint. The endpoint artifact records the URL and the model version."""
    from trainer.pipeline_steps import run_deploy

    run_deploy(
        exported_model=exported_model,
        target=target,
        endpoint_name=endpoint_name,
        project=project,
        region=region,
        endpoint=endpoint,
    )
