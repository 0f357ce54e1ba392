"""predict: the client program — send instances to the endpoint, keep the answers."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def predict(
    endpoint: Input[Artifact],
    valid_data: Input[Dataset],
    instances_file: str,
    sample_size: int,
    batch_size: int,
    predictions: Output[Dataset],
    metrics: Output[Metrics],
) -> float:
    """Sends {"instances": [...]} requests to the endpoint in batches and writes the answers as a
    JSONL artifact. Instances come from instances_file (JSON lines) or, when it is empty, from a
    sample of the validation rows without their labels plus the lab's test.json instance. When
    labels are known, logs the RMSE to Metrics and returns it (-1 when no instance has a label)."""
    from trainer.pipeline_steps import run_predict

    return run_predict(
        endpoint=endpoint,
        valid_data=valid_data,
        instances_file=instances_file,
        sample_size=sample_size,
        batch_size=batch_size,
        predictions=predictions,
        metrics=metrics,
    )
