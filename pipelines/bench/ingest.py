"""Ingest benchmark: ingest throughput vs a plain google-cloud-storage upload, and re-ingest time.

Against a gcp-storage-emulator on loopback (data on disk), for the same bytes:

* ``plain``   — ``blob.upload_from_filename`` of the train/valid files, nothing else;
* ``storage`` — ``trainer.storage.upload_file`` of the same files (local CRC32C, existence check,
  verify after upload);
* ``ingest``  — the whole ``trainer.ingest.ingest`` from a local CSV (read, hash-split, checksum,
  upload both splits and the manifest);
* ``reingest`` — ``ingest`` again on the same data: nothing is uploaded.

Each is repeated (fresh bucket each time except for re-ingest); medians are reported, with ratios
to ``plain`` because absolute times on a shared 2-core machine are noisy.
Writes ``ingest.json`` and ``ingest.md`` to ``--out``.

    python -m pipelines.bench.ingest --out build/bench [--rows 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from pipelines.bench.report import Row, number

log = logging.getLogger("bench.ingest")


def _bucket(emulator) -> str:
    return emulator.create_bucket(f"bench-{uuid.uuid4().hex[:10]}")


def _timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def run(rows: int, repeats: int, work: Path) -> dict:
    from pipelines.local.emulator import GcsEmulator
    from trainer import ingest, storage, synth

    source = synth.write_csv(work / "source.csv", rows=rows, layout="lab", seed=0)
    source_bytes = source.stat().st_size
    with GcsEmulator(data_dir=work / "gcs", log_path=work / "emulator.log") as emulator:
        os.environ.update(emulator.env())
        storage._client.cache_clear()
        plain_client = emulator.client()

        # One ingest to get the exact split files the others upload.
        first = ingest.ingest(str(source), bucket=_bucket(emulator), prefix="bench", keep_local=work / "split")
        files = [work / "split" / shard.path for split in first.splits.values() for shard in split.shards]
        upload_bytes = sum(f.stat().st_size for f in files)

        times: dict[str, list[float]] = {"plain": [], "storage": [], "ingest": [], "reingest": []}
        uploaded_on_reingest = []

        def plain(bucket: str) -> None:
            for f in files:
                plain_client.bucket(bucket).blob(f"plain/{f.name}").upload_from_filename(str(f))

        def checked(bucket: str) -> None:
            for f in files:
                storage.upload_file(f, f"gs://{bucket}/checked/{f.name}")

        for repeat in range(repeats):
            # Alternate which of the two goes first, so warm-up effects do not favour one.
            pair = [("plain", plain), ("storage", checked)]
            for name, upload in pair if repeat % 2 == 0 else pair[::-1]:
                bucket = _bucket(emulator)
                times[name].append(_timed(lambda b=bucket, u=upload: u(b)))
            bucket = _bucket(emulator)
            times["ingest"].append(_timed(lambda b=bucket: ingest.ingest(str(source), bucket=b, prefix="bench")))
            started = time.perf_counter()
            again = ingest.ingest(str(source), bucket=bucket, prefix="bench")
            times["reingest"].append(time.perf_counter() - started)
            uploaded_on_reingest.append(len(again.uploaded))
            assert again.dataset_id == first.dataset_id

    median = {name: statistics.median(values) for name, values in times.items()}
    mib = upload_bytes / (1 << 20)
    return {
        "rows": rows,
        "source_bytes": source_bytes,
        "upload_bytes": upload_bytes,
        "repeats": repeats,
        "dataset_id": first.dataset_id,
        "seconds": {name: [round(v, 4) for v in values] for name, values in times.items()},
        "median_seconds": {name: round(v, 4) for name, v in median.items()},
        "throughput_mib_s": {name: round(mib / median[name], 2) for name in ("plain", "storage", "ingest")},
        "time_ratio_to_plain": {
            name: round(median[name] / median["plain"], 3) for name in ("storage", "ingest", "reingest")
        },
        "reingest_vs_ingest": round(median["reingest"] / median["ingest"], 3),
        "objects_uploaded_on_reingest": uploaded_on_reingest,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def markdown(report: dict) -> str:
    med, thr, ratio = report["median_seconds"], report["throughput_mib_s"], report["time_ratio_to_plain"]
    mib = report["upload_bytes"] / (1 << 20)
    lines = [
        "# Ingest benchmark",
        "",
        f"{report['rows']:,} lab rows ({mib:.1f} MiB uploaded as train + valid) to gcp-storage-emulator on "
        f"loopback, data on disk; median of {report['repeats']} runs.",
        "",
        "| what | median s | MiB/s | time vs plain upload |",
        "|---|---:|---:|---:|",
        f"| plain `blob.upload_from_filename` | {med['plain']:.3f} | {thr['plain']:.1f} | 1.00 |",
        f"| `storage.upload_file` (crc32c, skip check, verify) | {med['storage']:.3f} | {thr['storage']:.1f} | {ratio['storage']:.2f} |",
        f"| `ingest` end to end (read, split, checksum, upload, manifest) | {med['ingest']:.3f} | {thr['ingest']:.1f} | {ratio['ingest']:.2f} |",
        f"| re-ingest, same data (nothing uploaded) | {med['reingest']:.3f} | — | {ratio['reingest']:.2f} |",
        "",
        f"Re-ingest takes {report['reingest_vs_ingest']:.0%} of a first ingest; objects uploaded on "
        f"re-ingest: {report['objects_uploaded_on_reingest']}.",
    ]
    return "\n".join(lines) + "\n"


def report_rows(report: dict) -> list[Row]:
    """The summary-table rows of `taxifare bench`: ingest against a plain upload, and re-ingest."""
    thr, ratio, med = report["throughput_mib_s"], report["time_ratio_to_plain"], report["median_seconds"]
    return [
        Row(
            f"Ingest ({report['rows']:,} rows, {report['upload_bytes'] / 2**20:.1f} MiB)",
            f"end to end {number(thr['ingest'], 1)} MiB/s; upload with crc32c verify {number(thr['storage'], 1)} MiB/s",
            f"plain `upload_from_filename` {number(thr['plain'], 1)} MiB/s",
            f"time **{ratio['ingest']:.2f}×** / {ratio['storage']:.2f}× plain",
        ),
        Row(
            "Re-ingest, same data",
            f"{number(med['reingest'], 3)} s, objects uploaded {sorted(set(report['objects_uploaded_on_reingest']))}",
            f"first ingest {number(med['ingest'], 3)} s",
            f"**{report['reingest_vs_ingest']:.2f}×**",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/bench", help="where ingest.json and ingest.md go")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic lab rows in the source")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="taxifare-bench-ingest-") as work:
        report = run(args.rows, args.repeats, Path(work))
    (out / "ingest.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ingest.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
