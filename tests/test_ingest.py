"""trainer.ingest against a real gcp-storage-emulator: every source kind, the split, idempotence."""

from __future__ import annotations

import functools
import json
import random
import threading
import zlib
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from trainer import ingest, ingest_sources, ingest_split, schema, storage, synth

LAB_ROW = "12.0,-73.987625,40.750617,-73.971163,40.78518,1,{key}\n"


def _lines(path) -> list[bytes]:
    return Path(path).read_bytes().splitlines(keepends=True)


def _download_splits(result, tmp_path) -> tuple[list[bytes], list[bytes]]:
    train, valid, manifest = ingest.download_dataset(result.dataset_uri, tmp_path / "back")
    assert manifest["dataset_id"] == result.dataset_id
    return _lines(train), _lines(valid)


# -- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, kind, params",
    [
        ("synthetic://?rows=500&layout=dated&seed=7", "synthetic", {"rows": 500, "layout": "dated", "seed": 7}),
        ("synthetic://", "synthetic", {"rows": ingest_sources.DEFAULT_SYNTHETIC_ROWS, "layout": "lab", "seed": 0}),
        (
            "bq://my-project.taxi_data.trips_2015",
            "bigquery",
            {"table_project": "my-project", "dataset": "taxi_data", "table": "trips_2015"},
        ),
        (
            "bq://?project=my-project&query=SELECT a+b FROM `x.y.z` WHERE c = 'd&e'",
            "bigquery",
            {"project": "my-project", "query": "SELECT a+b FROM `x.y.z` WHERE c = 'd&e'"},
        ),
        ("bq://?query=SELECT%201", "bigquery", {"query": "SELECT 1"}),
        ("gs://bkt/data/*.csv", "gcs", {"bucket": "bkt", "name": "data/*.csv"}),
        ("https://example.com/taxi.csv", "https", {}),
        ("http://127.0.0.1:8000/taxi.csv", "https", {}),
        ("data/taxi-train.csv", "file", {}),
    ],
)
def test_parse_source(text, kind, params):
    source = ingest.parse_source(text)
    assert source.kind == kind
    assert source.params == params


