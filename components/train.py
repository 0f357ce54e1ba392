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
    embedding_dim: int,
    towers: int,
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
    code_fingerprint: str = "",
) -> NamedTuple("TrainOutputs", [("rmse", float), ("tensorboard_dir", str)]):
    """Trains the taxifare model with the trainer package's own command line.

    The hyperparameters are those of trainer.hparams (the pipelines pass every one). runner task:
    in this pipeline task. runner vertex: as a Vertex AI CustomJob in the project image
    (machine_type, replica_count, accelerator_*; more than one replica trains with
    MultiWorkerMirroredStrategy). Outputs the trainer's output directory as the Model (SavedModel
    under export/exporter/), validation rmse/mae as Metrics, an HTML evaluation report (predicted
    vs actual fares, error by trip distance) and the TensorBoard log directory.
    """
    import json
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components.artifacts import local_path, step_log, write_metrics_file, write_text
    from trainer import export, predictor, report, schema, task

    hyper = {
        "train_steps": train_steps,
        "batch_size": batch_size,
        "hidden_units": hidden_units,
        "learning_rate": learning_rate,
        "seed": seed,
        "embedding_dim": embedding_dim,
        "towers": towers,
    }
    if runner not in task.RUNNERS:
        raise ValueError(f"train runner={runner!r}: expected one of {', '.join(task.RUNNERS)}")
    with step_log("train") as facts, tempfile.TemporaryDirectory(prefix="taxifare-train-") as workdir:
        valid_path = local_path(valid_data, Path(workdir) / "valid")  # trainer eval and the HTML report
        if runner == "vertex":
            from trainer import vertex_training

            vertex_training.train(
                project=project,
                region=region,
                train_data=train_data.uri,
                eval_data=valid_data.uri,
                output_dir=model.uri,
                hyper=hyper,
                machine_type=machine_type,
                replica_count=replica_count,
                accelerator_type=accelerator_type,
                accelerator_count=accelerator_count,
            )
            output_dir = local_path(model, Path(workdir) / "model")
        else:
            output_dir = Path(model.path)
            train_path = local_path(train_data, Path(workdir) / "train")
            argv = task.command_line(str(train_path), str(valid_path), str(output_dir), hyper)
            code = task.main(argv)
            if code != 0:
                raise RuntimeError(f"trainer exited with code {code} (arguments: {' '.join(argv)})")
        results = json.loads((output_dir / "eval_metrics.json").read_text())
        layout = schema.get_layout(results["layout"])
        # The export this step hands on, loaded and asked for the test instance's fare: export
        # then checks that the published copy is these bytes (trainer.export.export_model).
        trained = predictor.Predictor.load(output_dir)
        check_fare = export.check_predicts(trained, str(output_dir))
        write_text(evaluation, report.evaluation_page(trained, valid_path, layout, results))

        for name in ("rmse", "mae"):
            metrics.log_metric(name, float(results[name]))
        metrics.log_metric("eval_rows", int(results["eval_rows"]))
        write_metrics_file(metrics)
        tensorboard_dir = model.uri.rstrip("/") + "/tensorboard"
        model.metadata.update(
            {
                "framework": "tensorflow",
                "layout": layout.name,
                "rmse": float(results["rmse"]),
                "mae": float(results["mae"]),
                "train_steps": train_steps,
                "tensorboard": tensorboard_dir,
                "check_fare": check_fare,
            }
        )
        facts.update(
            rmse=float(results["rmse"]),
            mae=float(results["mae"]),
            model=model.uri,
            evaluation=evaluation.uri,
            tensorboard=tensorboard_dir,
        )
    outputs = namedtuple("TrainOutputs", ["rmse", "tensorboard_dir"])
    return outputs(float(results["rmse"]), tensorboard_dir)
