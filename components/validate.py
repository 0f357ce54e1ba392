"""local-validate: check every row, quarantine the bad ones, and smoke-train before the real run."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from components.base import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate(
    train_data: Input[Dataset],
    valid_data: Input[Dataset],
    max_bad_fraction: float,
    smoke_steps: int,
    clean_train: Output[Dataset],
    clean_valid: Output[Dataset],
    quarantine: Output[Dataset],
    report: Output[Markdown],
) -> NamedTuple("ValidateOutputs", [("layout", str), ("clean_rows", int), ("bad_rows", int)]):
    """Runs the data locally before paying for the cloud.

    1. Checks every row (column count, types, plausible NYC ranges); clean rows and quarantined
       rows (with the reason per row) become separate artifacts. Fails when the bad share exceeds
       max_bad_fraction, giving the counts per reason and where the quarantine file is.
    2. Smoke run: trains smoke_steps steps on a sample, reloads the export and predicts the lab's
       test.json instance; fails if anything is missing or non-finite.
    3. Writes a Markdown report.
    """
    from trainer.pipeline_steps import run_validate

    return run_validate(
        train_data=train_data,
        valid_data=valid_data,
        max_bad_fraction=max_bad_fraction,
        smoke_steps=smoke_steps,
        clean_train=clean_train,
        clean_valid=clean_valid,
        quarantine=quarantine,
        report=report,
    )
