"""Publishing a SavedModel to the bucket (the emulator): the copy is proven to work, by a reload and a
prediction, or — when the caller already loaded the model and had it predict — byte for byte."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from trainer import export, predictor, storage


def _published_info(uri: str) -> dict:
    return json.loads(storage.read_text(f"{uri}/{export.MODEL_METADATA_FILE}"))


def test_reloaded_from_the_bucket_and_asked_for_a_fare(lab_model_dir, bucket):
    result = export.export_model(lab_model_dir, bucket=bucket, prefix="p")
    info = _published_info(result.uri)
    assert result.uri == f"gs://{bucket}/p/models/{result.version}"
    assert info["layout"] == "lab" and set(info["signature"]) == {
        "pickuplon",
        "pickuplat",
        "dropofflon",
        "dropofflat",
        "passengers",
    }
    assert math.isfinite(info["check_fare"]) and info["metrics"]["rmse"] > 0


def test_a_checked_model_is_verified_byte_for_byte_with_the_same_record(lab_model_dir, bucket):
    reloaded = export.export_model(lab_model_dir, bucket=bucket, prefix="reload")
    trained = predictor.Predictor.load(lab_model_dir)
    fare = export.check_predicts(trained, str(lab_model_dir))
    checked = export.export_model(lab_model_dir, bucket=bucket, prefix="checked", checked_fare=fare)
    first, second = _published_info(reloaded.uri), _published_info(checked.uri)
    assert {k: v for k, v in first.items() if k != "uri"} == {k: v for k, v in second.items() if k != "uri"}


def test_a_published_copy_that_differs_is_refused(lab_model_dir, bucket, tmp_path):
    saved_model = predictor.find_saved_model(lab_model_dir)
    uri = f"gs://{bucket}/p/models/{saved_model.name}"
    storage.upload_dir(saved_model, uri)
    altered = tmp_path / "variables.index"
    altered.write_bytes(b"not the trained variables")
    storage.upload_file(altered, f"{uri}/variables/variables.index", overwrite=True)
    with pytest.raises(export.ExportError, match=r"variables/variables\.index is crc32c .* expected crc32c"):
        export.check_copy(saved_model, uri)
    storage.delete(f"{uri}/saved_model.pb")
    with pytest.raises(export.ExportError, match=r"saved_model\.pb is missing"):
        export.check_copy(saved_model, uri)


def test_the_export_path_imports_no_tensorflow_when_the_model_was_checked():
    code = "import sys\nimport trainer.export\nprint('tensorflow' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
