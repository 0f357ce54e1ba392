"""Least-privilege Google Cloud setup for the pipelines: one bucket, one service account.

``taxifare setup-gcp`` prints every ``gcloud`` command (dry run); with ``--apply`` it runs them.
What it sets up:

* the APIs (Vertex AI, Cloud Storage, Artifact Registry) enabled in the project;
* the ML bucket in the chosen region, uniform access, public access prevented;
* a Docker repository in Artifact Registry for the project image;
* a dedicated service account for pipeline runs and training/serving jobs;
* storage roles for that account **on the bucket only** — never a project-level storage role;
* ``roles/aiplatform.user`` on the project (create jobs, models, endpoints);
* the account may act as itself (a pipeline task starting a CustomJob as the same account), and
  the person submitting may act as it;
* the Vertex AI service agent may read the bucket (model artifacts for deployment) and the
  repository (serving image).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trainer.config import Settings, check_service_account

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT_NAME = "taxifare-pipelines"
DEFAULT_REPOSITORY = "taxifare"
# The account's roles on the bucket: objects read/write/delete, and bucket metadata (read-only).
BUCKET_ROLES = ("roles/storage.objectAdmin", "roles/storage.legacyBucketReader")
PROJECT_ROLES = ("roles/aiplatform.user",)
SERVICE_AGENT_BUCKET_ROLES = ("roles/storage.objectViewer",)
PROJECT_NUMBER = "${PROJECT_NUMBER}"


class SetupError(RuntimeError):
    """A gcloud command failed."""


@dataclass
class Step:
    description: str
    argv: list[str]
    # A read-only command that succeeds when the resource already exists (then the step is skipped).
    exists: list[str] | None = None
    capture: str | None = None  # store the command's output under this name (e.g. the project number)
    tags: set[str] = field(default_factory=set)

    def command(self, values: dict[str, str] | None = None) -> str:
        return shell_join(_substitute(self.argv, values or {}))


def shell_join(argv: Sequence[str]) -> str:
    """Like shlex.join, but a ``${NAME}`` inside an argument stays expandable by the shell."""
    return " ".join(f'"{arg}"' if "${" in arg else shlex.quote(arg) for arg in argv)


def _substitute(argv: Sequence[str], values: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace("${" + key + "}", value)
        out.append(arg)
    return out


def service_account_email(settings: Settings, account_name: str = DEFAULT_ACCOUNT_NAME) -> str:
    if settings.service_account:
        return settings.service_account
    return check_service_account(f"{account_name}@{settings.project}.iam.gserviceaccount.com")


def plan(
    settings: Settings,
    *,
    account_name: str = DEFAULT_ACCOUNT_NAME,
    repository: str = DEFAULT_REPOSITORY,
    submitter: str | None = None,
) -> list[Step]:
    """The gcloud commands, in order. ``submitter`` (e.g. ``user:me@example.com``) may act as the account."""
    project, region, bucket = settings.project, settings.region, f"gs://{settings.bucket}"
    account = service_account_email(settings, account_name)
    member = f"serviceAccount:{account}"
    agent = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-aiplatform.iam.gserviceaccount.com"
    p = ["--project", project]
    steps = [
        Step(
            "enable the Vertex AI, Cloud Storage and Artifact Registry APIs",
            [
                "gcloud",
                "services",
                "enable",
                "aiplatform.googleapis.com",
                "storage.googleapis.com",
                "artifactregistry.googleapis.com",
                *p,
            ],
        ),
        Step(
            "look up the project number (names the Vertex AI service agent)",
            ["gcloud", "projects", "describe", project, "--format=value(projectNumber)"],
            capture="PROJECT_NUMBER",
        ),
        Step(
            f"create the ML bucket {bucket} in {region}",
            [
                "gcloud",
                "storage",
                "buckets",
                "create",
                bucket,
                *p,
                f"--location={region}",
                "--uniform-bucket-level-access",
                "--public-access-prevention",
            ],
            exists=["gcloud", "storage", "buckets", "describe", bucket, *p, "--format=value(name)"],
        ),
        Step(
            f"create the Docker repository {repository} in {region} for the project image",
            [
                "gcloud",
                "artifacts",
                "repositories",
                "create",
                repository,
                "--repository-format=docker",
                f"--location={region}",
                *p,
            ],
            exists=["gcloud", "artifacts", "repositories", "describe", repository, f"--location={region}", *p],
        ),
        Step(
            f"create the pipelines service account {account}",
            [
                "gcloud",
                "iam",
                "service-accounts",
                "create",
                account.split("@")[0],
                "--display-name=taxifare pipelines",
                *p,
            ],
            exists=["gcloud", "iam", "service-accounts", "describe", account, *p],
        ),
    ]
    for role in BUCKET_ROLES:
        steps.append(
            Step(
                f"grant {role} on {bucket} only",
                [
                    "gcloud",
                    "storage",
                    "buckets",
                    "add-iam-policy-binding",
                    bucket,
                    f"--member={member}",
                    f"--role={role}",
                ],
                tags={"bucket-binding"},
            )
        )
    for role in PROJECT_ROLES:
        steps.append(
            Step(
                f"grant {role} on the project",
                [
                    "gcloud",
                    "projects",
                    "add-iam-policy-binding",
                    project,
                    f"--member={member}",
                    f"--role={role}",
                    "--condition=None",
                ],
                tags={"project-binding"},
            )
        )
    steps.append(
        Step(
            "let the account act as itself (pipeline tasks start jobs as the same account)",
            [
                "gcloud",
                "iam",
                "service-accounts",
                "add-iam-policy-binding",
                account,
                f"--member={member}",
                "--role=roles/iam.serviceAccountUser",
                *p,
            ],
        )
    )
    if submitter:
        steps.append(
            Step(
                f"let {submitter} submit runs as the account",
                [
                    "gcloud",
                    "iam",
                    "service-accounts",
                    "add-iam-policy-binding",
                    account,
                    f"--member={submitter}",
                    "--role=roles/iam.serviceAccountUser",
                    *p,
                ],
            )
        )
    steps.append(
        Step(
            "grant the account read access to the image repository",
            [
                "gcloud",
                "artifacts",
                "repositories",
                "add-iam-policy-binding",
                repository,
                f"--location={region}",
                f"--member={member}",
                "--role=roles/artifactregistry.reader",
                *p,
            ],
        )
    )
    steps.append(
        Step(
            "make sure the Vertex AI service agent exists",
            ["gcloud", "beta", "services", "identity", "create", "--service=aiplatform.googleapis.com", *p],
        )
    )
    for role in SERVICE_AGENT_BUCKET_ROLES:
        steps.append(
            Step(
                f"let the Vertex AI service agent read {bucket} (model artifacts)",
                [
                    "gcloud",
                    "storage",
                    "buckets",
                    "add-iam-policy-binding",
                    bucket,
                    f"--member={agent}",
                    f"--role={role}",
                ],
                tags={"bucket-binding"},
            )
        )
    steps.append(
        Step(
            "let the Vertex AI service agent pull the serving image",
            [
                "gcloud",
                "artifacts",
                "repositories",
                "add-iam-policy-binding",
                repository,
                f"--location={region}",
                f"--member={agent}",
                "--role=roles/artifactregistry.reader",
                *p,
            ],
        )
    )
    return steps


Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def apply(steps: list[Step], runner: Runner = _run, echo: Callable[[str], None] = log.info) -> dict[str, str]:
    """Runs the steps in order, skipping what exists; stops at the first failure with its output."""
    values: dict[str, str] = {}
    for step in steps:
        if step.exists is not None and runner(_substitute(step.exists, values)).returncode == 0:
            echo(f"# {step.description}: already there")
            continue
        argv = _substitute(step.argv, values)
        echo(f"# {step.description}\n{shlex.join(argv)}")
        result = runner(argv)
        if result.returncode != 0:
            raise SetupError(f"{shlex.join(argv)} failed ({result.returncode}): {(result.stderr or '').strip()}")
        if step.capture:
            values[step.capture] = (result.stdout or "").strip()
            if not values[step.capture]:
                raise SetupError(f"{shlex.join(argv)} printed nothing; expected the {step.capture}")
    return values


def script(steps: list[Step]) -> str:
    """The dry run: every command, commented, as a shell script."""
    lines = ["set -euo pipefail"]
    for step in steps:
        lines.append(f"# {step.description}")
        if step.capture:
            lines.append(f"{step.capture}=$({step.command()})")
        elif step.exists is not None:
            lines.append(f"{shell_join(step.exists)} >/dev/null 2>&1 || {step.command()}")
        else:
            lines.append(step.command())
    return "\n".join(lines)
