"""Local prediction, as the lab's ``gcloud ai-platform local predict``.

``python -m trainer.predict --model-dir DIR --json-instances FILE`` (also ``taxifare predict``):
DIR is one SavedModel or an ``export/exporter`` folder (the newest export is used); FILE holds
one JSON instance per line, or a single JSON object (the lab's ``test.json``). Prints one JSON
object ``{"fare_amount": ...}`` per instance, in input order. A bad instance exits with code 2
and a message naming its line and field.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer import schema

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2


class InstancesFileError(ValueError):
    """An instances file that cannot be read as JSON instances."""


def read_instances(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, instance) pairs from a JSON-lines file or a single JSON object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InstancesFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InstancesFileError(f"{path}: cannot read: {exc}") from None
    if not text.strip():
        raise InstancesFileError(f"{path}: no instances (the file is empty)")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None  # JSON lines (or broken JSON): read line by line below
    if isinstance(whole, dict):  # one object, possibly pretty-printed over several lines
        return [(text[: len(text) - len(text.lstrip())].count("\n") + 1, whole)]
    instances = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            instances.append((line_no, json.loads(line)))
        except ValueError as exc:
            raise InstancesFileError(f"{path}: line {line_no}: not valid JSON: {exc}") from None
    return instances


def predict_file(model_dir: str | Path, instances_path: str | Path) -> list[float]:
    """Fares for every instance in the file, in order (raises on the first bad one)."""
    from trainer import predictor as predictor_module

    numbered = read_instances(instances_path)
    predictor = predictor_module.Predictor.load(model_dir, warm_up=False)
    try:
        return predictor.predict([inst for _, inst in numbered])
    except predictor_module.InstanceError as exc:
        line = numbered[exc.index][0] if 0 <= exc.index < len(numbered) else "?"
        where = f"field {exc.field!r}: " if exc.field is not None else ""
        raise InstancesFileError(f"{instances_path}: line {line}: {where}{exc.message}") from None


def run(model_dir: str | Path, instances_path: str | Path, out=None) -> int:
    """Print predictions as JSON lines; returns the exit code (2 for user errors)."""
    from trainer import predictor as predictor_module

    out = out or sys.stdout
    try:
        fares = predict_file(model_dir, instances_path)
    except (InstancesFileError, predictor_module.ModelNotFoundError, predictor_module.ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    _write_fares(fares, out)
    return 0


def _write_fares(fares: list[float], out) -> None:
    for fare in fares:
        out.write(json.dumps({schema.LABEL: fare}) + "\n")
    out.flush()


def run_endpoint(url: str, instances_path: str | Path, *, batch_size: int = 100, out=None) -> int:
    """The same output, with the fares from a prediction endpoint (``{"instances": [...]}``)."""
    from trainer import client

    out = out or sys.stdout
    try:
        fares = client.predict(url, client.read_instances_file(instances_path), batch_size=batch_size)
    except (InstancesFileError, client.EndpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    _write_fares(fares, out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainer.predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir",
        "--model_dir",
        dest="model_dir",
        required=True,
        help="a SavedModel, or an export/exporter folder (newest export used)",
    )
    parser.add_argument(
        "--json-instances",
        "--json_instances",
        dest="json_instances",
        required=True,
        help="one JSON instance per line, or a single JSON object",
    )
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args.model_dir, args.json_instances)


if __name__ == "__main__":
    sys.exit(main())
