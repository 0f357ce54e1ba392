"""`taxifare sweep` in the cloud, against recorded REST contracts.

The SDK calls are real: aiplatform over REST with anonymous credentials (PipelineJob.submit with an
experiment, HyperparameterTuningJob.run) and kfp.Client; GCS is the emulator (PipelineJob.submit
checks the pipeline-root bucket with google-cloud-storage).
"""

from __future__ import annotations

import csv
import re

import pytest
from google.cloud.aiplatform_v1.types import StudySpec
from typer.testing import CliRunner

from components.fingerprint import image_reference
from pipelines.cli import app
from pipelines.cloud import image

SA = "taxifare-pipelines@test-project.iam.gserviceaccount.com"
IMAGE = "us-central1-docker.pkg.dev/test-project/taxifare/taxifare-pipelines:1"
runner = CliRunner()


@pytest.fixture
def cloud_env(monkeypatch, tmp_path, gcs_emulator, bucket):
    """Settings from the environment the way a user sets them; the bucket lives in the emulator."""
    from google.cloud import storage
    from google.cloud.aiplatform.utils import resource_manager_utils

    monkeypatch.chdir(tmp_path)
    for name, value in {
        "PROJECT": "test-project",
        "REGION": "us-central1",
        "BUCKET": bucket,
        "TAXIFARE_SERVICE_ACCOUNT": SA,
        "TAXIFARE_IMAGE": IMAGE,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TAXIFARE_CONFIG", raising=False)
    monkeypatch.delenv("TAXIFARE_API_ENDPOINT", raising=False)
    # Cloud Resource Manager is not behind api_endpoint: answer with the bucket's own project number.
    owner = storage.Client().get_bucket(bucket).project_number
    monkeypatch.setattr(resource_manager_utils, "get_project_number", lambda project_id, credentials=None: str(owner))
    # `make push` pushed the image this code builds: the one the compiled specs name and, under the
    # configured repository, the one tuning trials run in
    for name in {image.reference(), image_reference(IMAGE)}:
        image.record("pushed", name, "sha256:" + "5" * 64)
    yield bucket
    from google.cloud.aiplatform import initializer

    initializer.global_config.__init__()


def _grid(tmp_path, text: str):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# -- pipeline runs grouped in a Vertex AI Experiment --------------------------------------------
def test_vertex_sweep_submits_one_job_per_point_in_one_experiment(contract_server, cloud_env, tmp_path):
    contract_server.load("vertex_sweep_pipeline_jobs", "vertex_experiment")
    grid = _grid(tmp_path, "train_steps: [100, 300]\nlearning_rate: [0.01, 0.003]\n")
    result = runner.invoke(
        app,
        [
            "sweep",
            "--grid",
            str(grid),
            "--target",
            "vertex",
            "--name",
            "taxifare-sweep-7",
            "--api-endpoint",
            contract_server.url,
            "--poll-interval",
            "0.01",
            "-p",
            "source=synthetic://?rows=5000&layout=lab&seed=1",
        ],
    )
    # one grid point's run failed on Vertex: the table has it, the exit code says so
    assert result.exit_code == 1, result.output

    creates = contract_server.calls("POST", r"/v1/projects/test-project/locations/us-central1/pipelineJobs")
    assert [c.query["pipelineJobId"] for c in creates] == [f"taxifare-sweep-7-00{i}" for i in range(4)]
    points = [
        (
            c.body["runtimeConfig"]["parameterValues"]["train_steps"],
            c.body["runtimeConfig"]["parameterValues"]["learning_rate"],
        )
        for c in creates
    ]
    assert points == [(100, 0.01), (100, 0.003), (300, 0.01), (300, 0.003)]
    for create in creates:
        body = create.body
        values = body["runtimeConfig"]["parameterValues"]
        assert values["source"] == "synthetic://?rows=5000&layout=lab&seed=1"
        assert (values["project"], values["bucket"], values["target"]) == ("test-project", cloud_env, "vertex")
        assert body["runtimeConfig"]["gcsOutputDirectory"] == f"gs://{cloud_env}/taxifare/pipeline_root"
        assert body["serviceAccount"] == SA
        assert body["labels"]["sweep"] == "taxifare-sweep-7"
        assert body["pipelineSpec"]["pipelineInfo"]["name"] == "taxifare"

    # the experiment is created once (a Vertex AI Experiment is a metadata context of that schema)...
    (experiment,) = contract_server.calls("POST", r".*/metadataStores/default/contexts")
    assert experiment.query["contextId"] == "taxifare-sweep-7"
    assert experiment.body["schemaTitle"] == "system.Experiment"
    # ...and every run's own context becomes its child: the runs are grouped in the experiment
    children = contract_server.calls("POST", r".*/contexts/taxifare-sweep-7:addContextChildren")
    assert [c.body["childContexts"] for c in children] == [
        [f"projects/123456789012/locations/us-central1/metadataStores/default/contexts/taxifare-sweep-7-00{i}"]
        for i in range(4)
    ]

    # the table is sorted by the train task's validation RMSE; the failed run shows its error
    out = result.output
    lines = [line for line in out.splitlines() if line.startswith("│")]
    ranked = [re.split(r"\s*│\s*", line.strip("│ "))[:5] for line in lines]
    assert [row[1] for row in ranked[:3]] == ["3", "1", "0"]
    assert "PIPELINE_STATE_FAILED" in out and "exited with a non-zero status of 2" in out

    out_dir = tmp_path / "build" / "sweep" / "taxifare-sweep-7"
    rows = _rows(out_dir / "results.csv")
    assert [(r["index"], r["rmse"]) for r in rows] == [("3", "3.82"), ("1", "4.37"), ("0", "5.91"), ("2", "")]
    assert rows[0]["mae"] == "2.71" and rows[0]["endpoint_rmse"] == "3.9"
    assert rows[0]["run"] == "projects/123456789012/locations/us-central1/pipelineJobs/taxifare-sweep-7-003"
    assert rows[3]["status"] == "failed" and "The DAG failed" in rows[3]["error"]
    assert (out_dir / "rmse.png").read_bytes()[:4] == b"\x89PNG"


def test_vertex_sweep_with_a_bad_grid_sends_nothing(contract_server, cloud_env, tmp_path):
    grid = _grid(tmp_path, "train_steps: [100, 300]\nlearning_rte: [0.01]\n")
    result = runner.invoke(
        app, ["sweep", "--grid", str(grid), "--target", "vertex", "--api-endpoint", contract_server.url]
    )
    assert result.exit_code == 2
    assert "unknown parameter 'learning_rte'; valid names: project, region, bucket" in result.output
    assert contract_server.requests == []


# -- Vertex AI hyperparameter tuning ------------------------------------------------------------
def test_tuner_runs_a_hyperparameter_tuning_job_over_the_trainer(contract_server, cloud_env, tmp_path, monkeypatch):
    from google.cloud.aiplatform import jobs

    monkeypatch.setattr(jobs, "_JOB_WAIT_TIME", 0.01)  # the SDK's own polling, without its 5 s sleeps
    contract_server.load("vertex_tuning_job")
    grid = _grid(tmp_path, "hidden_units: ['64 32', '32 16']\nlearning_rate: [0.003, 0.01]\n")
    data = f"gs://{cloud_env}/taxifare/data/lab-0123"
    result = runner.invoke(
        app,
        [
            "sweep",
            "--grid",
            str(grid),
            "--tuner",
            "vertex",
            "--name",
            "taxifare-tuning-3",
            "--api-endpoint",
            contract_server.url,
            "--train-data",
            f"{data}/train.csv",
            "--eval-data",
            f"{data}/valid.csv",
            "-p",
            "train_steps=300",
            "--parallel",
            "2",
        ],
    )
    assert result.exit_code == 1, result.output  # one trial was infeasible

    (create,) = contract_server.calls(
        "POST",
        r"/v1/projects/test-project/locations/us-central1/"
        r"hyperparameterTuningJobs",
    )
    body = create.body
    assert body["displayName"] == "taxifare-tuning-3"
    assert (body["maxTrialCount"], body["parallelTrialCount"], body["maxFailedTrialCount"]) == (4, 2, 4)
    study = body["studySpec"]
    assert study["metrics"] == [{"metricId": "rmse", "goal": StudySpec.MetricSpec.GoalType.MINIMIZE.value}]
    assert study["algorithm"] == StudySpec.Algorithm.GRID_SEARCH.value
    spaces = {p["parameterId"]: p for p in study["parameters"]}
    assert spaces["hidden_units"]["categoricalValueSpec"]["values"] == ["64 32", "32 16"]
    assert spaces["learning_rate"]["discreteValueSpec"]["values"] == [0.003, 0.01]
    trial_job = body["trialJobSpec"]
    assert trial_job["serviceAccount"] == SA
    assert trial_job["baseOutputDirectory"]["outputUriPrefix"] == f"gs://{cloud_env}/taxifare/tuning/taxifare-tuning-3"
    (pool,) = trial_job["workerPoolSpecs"]
    container = pool["containerSpec"]
    assert container["imageUri"] == image_reference(IMAGE)  # the configured repository, tagged with the code
    # each trial: the trainer's own flags; Vertex appends --hidden_units=… --learning_rate=…
    assert container["command"] == ["python", "-m", "trainer.hypertune"]
    assert container["args"] == [
        "--train_data_paths",
        f"/gcs/{cloud_env}/taxifare/data/lab-0123/train.csv",
        "--eval_data_paths",
        f"/gcs/{cloud_env}/taxifare/data/lab-0123/valid.csv",
        "--output_dir",
        f"/gcs/{cloud_env}/taxifare/tuning/taxifare-tuning-3",
        "--train_steps",
        "300",
    ]

    rows = _rows(tmp_path / "build" / "sweep" / "taxifare-tuning-3" / "results.csv")
    assert [(r["index"], r["hidden_units"], r["learning_rate"], r["rmse"]) for r in rows] == [
        ("2", "64 32", "0.01", "3.87"),
        ("1", "64 32", "0.003", "4.12"),
        ("4", "32 16", "0.01", "4.55"),
        ("3", "32 16", "0.003", ""),
    ]
    assert rows[3]["error"] == "The replica workerpool0-0 exited with a non-zero status of 3."
    assert "JOB_STATE_SUCCEEDED" in result.output


@pytest.mark.parametrize(
    ("grid", "extra", "expected"),
    [
        (
            "source: ['synthetic://']\n",
            [],
            "unknown parameter 'source'; valid names: train_steps, batch_size, hidden_units, learning_rate",
        ),
        ("learning_rate: [0.01]\n", [], "--tuner vertex needs --train-data and --eval-data"),
        (
            "learning_rate: [0.01]\n",
            ["--train-data", "/tmp/t.csv", "--eval-data", "gs://b/v.csv"],
            "'/tmp/t.csv': tuning trials read their data from the bucket",
        ),
        (
            "learning_rate: [0.01]\n",
            ["--train-data", "gs://b/t.csv", "--eval-data", "gs://b/v.csv", "-p", "learning_rate=0.1"],
            "learning_rate: given both in the grid and as --param",
        ),
    ],
)
def test_tuner_input_errors_send_nothing(contract_server, cloud_env, tmp_path, grid, extra, expected):
    result = runner.invoke(
        app,
        [
            "sweep",
            "--grid",
            str(_grid(tmp_path, grid)),
            "--tuner",
            "vertex",
            "--api-endpoint",
            contract_server.url,
            *extra,
        ],
    )
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())
    assert contract_server.requests == []


