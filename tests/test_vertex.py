"""trainer.vertex and trainer.vertex_training against the recorded Vertex AI REST contract (real SDK calls)."""

from __future__ import annotations

import pytest

from trainer import vertex, vertex_training
from trainer.config import Settings

IMAGE = "us-central1-docker.pkg.dev/test-project/taxifare/taxifare-pipelines:1"
SETTINGS = Settings(
    project="test-project",
    region="us-central1",
    bucket="taxifare-test",
    image=IMAGE,
    service_account="taxifare-pipelines@test-project.iam.gserviceaccount.com",
)
PARENT = r"/v1/projects/test-project/locations/us-central1"
T4 = 5  # google.cloud.aiplatform_v1.types.AcceleratorType.NVIDIA_TESLA_T4


def _args():
    return vertex_training.trainer_args(
        train_data="gs://taxifare-test/taxifare/data/train.csv",
        eval_data="gs://taxifare-test/taxifare/data/valid.csv",
        output_dir="gs://taxifare-test/taxifare/runs/r1",
        hyper={"train_steps": 500, "batch_size": 256, "hidden_units": "64 32", "learning_rate": 0.003, "seed": 7},
    )


def test_custom_job_worker_pools_image_args_and_replicas(vertex_contract):
    vertex_contract.load("vertex_custom_job")
    result = vertex_training.run_custom_job(
        project="test-project",
        region="us-central1",
        display_name="taxifare-train",
        args=_args(),
        staging_bucket="gs://taxifare-test/staging",
        machine_type="n1-standard-8",
        replica_count=3,
        accelerator_type="NVIDIA_TESLA_T4",
        accelerator_count=1,
        labels={"pipeline": "taxifare"},
        poll_interval_s=0.01,
        settings=SETTINGS,
    )
    assert result.state == "JOB_STATE_SUCCEEDED"
    assert result.resource_name.endswith("/customJobs/4711000000000000000")

    (create,) = vertex_contract.calls("POST", PARENT + "/customJobs")
    body = create.body
    assert body["displayName"] == "taxifare-train"
    assert body["labels"] == {"pipeline": "taxifare"}
    pools = body["jobSpec"]["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == ["1", "2"]  # chief + 2 workers (int64 as JSON strings)
    for pool in pools:
        # the REST transport sends enums as numbers ($alt=json;enum-encoding=int)
        assert pool["machineSpec"] == {"machineType": "n1-standard-8", "acceleratorType": T4, "acceleratorCount": 1}
        container = pool["containerSpec"]
        assert container["imageUri"] == IMAGE
        assert container["command"] == ["python", "-m", "trainer.task"]
        args = container["args"]
        assert args[args.index("--train_data_paths") + 1] == "/gcs/taxifare-test/taxifare/data/train.csv"
        assert args[args.index("--output_dir") + 1] == "/gcs/taxifare-test/taxifare/runs/r1"
        assert args[args.index("--hidden_units") + 1] == "64 32"
        assert args[args.index("--train_steps") + 1] == "500"
    assert body["jobSpec"]["serviceAccount"] == SETTINGS.service_account
    assert body["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://taxifare-test/staging")
    # polled until the recorded job reached SUCCEEDED
    assert len(vertex_contract.calls("GET", r".*/customJobs/\d+")) == 2


def test_train_on_vertex_runs_the_trainer_on_the_bucket(vertex_contract):
    vertex_contract.load("vertex_custom_job")
    result = vertex_training.train(
        project="test-project",
        region="us-central1",
        train_data="gs://taxifare-test/taxifare/data/train.csv",
        eval_data="gs://taxifare-test/taxifare/data/valid.csv",
        output_dir="gs://taxifare-test/taxifare/runs/r2",
        hyper={"train_steps": 100, "batch_size": 64, "hidden_units": "32 16", "learning_rate": 0.01, "seed": 1},
        replica_count=2,
        poll_interval_s=0.01,
        settings=SETTINGS,
    )
    assert result.state == "JOB_STATE_SUCCEEDED"
    (create,) = vertex_contract.calls("POST", PARENT + "/customJobs")
    spec = create.body["jobSpec"]
    assert spec["baseOutputDirectory"]["outputUriPrefix"] == "gs://taxifare-test/taxifare/runs/r2/job"
    args = spec["workerPoolSpecs"][0]["containerSpec"]["args"]
    assert args[args.index("--output_dir") + 1] == "/gcs/taxifare-test/taxifare/runs/r2"
    assert args[args.index("--eval_data_paths") + 1] == "/gcs/taxifare-test/taxifare/data/valid.csv"
    assert [p["replicaCount"] for p in spec["workerPoolSpecs"]] == ["1", "1"]


def test_train_on_vertex_needs_bucket_locations():
    with pytest.raises(ValueError, match="train_data must be a gs:// URI"):
        vertex_training.train(
            project="test-project",
            region="us-central1",
            train_data="/tmp/train.csv",
            eval_data="gs://b/v.csv",
            output_dir="gs://b/out",
            hyper={"train_steps": 1, "batch_size": 1, "hidden_units": "8", "learning_rate": 0.1, "seed": 0},
            settings=SETTINGS,
        )


def test_single_replica_has_one_pool_without_accelerator(vertex_contract):
    vertex_contract.load("vertex_custom_job")
    vertex_training.run_custom_job(
        project="test-project",
        region="us-central1",
        display_name="taxifare-train",
        args=_args(),
        staging_bucket="gs://taxifare-test/staging",
        wait=False,
        settings=SETTINGS,
    )
    (create,) = vertex_contract.calls("POST", PARENT + "/customJobs")
    (pool,) = create.body["jobSpec"]["workerPoolSpecs"]
    assert pool["replicaCount"] == "1"
    assert pool["machineSpec"] == {"machineType": "n1-standard-4"}
    assert not vertex_contract.calls("GET")


def test_failed_custom_job_raises_with_vertex_message(vertex_contract):
    vertex_contract.load("vertex_custom_job")
    vertex_contract.add(
        "GET",
        r".*/customJobs/(?P<job>\d+)",
        {
            "name": "projects/test-project/locations/us-central1/customJobs/${job}",
            "state": "JOB_STATE_FAILED",
            "error": {"code": 3, "message": "The replica workerpool0-0 exited with a non-zero status of 1."},
        },
    )
    with pytest.raises(vertex.VertexError, match="JOB_STATE_FAILED: The replica workerpool0-0 exited"):
        vertex_training.run_custom_job(
            project="test-project",
            region="us-central1",
            display_name="taxifare-train",
            args=_args(),
            staging_bucket="gs://taxifare-test/staging",
            poll_interval_s=0.01,
            settings=SETTINGS,
        )


def test_accelerator_enum_number_is_t4():
    from google.cloud.aiplatform_v1.types import AcceleratorType

    assert AcceleratorType.NVIDIA_TESLA_T4.value == T4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"replica_count": 0}, "replica_count must be at least 1"),
        ({"accelerator_type": "NVIDIA_TESLA_T4"}, "accelerator_type and accelerator_count go together"),
        ({"accelerator_count": 2}, "accelerator_type and accelerator_count go together"),
    ],
)
def test_worker_pool_arguments_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vertex_training.worker_pool_specs(image=IMAGE, args=[], **kwargs)


