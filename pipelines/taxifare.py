"""The `taxifare` pipeline: ingest → validate → train → export → deploy → predict."""

from kfp import dsl

from pipelines.graph import data_steps, serving_steps, train_step, with_hparam_docs
from trainer import endpoints
from trainer.hparams import DEFAULTS as HP
from trainer.schema import VALID_FRACTION

PIPELINE_NAME = "taxifare"
SERVING_STEPS = (endpoints.DEPLOY, endpoints.PREDICT)  # what its serving target must be able to do
DEFAULT_SOURCE = "synthetic://?rows=20000&layout=lab&seed=42"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Trains, exports, deploys and calls the taxifare fare model.",
)
@with_hparam_docs
def taxifare(
    project: str = "local-project",
    region: str = "us-central1",
    bucket: str = "taxifare-local",
    prefix: str = "taxifare",
    source: str = DEFAULT_SOURCE,
    valid_source: str = "",
    valid_fraction: float = VALID_FRACTION,
    max_bad_fraction: float = 0.05,
    smoke_steps: int = 10,
    train_steps: int = HP["train_steps"],
    batch_size: int = HP["batch_size"],
    hidden_units: str = HP["hidden_units"],
    learning_rate: float = HP["learning_rate"],
    seed: int = HP["seed"],
    target: str = "local",
    train_runner: str = "task",
    train_machine_type: str = "n1-standard-4",
    train_replica_count: int = 1,
    train_accelerator_type: str = "",
    train_accelerator_count: int = 0,
    serving_machine_type: str = "n1-standard-2",
    min_replicas: int = 1,
    max_replicas: int = 1,
    traffic_percentage: int = 100,
    endpoint_name: str = "taxifare",
    instances_file: str = "",
    sample_size: int = 200,
    predict_batch_size: int = 100,
) -> float:
    """Taxifare end to end, the steps of the lab as pipeline tasks.

    Steps:
        1. ingest — copy the source into gs://{bucket}/{prefix}/data/ as train/valid CSVs.
        2. validate — check every row, quarantine bad rows, smoke-train and predict test.json.
        3. train — train the Keras model on the clean rows; rmse/mae, HTML report, TensorBoard.
        4. export — publish the SavedModel to gs://{bucket}/{prefix}/models/<version>/.
        5. deploy — serve it (target local: a loopback endpoint; vertex: a Vertex AI endpoint).
        6. predict — call the endpoint with {"instances": [...]}, write predictions, log RMSE.

    Args:
        project: Google Cloud project id (the lab's PROJECT).
        region: Region for Vertex AI and the bucket (the lab's REGION), e.g. us-central1.
        bucket: The one ML bucket the pipeline reads and writes (the lab's BUCKET), without gs://.
        prefix: Folder inside the bucket for this project's data and models.
        source: Where the trips come from: a local path or glob, https:// URL, gs:// URI,
            bq://project.dataset.table, bq://?query=…, or synthetic://?rows=N&layout=lab|dated&seed=S.
        valid_source: Optional separate validation source; empty to split `source` by key hash.
        valid_fraction: Share of `source` rows that go to validation when it is split.
        max_bad_fraction: Fail validation when more than this share of rows is malformed or
            implausible (the bad rows are kept in the quarantine artifact either way).
        smoke_steps: Training steps of the validation smoke run.
        {hparams}
        target: Where to deploy and predict: "local" (a server on this machine), "vertex" (a
            Vertex AI endpoint) or "kfp" (a Deployment + Service on the KFP cluster).
        train_runner: Where to train: "task" (inside the pipeline's train task) or "vertex" (a
            Vertex AI CustomJob in the project image, on Vertex AI Pipelines).
        train_machine_type: Machine type of the training job (train_runner vertex).
        train_replica_count: Training replicas (train_runner vertex); more than one trains with
            MultiWorkerMirroredStrategy.
        train_accelerator_type: Accelerator of each training replica, e.g. NVIDIA_TESLA_T4; empty
            for none (train_runner vertex).
        train_accelerator_count: Accelerators per training replica (train_runner vertex).
        serving_machine_type: Machine type of the endpoint's replicas (target vertex).
        min_replicas: Minimum serving replicas (target vertex; the replica count for kfp).
        max_replicas: Maximum serving replicas (target vertex).
        traffic_percentage: Share of the endpoint's traffic the new model gets (target vertex).
        endpoint_name: Display name of the endpoint; an existing one gets the new model.
        instances_file: JSON-lines file of instances to predict; empty for a validation sample.
        sample_size: Validation rows sent to the endpoint when instances_file is empty.
        predict_batch_size: Instances per prediction request.

    Returns:
        The RMSE of the endpoint's predictions on the labelled sample (-1 without labels).
    """
    _, validate_task = data_steps(
        source=source,
        bucket=bucket,
        prefix=prefix,
        valid_source=valid_source,
        valid_fraction=valid_fraction,
        project=project,
        max_bad_fraction=max_bad_fraction,
        smoke_steps=smoke_steps,
    )

    train_task = train_step(
        validate_task=validate_task,
        hyper={
            "train_steps": train_steps,
            "batch_size": batch_size,
            "hidden_units": hidden_units,
            "learning_rate": learning_rate,
            "seed": seed,
        },
        runner=train_runner,
        project=project,
        region=region,
        machine_type=train_machine_type,
        replica_count=train_replica_count,
        accelerator_type=train_accelerator_type,
        accelerator_count=train_accelerator_count,
    )

    predict_task = serving_steps(
        trained_model=train_task.outputs["model"],
        validate_task=validate_task,
        bucket=bucket,
        prefix=prefix,
        target=target,
        endpoint_name=endpoint_name,
        project=project,
        region=region,
        instances_file=instances_file,
        sample_size=sample_size,
        predict_batch_size=predict_batch_size,
        machine_type=serving_machine_type,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        traffic_percentage=traffic_percentage,
    )
    return predict_task.outputs["Output"]
