"""Ingest of the course files: a re-run uploads nothing, and a single flipped byte in any object
of the dataset (same size, so only the checksum can tell) is caught on re-ingest and on download
without the altered object being overwritten silently.

The emulator killed in the middle of an ingest is tested in
tests/test_ingest.py::test_emulator_killed_mid_ingest_then_rerun_completes (also `reliability`).
"""

from __future__ import annotations

import pytest

from tests.reliability import record
from trainer import ingest, storage

pytestmark = pytest.mark.reliability


def _generations(prefix: str) -> dict[str, int]:
    return {uri: storage._get_blob(uri).generation for uri in storage.list_blobs(prefix)}


def test_rerun_uploads_nothing_and_one_flipped_byte_anywhere_is_caught(lab_csvs, bucket, gcs_emulator, tmp_path):
    train_src, valid_src = lab_csvs
    root = f"gs://{bucket}/course/data/"
    first = ingest.ingest(str(train_src), valid_source=str(valid_src), bucket=bucket, prefix="course")
    before = _generations(root)
    again = ingest.ingest(str(train_src), valid_source=str(valid_src), bucket=bucket, prefix="course")
    rerun_uploaded = len(again.uploaded)
    unchanged = _generations(root) == before

    raw = gcs_emulator.client().bucket(bucket)
    caught: dict[str, dict] = {}
    for uri in (first.train.uri, first.valid.uri, first.manifest_uri):
        name = storage.split_gcs_uri(uri)[1]
        original = raw.blob(name).download_as_bytes()
        middle = len(original) // 2
        altered = original[:middle] + bytes([original[middle] ^ 0x01]) + original[middle + 1 :]
        raw.blob(name).upload_from_string(altered)
        outcome = {"bytes": len(original)}
        try:
            ingest.ingest(str(train_src), valid_source=str(valid_src), bucket=bucket, prefix="course")
            outcome["reingest"] = "not detected"
        except storage.ObjectConflict as exc:
            outcome["reingest"] = f"ObjectConflict: {exc}"[:160]
        outcome["kept_altered"] = raw.blob(name).download_as_bytes() == altered
        if uri != first.manifest_uri:
            try:
                ingest.download_dataset(first.dataset_uri, tmp_path / name.replace("/", "_"))
                outcome["download"] = "not detected"
            except storage.ChecksumMismatch as exc:
                outcome["download"] = f"ChecksumMismatch: {exc}"[:160]
        raw.blob(name).upload_from_string(original)  # restore for the next object
        caught[uri.rsplit("/", 1)[1]] = outcome
    restored = ingest.ingest(str(train_src), valid_source=str(valid_src), bucket=bucket, prefix="course")

    detected = sum(
        o["reingest"].startswith("ObjectConflict")
        + o.get("download", "ChecksumMismatch").startswith("ChecksumMismatch")
        for o in caught.values()
    )
    record(
        "ingest_rerun_and_tamper",
        "Course files ingested; re-run; one flipped byte in each object",
        passed=rerun_uploaded == 0 and unchanged and detected == 2 * len(caught) and restored.uploaded == [],
        rows=first.train.rows + first.valid.rows,
        objects=len(before),
        bytes=first.train.bytes + first.valid.bytes,
        rerun_objects_uploaded=rerun_uploaded,
        rerun_generations_unchanged=unchanged,
        faults_injected=len(caught),
        detections=detected,
        checks=2 * len(caught),
        by_object=caught,
    )
    assert rerun_uploaded == 0 and len(again.skipped) == 3 and unchanged
    for object_name, outcome in caught.items():
        assert outcome["reingest"].startswith("ObjectConflict"), (object_name, outcome)
        assert outcome["kept_altered"], object_name
        assert outcome.get("download", "ChecksumMismatch").startswith("ChecksumMismatch"), (object_name, outcome)
    assert restored.uploaded == [] and restored.dataset_id == first.dataset_id
