"""trainer.storage against a real gcp-storage-emulator (no GCS mocks)."""

from __future__ import annotations

import os
import time

import google_crc32c
import pytest

from pipelines.local.emulator import GcsEmulator, free_port
from trainer import storage


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_crc32c_matches_gcs_encoding(tmp_path):
    data = b"12.0,-73.987625,40.750617,-73.971163,40.78518,1,0\n" * 1000
    path = _write(tmp_path / "a.csv", data)
    import base64

    expected = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
    assert storage.crc32c_of_file(path) == expected == storage.crc32c_of_bytes(data)
    assert storage.crc32c_of_file(_write(tmp_path / "e", b"")) == "AAAAAA=="


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("gs://my-bucket/a/b.csv", ("my-bucket", "a/b.csv")),
        ("gs://my_bucket.example", ("my_bucket.example", "")),
        ("gs://abc/", ("abc", "")),
    ],
)
def test_split_gcs_uri(uri, expected):
    assert storage.is_gcs(uri)
    assert storage.split_gcs_uri(uri) == expected


@pytest.mark.parametrize(
    "name, why",
    [
        ("ab", "3-63"),
        ("a" * 64, "3-63"),
        ("My-Bucket", "lowercase"),
        ("-bucket", "starting and ending"),
        ("bucket-", "starting and ending"),
        ("buck et", "lowercase"),
        ("192.168.5.4", "IP address"),
        ("goog-data", "goog"),
        ("my-google-data", "google"),
        ("a..b", "each dot-separated part"),
        ("", "empty"),
    ],
)
def test_bad_bucket_names(name, why):
    with pytest.raises(storage.BucketNameError, match=why) as info:
        storage.split_gcs_uri(f"gs://{name}/x")
    assert repr(name) in str(info.value)
    assert "\n" not in str(info.value)


def test_not_a_gcs_uri():
    assert not storage.is_gcs("/tmp/x")
    with pytest.raises(storage.StorageError, match="not a gs:// URI"):
        storage.split_gcs_uri("s3://bucket/x")


def test_upload_verify_skip_and_download(bucket, tmp_path):
    data = os.urandom(200_000)
    local = _write(tmp_path / "data.bin", data)
    uri = f"gs://{bucket}/dir/data.bin"
    first = storage.upload_file(local, uri)
    assert first.action == "uploaded" and first.uploaded
    assert first.size == len(data) and first.crc32c == storage.crc32c_of_file(local)
    assert storage.exists(uri)
    assert storage.object_crc32c(uri) == first.crc32c

    again = storage.upload_file(local, uri)
    assert again.skipped and not again.uploaded
    assert again.generation == first.generation  # the object was not rewritten

    out = storage.download_file(uri, tmp_path / "out" / "copy.bin")
    assert out.read_bytes() == data
    assert not (tmp_path / "out" / "copy.bin.part").exists()
    assert storage.read_bytes(uri) == data


def test_different_existing_object_is_not_overwritten(bucket, tmp_path):
    uri = f"gs://{bucket}/x.csv"
    storage.upload_file(_write(tmp_path / "a.csv", b"original\n"), uri)
    changed = _write(tmp_path / "b.csv", b"changed\n")
    with pytest.raises(storage.ObjectConflict, match="different content") as info:
        storage.upload_file(changed, uri)
    assert uri in str(info.value)
    assert storage.read_text(uri) == "original\n"

    forced = storage.upload_file(changed, uri, overwrite=True)
    assert forced.action == "overwritten"
    assert storage.read_text(uri) == "changed\n"


def test_altered_object_detected_on_download(bucket, tmp_path, gcs_emulator):
    uri = f"gs://{bucket}/train.csv"
    result = storage.upload_file(_write(tmp_path / "t.csv", b"1,2,3\n"), uri)
    # Someone replaces the object behind our back (a plain client write).
    gcs_emulator.client().bucket(bucket).blob("train.csv").upload_from_string(b"1,2,4\n")
    target = tmp_path / "dl" / "train.csv"
    with pytest.raises(storage.ChecksumMismatch, match="expected crc32c") as info:
        storage.download_file(uri, target, expected_crc32c=result.crc32c)
    assert uri in str(info.value)
    assert not target.exists() and not target.with_name("train.csv.part").exists()
    # And a re-upload of the original refuses to clobber the altered object silently.
    with pytest.raises(storage.ObjectConflict):
        storage.upload_file(tmp_path / "t.csv", uri)


