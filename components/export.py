"""export: publish the SavedModel to a versioned location in the bucket."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export(
    trained_model: Input[Model],
    train_data: Input[Dataset],
    bucket: str,
    prefix: str,
    exported_model: Output[Model],
    code_fingerprint: str = "",
):
    """Copies the SavedModel to gs://BUCKET/PREFIX/models/<version>/ with its metadata (signature,
    input layout, metrics, data checksums, code version) and proves the published copy works: byte
    for byte the model the train step loaded and had predict the test instance (its check_fare), or,
    for a model without that check, reloaded from the bucket and asked for a prediction. The output
    Model's URI is that versioned location."""
    import tempfile

    from components.artifacts import local_path, step_log
    from trainer import export

    with step_log("export") as facts, tempfile.TemporaryDirectory(prefix="taxifare-export-") as workdir:
        result = export.export_model(
            local_path(trained_model, workdir),
            bucket=bucket,
            prefix=prefix,
            data_checksums={"train": train_data.metadata.get("crc32c", "")} if train_data.metadata else {},
            checked_fare=(trained_model.metadata or {}).get("check_fare"),
        )
        exported_model.uri = result.uri
        exported_model.metadata.update(result.metadata)
        facts.update(uri=result.uri, version=result.version)
