"""The kind / KFP-cluster path, validated offline (no kind or cluster can run here):
scripts parse and pass shellcheck, versions are pinned, missing tools fail with a clear line,
the RBAC manifest grants exactly what trainer.k8s calls, and the Cloud Build config builds the
same Dockerfile from the same wheels folder."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONTAINER = REPO / "container"
SCRIPTS = [CONTAINER / name for name in ("kind-up.sh", "kind-down.sh", "build.sh", "entrypoint.sh")] + [
    REPO / ".ci" / "run",
    REPO / ".ci" / "system-packages.sh",
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script):
    shell = "sh" if script.name == "entrypoint.sh" else "bash"
    subprocess.run([shell, "-n", str(script)], check=True)
    assert os.access(script, os.X_OK), f"{script} is not executable"
    assert shutil.which("shellcheck"), "shellcheck is missing: make test installs it (.ci/system-packages.sh)"
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _default(script: Path, name: str) -> str:
    match = re.search(rf'^{name}="\$\{{{name}:-([^}}]+)\}}"', script.read_text(), re.M)
    assert match, f"{name} has no default in {script.name}"
    return match.group(1)


def test_versions_are_pinned_and_documented():
    kind_up = CONTAINER / "kind-up.sh"
    kfp_version = _default(kind_up, "PIPELINE_VERSION")
    node_image = _default(kind_up, "KIND_NODE_IMAGE")
    assert re.fullmatch(r"\d+\.\d+\.\d+", kfp_version)
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+(@sha256:[a-f0-9]{64})?", node_image)
    text = kind_up.read_text()
    # the manifests are applied at the pinned ref, never a branch
    refs = re.findall(r'kubectl apply -k "\$MANIFESTS/([^?"]+)\?ref=([^"]+)"', text)
    assert refs == [("cluster-scoped-resources", "$PIPELINE_VERSION"), ("env/platform-agnostic", "$PIPELINE_VERSION")]
    assert 'MANIFESTS="github.com/kubeflow/pipelines/manifests/kustomize"' in text
    assert 'kind load docker-image "$IMAGE" --name "$CLUSTER"' in text
    assert "port-forward svc/ml-pipeline-ui" in text
    readme = (CONTAINER / "README.md").read_text()
    assert kfp_version in readme and node_image in readme
    dockerfile = (CONTAINER / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[a-f0-9]{64})?", base)
    assert f"_BASE_IMAGE: {base}" in (CONTAINER / "cloudbuild.yaml").read_text()


def test_kind_up_without_kind_fails_with_a_clear_line(tmp_path):
    # a PATH with docker and kubectl stand-ins but no kind
    for tool in ("docker", "kubectl"):
        fake = tmp_path / tool
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(CONTAINER / "kind-up.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "kind-up: kind is required: install kind v0.27.0, https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
    )


def _k8s_calls() -> set[tuple[str, str]]:
    """(resource, verb) pairs trainer/k8s.py calls through the kubernetes client."""
    verbs = {"read": "get", "create": "create", "patch": "patch", "delete": "delete"}
    calls = set()
    for node in ast.walk(ast.parse((REPO / "trainer" / "k8s.py").read_text())):
        if isinstance(node, ast.Attribute):
            match = re.fullmatch(r"(read|create|patch|delete)_namespaced_(deployment|service)(_status)?", node.attr)
            if match:
                resource = match.group(2) + "s" + ("/status" if match.group(3) else "")
                calls.add((resource, verbs[match.group(1)]))
    return calls


def test_rbac_grants_exactly_what_the_cluster_deploy_calls():
    documents = list(yaml.safe_load_all((CONTAINER / "k8s" / "serving-rbac.yaml").read_text()))
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"Role", "RoleBinding"}  # namespaced only, nothing cluster-wide
    granted = {
        (resource, verb) for rule in kinds["Role"]["rules"] for resource in rule["resources"] for verb in rule["verbs"]
    }
    assert granted == _k8s_calls()
    (subject,) = kinds["RoleBinding"]["subjects"]
    assert subject == {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    assert kinds["RoleBinding"]["roleRef"]["name"] == kinds["Role"]["metadata"]["name"]


def test_cloud_build_uses_the_dockerfile_and_wheels_folder():
    config = yaml.safe_load((CONTAINER / "cloudbuild.yaml").read_text())
    wheels, image = config["steps"]
    dockerfile = (CONTAINER / "Dockerfile").read_text()
    wheels_dir = re.search(r"^ARG WHEELS=(\S+)$", dockerfile, re.M).group(1)
    assert f"-w {wheels_dir}" in wheels["args"][-1]
    assert "-r requirements.lock" in wheels["args"][-1]
    assert "--file=container/Dockerfile" in image["args"] and image["args"][-1] == "."
    assert set(config["images"]) == {a.split("=", 1)[1] for a in image["args"] if a.startswith("--tag=")}
    # the build context keeps what the image needs
    ignore = (REPO / ".dockerignore").read_text().split()
    assert f"!{wheels_dir}/" in ignore and "!requirements.lock" in ignore
