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
):
    """Copies the trips into gs://BUCKET/PREFIX/data/ (crc32c-verified, re-runs upload nothing).

    Sources: a local file or glob, an https:// URL, a gs:// URI, a BigQuery table or query
    (bq://…), or synthetic://?rows=N&layout=lab|dated&seed=S. One source is split into train and
    valid by hashing each row's key; valid_source, when set, is taken as the validation split.
    """
    from trainer.pipeline_steps import run_ingest

    run_ingest(
        source=source,
        bucket=bucket,
        prefix=prefix,
        valid_source=valid_source,
        valid_fraction=valid_fraction,
        project=project,
        train_data=train_data,
        valid_data=valid_data,
    )