def test_zero_byte_file(bucket, tmp_path):
    empty = _write(tmp_path / "empty.csv", b"")
    uri = f"gs://{bucket}/empty.csv"
    first = storage.upload_file(empty, uri)
    assert first.uploaded and first.size == 0 and first.crc32c == "AAAAAA=="
    assert storage.upload_file(empty, uri).skipped
    assert storage.download_file(uri, tmp_path / "back.csv").read_bytes() == b""


def test_missing_bucket(gcs_emulator, tmp_path):
    local = _write(tmp_path / "a.csv", b"x\n")
    with pytest.raises(storage.BucketNotFound, match="gs://no-such-bucket-here does not exist"):
        storage.upload_file(local, "gs://no-such-bucket-here/a.csv")
    with pytest.raises(storage.BucketNotFound):
        storage.download_file("gs://no-such-bucket-here/a.csv", tmp_path / "b.csv")
    with pytest.raises(storage.BucketNotFound):
        storage.check_bucket("no-such-bucket-here")


def test_missing_object(bucket, tmp_path):
    with pytest.raises(storage.ObjectNotFound, match=f"gs://{bucket}/nope.csv"):
        storage.download_file(f"gs://{bucket}/nope.csv", tmp_path / "x")
    assert not storage.exists(f"gs://{bucket}/nope.csv")
    storage.check_bucket(bucket)


def test_unreachable_store(monkeypatch, tmp_path, gcs_emulator):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    local = _write(tmp_path / "a.csv", b"x\n")
    start = time.monotonic()
    with pytest.raises(storage.StoreUnreachable) as info:
        storage.upload_file(local, "gs://some-bucket/a.csv")
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "connection refused" in message
    assert "\n" not in message
    assert time.monotonic() - start < 30


def test_permission_denied(contract_server, monkeypatch, tmp_path, gcs_emulator):
    """A caller without the role gets GCS's 403 (the emulator has no IAM: recorded answers)."""
    forbidden = {
        "error": {
            "code": 403,
            "message": "anon-caller does not have storage.objects.get access to the Google Cloud Storage object.",
            "errors": [{"reason": "forbidden", "domain": "global", "message": "forbidden"}],
        }
    }
    contract_server.add("GET", r"/storage/v1/b/b-x.*", forbidden, status=403)
    contract_server.add("POST", r"/upload/storage/v1/b/b-x/o", forbidden, status=403)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", contract_server.url)
    with pytest.raises(storage.StoragePermissionDenied) as info:
        storage.upload_file(_write(tmp_path / "a", b"x"), "gs://b-x/a")
    assert str(info.value).startswith("permission denied on gs://b-x/a (403): anon-caller does not have")
    with pytest.raises(storage.StoragePermissionDenied):
        storage.download_file("gs://b-x/a", tmp_path / "b")