@pytest.mark.parametrize(
    "text, message",
    [
        ("synthetic://?rows=abc", "synthetic:// parameter rows='abc': expected an integer"),
        ("synthetic://?rows=0", "parameter rows=0: expected an integer 1.."),
        ("synthetic://?rows=10&layout=weird", "parameter layout='weird': expected one of lab, dated"),
        ("synthetic://?rows=10&seed=-1", "parameter seed=-1"),
        ("synthetic://?rowz=10", "parameter 'rowz' is not known; expected rows, layout, seed"),
        ("synthetic://?rows=1&rows=2", "parameter 'rows' is given twice"),
        ("synthetic://lab?rows=10", "synthetic:// takes only query parameters"),
        ("bq://", "bq:// needs a table"),
        ("bq://just-a-table", "bq:// table 'just-a-table': expected project.dataset.table"),
        ("bq://Bad.ds.tbl", "expected project.dataset.table"),
        ("bq://?query=", "bq:// parameter query is empty"),
        ("bq://?sql=SELECT 1", "bq:// parameter 'sql' is not known"),
        ("bq://proj-123.ds.t?query=SELECT 1", "either a table"),
        ("s3://bucket/key.csv", "unsupported source scheme 's3://'"),
        ("http://example.com/a.csv", "plain http:// is accepted only from a loopback host"),
        ("gs://Bad_Bucket/x", "bucket 'Bad_Bucket': only lowercase letters"),
        ("   ", "source is empty"),
    ],
)
def test_malformed_sources(text, message):
    with pytest.raises((ingest_sources.SourceError, storage.BucketNameError)) as info:
        ingest.parse_source(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# -- synthetic, idempotence, split -----------------------------------------------------------
def test_synthetic_ingest_then_rerun_uploads_nothing(bucket, tmp_path):
    source = "synthetic://?rows=3000&layout=lab&seed=5"
    first = ingest.ingest(source, bucket=bucket, prefix="runs/a")
    assert first.layout == "lab"
    assert first.train.rows + first.valid.rows == 3000
    assert 0.15 < first.valid.rows / 3000 < 0.25
    assert first.dataset_uri == f"gs://{bucket}/runs/a/data/{first.dataset_id}"
    assert first.train.uri == f"{first.dataset_uri}/train.csv"
    assert len(first.uploaded) == 3 and first.skipped == []
    for split in first.splits.values():
        assert storage.object_crc32c(split.uri) == split.crc32c
    generations = {u: storage._get_blob(u).generation for u in storage.list_blobs(f"gs://{bucket}/runs/a")}

    again = ingest.ingest(source, bucket=bucket, prefix="runs/a")
    assert again.dataset_id == first.dataset_id
    assert again.uploaded == [] and len(again.skipped) == 3
    assert not again.train.uploaded and not again.valid.uploaded
    after = {u: storage._get_blob(u).generation for u in storage.list_blobs(f"gs://{bucket}/runs/a")}
    assert after == generations  # nothing rewritten, nothing added

    # Different data: a new dataset next to the old one; nothing lost.
    other = ingest.ingest("synthetic://?rows=3000&layout=lab&seed=6", bucket=bucket, prefix="runs/a")
    assert other.dataset_id != first.dataset_id
    assert set(generations) < set(storage.list_blobs(f"gs://{bucket}/runs/a"))

    # Every generated line is in exactly one split.
    expected = _lines(synth.write_csv(tmp_path / "s.csv", rows=3000, layout="lab", seed=5))
    train, valid = _download_splits(first, tmp_path)
    assert Counter(train) + Counter(valid) == Counter(expected)


def test_split_is_deterministic_by_key(bucket, tmp_path):
    rows = [LAB_ROW.format(key=k).encode() for k in range(2000)]
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    (tmp_path / "a.csv").write_bytes(b"".join(rows))
    (tmp_path / "b.csv").write_bytes(b"".join(shuffled))
    first = ingest.ingest(str(tmp_path / "a.csv"), bucket=bucket, prefix="p", valid_fraction=0.3)
    second = ingest.ingest(str(tmp_path / "b.csv"), bucket=bucket, prefix="p", valid_fraction=0.3)
    train_a, valid_a = _download_splits(first, tmp_path / "1")
    train_b, valid_b = _download_splits(second, tmp_path / "2")
    assert set(valid_a) == set(valid_b) and set(train_a) == set(train_b)
    assert 0.25 < len(valid_a) / 2000 < 0.35
    assert first.dataset_id != second.dataset_id  # row order differs, so the bytes do
    for line in valid_a:
        key = line.rstrip(b"\n").split(b",")[-1]
        assert ingest_split.is_valid_row(key, 0.3)


def test_rows_without_key_hash_whole_line_and_nothing_is_lost(bucket, tmp_path):
    lines = [
        b"fare_amount,pickuplon,pickuplat,dropofflon,dropofflat,passengers,key\n",
        LAB_ROW.format(key=1).encode(),
        b"12.0,-73.98,40.75,-73.97,40.78,1,\n",  # empty key
        b"not,a,row\n",  # wrong width: hashed as a whole line
        b"\n",  # blank
        b"\xff\xfe\x00garbage\n",
        b"nan,-73.98,40.75,-73.97,40.78,1,9",  # no final newline
    ]
    path = tmp_path / "dirty.csv"
    path.write_bytes(b"".join(lines))
    result = ingest.ingest(str(path), bucket=bucket, prefix="p")
    assert result.header_lines_dropped == 1 and result.blank_lines_dropped == 1
    train, valid = _download_splits(result, tmp_path)
    kept = [line if line.endswith(b"\n") else line + b"\n" for line in lines[1:] if line.strip()]
    assert Counter(train) + Counter(valid) == Counter(kept)
    layout = schema.get_layout(result.layout)
    for line in kept:  # each row went where the documented rule sends it
        in_valid = ingest_split.is_valid_row(ingest_split.row_key(line, layout), 0.2)
        assert (line in valid) == in_valid and (line in train) != in_valid


# -- local sources -------------------------------------------------------------------------------
def test_glob_and_directory_sources(bucket, tmp_path, lab_csvs):
    train_src, valid_src = lab_csvs
    folder = tmp_path / "course"
    folder.mkdir()
    (folder / "taxi-train.csv").write_bytes(Path(train_src).read_bytes())
    (folder / "taxi-valid.csv").write_bytes(Path(valid_src).read_bytes())
    pair = ingest.ingest(str(folder), bucket=bucket, prefix="dir")
    assert pair.split == {"method": "separate"}
    assert pair.train.rows == len(_lines(train_src)) and pair.valid.rows == len(_lines(valid_src))

    both = ingest.ingest(str(folder / "taxi-*.csv"), bucket=bucket, prefix="glob")
    assert both.split["method"] == "hash"
    assert both.train.rows + both.valid.rows == pair.train.rows + pair.valid.rows

    separate = ingest.ingest(str(train_src), valid_source=str(valid_src), bucket=bucket, prefix="dir")
    assert separate.dataset_id == pair.dataset_id and separate.uploaded == []


def test_dated_layout_and_header(bucket, tmp_path):
    path = synth.write_csv(tmp_path / "d.csv", rows=400, layout="dated", seed=2, header=True)
    result = ingest.ingest(str(path), bucket=bucket, prefix="p")
    assert result.layout == "dated" and result.header_lines_dropped == 1
    assert result.train.rows + result.valid.rows == 400
    assert result.dataset_id.startswith("dated-")


def test_bad_local_sources(bucket, tmp_path):
    with pytest.raises(ingest_sources.SourceError, match="source not found: .*nope.csv"):
        ingest.ingest(str(tmp_path / "nope.csv"), bucket=bucket, prefix="p")
    with pytest.raises(ingest_sources.SourceError, match="matches no file"):
        ingest.ingest(str(tmp_path / "*.csv"), bucket=bucket, prefix="p")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ingest_split.IngestError, match="no data rows"):
        ingest.ingest(str(tmp_path / "empty.csv"), bucket=bucket, prefix="p")
    (tmp_path / "garbage.csv").write_bytes(b"\x00\x01\x02\n\xff\xfe\n")
    with pytest.raises(ingest_split.IngestError, match="garbage.csv: line 1: 1 columns"):
        ingest.ingest(str(tmp_path / "garbage.csv"), bucket=bucket, prefix="p")
    (tmp_path / "wide.csv").write_bytes(b"1,2,3\n4,5,6\n")
    with pytest.raises(ingest_split.IngestError, match="matches a layout.*3 columns"):
        ingest.ingest(str(tmp_path / "wide.csv"), bucket=bucket, prefix="p")
    lab = synth.write_csv(tmp_path / "mix" / "a.csv", rows=10, layout="lab")
    synth.write_csv(tmp_path / "mix" / "b.csv", rows=10, layout="dated")
    with pytest.raises(ingest_split.IngestError, match="different layouts"):
        ingest.ingest(str(tmp_path / "mix" / "*.csv"), bucket=bucket, prefix="p")
    with pytest.raises(ingest_split.IngestError, match="valid_fraction=1.5"):
        ingest.ingest(str(lab), bucket=bucket, prefix="p", valid_fraction=1.5)
    assert storage.list_blobs(f"gs://{bucket}") == []  # nothing was written by any of these


