"""train: the trainer package on the validated data (locally in the task, or as a Vertex CustomJob)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(
    train_data: Input[Dataset],
    valid_data: Input[Dataset],
    train_steps: int,
    batch_size: int,
    hidden_units: str,
    learning_rate: float,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
    evaluation: Output[HTML],
    runner: str = "task",
    project: str = "",
    region: str = "",
    machine_type: str = "n1-standard-4",
    replica_count: int = 1,
    accelerator_type: str = "",
    accelerator_count: int = 0,
    embedding_dim: int = 0,
    towers: int = 5,
) -> NamedTuple("TrainOutputs", [("rmse", float), ("tensorboard_dir", str)]):
    """Trains the taxifare model with the trainer package's own command line.

    runner task: in this pipeline task. runner vertex: as a Vertex AI CustomJob in the project
    image (machine_type, replica_count, accelerator_*; more than one replica trains with
    MultiWorkerMirroredStrategy). Outputs the trainer's output directory as the Model (SavedModel
    under export/exporter/), validation rmse/mae as Metrics, an HTML evaluation report (predicted
    vs actual fares, error by trip distance) and the TensorBoard log directory. Feature switches:
    embedding_dim turns the learned pickup/dropoff grid-cell embeddings on (> 0) or off (0);
    towers is the number of averaged DNN heads.
    """
    from trainer.pipeline_steps import run_train

    return run_train(
        train_data=train_data,
        valid_data=valid_data,
        train_steps=train_steps,
        batch_size=batch_size,
        hidden_units=hidden_units,
        learning_rate=learning_rate,
        seed=seed,
        model=model,
        metrics=metrics,
        evaluation=evaluation,
        runner=runner,
        project=project,
        region=region,
        machine_type=machine_type,
        replica_count=replica_count,
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        embedding_dim=embedding_dim,
        towers=towers,
    )
