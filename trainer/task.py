"""Command line of the trainer: ``python -m trainer.task --output_dir DIR [...]``.

The lab's flags keep working (``--train_data_paths``, ``--eval_data_paths``, ``--output_dir``,
``--train_steps``, ``--train_batch_size``, ``--hidden_units "128 32 4"``, ``--eval_steps``,
``--job-dir``), plus ``--learning_rate``, ``--seed`` and ``--layout``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from trainer import data, hparams, model, schema

log = logging.getLogger(__name__)

RUNNERS = ("task", "vertex")  # where a pipeline's train step runs this command line: in its task, or a CustomJob
EXIT_USAGE = 2
EXIT_DATA = 3


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def command_line(
    train_data_paths: str, eval_data_paths: str, output_dir: str, hyper: Mapping[str, Any] | None = None, **flags: str
) -> list[str]:
    """This command line's arguments: the data and output locations, every hyperparameter (by its
    name in ``trainer.hparams``; missing ones take their defaults) and any other flag given."""
    argv = ["--train_data_paths", train_data_paths, "--eval_data_paths", eval_data_paths, "--output_dir", output_dir]
    argv += hparams.trainer_argv(hyper)
    for flag, value in flags.items():
        argv += [f"--{flag}", str(value)]
    return argv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainer.task", description="Train the taxifare model, evaluate it and export a SavedModel."
    )
    p.add_argument("--train_data_paths", required=True, help="training CSVs: comma-separated files or globs")
    p.add_argument("--eval_data_paths", required=True, help="evaluation CSVs: comma-separated files or globs")
    p.add_argument("--output_dir", required=True, help="where export/, eval_metrics.json and tensorboard/ go")
    hparams.add_arguments(p)  # --train_steps, --train_batch_size, --hidden_units, …
    p.add_argument("--layout", choices=("auto", *schema.LAYOUTS), default="auto")
    p.add_argument(
        "--eval_steps",
        type=_positive_int,
        default=None,
        help="evaluate on this many batches of 4096 rows (default: the whole evaluation data)",
    )
    p.add_argument(
        "--eager",
        action="store_true",
        help="run the training step eagerly, not compiled (for a few steps, e.g. a smoke run, where compiling costs more)",
    )
    p.add_argument("--job-dir", "--job_dir", dest="job_dir", default=None, help="accepted and ignored (gcloud)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run training; returns the process exit code (0 ok, 2 usage, 3 bad data)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse has printed the usage error
        return int(exc.code or 0)
    try:
        model.train_and_evaluate(
            args.train_data_paths,
            args.eval_data_paths,
            args.output_dir,
            layout=args.layout,
            eval_steps=args.eval_steps,
            eager=args.eager,
            **{h.flag: getattr(args, h.flag) for h in hparams.HPARAMS},
        )
    except (data.MalformedRowError, data.DataError, schema.LayoutError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATA
    return 0


if __name__ == "__main__":
    sys.exit(main())