def test_first_deploy_uploads_new_model_creates_endpoint_and_sends_all_traffic(vertex_contract):
    vertex_contract.load("vertex_model", "vertex_endpoint")
    deployed = vertex.deploy_model(
        model_uri="gs://taxifare-test/taxifare/models/v1",
        display_name="taxifare",
        project="test-project",
        region="us-central1",
        machine_type="n1-standard-4",
        min_replica_count=1,
        max_replica_count=3,
        settings=SETTINGS,
    )
    (listing,) = vertex_contract.calls("GET", PARENT + "/models")
    assert listing.query["filter"] == 'display_name="taxifare"'
    (upload,) = vertex_contract.calls("POST", PARENT + "/models:upload")
    assert "parentModel" not in upload.body
    model = upload.body["model"]
    assert model["displayName"] == "taxifare"
    assert model["artifactUri"] == "gs://taxifare-test/taxifare/models/v1"
    assert model["containerSpec"] == {
        "imageUri": IMAGE,
        "command": ["python", "-m", "trainer.server"],
        "args": ["--host", "0.0.0.0"],
        "ports": [{"containerPort": 8080}],
        "predictRoute": "/predict",
        "healthRoute": "/health",
    }

    (create,) = vertex_contract.calls("POST", PARENT + "/endpoints")
    assert create.body["displayName"] == "taxifare"
    (deploy,) = vertex_contract.calls("POST", PARENT + r"/endpoints/\d+:deployModel")
    deployed_model = deploy.body["deployedModel"]
    assert deployed_model["model"].endswith("/models/8800000000000000001@1")
    assert deployed_model["displayName"] == "taxifare-v1"
    assert deployed_model["dedicatedResources"] == {
        "machineSpec": {"machineType": "n1-standard-4"},
        "minReplicaCount": 1,
        "maxReplicaCount": 3,
    }
    assert deployed_model["serviceAccount"] == SETTINGS.service_account
    assert deploy.body["trafficSplit"] == {"0": 100}

    assert deployed.endpoint_created is True
    assert deployed.parent_model is None
    assert deployed.model_version_id == "1"
    assert (
        deployed.endpoint_resource_name == "projects/test-project/locations/us-central1/endpoints/4200000000000000001"
    )
    assert deployed.metadata()["serving_image"] == IMAGE