def test_empty_file_among_others_contributes_nothing(bucket, tmp_path):
    synth.write_csv(tmp_path / "in" / "a.csv", rows=50, layout="lab", seed=1)
    (tmp_path / "in" / "b.csv").write_bytes(b"")
    result = ingest.ingest(str(tmp_path / "in" / "*.csv"), bucket=bucket, prefix="p")
    assert result.train.rows + result.valid.rows == 50


def test_tiny_source_with_empty_valid_split(bucket, tmp_path):
    # One row: it lands in one split, the other is an empty (zero-byte) object.
    path = tmp_path / "one.csv"
    path.write_text(LAB_ROW.format(key=3))
    result = ingest.ingest(str(path), bucket=bucket, prefix="p")
    sizes = sorted([result.train.bytes, result.valid.bytes])
    assert sizes[0] == 0 and sizes[1] > 0
    empty = result.train if result.train.bytes == 0 else result.valid
    assert storage.exists(empty.uri) and storage.object_crc32c(empty.uri) == "AAAAAA=="
    assert ingest.ingest(str(path), bucket=bucket, prefix="p").uploaded == []


# -- destinations --------------------------------------------------------------------------------
def test_missing_and_bad_bucket(gcs_emulator, tmp_path):
    with pytest.raises(storage.BucketNotFound, match="gs://no-bucket-like-this does not exist"):
        ingest.ingest("synthetic://?rows=10", bucket="no-bucket-like-this", prefix="p")
    with pytest.raises(storage.BucketNameError, match="bucket 'UPPER': only lowercase letters"):
        ingest.ingest("synthetic://?rows=10", bucket="UPPER", prefix="p")


