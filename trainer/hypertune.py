"""One Vertex AI hyperparameter-tuning trial: ``python -m trainer.hypertune <trainer flags>``.

The trainer's own command line into the trial's output folder, then the validation RMSE reported
with cloudml-hypertune.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainer.selection import METRIC
from trainer.storage import fuse_path

log = logging.getLogger(__name__)

HYPERTUNE_METRIC_TAG = "rmse"


def report_hypertune_metric(rmse: float, *, global_step: int | None = None, tag: str = HYPERTUNE_METRIC_TAG) -> Path:
    """Report the validation RMSE to Vertex AI hyperparameter tuning (cloudml-hypertune)."""
    import hypertune

    reporter = hypertune.HyperTune()
    reporter.report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=tag, metric_value=float(rmse), global_step=global_step
    )
    log.info("reported %s=%.4f for trial %s to %s", tag, rmse, reporter.trial_id, reporter.metric_path)
    return Path(reporter.metric_path)


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = i + 1 < len(argv)
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return [*out, flag, value]


def trial_argv(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """The trainer's arguments for one tuning trial.

    Every trial writes to its own folder: Vertex gives each trial ``AIP_MODEL_DIR`` (under the
    job's base output directory); gs:// paths are read through Cloud Storage FUSE.
    """
    args = list(argv)
    model_dir = environ.get("AIP_MODEL_DIR")
    if model_dir:
        args = _replace_flag(args, "--output_dir", fuse_path(model_dir.rstrip("/")))
    fixed = []
    for arg in args:
        if arg.startswith("gs://"):
            arg = fuse_path(arg)
        elif "=gs://" in arg:
            flag, _, uri = arg.partition("=")
            arg = f"{flag}={fuse_path(uri)}"
        fixed.append(arg)
    return fixed


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def trial_main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """One hyperparameter-tuning trial: train with the trainer's flags, then report the RMSE."""
    from trainer import task

    args = trial_argv(list(sys.argv[1:] if argv is None else argv), environ)
    code = task.main(args)
    if code != 0:
        return code
    output_dir = _flag_value(args, "--output_dir")
    if output_dir is None:
        log.error("no --output_dir among the trial's arguments: %s", args)
        return 2
    results = json.loads((Path(output_dir) / "eval_metrics.json").read_text())
    report_hypertune_metric(results[METRIC], global_step=results.get("steps"))
    return 0


if __name__ == "__main__":
    sys.exit(trial_main())