def test_redeploy_is_a_new_version_on_the_existing_endpoint_with_a_traffic_split(vertex_contract):
    vertex_contract.load("vertex_model_existing", "vertex_endpoint_existing", "vertex_model", "vertex_endpoint")
    deployed = vertex.deploy_model(
        model_uri="gs://taxifare-test/taxifare/models/v4",
        display_name="taxifare",
        project="test-project",
        region="us-central1",
        traffic_percentage=20,
        settings=SETTINGS,
    )
    (upload,) = vertex_contract.calls("POST", PARENT + "/models:upload")
    assert upload.body["parentModel"] == "projects/123456789012/locations/us-central1/models/8800000000000000001"
    assert upload.body["model"]["artifactUri"] == "gs://taxifare-test/taxifare/models/v4"
    assert upload.body["model"]["versionAliases"] == ["default"]
    assert not vertex_contract.calls("POST", PARENT + "/endpoints")  # reused, not created
    (deploy,) = vertex_contract.calls("POST", r".*/endpoints/4200000000000000009:deployModel")
    assert deploy.body["deployedModel"]["displayName"] == "taxifare-v4"
    # 20 % to the new version ("0"), the old one keeps the rest
    assert deploy.body["trafficSplit"] == {"0": 20, "6100000000000000003": 80}
    assert deployed.endpoint_created is False
    assert deployed.model_version_id == "4"
    assert deployed.parent_model.endswith("/models/8800000000000000001")


def test_prebuilt_tf_serving_container_option(vertex_contract):
    vertex_contract.load("vertex_model", "vertex_endpoint")
    vertex.deploy_model(
        model_uri="gs://taxifare-test/taxifare/models/v1",
        display_name="taxifare",
        project="test-project",
        region="us-central1",
        serving="prebuilt",
        settings=SETTINGS,
    )
    (upload,) = vertex_contract.calls("POST", PARENT + "/models:upload")
    assert upload.body["model"]["containerSpec"] == {"imageUri": vertex.PREBUILT_TF_IMAGE}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model_uri": "/tmp/model"}, "model_uri must be a gs:// URI"),
        ({"serving": "tfserving"}, "serving must be one of custom, prebuilt"),
        ({"traffic_percentage": 120}, "traffic_percentage must be within 0..100"),
        ({"min_replica_count": 3, "max_replica_count": 2}, "min_replica_count <= max_replica_count"),
    ],
)
def test_deploy_arguments_checked_before_any_call(contract_server, kwargs, message):
    arguments = dict(
        model_uri="gs://b/m",
        display_name="taxifare",
        project="test-project",
        region="us-central1",
        settings=SETTINGS.model_copy(update={"api_endpoint": contract_server.url}),
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        vertex.deploy_model(**arguments)
    assert not contract_server.requests


def test_predict_batches_instances_and_reads_fares(vertex_contract):
    vertex_contract.load("vertex_endpoint")
    vertex_contract.add(
        "POST",
        PARENT + r"/endpoints/\d+:predict",
        responses=[
            {"predictions": [{"fare_amount": 9.5}, {"fare_amount": 11.0}], "deployedModelId": "61"},
            {"predictions": [{"fare_amount": 30.25}], "deployedModelId": "61"},
        ],
    )
    instances = [
        {"pickuplon": -73.98, "pickuplat": 40.75, "dropofflon": -73.97, "dropofflat": 40.76, "passengers": float(n)}
        for n in range(3)
    ]
    endpoint = "projects/test-project/locations/us-central1/endpoints/4200000000000000001"
    fares = vertex.predict(endpoint, instances, batch_size=2, settings=SETTINGS)
    assert fares == [9.5, 11.0, 30.25]
    calls = vertex_contract.calls("POST", PARENT + r"/endpoints/4200000000000000001:predict")
    assert [c.body["instances"] for c in calls] == [instances[:2], instances[2:]]


def test_predict_rejects_a_short_answer(vertex_contract):
    vertex_contract.load("vertex_endpoint")  # the recording answers one prediction
    with pytest.raises(vertex.VertexError, match="answered 1 predictions for 2 instances"):
        vertex.predict(
            "projects/test-project/locations/us-central1/endpoints/4200000000000000001",
            [{"passengers": 1.0}, {"passengers": 2.0}],
            settings=SETTINGS,
        )


def test_configured_http_api_endpoint_is_used_with_rest(contract_server):
    """A plain-HTTP api_endpoint in the config alone routes the SDK to it (no init by the caller)."""
    contract_server.load("vertex_endpoint")
    settings = SETTINGS.model_copy(update={"api_endpoint": contract_server.url})
    try:
        fares = vertex.predict(
            "projects/test-project/locations/us-central1/endpoints/4200000000000000001",
            [{"passengers": 1.0}],
            settings=settings,
        )
    finally:
        from google.cloud.aiplatform import initializer

        initializer.global_config.__init__()
    assert fares == [11.35]
    assert contract_server.calls("POST", r".*:predict")