def test_altered_object_is_detected_and_kept(bucket, tmp_path, gcs_emulator):
    source = "synthetic://?rows=200&seed=9"
    result = ingest.ingest(source, bucket=bucket, prefix="p")
    name = storage.split_gcs_uri(result.train.uri)[1]
    gcs_emulator.client().bucket(bucket).blob(name).upload_from_string(b"tampered\n")
    with pytest.raises(storage.ObjectConflict, match="train.csv already exists with different content"):
        ingest.ingest(source, bucket=bucket, prefix="p")
    assert storage.read_text(result.train.uri) == "tampered\n"  # not overwritten silently
    with pytest.raises(storage.ChecksumMismatch, match="expected crc32c"):
        ingest.download_dataset(result.dataset_uri, tmp_path / "dl")
    fixed = ingest.ingest(source, bucket=bucket, prefix="p", overwrite=True)
    assert fixed.uploaded == [result.train.uri]
    ingest.download_dataset(result.dataset_uri, tmp_path / "dl")


def test_local_root_destination(tmp_path):
    result = ingest.ingest("synthetic://?rows=100", bucket=None, prefix="p", local_root=tmp_path / "out")
    assert Path(result.train.uri).is_file()
    assert Path(result.manifest_uri) == tmp_path / "out" / "p" / "data" / result.dataset_id / "dataset.json"
    assert ingest.ingest("synthetic://?rows=100", bucket=None, prefix="p", local_root=tmp_path / "out").uploaded == []
    # The splits are written beside the destination and moved in: nothing else is left there.
    dataset = Path(result.dataset_uri)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")) == [
        "p",
        "p/data",
        f"p/data/{result.dataset_id}",
        *(f"p/data/{result.dataset_id}/{name}" for name in ("dataset.json", "train.csv", "valid.csv")),
    ]
    assert storage.crc32c_of_file(dataset / "valid.csv") == result.valid.crc32c

    (tmp_path / "header.csv").write_text(",".join(schema.LAB.columns) + "\n\n")
    with pytest.raises(ingest_split.IngestError, match=r"no data rows \(1 header and 1 blank lines\)"):
        ingest.ingest(str(tmp_path / "header.csv"), bucket=None, prefix="q", local_root=tmp_path / "out")
    assert not (tmp_path / "out" / "q" / "data").exists()


