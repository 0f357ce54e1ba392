"""`taxifare submit` / `config` / `setup-gcp` through the CLI, against recorded Vertex AI and KFP contracts.

The SDK calls are real (aiplatform over REST with anonymous credentials, kfp.Client); GCS is the
emulator (PipelineJob.submit checks the pipeline-root bucket with google-cloud-storage).
"""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from components.fingerprint import image_tag
from pipelines.cli import app
from pipelines.cloud import image

SA = "taxifare-pipelines@test-project.iam.gserviceaccount.com"
PUSHED_DIGEST = "sha256:" + "5" * 64
runner = CliRunner()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from pipelines.compile import compile_pipeline

    return compile_pipeline("taxifare", tmp_path_factory.mktemp("compiled"))


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
        "TAXIFARE_IMAGE": "taxifare-pipelines:1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TAXIFARE_CONFIG", raising=False)
    monkeypatch.delenv("TAXIFARE_API_ENDPOINT", raising=False)
    # Cloud Resource Manager is not behind api_endpoint; answer with the bucket's own project number
    # so the SDK's bucket-ownership check passes the way it does for a bucket of the project.
    owner = storage.Client().get_bucket(bucket).project_number
    monkeypatch.setattr(resource_manager_utils, "get_project_number", lambda project_id, credentials=None: str(owner))
    # `make push` pushed the image this code builds (the record in ./build/image.json)
    image.record("pushed", image.reference(), PUSHED_DIGEST)
    yield bucket
    from google.cloud.aiplatform import initializer

    initializer.global_config.__init__()


def _submit_vertex(server, compiled, *extra):
    return runner.invoke(
        app,
        [
            "submit",
            "--target",
            "vertex",
            "--api-endpoint",
            server.url,
            "--no-compile",
            "--template",
            str(compiled),
            "--poll-interval",
            "0.01",
            *extra,
        ],
    )


