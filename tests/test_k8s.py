"""trainer.k8s against the recorded Kubernetes API contract (the real kubernetes client)."""

from __future__ import annotations

import pytest

from trainer import k8s

IMAGE = "taxifare-pipelines:local"
MODEL = "gs://taxifare-test/taxifare/models/1795719458"


def _env(container: dict) -> dict:
    return {item["name"]: item["value"] for item in container["env"]}


def test_first_deploy_creates_deployment_and_service_and_waits_until_ready(contract_server):
    contract_server.load("k8s_serving_new")
    endpoint = k8s.deploy_serving(
        name="taxifare",
        model_uri=MODEL,
        image=IMAGE,
        namespace="kubeflow",
        replicas=1,
        env={"GOOGLE_CLOUD_PROJECT": "test-project"},
        host=contract_server.url,
        poll_interval_s=0.01,
    )
    assert endpoint.created is True
    assert endpoint.url == "http://taxifare.kubeflow.svc.cluster.local/predict"

    (create,) = contract_server.calls("POST", "/apis/apps/v1/namespaces/kubeflow/deployments")
    deployment = create.body
    assert deployment["kind"] == "Deployment" and deployment["metadata"]["name"] == "taxifare"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/instance": "taxifare"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"] == ["serve"]
    assert container["ports"] == [{"containerPort": 8080, "name": "http"}]
    assert _env(container) == {
        "AIP_HTTP_PORT": "8080",
        "AIP_HEALTH_ROUTE": "/health",
        "AIP_PREDICT_ROUTE": "/predict",
        "AIP_STORAGE_URI": MODEL,
        "GOOGLE_CLOUD_PROJECT": "test-project",
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"mountPath": "/tmp", "name": "tmp"}]
    assert pod["volumes"] == [{"emptyDir": {}, "name": "tmp"}]

    (service,) = contract_server.calls("POST", "/api/v1/namespaces/kubeflow/services")
    assert service.body["spec"]["selector"] == {"app.kubernetes.io/instance": "taxifare"}
    assert service.body["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8080}]
    assert len(contract_server.calls("GET", r".*/deployments/taxifare/status")) == 2  # starting, then ready
    assert not contract_server.calls("PATCH")


def test_redeploy_patches_in_place_with_the_new_model(contract_server):
    contract_server.load("k8s_serving_existing", "k8s_serving_new")
    new_model = "gs://taxifare-test/taxifare/models/1795720000"
    endpoint = k8s.deploy_serving(
        name="taxifare", model_uri=new_model, image=IMAGE, host=contract_server.url, replicas=3, wait=False
    )
    assert endpoint.created is False
    assert not contract_server.calls("POST")
    (patch,) = contract_server.calls("PATCH", r".*/deployments/taxifare")
    assert patch.body["spec"]["replicas"] == 3
    (container,) = patch.body["spec"]["template"]["spec"]["containers"]
    assert _env(container)["AIP_STORAGE_URI"] == new_model
    # the pod template changes with the model, so Kubernetes rolls the pods
    assert patch.body["spec"]["template"]["metadata"]["annotations"] == {"taxifare/model-uri": new_model}
    assert contract_server.calls("PATCH", r".*/services/taxifare")


def test_deployment_that_never_gets_ready_fails_with_counts(contract_server):
    contract_server.load("k8s_serving_new")
    contract_server.add(
        "GET",
        r"/apis/apps/v1/namespaces/kubeflow/deployments/taxifare/status",
        {
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {"name": "taxifare"},
            "status": {"replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1},
        },
    )
    with pytest.raises(k8s.ClusterError, match=r"kubeflow/taxifare: 0/1 replicas ready after 0 s"):
        k8s.deploy_serving(
            name="taxifare",
            model_uri=MODEL,
            image=IMAGE,
            host=contract_server.url,
            timeout_s=0.05,
            poll_interval_s=0.01,
        )


def test_refused_create_names_the_object_and_reason(contract_server):
    contract_server.load("k8s_serving_new")
    contract_server.add(
        "POST",
        r"/apis/apps/v1/namespaces/(?P<ns>[^/]+)/deployments",
        status=403,
        response={
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Forbidden",
            "code": 403,
            "message": 'deployments.apps is forbidden: User "system:serviceaccount:kubeflow:pipeline-runner" cannot create',
        },
    )
    with pytest.raises(
        k8s.ClusterError, match=r"deploying taxifare to namespace kubeflow: 403 Forbidden.*pipeline-runner"
    ):
        k8s.deploy_serving(name="taxifare", model_uri=MODEL, image=IMAGE, host=contract_server.url)


def test_delete_tolerates_missing_objects(contract_server):
    contract_server.load("k8s_serving_new")
    k8s.delete_serving("taxifare", host=contract_server.url)
    assert [c.method for c in contract_server.calls("DELETE")] == ["DELETE", "DELETE"]


def test_replicas_checked():
    with pytest.raises(ValueError, match="replicas must be at least 1"):
        k8s.manifests(name="taxifare", model_uri=MODEL, image=IMAGE, replicas=0)
