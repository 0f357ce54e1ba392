"""The project image for real (marker ``containers``, run by ``make test-containers``).

* The image is built with container/build.sh (wheels from the host, local debootstrap base when
  no registry is reachable); an unchanged rebuild reuses every layer.
* The serving entrypoint runs with ``docker run`` under Vertex AI's custom-container contract
  (AIP_HTTP_PORT, AIP_STORAGE_URI → the model in the GCS emulator) and answers predictions.
* The whole taxifare pipeline runs with ``kfp.local.DockerRunner``: every task is a container of
  the project image, against the GCS emulator, deploying to the recorded Vertex AI contract whose
  deployModel starts the uploaded model's serving container spec with ``docker run`` and whose
  predict hands the request to it — as a Vertex endpoint does.
* The worker pools of a two-replica CustomJob run as two containers with Vertex's TF_CONFIG
  (chief + worker) and train one model.

The compiled spec's reference to the configured image is checked without Docker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from components.fingerprint import image_tag
from pipelines.local.emulator import free_port

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "container" / "build.sh"


# -- the compiled spec names the configured repository, tagged with the code (no Docker needed) -------------------------------
def test_compiled_spec_references_the_configured_repository_tagged_with_the_code(tmp_path):
    image = "europe-west4-docker.pkg.dev/taxi-ml-prod/taxifare/taxifare-pipelines:2.1.0"
    code = (
        "from pipelines.compile import compile_pipeline; import sys; print(compile_pipeline('taxifare', sys.argv[1]))"
    )
    env = {**os.environ, "TAXIFARE_IMAGE": image}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, cwd=tmp_path, check=True, capture_output=True, text=True
    )
    spec = _load_yaml(Path(out.stdout.strip().splitlines()[-1]))
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) >= 6
    # the configured repository, its tag replaced by the hash of the code the image is built from
    tagged = f"europe-west4-docker.pkg.dev/taxi-ml-prod/taxifare/taxifare-pipelines:{image_tag()}"
    assert {name: e["container"]["image"] for name, e in executors.items()} == {name: tagged for name in executors}
    # kfp is in the image: nothing is pip-installed when a task starts
    assert not any("pip install" in " ".join(e["container"].get("command", [])) for e in executors.values())


def _load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


# -- Docker engine and image -----------------------------------------------------------------------
def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def docker_engine(tmp_path_factory):
    """A running Docker engine: the one already running, else a dockerd started here (stopped by PID)."""
    if _docker_ok():
        yield None
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.fail("no Docker engine: install docker.io (apt-get install -y docker.io); .ci/run does", pytrace=False)
    log_dir = tmp_path_factory.mktemp("dockerd")
    log = open(log_dir / "dockerd.log", "wb")
    process = subprocess.Popen([dockerd, "--storage-driver=overlay2"], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if _docker_ok():
                break
            if process.poll() is not None:
                pytest.fail(f"dockerd exited ({process.returncode}); see {log_dir / 'dockerd.log'}", pytrace=False)
            time.sleep(0.2)
        else:
            pytest.fail("dockerd did not answer within 20 s", pytrace=False)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def image(docker_engine):
    """The project image, built (or found up to date) by container/build.sh, under the name this code
    builds and the pipeline's tasks name (the configured repository tagged with the code's hash)."""
    from pipelines.cloud.image import reference

    name = reference()
    started = time.monotonic()
    result = subprocess.run([str(BUILD_SCRIPT), name], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"container/build.sh failed:\n{result.stderr[-3000:]}"
    log.info(
        "image %s: build.sh took %.1f s; %s", name, time.monotonic() - started, result.stderr.strip().splitlines()[-1]
    )
    return name


def _inspect(image: str) -> dict:
    return json.loads(
        subprocess.run(["docker", "image", "inspect", image], check=True, capture_output=True, text=True).stdout
    )[0]


# -- the serving container ---------------------------------------------------------------------------
class ServingContainer:
    """``docker run`` of the serving entrypoint on the host network, the way Vertex AI runs it."""

    def __init__(
        self,
        image: str,
        model_uri: str,
        *,
        command: list[str] | None = None,
        args: list[str] | None = None,
        predict_route: str = "/predict",
        health_route: str = "/health",
    ):
        self.port = free_port()
        self.predict_route, self.health_route = predict_route, health_route
        env = {
            "AIP_HTTP_PORT": str(self.port),
            "AIP_STORAGE_URI": model_uri,
            "AIP_PREDICT_ROUTE": predict_route,
            "AIP_HEALTH_ROUTE": health_route,
            "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
        }
        argv = ["docker", "run", "-d", "--network", "host"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        if command:
            argv += ["--entrypoint", command[0]]
        argv.append(image)
        argv += (command[1:] if command else []) + (args or [])
        self.container_id = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + self.health_route, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            state = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Running}}", self.container_id], capture_output=True, text=True
            ).stdout.strip()
            if state != "true":
                raise RuntimeError(f"serving container exited:\n{self.logs()}")
            time.sleep(0.5)
        raise RuntimeError(f"serving container not healthy after {timeout_s:.0f} s:\n{self.logs()}")

    def predict(self, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + self.predict_route,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def logs(self) -> str:
        out = subprocess.run(["docker", "logs", "--tail", "40", self.container_id], capture_output=True, text=True)
        return out.stdout + out.stderr

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.container_id], capture_output=True)


@pytest.mark.containers
def test_image_is_non_root_with_train_and_serve_entrypoints(image):
    config = _inspect(image)["Config"]
    assert config["User"] == "taxifare"
    assert config["Entrypoint"] == ["taxifare-entrypoint"]
    assert config["Cmd"] == ["serve"]
    # the image knows its own name (the serving container a deploying component names)
    assert f"TAXIFARE_IMAGE={image}" in config["Env"]
    help_text = subprocess.run(["docker", "run", "--rm", image, "train", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0, help_text.stderr
    assert "--train_data_paths" in help_text.stdout and "--hidden_units" in help_text.stdout
    who = subprocess.run(["docker", "run", "--rm", image, "id", "-un"], capture_output=True, text=True)
    assert who.stdout.strip() == "taxifare"


@pytest.mark.containers
def test_unchanged_rebuild_reuses_every_layer(image):
    before = _inspect(image)["Id"]
    started = time.monotonic()
    subprocess.run([str(BUILD_SCRIPT), image], cwd=REPO, check=True, capture_output=True)
    assert _inspect(image)["Id"] == before
    assert time.monotonic() - started < 60


@pytest.mark.containers
def test_serving_entrypoint_follows_the_vertex_contract(image, gcs_emulator, bucket, lab_model_dir):
    from trainer import predictor, schema, storage

    saved_model = predictor.find_saved_model(lab_model_dir)
    model_uri = f"gs://{bucket}/taxifare/models/1"
    storage.upload_dir(saved_model, model_uri)
    expected = predictor.Predictor.load(saved_model).predict([dict(schema.LAB_TEST_INSTANCE)])

    container = ServingContainer(image, model_uri)
    try:
        container.wait_healthy()
        status, body = container.predict({"instances": [dict(schema.LAB_TEST_INSTANCE)] * 3})
        assert status == 200, body
        fares = [p["fare_amount"] for p in body["predictions"]]
        assert len(fares) == 3
        assert all(math.isclose(f, expected[0], rel_tol=1e-4) for f in fares)
        # a client's mistake is a 4xx naming the field, never a 5xx
        bad = dict(schema.LAB_TEST_INSTANCE, pickuplon="far away")
        status, body = container.predict({"instances": [bad]})
        assert 400 <= status < 500 and "pickuplon" in json.dumps(body)
    finally:
        container.remove()


# -- the whole pipeline, every task in the project image ----------------------------------------------
@pytest.fixture
def vertex_backed_by_containers(contract_server, image):
    """The recorded Vertex AI contract, where deployModel runs the uploaded serving container
    spec with ``docker run`` and predict hands the instances to that container."""
    contract_server.load("vertex_model", "vertex_endpoint")
    containers: list[ServingContainer] = []

    def deploy(request):
        (upload,) = contract_server.calls("POST", r".*/models:upload")
        model = upload.body["model"]
        spec = model["containerSpec"]
        container = ServingContainer(
            spec["imageUri"],
            model["artifactUri"],
            command=spec.get("command"),
            args=spec.get("args"),
            predict_route=spec["predictRoute"],
            health_route=spec["healthRoute"],
        )
        containers.append(container)
        container.wait_healthy()
        deployed = request.body["deployedModel"]
        return 200, {
            "name": request.path.strip("/").removeprefix("v1/").split(":")[0] + "/operations/1",
            "metadata": {"@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeployModelOperationMetadata"},
            "done": True,
            "response": {
                "@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeployModelResponse",
                "deployedModel": {
                    "id": "6100000000000000001",
                    "model": deployed["model"],
                    "displayName": deployed.get("displayName", ""),
                },
            },
        }

    def predict(request):
        (container,) = containers
        status, body = container.predict(request.body)
        if status == 200:
            body = {**body, "deployedModelId": "6100000000000000001"}
        return status, body

    contract_server.add("POST", r".*/endpoints/[^/:]+:deployModel", handler=deploy, name="deploy → docker run")
    contract_server.add("POST", r".*/endpoints/[^/:]+:predict", handler=predict, name="predict → container")
    try:
        yield contract_server, containers
    finally:
        for container in containers:
            container.remove()


@pytest.mark.containers
def test_whole_pipeline_runs_in_the_project_image(image, gcs_emulator, bucket, vertex_backed_by_containers, tmp_path):
    from kfp import local

    from pipelines.taxifare import taxifare

    server, containers = vertex_backed_by_containers
    pipeline_root = tmp_path / "pipeline_root"
    pipeline_root.mkdir()
    runner = local.DockerRunner(
        network_mode="host",  # the tasks reach the GCS emulator and the Vertex contract on 127.0.0.1
        # files written into the bind-mounted pipeline root belong to the user running the tests
        user=f"{os.getuid()}:{os.getgid()}",
        environment={
            "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
            "TAXIFARE_API_ENDPOINT": server.url,
            "TAXIFARE_IMAGE": image,
            "HOME": "/tmp",
        },
    )
    local.init(runner=runner, pipeline_root=str(pipeline_root), enable_caching=False)
    since = str(int(time.time()) - 1)
    started = time.monotonic()
    result = taxifare(
        project="test-project",
        region="us-central1",
        bucket=bucket,
        source="synthetic://?rows=3000&layout=lab&seed=5",
        train_steps=40,
        smoke_steps=5,
        batch_size=256,
        target="vertex",
        endpoint_name="taxifare",
        sample_size=50,
        predict_batch_size=20,
    )
    wall_s = time.monotonic() - started
    log.info("taxifare pipeline under DockerRunner: %.1f s", wall_s)

    rmse = float(result.output)
    assert math.isfinite(rmse) and rmse > 0

    # every task ran as a container of the project image (plus the serving container)
    events = subprocess.run(
        [
            "docker",
            "events",
            "--since",
            since,
            "--until",
            str(int(time.time()) + 1),
            "--filter",
            "event=start",
            "--filter",
            f"image={image}",
            "--format",
            "{{.ID}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(events) >= 7, events

    (upload,) = server.calls("POST", r".*/models:upload")
    artifact_uri = upload.body["model"]["artifactUri"]
    assert artifact_uri.startswith(f"gs://{bucket}/taxifare/models/")
    assert upload.body["model"]["containerSpec"]["imageUri"] == image
    predict_calls = server.calls("POST", r".*/endpoints/[^/:]+:predict")
    assert sum(len(c.body["instances"]) for c in predict_calls) == 51  # the sample + the lab's test.json
    assert len(containers) == 1


# -- a two-replica CustomJob's worker pools, run as containers ----------------------------------------
@pytest.mark.containers
def test_custom_job_worker_pools_train_one_model_in_containers(image, tmp_path):
    """The worker pool specs trainer.vertex_training sends for replica_count=2, each replica started
    with ``docker run`` and the TF_CONFIG Vertex AI gives it (a chief and a worker on loopback)."""
    from trainer import synth, vertex_training

    data = tmp_path / "data"
    data.mkdir()
    train = synth.write_csv(data / "train.csv", rows=3000, layout="lab", seed=21)
    valid = synth.write_csv(data / "valid.csv", rows=600, layout="lab", seed=22)
    output_dir = tmp_path / "out"
    args = vertex_training.trainer_args(
        train_data=str(train),
        eval_data=str(valid),
        output_dir=str(output_dir),
        hyper={"train_steps": 20, "batch_size": 128, "hidden_units": "16 8", "learning_rate": 0.01, "seed": 4},
    )
    pools = vertex_training.worker_pool_specs(image=image, args=args, replica_count=2)
    cluster = {"chief": [f"127.0.0.1:{free_port()}"], "worker": [f"127.0.0.1:{free_port()}"]}
    replicas = [("chief", 0, pools[0]), ("worker", 0, pools[1])]
    ids = []
    try:
        for kind, index, pool in replicas:
            spec = pool["container_spec"]
            tf_config = json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})
            argv = [
                "docker",
                "run",
                "-d",
                "--network",
                "host",
                "--user",
                f"{os.getuid()}:{os.getgid()}",
                "-e",
                f"TF_CONFIG={tf_config}",
                "-e",
                "HOME=/tmp",
                "-v",
                f"{tmp_path}:{tmp_path}",
                "--entrypoint",
                spec["command"][0],
                spec["image_uri"],
                *spec["command"][1:],
                *spec["args"],
            ]
            ids.append(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip())
        codes = [
            int(subprocess.run(["docker", "wait", cid], capture_output=True, text=True, timeout=300).stdout)
            for cid in ids
        ]
        logs = [subprocess.run(["docker", "logs", cid], capture_output=True, text=True) for cid in ids]
        logs = [out.stdout + out.stderr for out in logs]
        assert codes == [0, 0], "\n\n".join(log[-2500:] for log in logs)
    finally:
        for cid in ids:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    for log in logs:
        assert "multi-worker training: 2 workers" in log, log[-2000:]
    metrics = json.loads((output_dir / "eval_metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["rmse"] > 0
    assert len(list((output_dir / "export" / "exporter").iterdir())) == 1  # the chief's, only
