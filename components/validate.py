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
    code_fingerprint: str = "",
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

    if train_data.metadata.get("warehouse"):
        # A BigQuery table: checked, split and exported by one query job; no row passes through
        # this task. The train step reads the exported shards.
        from trainer.validate_bigquery import validate_bigquery

        with step_log("validate") as facts:
            meta = train_data.metadata
            split_by_key = "valid_fraction" in meta
            result = validate_bigquery(
                meta["table"],
                None if split_by_key else valid_data.metadata["table"],
                meta["export_prefix"],
                valid_fraction=meta.get("valid_fraction"),
                max_bad_fraction=max_bad_fraction,
            )
            for artifact, rep in ((clean_train, result.train), (clean_valid, result.valid)):
                artifact.uri = result.export_uris[rep.name].rsplit("/", 1)[0]  # the split's folder of shards
                artifact.metadata.update(
                    {
                        "layout": result.layout,
                        "split": rep.name,
                        "rows": rep.clean,
                        "shards": len(result.export_shards[rep.name]),
                    }
                )
            quarantine.uri = result.quarantine
            quarantine.metadata.update({"rows": result.bad_rows, "reasons": result.bad_by_reason})
            note = f"\n## Smoke run\n\nNot run here (smoke_steps={smoke_steps}): the rows stay in BigQuery; the train step reads the exported shards.\n"
            write_text(report, result.report_markdown + note)
            facts.update(
                clean_rows=result.clean_rows, bad_rows=result.bad_rows, quarantine=quarantine.uri, warehouse=True
            )
        outputs = namedtuple("ValidateOutputs", ["layout", "clean_rows", "bad_rows"])
        return outputs(result.layout, result.clean_rows, result.bad_rows)

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
        if result.smoke is not None:
            facts.update(smoke_s=result.smoke.seconds)
    outputs = namedtuple("ValidateOutputs", ["layout", "clean_rows", "bad_rows"])
    return outputs(result.layout, result.clean_rows, result.bad_rows)