# -- pipeline runs in a KFP experiment ----------------------------------------------------------
def test_kfp_sweep_creates_one_run_per_point_in_the_experiment(contract_server, cloud_env, tmp_path):
    contract_server.load("kfp")
    grid = _grid(tmp_path, "train_steps: [100, 300]\n")
    result = runner.invoke(
        app,
        [
            "sweep",
            "--grid",
            str(grid),
            "--target",
            "kfp",
            "--host",
            contract_server.url,
            "--name",
            "taxifare-sweep-kfp",
            "--poll-interval",
            "0.01",
        ],
    )
    runs = contract_server.calls("POST", "/apis/v2beta1/runs")
    assert [r.body["display_name"] for r in runs] == ["taxifare-000", "taxifare-001"]
    assert [r.body["runtime_config"]["parameters"]["train_steps"] for r in runs] == [100, 300]
    assert all(r.body["experiment_id"] == "0b7c2c9e-6f3a-4d1e-9a51-3c7f4b2e8d10" for r in runs)
    experiments = contract_server.calls("POST", "/apis/v2beta1/experiments")
    assert experiments and experiments[0].body["display_name"] == "taxifare-sweep-kfp"
    # the KFP API gives states, not metric values: rows say SUCCEEDED, no RMSE to rank by
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "build" / "sweep" / "taxifare-sweep-kfp" / "results.csv")
    assert [(r["train_steps"], r["status"], r["rmse"]) for r in rows] == [
        ("100", "SUCCEEDED", ""),
        ("300", "SUCCEEDED", ""),
    ]


