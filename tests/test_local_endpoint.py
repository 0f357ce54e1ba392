"""Local endpoints: deploy a real export, call it from the CLI, replace its model, stop it."""

import json
import subprocess
import sys

import pytest
import requests

from trainer import local_endpoint, schema, server

pytestmark = pytest.mark.slow


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TAXIFARE_STATE_DIR", str(tmp_path / "state"))
    yield tmp_path / "state"
    local_endpoint.stop("test-endpoint")


def test_deploy_predict_replace_stop(state_dir, lab_model_dir, dated_model_dir, tmp_path):
    first = local_endpoint.deploy(str(lab_model_dir), "test-endpoint")
    assert first.host == "127.0.0.1" and local_endpoint.get("test-endpoint") == first

    instances = tmp_path / "test.json"
    instances.write_text(json.dumps(schema.LAB_TEST_INSTANCE, indent=2))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "predict",
            "--endpoint",
            first.predict_url,
            "--json-instances",
            str(instances),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["fare_amount"] > 2.5

    # A second deploy under the same name replaces the model and keeps the port.
    second = local_endpoint.deploy(str(dated_model_dir), "test-endpoint")
    assert second.port == first.port and second.pid != first.pid
    assert not server.pid_alive(first.pid)
    metadata = requests.get(second.base_url + "/v1/models/taxifare", timeout=5).json()
    assert "pickup_datetime" in json.dumps(metadata)

    assert local_endpoint.stop("test-endpoint") is True
    assert local_endpoint.get("test-endpoint") is None
    assert local_endpoint.stop("test-endpoint") is False


def test_predict_cli_names_the_endpoint_error(state_dir, lab_model_dir, tmp_path):
    endpoint = local_endpoint.deploy(str(lab_model_dir), "test-endpoint")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**schema.LAB_TEST_INSTANCE, "passengers": "two"}) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "predict",
            "--endpoint",
            endpoint.predict_url,
            "--json-instances",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "400" in result.stderr and "passengers" in result.stderr
    assert "Traceback" not in result.stderr


def test_endpoint_names_are_plain():
    with pytest.raises(ValueError, match="plain, non-empty name"):
        local_endpoint.get("../etc")
