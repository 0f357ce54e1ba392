"""Publish a trained SavedModel to a versioned place in the bucket, then prove it loads and predicts."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

from trainer import predictor, schema, storage

log = logging.getLogger(__name__)

MODEL_METADATA_FILE = "taxifare_model.json"


class ExportError(RuntimeError):
    """The exported model is missing, does not load, or predicts nonsense."""


@dataclass
class ExportResult:
    uri: str
    version: str
    metadata: dict = field(default_factory=dict)


def code_version() -> str:
    """Package version plus the git commit when known (``$TAXIFARE_CODE_VERSION`` wins)."""
    if os.environ.get("TAXIFARE_CODE_VERSION"):
        return os.environ["TAXIFARE_CODE_VERSION"]
    try:
        version = importlib_metadata.version("taxifare-pipelines")
    except importlib_metadata.PackageNotFoundError:  # run from a source tree without installing
        version = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}"


def models_uri(bucket: str, prefix: str) -> str:
    if not bucket:
        raise ValueError("bucket is empty: name the ML bucket the model is exported to")
    root = f"gs://{bucket}"
    return f"{root}/{prefix.strip('/')}/models" if prefix.strip("/") else f"{root}/models"


def export_model(
    model_dir: str | os.PathLike,
    *,
    bucket: str,
    prefix: str,
    data_checksums: dict | None = None,
    checked_fare: float | None = None,
) -> ExportResult:
    """Copy the newest SavedModel under `model_dir` to gs://BUCKET/PREFIX/models/<version>/.

    The version is the export's timestamp folder name, so re-exporting the same training run is a
    no-op and a new run never overwrites an older version. After the copy the published model is
    proven to be a working one: read back from the bucket, it must predict a finite fare for the
    layout's test instance. When the caller has already loaded this very SavedModel and had it
    predict that instance (`checked_fare`: the pipeline's train step does, for its evaluation page),
    the published copy is instead checked byte for byte (every file's CRC32C as stored in the bucket
    against the local file's), which proves the same without loading TensorFlow again.
    """
    saved_model = predictor.find_saved_model(model_dir)
    version = saved_model.name
    destination = f"{models_uri(bucket, prefix)}/{version}"
    storage.upload_dir(saved_model, destination)
    with tempfile.TemporaryDirectory(prefix="taxifare-export-") as workdir:
        if checked_fare is None:
            loaded, fare = check_exported(destination, Path(workdir) / "reload")
            layout, signature, model_metadata = loaded.layout, loaded.fields, loaded.metadata
        else:
            check_copy(saved_model, destination)
            fare = float(checked_fare)
            model_metadata = predictor.read_model_metadata(saved_model)
            layout, signature = model_metadata.get("layout"), model_metadata.get("fields", {})
        info = {
            "version": version,
            "uri": destination,
            "layout": layout,
            "signature": signature,
            "metrics": model_metadata.get("metrics", {}),
            "data_checksums": data_checksums or {},
            "code_version": code_version(),
            "framework": "tensorflow",
            "check_fare": fare,
        }
        info_path = Path(workdir) / MODEL_METADATA_FILE
        info_path.write_text(json.dumps(info, indent=2, sort_keys=True))
        storage.upload_file(info_path, f"{destination}/{MODEL_METADATA_FILE}", content_type="application/json")
    log.info("exported %s to %s (test instance: $%.2f)", saved_model, destination, fare)
    return ExportResult(uri=destination, version=version, metadata=info)


def check_predicts(model: predictor.Predictor, where: str) -> float:
    """The layout's test instance must get a finite fare from `model` (loaded from `where`)."""
    instance = schema.TEST_INSTANCES[model.layout]
    fare = model.predict([dict(instance)])[0]
    if not math.isfinite(fare):
        raise ExportError(f"exported model at {where} predicts {fare} for the test instance {instance}")
    return float(fare)


def check_exported(uri: str, workdir: Path) -> tuple[predictor.Predictor, float]:
    """Load the model back from `uri` and predict the layout's test instance."""
    storage.download_dir(uri, workdir)
    try:
        model = predictor.Predictor.load(workdir)
    except (OSError, ValueError, predictor.ModelLoadError, predictor.ModelNotFoundError) as exc:
        raise ExportError(f"exported model at {uri} does not load: {exc}") from exc
    return model, check_predicts(model, uri)


def check_copy(saved_model: Path, uri: str) -> None:
    """Every file of `saved_model` is in the bucket under `uri` with the same CRC32C."""
    for path in sorted(p for p in saved_model.rglob("*") if p.is_file()):
        relative = path.relative_to(saved_model).as_posix()
        stored = storage.object_crc32c(storage.join(uri, relative))
        local = storage.crc32c_of_file(path)
        if stored != local:
            found = "missing" if stored is None else f"crc32c {stored}"
            raise ExportError(f"exported model at {uri}: {relative} is {found}, expected crc32c {local} as in {path}")
