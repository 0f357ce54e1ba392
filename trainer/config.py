"""The project's one configuration object (project, region, bucket, image, …).

Values come from, in increasing precedence: defaults, a YAML file (``taxifare.yaml`` in the
working directory or ``$TAXIFARE_CONFIG``), environment variables (the lab's ``PROJECT``,
``BUCKET``, ``REGION``, and ``TAXIFARE_<FIELD>``), then explicit overrides.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

DEFAULT_IMAGE = "taxifare-pipelines:local"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = "local-project"
    region: str = "us-central1"
    bucket: str = "taxifare-local"
    prefix: str = "taxifare"
    image: str = DEFAULT_IMAGE
    service_account: str | None = None
    api_endpoint: str | None = None


# Environment variables the lab uses, then the project's own.
_ENV_ALIASES = {"project": "PROJECT", "region": "REGION", "bucket": "BUCKET"}


def load_settings(path: str | os.PathLike | None = None, **overrides) -> Settings:
    values: dict = {}
    config_path = Path(path or os.environ.get("TAXIFARE_CONFIG", "taxifare.yaml"))
    if config_path.is_file():
        values.update(yaml.safe_load(config_path.read_text()) or {})
    for field in Settings.model_fields:
        for env_name in (_ENV_ALIASES.get(field), f"TAXIFARE_{field.upper()}"):
            if env_name and os.environ.get(env_name):
                values[field] = os.environ[env_name]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
