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
):
    """Copies the SavedModel to gs://BUCKET/PREFIX/models/<version>/ with its metadata (signature,
    input layout, metrics, data checksums, code version), reloads it from there and checks a
    prediction. The output Model's URI is that versioned location."""
    from trainer.pipeline_steps import run_export

    run_export(
        trained_model=trained_model,
        train_data=train_data,
        bucket=bucket,
        prefix=prefix,
        exported_model=exported_model,
    )
