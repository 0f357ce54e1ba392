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
    input layout, metrics, data checksums, code version), reloads it from there and checks a
    prediction. The output Model's URI is that versioned location."""
    import tempfile

    from components.artifacts import local_path, step_log
    from trainer import export

    with step_log("export") as facts, tempfile.TemporaryDirectory(prefix="taxifare-export-") as workdir:
        result = export.export_model(
            local_path(trained_model, workdir),
            bucket=bucket,
            prefix=prefix,
            data_checksums={"train": train_data.metadata.get("crc32c", "")} if train_data.metadata else {},
        )
        exported_model.uri = result.uri
        exported_model.metadata.update(result.metadata)
        facts.update(uri=result.uri, version=result.version)
