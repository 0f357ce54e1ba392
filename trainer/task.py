"""Command line of the trainer: ``python -m trainer.task --output_dir DIR [...]``.

The lab's flags keep working (``--train_data_paths``, ``--eval_data_paths``, ``--output_dir``,
``--train_steps``, ``--train_batch_size``, ``--hidden_units "128 32 4"``, ``--eval_steps``,
``--job-dir``), plus ``--learning_rate``, ``--seed`` and ``--layout``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trainer import data, model, schema

log = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_DATA = 3


def _hidden_units(text: str) -> list[int]:
    try:
        units = [int(u) for u in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected layer sizes like "128 32 4"') from None
    if not units or any(u <= 0 for u in units):
        raise argparse.ArgumentTypeError(f'{text!r}: expected positive layer sizes like "128 32 4"')
    return units


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainer.task", description="Train the taxifare model, evaluate it and export a SavedModel."
    )
    p.add_argument("--train_data_paths", required=True, help="training CSVs: comma-separated files or globs")
    p.add_argument("--eval_data_paths", required=True, help="evaluation CSVs: comma-separated files or globs")
    p.add_argument("--output_dir", required=True, help="where export/, eval_metrics.json and tensorboard/ go")
    p.add_argument("--train_steps", type=_positive_int, default=model.DEFAULT_TRAIN_STEPS, help="training batches")
    p.add_argument("--train_batch_size", type=_positive_int, default=model.DEFAULT_BATCH_SIZE)
    p.add_argument(
        "--hidden_units",
        type=_hidden_units,
        default=list(model.DEFAULT_HIDDEN_UNITS),
        help='hidden layer sizes, e.g. "128 32 4"',
    )
    p.add_argument("--learning_rate", type=_positive_float, default=model.DEFAULT_LEARNING_RATE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--embedding_dim",
        type=_non_negative_int,
        default=model.DEFAULT_EMBEDDING_DIM,
        help="feature switch: size of the learned pickup/dropoff grid-cell embeddings (0 = off)",
    )
    p.add_argument(
        "--towers",
        type=_positive_int,
        default=model.DEFAULT_TOWERS,
        help="independently trained DNN heads whose fares are averaged (1 = a single DNN)",
    )
    p.add_argument("--layout", choices=("auto", *schema.LAYOUTS), default="auto")
    p.add_argument(
        "--eval_steps",
        type=_positive_int,
        default=None,
        help="evaluate on this many batches of 4096 rows (default: the whole evaluation data)",
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
            train_steps=args.train_steps,
            train_batch_size=args.train_batch_size,
            hidden_units=args.hidden_units,
            learning_rate=args.learning_rate,
            seed=args.seed,
            layout=args.layout,
            eval_steps=args.eval_steps,
            embedding_dim=args.embedding_dim,
            towers=args.towers,
        )
    except (data.MalformedRowError, data.DataError, schema.LayoutError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATA
    return 0


if __name__ == "__main__":
    sys.exit(main())
