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
    code_fingerprint: str = "",
) -> float:
    """Sends {"instances": [...]} requests to the endpoint in batches and writes the answers as a
    JSONL artifact. Instances come from instances_file (JSON lines) or, when it is empty, from a
    sample of the validation rows without their labels plus the lab's test.json instance. When
    labels are known, logs the RMSE to Metrics and returns it (-1 when no instance has a label)."""
    import math
    import tempfile
    from pathlib import Path

    from components.artifacts import local_path, step_log, write_metrics_file
    from trainer import client, endpoints, schema

    with step_log("predict") as facts:
        if instances_file:
            instances = client.read_instances_file(instances_file)
            labels: list[float | None] = [None] * len(instances)
        else:
            layout = schema.get_layout(valid_data.metadata["layout"])
            with tempfile.TemporaryDirectory(prefix="taxifare-predict-") as workdir:
                sample = client.sample_validation_rows(local_path(valid_data, workdir), layout, sample_size)
            instances = sample.instances + [dict(schema.TEST_INSTANCES[layout.name])]
            labels = sample.labels + [None]

        served = endpoints.Endpoint.from_metadata(endpoint.uri, endpoint.metadata)
        fares = endpoints.predict(served, instances, batch_size)

        Path(predictions.path).parent.mkdir(parents=True, exist_ok=True)
        client.write_predictions(predictions.path, instances, fares, labels)
        error = client.rmse(fares, labels)
        labelled = sum(label is not None for label in labels)
        predictions.metadata.update({"instances": len(instances), "labelled": labelled})
        metrics.log_metric("instances", len(instances))
        if math.isnan(error):
            error = -1.0  # no labelled instance; NaN does not survive the executor's JSON
        else:
            metrics.log_metric("rmse", error)
        write_metrics_file(metrics)
        facts.update(instances=len(instances), rmse=error, predictions=predictions.uri)
    return error