# -- the champion on Vertex AI: measured through Endpoint.predict -------------------------------
INSTANCES = [
    {"pickuplon": -73.99, "pickuplat": 40.75, "dropofflon": -73.97, "dropofflat": 40.78, "passengers": 1.0},
    {"pickuplon": -73.98, "pickuplat": 40.76, "dropofflon": -73.95, "dropofflat": 40.77, "passengers": 2.0},
    {"pickuplon": -73.78, "pickuplat": 40.64, "dropofflon": -73.98, "dropofflat": 40.75, "passengers": 1.0},
    {"pickuplon": -73.99, "pickuplat": 40.73, "dropofflon": -73.99, "dropofflat": 40.74, "passengers": 3.0},
]


def test_vertex_champion_rmse_comes_from_the_served_endpoint(vertex_contract, monkeypatch):
    from trainer import selection
    from trainer.selection import measure_champion

    monkeypatch.setenv("TAXIFARE_API_ENDPOINT", vertex_contract.url)
    vertex_contract.load("vertex_champion_endpoint")
    labels = [11.0, 12.0, 9.0, 20.0]  # the recorded answers are 10, 12, 8, 20
    champion = measure_champion(
        target="vertex",
        endpoint_name="taxifare",
        instances=INSTANCES,
        labels=labels,
        project="test-project",
        region="us-central1",
        batch_size=2,
    )
    assert champion.rmse == pytest.approx((2 / 4) ** 0.5)
    assert champion.model == "projects/123456789012/locations/us-central1/models/8800000000000000001"
    assert "endpoints/4200000000000000009" in champion.description
    (listing,) = vertex_contract.calls("GET", r".*/locations/us-central1/endpoints")
    assert listing.query["filter"] == 'display_name="taxifare"'
    predicts = vertex_contract.calls("POST", r".*/endpoints/4200000000000000009:predict")
    assert [p.body["instances"] for p in predicts] == [INSTANCES[:2], INSTANCES[2:]]
    assert selection.decide(0.5, champion.rmse, 0.2).deploy and not selection.decide(0.6, champion.rmse, 0.2).deploy


def test_no_vertex_endpoint_means_no_champion(vertex_contract, monkeypatch):
    from trainer.selection import measure_champion

    monkeypatch.setenv("TAXIFARE_API_ENDPOINT", vertex_contract.url)
    vertex_contract.add("GET", r"/v1/projects/[^/]+/locations/[^/]+/endpoints", {"endpoints": []})
    champion = measure_champion(
        target="vertex",
        endpoint_name="taxifare",
        instances=INSTANCES,
        labels=[1.0] * 4,
        project="test-project",
        region="us-central1",
    )
    assert champion.rmse is None and "no Vertex AI endpoint named 'taxifare'" in champion.description
    assert vertex_contract.calls("POST") == []
