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
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components.artifacts import local_path, step_log, write_text
    from trainer import validate

    with step_log("validate") as facts, tempfile.TemporaryDirectory(prefix="taxifare-validate-") as workdir:
        result = validate.validate(
            local_path(train_data, Path(workdir) / "train"),
            local_path(valid_data, Path(workdir) / "valid"),
            Path(workdir) / "out",
            max_bad_fraction=max_bad_fraction,
            smoke_steps=smoke_steps,
            layout=train_data.metadata.get("layout"),  # as ingest read it: one layout for both splits
            quarantine_uri=quarantine.uri,
        )
        # The quarantine file already went to quarantine.uri inside validate (before any failure).
        # A sharded input (a directory) gives a directory of clean shards of the same names.
        splits = ((clean_train, result.train), (clean_valid, result.valid))
        for artifact, rep in splits:
            Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
            if rep.shards is None:
                shutil.copyfile(rep.clean_path, artifact.path)
            else:
                shutil.copytree(rep.clean_path, artifact.path, dirs_exist_ok=True)
        write_text(report, result.report_markdown)

        counts = {"layout": result.layout, "clean_rows": result.clean_rows}
        for artifact, rep in splits:
            shards = {} if rep.shards is None else {"shards": len(rep.shards)}
            artifact.metadata.update({**counts, "split": rep.name, "rows": rep.clean, **shards})
        quarantine.metadata.update({"rows": result.bad_rows, "reasons": result.bad_by_reason})
        facts.update(
            clean_rows=result.clean_rows, bad_rows=result.bad_rows, quarantine=quarantine.uri, report=report.uri
        )
    outputs = namedtuple("ValidateOutputs", ["layout", "clean_rows", "bad_rows"])
    return outputs(result.layout, result.clean_rows, result.bad_rows)