def test_dirs_list_and_local_paths(bucket, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    _write(src / "a.txt", b"a")
    _write(src / "sub" / "b.txt", b"bb")
    _write(src / "sub" / "empty", b"")
    prefix = f"gs://{bucket}/tree"
    results = storage.upload_dir(src, prefix)
    assert sorted(r.uri for r in results) == storage.list_blobs(prefix)
    assert storage.list_blobs(prefix) == [
        f"{prefix}/a.txt",
        f"{prefix}/sub/b.txt",
        f"{prefix}/sub/empty",
    ]
    assert all(r.skipped for r in storage.upload_dir(src, prefix))
    back = storage.download_dir(prefix, tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in back) == [
        "a.txt",
        "sub/b.txt",
        "sub/empty",
    ]
    assert (tmp_path / "back" / "sub" / "b.txt").read_bytes() == b"bb"
    assert storage.read_text(f"{prefix}/a.txt") == "a"

    # The same calls with a local destination.
    local_results = storage.upload_dir(src, tmp_path / "mirror")
    assert [r.action for r in local_results] == ["uploaded"] * 3
    assert all(r.skipped for r in storage.upload_dir(src, tmp_path / "mirror"))
    _write(src / "a.txt", b"A")
    with pytest.raises(storage.ObjectConflict):
        storage.upload_dir(src, tmp_path / "mirror")
    assert (tmp_path / "mirror" / "a.txt").read_bytes() == b"a"


def test_progress_bar_upload(bucket, tmp_path):
    data = os.urandom(storage.PROGRESS_MIN_BYTES + 12345)
    local = _write(tmp_path / "big.bin", data)
    uri = f"gs://{bucket}/big.bin"
    result = storage.upload_file(local, uri, progress=True)
    assert result.uploaded and result.size == len(data)
    assert storage.download_file(uri, tmp_path / "big2.bin", progress=True).read_bytes() == data


def test_emulator_restart_keeps_objects(tmp_path):
    with GcsEmulator(data_dir=tmp_path / "gcs") as emulator:
        emulator.create_bucket("keep-me")
        blob = emulator.client().bucket("keep-me").blob("a.txt")
        blob.upload_from_string(b"hello")
        port = emulator.port
        emulator.kill()
        assert not emulator.running()
        emulator.start()
        assert emulator.port == port
        assert emulator.client().bucket("keep-me").blob("a.txt").download_as_bytes() == b"hello"
    assert not emulator.running()


def test_emulator_in_memory_via_module_and_port_clash(tmp_path, monkeypatch):
    import sys

    from pipelines.local import emulator as emulator_module
    from pipelines.local.emulator import EmulatorError

    monkeypatch.setattr(emulator_module, "_emulator_command", lambda: [sys.executable, "-m", "gcp_storage_emulator"])
    with GcsEmulator() as first:  # in memory, started as a module
        first.create_bucket("mem-bucket")
        assert [b.name for b in first.client().list_buckets()] == ["mem-bucket"]
        assert first.env() == {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{first.port}"}
        clash = GcsEmulator(port=first.port, start_timeout_s=10, log_path=tmp_path / "clash.log")
        with pytest.raises(EmulatorError, match=f"127.0.0.1:{first.port}"):
            clash.start()
        assert not clash.running()
    assert not first.running()


@pytest.mark.parametrize("same_bytes", [True, False])
def test_object_written_concurrently(same_bytes, contract_server, monkeypatch, tmp_path, gcs_emulator):
    """GCS answers 412 when the object appeared after our existence check (the emulator never
    enforces generation preconditions, so this is played from recorded answers)."""
    local = _write(tmp_path / "a.csv", b"1,2,3\n")
    crc = storage.crc32c_of_file(local) if same_bytes else "AAAAAA=="
    not_found = {"error": {"code": 404, "message": "No such object: b-x/a.csv"}}
    written = {
        "kind": "storage#object",
        "bucket": "b-x",
        "name": "a.csv",
        "generation": "17",
        "size": "6",
        "crc32c": crc,
    }
    contract_server.add("GET", r"/storage/v1/b/b-x/o/a\.csv", responses=[not_found, written], status=[404, 200])
    contract_server.add("GET", r"/storage/v1/b/b-x/o", {"kind": "storage#objects", "items": []})
    # google-cloud-storage 3.x also fetches the bucket's metadata in the background.
    contract_server.add("GET", r"/storage/v1/b/b-x", {"kind": "storage#bucket", "name": "b-x", "location": "US"})
    precondition = {"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold."}}
    contract_server.add("POST", r"/upload/storage/v1/b/b-x/o", precondition, status=412)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", contract_server.url)
    if same_bytes:
        result = storage.upload_file(local, "gs://b-x/a.csv")
        assert result.skipped and result.generation == 17
    else:
        with pytest.raises(storage.ObjectConflict, match="written by someone else"):
            storage.upload_file(local, "gs://b-x/a.csv")
    (upload,) = contract_server.calls("POST", r"/upload/storage/v1/b/b-x/o")
    assert upload.query["ifGenerationMatch"] == "0"  # a create-only write
