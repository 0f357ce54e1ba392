"""ingest-to-GCS: copy a source into the ML bucket as train/valid CSVs."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(
    source: str,
    bucket: str,
    prefix: str,
    valid_source: str,
    valid_fraction: float,
    project: str,
    train_data: Output[Dataset],
    valid_data: Output[Dataset],
    code_fingerprint: str = "",
):
    """Copies the trips into gs://BUCKET/PREFIX/data/ (crc32c-verified, re-runs upload nothing).

    Each Dataset's uri is its split's file, or the directory of its shards when the split is
    larger than one shard (trainer.data.expand_paths reads either).

    Sources: a local file or glob, an https:// URL, a gs:// URI, a BigQuery table or query
    (bq://…), or synthetic://?rows=N&layout=lab|dated&seed=S. One source is split into train and
    valid by hashing each row's key; valid_source, when set, is taken as the validation split.
    """
    from components.artifacts import step_log
    from trainer import ingest
    from trainer.validate_bigquery import warehouse_tables

    tables = warehouse_tables(source, valid_source or None)
    if tables:
        # A BigQuery table stays in the warehouse: the validate step checks, splits (by key, the
        # same rule as below, when there is no valid table) and exports the clean rows as shards
        # under the dataset root, named after what was asked for.
        import hashlib

        from trainer import storage

        with step_log("ingest") as facts:
            asked = f"{source}|{valid_source}|{valid_fraction if tables['valid'] is None else ''}"
            token = hashlib.sha256(asked.encode()).hexdigest()[:16]
            export_prefix = storage.join(ingest.dataset_root(bucket, prefix), "data", f"bq-{token}")
            for artifact, split in ((train_data, "train"), (valid_data, "valid")):
                table = tables[split] or tables["train"]
                artifact.uri = f"bq://{table}"
                artifact.metadata.update(
                    {
                        "warehouse": True,
                        "table": table,
                        "split": split,
                        "source": source,
                        "export_prefix": export_prefix,
                        "uploaded": False,
                    }
                )
                if tables["valid"] is None:
                    artifact.metadata["valid_fraction"] = valid_fraction
            facts.update(train=train_data.uri, valid=valid_data.uri, warehouse=True)
        return

    with step_log("ingest") as facts:
        result = ingest.ingest(
            source,
            bucket=bucket,
            prefix=prefix,
            valid_source=valid_source or None,
            valid_fraction=valid_fraction,
            project=project or None,
        )
        for artifact, split in ((train_data, result.train), (valid_data, result.valid)):
            artifact.uri = split.uri
            artifact.metadata.update(
                {
                    "layout": result.layout,
                    "rows": split.rows,
                    "bytes": split.bytes,
                    "crc32c": split.crc32c,
                    "shards": len(split.shards),
                    "uploaded": split.uploaded,
                    "source": source,
                }
            )
        facts.update(
            train=train_data.uri,
            valid=valid_data.uri,
            train_rows=result.train.rows,
            valid_rows=result.valid.rows,
            layout=result.layout,
        )
