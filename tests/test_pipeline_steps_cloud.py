"""The train and deploy steps with cloud targets: real SDK calls to the recorded Vertex AI contract,
real objects in the GCS emulator."""

import json

import pytest
from kfp import dsl

from components.deploy import deploy
from components.train import train
from trainer import storage


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setenv("TAXIFARE_VERTEX_POLL_S", "0.01")


def test_train_step_on_vertex_runs_a_custom_job_and_reads_its_output(
    vertex_contract, gcs_emulator, bucket, lab_model_dir, fast_polls, monkeypatch
):
    monkeypatch.setenv("TAXIFARE_BUCKET", bucket)
    vertex_contract.load("vertex_custom_job")
    root = f"gs://{bucket}/pipeline_root/run-1"
    train_data = dsl.Dataset(uri=f"{root}/validate/clean_train", metadata={"layout": "lab"})
    valid_data = dsl.Dataset(uri=f"{root}/validate/clean_valid", metadata={"layout": "lab"})
    # What the CustomJob leaves behind: the trainer's OUTPUT_DIR at the Model's URI.
    model = dsl.Model(uri=f"{root}/train/model")
    storage.upload_dir(lab_model_dir, model.uri)
    eval_rows = json.loads((lab_model_dir / "eval_metrics.json").read_text())["eval_rows"]
    storage.upload_file(_valid_csv(lab_model_dir), valid_data.uri)
    metrics = dsl.Metrics(uri=str(lab_model_dir.parent / "metrics"))
    evaluation = dsl.HTML(uri=str(lab_model_dir.parent / "evaluation.html"))

    rmse, _ = train.python_func(
        train_data=train_data,
        valid_data=valid_data,
        train_steps=300,
        batch_size=128,
        hidden_units="32 16",
        learning_rate=0.01,
        seed=3,
        embedding_dim=0,
        towers=1,
        model=model,
        metrics=metrics,
        evaluation=evaluation,
        runner="vertex",
        project="test-project",
        region="us-central1",
        machine_type="n1-standard-8",
        replica_count=2,
    )

    (create,) = vertex_contract.calls("POST", r".*/customJobs")
    pools = create.body["jobSpec"]["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == ["1", "1"]
    args = pools[0]["containerSpec"]["args"]
    assert args[args.index("--output_dir") + 1] == f"/gcs/{bucket}/pipeline_root/run-1/train/model"
    assert args[args.index("--train_steps") + 1] == "300"
    assert pools[0]["machineSpec"]["machineType"] == "n1-standard-8"
    assert rmse > 0 and metrics.metadata["eval_rows"] == eval_rows
    assert evaluation.path and "data:image/png" in open(evaluation.path).read()


def _valid_csv(model_dir):
    from tests.fixtures.data import shared_data_dir

    shared = shared_data_dir()
    if shared is not None:
        return shared / "lab" / "taxi-valid.csv"
    from trainer import synth

    return synth.write_csv(model_dir.parent / "valid.csv", rows=500, layout="lab", seed=4)


def test_unknown_target_is_refused_before_any_call():
    with pytest.raises(ValueError, match="target='gke': expected one of local, vertex, kfp"):
        deploy.python_func(
            exported_model=dsl.Model(uri="gs://b/m/1"),
            target="gke",
            endpoint_name="taxifare",
            project="p",
            region="us-central1",
            endpoint=dsl.Artifact(uri="/tmp/endpoint"),
        )


def test_unknown_train_runner_is_refused_before_any_work():
    with pytest.raises(ValueError, match="train runner='gpu': expected one of task, vertex"):
        train.python_func(
            train_data=dsl.Dataset(uri="/tmp/t"),
            valid_data=dsl.Dataset(uri="/tmp/v"),
            train_steps=1,
            batch_size=1,
            hidden_units="8",
            learning_rate=0.1,
            seed=0,
            embedding_dim=0,
            towers=1,
            model=dsl.Model(uri="/tmp/m"),
            metrics=dsl.Metrics(uri="/tmp/x"),
            evaluation=dsl.HTML(uri="/tmp/e"),
            runner="gpu",
        )