def test_vertex_submit_sends_spec_parameters_root_and_account(contract_server, cloud_env, compiled):
    contract_server.load("vertex_pipeline_job")
    result = _submit_vertex(
        contract_server,
        compiled,
        "--param",
        "train_steps=50",
        "--param",
        "learning_rate=0.01",
        "--param",
        "source=synthetic://?rows=500&layout=lab&seed=3",
        "--no-cache",
        "--wait",
    )
    assert result.exit_code == 0, result.output
    assert "state: PIPELINE_STATE_RUNNING" in result.output
    assert "state: PIPELINE_STATE_SUCCEEDED" in result.output

    (create,) = contract_server.calls("POST", "/v1/projects/test-project/locations/us-central1/pipelineJobs")
    job_id = create.query["pipelineJobId"]
    assert re.fullmatch(r"taxifare-\d{8}-\d{6}", job_id)
    body = create.body
    assert body["displayName"] == "taxifare"
    assert body["serviceAccount"] == SA
    assert body["labels"] == {"pipeline": "taxifare", "submitted-by": "taxifare-cli"}
    runtime = body["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == f"gs://{cloud_env}/taxifare/pipeline_root"
    values = runtime["parameterValues"]
    assert values["train_steps"] == 50 and values["learning_rate"] == 0.01
    assert values["source"] == "synthetic://?rows=500&layout=lab&seed=3"
    # the settings fill the pipeline's own project/region/bucket parameters; deploy goes to Vertex
    assert (values["project"], values["region"], values["bucket"], values["target"]) == (
        "test-project",
        "us-central1",
        cloud_env,
        "vertex",
    )
    spec = body["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == "taxifare"
    tasks = spec["root"]["dag"]["tasks"]
    assert {"ingest", "validate", "train", "export", "deploy", "predict"} <= set(tasks)
    assert all(task.get("cachingOptions", {}).get("enableCache") is not True for task in tasks.values())
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert len(images) == 1  # every component runs in the one project image
    # followed until the recorded run succeeded
    assert len(contract_server.calls("GET", rf".*/pipelineJobs/{job_id}")) == 2


def test_vertex_wait_exits_non_zero_when_the_run_fails(contract_server, cloud_env, compiled):
    contract_server.load("vertex_pipeline_job_failed", "vertex_pipeline_job")
    result = _submit_vertex(contract_server, compiled, "--wait")
    assert result.exit_code == 1
    assert "PIPELINE_STATE_FAILED" in result.output
    assert "The failed tasks are: [validate]" in result.output


def test_caching_on_by_default_and_readable_run_id(contract_server, cloud_env, compiled):
    contract_server.load("vertex_pipeline_job")
    result = _submit_vertex(contract_server, compiled, "--run-id", "taxifare-nightly-42")
    assert result.exit_code == 0, result.output
    assert "state: PIPELINE_STATE_PENDING" in result.output
    (create,) = contract_server.calls("POST", r".*/pipelineJobs")
    assert create.query["pipelineJobId"] == "taxifare-nightly-42"
    tasks = create.body["pipelineSpec"]["root"]["dag"]["tasks"]
    assert tasks["train"]["cachingOptions"]["enableCache"] is True
    assert not contract_server.calls("GET")  # no --wait: nothing polled


@pytest.mark.parametrize(
    "param, expected",
    [
        ("train_step=10", "unknown parameter 'train_step'"),
        ("train_steps=many", "parameter 'train_steps': Input should be a valid integer"),
        ("learning_rate", "expected NAME=VALUE"),
    ],
)
def test_bad_parameters_fail_before_any_request(contract_server, cloud_env, compiled, param, expected):
    result = _submit_vertex(contract_server, compiled, "--param", param)
    assert result.exit_code == 2
    assert expected in result.output
    if "unknown" in expected:
        assert "valid parameters:" in result.output and "train_steps: int" in result.output
    assert not contract_server.requests


def test_params_file_is_validated_and_merged(contract_server, cloud_env, compiled, tmp_path):
    contract_server.load("vertex_pipeline_job")
    good = tmp_path / "params.yaml"
    good.write_text("train_steps: 700\nhidden_units: '128 64'\nlearning_rate: 0.001\n")
    result = _submit_vertex(contract_server, compiled, "--params-file", str(good), "--param", "train_steps=800")
    assert result.exit_code == 0, result.output
    (create,) = contract_server.calls("POST", r".*/pipelineJobs")
    values = create.body["runtimeConfig"]["parameterValues"]
    assert (values["train_steps"], values["hidden_units"], values["learning_rate"]) == (800, "128 64", 0.001)

    contract_server.clear()
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden_units: [64, 32]\nepochs: 3\n")
    result = _submit_vertex(contract_server, compiled, "--params-file", str(bad))
    assert result.exit_code == 2
    assert "unknown parameter 'epochs'" in result.output
    assert "parameter 'hidden_units': Input should be a valid string" in result.output
    assert not contract_server.requests


def test_missing_bucket_fails_before_submission(contract_server, cloud_env, compiled, monkeypatch):
    monkeypatch.setenv("BUCKET", "taxifare-no-such-bucket")
    result = _submit_vertex(contract_server, compiled)
    assert result.exit_code == 1
    assert (
        "pipeline root gs://taxifare-no-such-bucket/taxifare/pipeline_root: bucket gs://taxifare-no-such-bucket"
        " does not exist" in result.output
    )
    assert "taxifare setup-gcp" in result.output
    assert not contract_server.requests


def test_bad_config_fails_before_any_request(contract_server, cloud_env, compiled, monkeypatch):
    monkeypatch.setenv("BUCKET", "gs://Taxi_Data")
    result = _submit_vertex(contract_server, compiled)
    assert result.exit_code == 2
    assert "bucket 'gs://Taxi_Data': give the bucket name without gs://" in result.output
    assert "[from $BUCKET]" in result.output
    assert not contract_server.requests


def test_a_spec_whose_image_was_never_pushed_is_refused_before_any_request(
    contract_server, cloud_env, compiled, tmp_path
):
    image.RECORD.unlink()  # this code's image was never built nor pushed
    result = _submit_vertex(contract_server, compiled)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert f"image {image.reference()} was never built or pushed from this code" in line
    assert not contract_server.requests

    image.record("built", image.reference(), "sha256:" + "6" * 64)  # `make image`, no `make push`
    result = _submit_vertex(contract_server, compiled)
    assert result.exit_code == 1 and "was built but never pushed" in result.output
    assert not contract_server.requests

    contract_server.load("vertex_pipeline_job")
    image.record("pushed", image.reference(), PUSHED_DIGEST)  # `make push`
    result = _submit_vertex(contract_server, compiled)
    assert result.exit_code == 0, result.output
    (create,) = contract_server.calls("POST", r".*/pipelineJobs")
    executors = create.body["pipelineSpec"]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {image.reference()}


def test_kfp_submit_creates_experiment_and_run(contract_server, cloud_env, compiled):
    contract_server.load("kfp")
    result = runner.invoke(
        app,
        [
            "submit",
            "--target",
            "kfp",
            "--host",
            contract_server.url,
            "--experiment",
            "taxifare-dev",
            "--no-compile",
            "--template",
            str(compiled),
            "--param",
            "train_steps=20",
            "--run-id",
            "dev-run-1",
            "--wait",
            "--poll-interval",
            "0.01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "state: SUCCEEDED" in result.output
    (experiment,) = contract_server.calls("POST", "/apis/v2beta1/experiments")
    assert experiment.body["display_name"] == "taxifare-dev"
    (run,) = contract_server.calls("POST", "/apis/v2beta1/runs")
    assert run.body["display_name"] == "dev-run-1"
    assert run.body["experiment_id"] == "0b7c2c9e-6f3a-4d1e-9a51-3c7f4b2e8d10"
    assert run.body["pipeline_spec"]["pipelineInfo"]["name"] == "taxifare"
    parameters = run.body["runtime_config"]["parameters"]
    assert parameters["train_steps"] == 20 and parameters["bucket"] == cloud_env
    assert "pipeline_root" not in run.body["runtime_config"]  # the cluster's own artifact store


def test_kfp_needs_a_host(cloud_env, compiled):
    result = runner.invoke(app, ["submit", "--target", "kfp", "--no-compile", "--template", str(compiled)])
    assert result.exit_code == 2
    assert "--host is required with --target kfp" in result.output


def test_config_prints_effective_values_and_sources(cloud_env):
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert f'"bucket": "{cloud_env}"' in result.output
    assert '"pipeline_root": "gs://' in result.output
    assert f'"code_image": "taxifare-pipelines:{image_tag()}"' in result.output  # TAXIFARE_IMAGE's tag replaced
    table = runner.invoke(app, ["config"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    assert re.search(r"service_account\s*│\s*" + re.escape(SA) + r"\s*│\s*\$TAXIFARE_SERVICE_ACCOUNT", table.output)
    assert re.search(r"region\s*│\s*us-central1\s*│\s*\$REGION", table.output)
