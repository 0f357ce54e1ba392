"""`taxifare setup-gcp`: the dry run prints every gcloud command; storage roles only ever on the bucket."""

from __future__ import annotations

import shlex
import subprocess

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.cloud import setup_gcp
from trainer.config import Settings

SETTINGS = Settings(project="taxi-ml-prod", region="europe-west4", bucket="taxi-ml-prod-data")
SA = "taxifare-pipelines@taxi-ml-prod.iam.gserviceaccount.com"


def _commands(text: str) -> list[list[str]]:
    """gcloud invocations in a dry-run script (`a || b` and `X=$(...)` lines split into commands)."""
    commands = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip() or line.startswith("set "):
            continue
        line = line.replace(">/dev/null 2>&1", "")
        if "=$(" in line:
            line = line.split("=$(", 1)[1].rstrip(")")
        for part in line.split("||"):
            commands.append(shlex.split(part))
    return commands


@pytest.fixture
def dry_run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name, value in {"PROJECT": SETTINGS.project, "REGION": SETTINGS.region, "BUCKET": SETTINGS.bucket}.items():
        monkeypatch.setenv(name, value)
    for name in ("TAXIFARE_SERVICE_ACCOUNT", "TAXIFARE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["setup-gcp", "--submitter", "user:ana@example.com"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result.output


def test_dry_run_is_a_valid_script_of_gcloud_commands(dry_run, tmp_path):
    assert dry_run.startswith("# dry run")
    script = tmp_path / "setup.sh"
    script.write_text(dry_run)
    subprocess.run(["bash", "-n", str(script)], check=True)
    commands = _commands(dry_run)
    assert commands and all(c[0] == "gcloud" for c in commands)
    joined = [" ".join(c) for c in commands]
    assert any(
        j.startswith("gcloud storage buckets create gs://taxi-ml-prod-data") and "--location=europe-west4" in j
        for j in joined
    )
    assert any(j.startswith("gcloud iam service-accounts create taxifare-pipelines") for j in joined)


def test_no_project_level_storage_role_is_ever_granted(dry_run):
    project_roles = [c for c in _commands(dry_run) if c[1:3] == ["projects", "add-iam-policy-binding"]]
    assert project_roles, "the account needs roles/aiplatform.user on the project"
    roles = {arg.split("=", 1)[1] for c in project_roles for arg in c if arg.startswith("--role=")}
    assert roles == {"roles/aiplatform.user"}
    assert not any(role.startswith("roles/storage") for role in roles)
    # and no other command grants a storage role on anything but the bucket
    for command in _commands(dry_run):
        for arg in command:
            if arg.startswith("--role=roles/storage"):
                assert command[1:4] == ["storage", "buckets", "add-iam-policy-binding"], command
                assert command[4] == "gs://taxi-ml-prod-data", command


def test_bucket_roles_for_the_account_and_the_vertex_service_agent(dry_run):
    bindings = {
        (c[4], a.split("=", 1)[1], r.split("=", 1)[1])
        for c in _commands(dry_run)
        if c[1:4] == ["storage", "buckets", "add-iam-policy-binding"]
        for a in c
        if a.startswith("--member=")
        for r in c
        if r.startswith("--role=")
    }
    bucket = "gs://taxi-ml-prod-data"
    assert (bucket, f"serviceAccount:{SA}", "roles/storage.objectAdmin") in bindings
    assert (bucket, f"serviceAccount:{SA}", "roles/storage.legacyBucketReader") in bindings
    agent = "serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-aiplatform.iam.gserviceaccount.com"
    assert (bucket, agent, "roles/storage.objectViewer") in bindings
    assert "PROJECT_NUMBER=$(gcloud projects describe taxi-ml-prod" in dry_run
    assert "--member=user:ana@example.com --role=roles/iam.serviceAccountUser" in dry_run


def test_configured_service_account_is_used():
    settings = SETTINGS.model_copy(update={"service_account": "runner@taxi-ml-prod.iam.gserviceaccount.com"})
    script = setup_gcp.script(setup_gcp.plan(settings))
    assert "serviceAccount:runner@taxi-ml-prod.iam.gserviceaccount.com" in script
    assert "taxifare-pipelines@" not in script


class _Gcloud:
    """Stands in for the gcloud binary, which cannot reach Google from here: records argv and
    answers the read-only lookups the apply path depends on."""

    def __init__(self, existing=(), fail=None):
        self.calls, self.existing, self.fail = [], set(existing), fail

    def __call__(self, argv):
        self.calls.append(argv)
        line = " ".join(argv)
        if " describe " in f" {line} " and "projects describe" not in line:
            found = any(name in line for name in self.existing)
            return subprocess.CompletedProcess(argv, 0 if found else 1, "", "" if found else "NOT_FOUND")
        if "projects describe" in line:
            return subprocess.CompletedProcess(argv, 0, "987654321098\n", "")
        if self.fail and self.fail in line:
            return subprocess.CompletedProcess(argv, 1, "", "PERMISSION_DENIED: caller lacks storage.buckets.create")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_apply_skips_what_exists_and_fills_the_project_number():
    gcloud = _Gcloud(existing={"gs://taxi-ml-prod-data"})
    setup_gcp.apply(setup_gcp.plan(SETTINGS), runner=gcloud, echo=lambda line: None)
    lines = [" ".join(c) for c in gcloud.calls]
    assert not any("buckets create" in line for line in lines)  # the bucket was there
    assert any("service-accounts create taxifare-pipelines" in line for line in lines)
    assert any("service-987654321098@gcp-sa-aiplatform.iam.gserviceaccount.com" in line for line in lines)
    assert not any("${PROJECT_NUMBER}" in line for line in lines)


def test_apply_stops_at_the_first_failure_with_gcloud_message():
    gcloud = _Gcloud(fail="buckets create")
    with pytest.raises(setup_gcp.SetupError, match="PERMISSION_DENIED: caller lacks storage.buckets.create"):
        setup_gcp.apply(setup_gcp.plan(SETTINGS), runner=gcloud, echo=lambda line: None)
    assert not any("add-iam-policy-binding" in " ".join(c) for c in gcloud.calls)
