"""The project's one configuration object (project, region, bucket, image, …).

Values come from, in increasing precedence: defaults, a YAML file (``taxifare.yaml`` in the
working directory or ``$TAXIFARE_CONFIG``), environment variables (the lab's ``PROJECT``,
``BUCKET``, ``REGION``, and ``TAXIFARE_<FIELD>``), then explicit overrides.

Every value is checked when the settings are built, so a bad bucket name, region, project id,
service account or image reference fails before anything is submitted, with a message saying
which value is wrong, where it came from and what is expected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from trainer.storage import check_bucket_name

# The image's repository; the tag is derived from the code (components.fingerprint.image_reference),
# so a tag given here is replaced by it.
DEFAULT_IMAGE = "taxifare-pipelines"


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every bad value."""


# Regions look like us-central1, europe-west4, northamerica-northeast1, me-central2.
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
# https://cloud.google.com/resource-manager/docs/creating-managing-projects (project ID rules);
# legacy domain-scoped ids ("example.com:my-project") are accepted too.
_PROJECT = re.compile(r"^(?:[a-z0-9.-]+\.[a-z]{2,}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
# User-managed (NAME@PROJECT.iam.gserviceaccount.com), default compute
# (N-compute@developer.gserviceaccount.com) and Google-managed service agents.
_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]@(?:[a-z0-9-]+\.)*(?:iam\.)?gserviceaccount\.com$")
# Docker image reference: [host[:port]/]path[:tag][@sha256:digest], lowercase path components.
_IMAGE = re.compile(
    r"^(?:(?P<host>(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")
_API_ENDPOINT = re.compile(r"^(?:https?://)?[A-Za-z0-9.-]+(?::[0-9]{1,5})?/?$")


def check_region(region: str) -> str:
    if not _REGION.match(region):
        raise ValueError(f"region {region!r}: expected a Google Cloud region such as 'us-central1' or 'europe-west4'")
    return region


def check_project_id(project: str) -> str:
    if not _PROJECT.match(project):
        raise ValueError(
            f"project {project!r}: a project id is 6-30 characters, lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return project


def check_service_account(email: str) -> str:
    if not _SERVICE_ACCOUNT.match(email):
        raise ValueError(
            f"service_account {email!r}: expected a service account email such as "
            "'taxifare-pipelines@PROJECT.iam.gserviceaccount.com'"
        )
    return email


def check_image(image: str) -> str:
    if not _IMAGE.match(image):
        raise ValueError(
            f"image {image!r}: expected an image reference [HOST[:PORT]/]PATH[:TAG][@sha256:DIGEST] with a "
            "lowercase path, e.g. 'us-central1-docker.pkg.dev/PROJECT/taxifare/taxifare-pipelines:1'"
        )
    return image


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    project: str = "local-project"
    region: str = "us-central1"
    bucket: str = "taxifare-local"
    prefix: str = "taxifare"
    image: str = DEFAULT_IMAGE
    service_account: str | None = None
    api_endpoint: str | None = None

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        return check_project_id(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return check_region(value)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_bucket_name(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError(
                f"prefix {value!r}: a folder like 'taxifare' or 'team/taxifare', no leading or trailing '/'"
            )
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_image(value)

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        return check_service_account(value) if value else None

    @field_validator("api_endpoint")
    @classmethod
    def _api_endpoint(cls, value: str | None) -> str | None:
        if value and not _API_ENDPOINT.match(value):
            raise ValueError(
                f"api_endpoint {value!r}: expected HOST[:PORT] (e.g. 'us-central1-aiplatform.googleapis.com') "
                "or http://HOST:PORT for a local server"
            )
        return value or None

    # -- derived locations ---------------------------------------------------------------------
    @property
    def bucket_uri(self) -> str:
        return f"gs://{self.bucket}"

    @property
    def pipeline_root(self) -> str:
        """Where Vertex AI / KFP write the pipeline's artifacts: under the project's bucket."""
        return f"gs://{self.bucket}/{self.prefix}/pipeline_root"

    @property
    def staging_bucket(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}/staging"


# Environment variables the lab uses, then the project's own.
_ENV_ALIASES = {"project": "PROJECT", "region": "REGION", "bucket": "BUCKET"}


def config_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("TAXIFARE_CONFIG", "taxifare.yaml"))


def setting_sources(path: str | os.PathLike | None = None, **overrides) -> tuple[dict, dict[str, str]]:
    """The raw values and, for each, where it came from (file, environment variable, override)."""
    values: dict = {}
    sources: dict[str, str] = {}
    file = config_path(path)
    if file.is_file():
        loaded = yaml.safe_load(file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping of settings, got {type(loaded).__name__}")
        values.update(loaded)
        sources.update({key: str(file) for key in loaded})
    elif path is not None:
        raise ConfigError(f"config file {file} does not exist")
    for field in Settings.model_fields:
        for env_name in (_ENV_ALIASES.get(field), f"TAXIFARE_{field.upper()}"):
            if env_name and os.environ.get(env_name):
                values[field] = os.environ[env_name]
                sources[field] = f"${env_name}"
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
            sources[key] = "override"
    return values, sources


def load_settings(path: str | os.PathLike | None = None, **overrides) -> Settings:
    """The effective settings; raises ConfigError naming each bad value and its source."""
    values, sources = setting_sources(path, **overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            source = sources.get(field, "default")
            if error["type"] == "extra_forbidden":
                message = f"unknown setting {field!r} (valid: {', '.join(Settings.model_fields)})"
            else:
                message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{message} [from {source}]")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def describe(settings: Settings, path: str | os.PathLike | None = None) -> list[tuple[str, str, str]]:
    """(name, value, source) rows of the effective configuration, derived locations included."""
    _, sources = setting_sources(path)
    rows = [
        (name, "" if getattr(settings, name) is None else str(getattr(settings, name)), sources.get(name, "default"))
        for name in Settings.model_fields
    ]
    rows += [
        ("pipeline_root", settings.pipeline_root, "derived"),
        ("staging_bucket", settings.staging_bucket, "derived"),
    ]
    return rows