# -- remote sources ------------------------------------------------------------------------------
@pytest.fixture
def http_folder(tmp_path):
    """A loopback HTTP server serving a folder."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_source(bucket, http_folder, tmp_path):
    folder, url = http_folder
    served = synth.write_csv(folder / "taxi.csv", rows=500, layout="lab", seed=4)
    from_url = ingest.ingest(f"{url}/taxi.csv", bucket=bucket, prefix="p")
    from_file = ingest.ingest(str(served), bucket=bucket, prefix="p")
    assert from_url.dataset_id == from_file.dataset_id and from_file.uploaded == []
    with pytest.raises(ingest_sources.SourceError, match=r"taxi-missing.csv: HTTP 404"):
        ingest.ingest(f"{url}/taxi-missing.csv", bucket=bucket, prefix="p")


def test_http_source_unreachable(bucket):
    from pipelines.local.emulator import free_port

    port = free_port()
    with pytest.raises(ingest_sources.SourceError, match=f"cannot reach 127.0.0.1:{port}"):
        ingest.ingest(f"http://127.0.0.1:{port}/x.csv", bucket=bucket, prefix="p")


def test_gcs_source(bucket, tmp_path):
    parts = [synth.write_csv(tmp_path / f"part-{i}.csv", rows=100, layout="lab", seed=i) for i in range(3)]
    for part in parts:
        storage.upload_file(part, f"gs://{bucket}/raw/{part.name}")
    storage.upload_file(parts[0], f"gs://{bucket}/raw/notes.txt")
    one = ingest.ingest(f"gs://{bucket}/raw/part-0.csv", bucket=bucket, prefix="p")
    assert one.train.rows + one.valid.rows == 100
    matched = ingest.ingest(f"gs://{bucket}/raw/part-*.csv", bucket=bucket, prefix="p")
    folder = ingest.ingest(f"gs://{bucket}/raw/", bucket=bucket, prefix="p")
    assert matched.train.rows + matched.valid.rows == 300
    assert folder.dataset_id == matched.dataset_id  # .txt skipped, same files in the same order
    with pytest.raises(ingest_sources.SourceError, match="no object found"):
        ingest.ingest(f"gs://{bucket}/nothing-here/*.csv", bucket=bucket, prefix="p")


def _play_bigquery_extract(contract_server, shard: Path) -> tuple[threading.Thread, threading.Event]:
    """While the extract job 'runs', write its file into the bucket the way BigQuery does."""
    stop = threading.Event()

    def play():
        while not stop.is_set():
            for insert in contract_server.calls("POST", r"/bigquery/v2/projects/[^/]+/jobs"):
                extract = insert.body["configuration"].get("extract")
                if extract:
                    (uri,) = extract["destinationUris"]
                    storage.upload_file(shard, uri.replace("*", "000000000000"))
                    return
            stop.wait(0.01)

    player = threading.Thread(target=play, daemon=True)
    player.start()
    return player, stop


def _extract_request(contract_server) -> dict:
    (insert,) = [
        r
        for r in contract_server.calls("POST", r"/bigquery/v2/projects/[^/]+/jobs")
        if "extract" in r.body["configuration"]
    ]
    assert insert.body["jobReference"]["jobId"].startswith("taxifare_extract_")
    return insert.body["configuration"]["extract"]


@pytest.mark.parametrize(
    "source, contract",
    [
        ("bq://taxi-project.course.taxi_trips", "bigquery_extract"),
        (
            "bq://?project=taxi-project&query=SELECT * FROM `taxi-project.course.taxi_trips` WHERE MOD(ABS(FARM_FINGERPRINT(key)), 4) < 1",
            "bigquery_query_extract",
        ),
    ],
)
def test_bigquery_source(source, contract, bucket, gcs_emulator, contract_server, tmp_path):
    """The real BigQuery client against recorded REST answers (table extract, or query then extract)."""
    contract_server.load(contract)
    shard = synth.write_csv(tmp_path / "shard.csv", rows=300, layout="lab", seed=11)
    player, stop = _play_bigquery_extract(contract_server, shard)
    try:
        result = ingest.ingest(source, bucket=bucket, prefix="p", bigquery_endpoint=contract_server.url)
    finally:
        stop.set()
        player.join(5)
    assert result.train.rows + result.valid.rows == 300
    extract = _extract_request(contract_server)
    assert extract["destinationFormat"] == "CSV" and extract["printHeader"] is False
    assert extract["destinationUris"][0].startswith(f"gs://{bucket}/p/staging/bq-")
    if contract == "bigquery_extract":
        assert extract["sourceTable"] == {"projectId": "taxi-project", "datasetId": "course", "tableId": "taxi_trips"}
    else:
        query = next(
            r.body["configuration"]["query"]
            for r in contract_server.calls("POST", r"/bigquery/v2/projects/taxi-project/jobs")
            if "query" in r.body["configuration"]
        )
        assert query["query"].endswith("FARM_FINGERPRINT(key)), 4) < 1") and query["useLegacySql"] is False
        # The extract reads the query's (anonymous) destination table.
        assert extract["sourceTable"]["tableId"] == "anon3f9a1c2b7d"


@pytest.mark.reliability
def test_emulator_killed_mid_ingest_then_rerun_completes(tmp_path, monkeypatch):
    """Crash the store between two uploads; after a restart the re-run finishes the dataset."""
    from pipelines.local.emulator import GcsEmulator

    source = synth.write_csv(tmp_path / "big.csv", rows=250_000, layout="lab", seed=8)
    with GcsEmulator(data_dir=tmp_path / "gcs") as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        emulator.create_bucket("crash-test")
        root = "gs://crash-test/p/data/"
        killed = threading.Event()

        def kill_after_first_object():
            while not killed.is_set():
                if storage.list_blobs(root):
                    emulator.kill()
                    killed.set()
                    return
                killed.wait(0.005)

        killer = threading.Thread(target=kill_after_first_object, daemon=True)
        killer.start()
        with pytest.raises(storage.StoreUnreachable, match=emulator.host):
            ingest.ingest(str(source), bucket="crash-test", prefix="p", valid_fraction=0.5)
        killer.join(10)
        assert killed.is_set()

        emulator.start()  # same port, same data directory
        partial = storage.list_blobs(root)
        assert 1 <= len(partial) < 3 and not any(u.endswith("dataset.json") for u in partial)
        result = ingest.ingest(str(source), bucket="crash-test", prefix="p", valid_fraction=0.5)
        assert set(partial) <= set(result.skipped)
        assert storage.list_blobs(root) == sorted([result.train.uri, result.valid.uri, result.manifest_uri])
        train, valid, _ = ingest.download_dataset(result.dataset_uri, tmp_path / "back")
        assert len(_lines(train)) + len(_lines(valid)) == 250_000
        assert ingest.ingest(str(source), bucket="crash-test", prefix="p", valid_fraction=0.5).uploaded == []


def test_bigquery_missing_table_is_one_line(bucket, gcs_emulator, contract_server):
    contract_server.add(
        "POST",
        r"/bigquery/v2/projects/[^/]+/jobs",
        {
            "error": {
                "code": 404,
                "message": "Not found: Table taxi-project:course.nope was not found in location US",
                "errors": [{"reason": "notFound", "message": "Not found: Table taxi-project:course.nope"}],
                "status": "NOT_FOUND",
            }
        },
        status=404,
    )
    with pytest.raises(ingest_sources.SourceError) as info:
        ingest.ingest("bq://taxi-project.course.nope", bucket=bucket, prefix="p", bigquery_endpoint=contract_server.url)
    message = str(info.value)
    assert message.startswith("source bq://taxi-project.course.nope: BigQuery 404: Not found: Table")
    assert "\n" not in message
    assert storage.list_blobs(f"gs://{bucket}/p/data/") == []


def test_keep_local_never_clobbers(bucket, tmp_path):
    source = synth.write_csv(tmp_path / "data" / "train.csv", rows=200, layout="lab", seed=1)
    original = source.read_bytes()
    with pytest.raises(storage.ObjectConflict, match="train.csv already exists with different content"):
        ingest.ingest(str(source), bucket=bucket, prefix="p", keep_local=tmp_path / "data")
    assert source.read_bytes() == original
    result = ingest.ingest(str(source), bucket=bucket, prefix="p", keep_local=tmp_path / "kept")
    assert storage.crc32c_of_file(tmp_path / "kept" / "train.csv") == result.train.crc32c
    assert json.loads((tmp_path / "kept" / "dataset.json").read_text())["dataset_id"] == result.dataset_id


# -- the block split against the line-at-a-time rule ---------------------------------------------
def _split_line_by_line(files, layout: schema.Layout, valid_fraction: float) -> tuple[bytes, bytes, int, int]:
    """The split rule, one line at a time with zlib.crc32: (train bytes, valid bytes, headers, blanks)."""
    out: dict[bool, list[bytes]] = {False: [], True: []}
    headers = blanks = 0
    threshold = round(valid_fraction * 1_000_000)
    for path in files:
        with open(path, "rb") as handle:
            lines = list(handle)
        for raw in lines:
            if raw.isspace():
                blanks += 1
                continue
            try:
                names = tuple(f.strip() for f in raw.decode("utf-8").rstrip("\r\n").split(","))
            except UnicodeDecodeError:
                names = ()
            if raw.lstrip().startswith(layout.columns[0].encode()) and names == layout.columns:
                headers += 1
                continue
            line = raw.rstrip(b"\r\n")
            key = line
            if line.count(b",") == len(layout.columns) - 1:
                key = line.split(b",")[layout.columns.index(schema.KEY)].strip() or line
            out[zlib.crc32(key) % 1_000_000 < threshold].append(raw if raw.endswith(b"\n") else raw + b"\n")
    return b"".join(out[False]), b"".join(out[True]), headers, blanks


def _fault_file(path: Path, layout: str) -> Path:
    """Clean rows with every fault the reliability suites inject, plus the edge cases of the key."""
    from tests.test_reliability_data import KINDS, clean_row, fault_line, truncated

    rng = random.Random(f"block-split-{layout}")
    lay = schema.get_layout(layout)
    lines = [clean_row(layout, k, rng) for k in range(3000)]
    for number, kind in enumerate(KINDS[layout] * 20):
        lines.insert(rng.randrange(len(lines)), fault_line(kind, layout, 10_000 + number, rng)[0])
    header = ",".join(lay.columns).encode()
    row = clean_row(layout, 7, rng).rstrip(b"\n")
    body = row[: row.rfind(b",") + 1]
    extras = [
        header + b"\n",
        b"  " + header.replace(b",", b" , ") + b"\r\n",  # a header with spaces: still this layout's
        header + b",extra\n",  # not this layout's header: data
        b"\n",
        b" \t\r\n",
        b"\r\n",
        b"\x0b\x0c\n",
        body + b"\n",  # empty key: the whole line is the key
        body + b"   \n",  # blank key
        body + b" k 1 \n",  # key with spaces around it
        body + b"k2\r\n",  # CRLF
        body + b"k3\r\r\n",
        body + b"\tk4\t\r\n",
        body + b"x" * 64 + b"\n",
        body + b"y" * 65 + b"\n",  # longer than the vectorised bound
        body + b"z" * 5000 + b"\n",
        b"fare_amount_not_a_header,1,2\n",
        b"f\n",
        b"\xff\xfe\x00garbage\n",
        bytes(range(1, 10)) + b"," * 6 + bytes(range(128, 250)) + b"\n",  # a key of any bytes
    ]
    for extra in extras:
        lines.insert(rng.randrange(len(lines)), extra)
    lines.append(truncated(clean_row(layout, 99_999, rng)))  # no final newline
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def _course_files(layout: str, tmp_path: Path) -> list[Path]:
    from tests.fixtures.data import shared_data_dir

    shared = shared_data_dir()
    if shared is not None:
        return [shared / layout / "taxi-train.csv", shared / layout / "taxi-valid.csv"]
    return [synth.write_csv(tmp_path / f"{layout}-{seed}.csv", rows=3000, layout=layout, seed=seed) for seed in (1, 2)]


def _written(writers, out: Path, name: str) -> bytes:
    return b"".join((out / shard.path).read_bytes() for shard in writers[name].shards)


@pytest.mark.parametrize("layout", ["lab", "dated"])
@pytest.mark.parametrize("data", ["faults", "course"])
def test_block_split_equals_line_by_line_rule(layout, data, tmp_path):
    if data == "faults":
        files = [_fault_file(tmp_path / "faults.csv", layout), tmp_path / "empty.csv", tmp_path / "blank.csv"]
        files[1].write_bytes(b"")
        files[2].write_bytes(b"\n \n")
    else:
        files = _course_files(layout, tmp_path)
    lay = schema.get_layout(layout)
    train, valid, headers, blanks = _split_line_by_line(files, lay, 0.3)
    assert train and valid
    # Blocks of one line and less, lines across block ends, one and two threads: the same bytes.
    configs = [(ingest_split.BLOCK_BYTES, 2), (4096, 2)] + ([(97, 1), (1, 2)] if data == "faults" else [])
    for block_bytes, threads in configs:
        out = tmp_path / f"out-{block_bytes}-{threads}"
        out.mkdir()
        writers, counts, _ = ingest_split.write_splits(
            out, files, None, lay, 0.3, block_bytes=block_bytes, threads=threads
        )
        got = (_written(writers, out, "train"), _written(writers, out, "valid"), counts.headers, counts.blank)
        assert got == (train, valid, headers, blanks), (block_bytes, threads)
        assert writers["train"].rows == train.count(b"\n") and writers["valid"].rows == valid.count(b"\n")
        assert writers["valid"].crc32c == storage.crc32c_of_bytes(valid)
        assert counts.lines == sum(len(list(open(f, "rb"))) for f in files)

    # A train/valid pair is copied as it is, with the same lines dropped.
    out = tmp_path / "pair"
    out.mkdir()
    writers, counts, desc = ingest_split.write_splits(out, [], {"train": files[:1], "valid": files[1:]}, lay, 0.3)
    assert desc == {"method": "separate"}
    kept = {name: b"".join(_split_line_by_line(fs, lay, 0.3)[:2]) for name, fs in (("t", files[:1]), ("v", files[1:]))}
    assert Counter(_written(writers, out, "train").splitlines()) == Counter(kept["t"].splitlines())
    assert Counter(_written(writers, out, "valid").splitlines()) == Counter(kept["v"].splitlines())


def test_vectorised_crc32_equals_zlib():
    rng = random.Random(3)
    keys = [rng.randbytes(rng.randint(1, ingest_split._KEY_BOUND)) for _ in range(3000)]
    keys += [bytes([b]) * n for b in (0, 0xFF) for n in (1, 2, ingest_split._KEY_BOUND)]
    data = np.frombuffer(b"\x00" * ingest_split._KEY_BOUND + b"".join(keys), dtype=np.uint8)
    lengths = np.array([len(k) for k in keys])
    ends = ingest_split._KEY_BOUND + np.cumsum(lengths)
    got = ingest_split._crc32_rows(data, ends, lengths)
    assert got.tolist() == [zlib.crc32(k) for k in keys]


# -- shards --------------------------------------------------------------------------------------
def test_split_writer_cuts_shards_at_row_ends(tmp_path):
    writer = ingest_split.SplitWriter(tmp_path, "train", shard_bytes=10)
    rows = [b"aaaa\n", b"bbb\n", b"cc\n", b"a-row-longer-than-a-shard\n", b"d\n", b"eeeeeeeee\n"]
    for start in range(0, len(rows), 4):
        part = rows[start : start + 4]
        writer.write(ingest_split._Piece(b"".join(part), np.cumsum([len(r) for r in part])))
    writer.close()
    contents = [(tmp_path / s.path).read_bytes() for s in writer.shards]
    assert contents == [b"aaaa\nbbb\n", b"cc\n", b"a-row-longer-than-a-shard\n", b"d\n", b"eeeeeeeee\n"]
    assert [s.path for s in writer.shards] == [f"train/train-{i:05d}-of-00005.csv" for i in range(5)]
    assert [s.rows for s in writer.shards] == [2, 1, 1, 1, 1]
    assert writer.rows == 6 and writer.bytes == len(b"".join(rows))
    assert writer.crc32c == storage.crc32c_of_bytes(b"".join(rows))
    assert [s.crc32c for s in writer.shards] == [storage.crc32c_of_bytes(c) for c in contents]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # no staging file left

    with pytest.raises(ingest_split.IngestError, match="shard_bytes=0: expected a positive number"):
        ingest_split.SplitWriter(tmp_path, "valid", shard_bytes=0)


@pytest.mark.parametrize("where", ["bucket", "local"])
def test_sharded_dataset_round_trip(where, request, tmp_path):
    from trainer.data import expand_paths

    source = synth.write_csv(tmp_path / "trips.csv", rows=1200, layout="dated", seed=4)
    if where == "bucket":
        place = {"bucket": request.getfixturevalue("bucket")}
    else:
        place = {"bucket": None, "local_root": tmp_path / "root"}
    whole = ingest.ingest(str(source), prefix="one", **place)
    sharded = ingest.ingest(str(source), prefix="many", shard_bytes=16_000, **place)

    assert whole.train.uri == f"{whole.dataset_uri}/train.csv" and len(whole.train.shards) == 1
    assert "shards" not in ingest.read_manifest(whole.dataset_uri)["files"]["train"]
    manifest = ingest.read_manifest(sharded.dataset_uri)
    for name in ingest.SPLITS:
        one, split, entry = whole.splits[name], sharded.splits[name], manifest["files"][name]
        count = len(split.shards)
        assert 1 < -(-one.bytes // 16_000) <= count <= -(-one.bytes // 16_000) + 1
        assert split.uri == f"{sharded.dataset_uri}/{name}"
        assert [s.path for s in split.shards] == [f"{name}/{name}-{i:05d}-of-{count:05d}.csv" for i in range(count)]
        assert (split.rows, split.bytes, split.crc32c) == (one.rows, one.bytes, one.crc32c)
        assert (entry["rows"], entry["bytes"], entry["crc32c"]) == (one.rows, one.bytes, one.crc32c)
        assert entry["shards"] == [s.model_dump(include={"path", "rows", "bytes", "crc32c"}) for s in split.shards]
        assert sum(s.rows for s in split.shards) == split.rows
        for shard in split.shards:
            assert shard.bytes <= 16_000 and storage.object_crc32c(shard.uri) == shard.crc32c
            assert shard.uri == f"{sharded.dataset_uri}/{shard.path}"
    assert sharded.dataset_id != whole.dataset_id

    train, valid, back = ingest.download_dataset(sharded.dataset_uri, tmp_path / "back")
    assert back == manifest and train == tmp_path / "back" / "train" and valid.is_dir()
    whole_train, whole_valid, _ = ingest.download_dataset(whole.dataset_uri, tmp_path / "back-one")
    assert whole_train == tmp_path / "back-one" / "train.csv"
    for directory, file in ((train, whole_train), (valid, whole_valid)):
        shards = expand_paths(str(directory))
        assert [Path(p).name for p in shards] == sorted(p.name for p in directory.iterdir())
        assert b"".join(Path(p).read_bytes() for p in shards) == file.read_bytes()

    again = ingest.ingest(str(source), prefix="many", shard_bytes=16_000, **place)
    assert again.dataset_id == sharded.dataset_id and again.uploaded == []
    assert len(again.skipped) == len(sharded.train.shards) + len(sharded.valid.shards) + 1


def test_altered_shard_is_caught(bucket, gcs_emulator, tmp_path):
    source = "synthetic://?rows=2000&seed=3"
    result = ingest.ingest(source, bucket=bucket, prefix="p", shard_bytes=16_000)
    shard = result.valid.shards[1]
    blob = gcs_emulator.client().bucket(bucket).blob(storage.split_gcs_uri(shard.uri)[1])
    original = blob.download_as_bytes()
    blob.upload_from_string(original[:-2] + bytes([original[-2] ^ 1]) + original[-1:])
    with pytest.raises(storage.ObjectConflict, match=f"{shard.path} already exists with different content"):
        ingest.ingest(source, bucket=bucket, prefix="p", shard_bytes=16_000)
    with pytest.raises(storage.ChecksumMismatch, match=f"{shard.path}: crc32c .* does not match"):
        ingest.download_dataset(result.dataset_uri, tmp_path / "dl")
