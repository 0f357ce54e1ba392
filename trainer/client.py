"""The lab's client program: send ``{"instances": [...]}`` to an endpoint and collect the fares."""

from __future__ import annotations

import csv
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import requests

from trainer import schema

log = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """The endpoint refused a request or could not be reached."""


@dataclass
class Sample:
    instances: list[dict]
    labels: list[float | None]


def read_instances_file(path: str | Path) -> list[dict]:
    """JSON instances, one per line (a single pretty-printed object, like test.json, works too)."""
    from trainer.predict import InstancesFileError, read_instances

    instances = []
    for number, value in read_instances(path):
        if not isinstance(value, dict):
            raise InstancesFileError(f"{path}: line {number}: expected a JSON object, got {type(value).__name__}")
        instances.append(value)
    return instances


def sample_validation_rows(csv_path: str | Path, layout: schema.Layout, size: int, seed: int = 0) -> Sample:
    """Up to `size` rows of a (clean) CSV as serving instances without labels, plus the labels."""
    with open(csv_path, newline="") as handle:
        rows = [r for r in csv.reader(handle) if r and not schema.is_header(r)]
    rng = random.Random(seed)
    chosen = rows if len(rows) <= size else rng.sample(rows, size)
    instances, labels = [], []
    for row in chosen:
        record = dict(zip(layout.columns, row))
        instance = {}
        for name in layout.serving_fields:
            instance[name] = record[name] if name == layout.pickup_datetime else float(record[name])
        instances.append(instance)
        labels.append(float(record[schema.LABEL]))
    return Sample(instances, labels)


def predict(url: str, instances: list[dict], *, batch_size: int = 100, timeout_s: float = 30.0) -> list[float]:
    """POST the instances to a prediction URL in batches; the fares in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fares: list[float] = []
    with requests.Session() as session:
        for start in range(0, len(instances), batch_size):
            batch = instances[start : start + batch_size]
            try:
                response = session.post(url, json={"instances": batch}, timeout=timeout_s)
            except requests.ConnectionError as exc:
                raise EndpointError(f"endpoint {url} cannot be reached: {exc}") from None
            if response.status_code != 200:
                raise EndpointError(
                    f"endpoint {url} answered {response.status_code} for instances "
                    f"{start}..{start + len(batch) - 1}: {response.text[:500]}"
                )
            predictions = response.json()["predictions"]
            if len(predictions) != len(batch):
                raise EndpointError(
                    f"endpoint {url} returned {len(predictions)} predictions for {len(batch)} instances"
                )
            fares.extend(float(p["fare_amount"]) for p in predictions)
    return fares


def rmse(predicted: list[float], labels: list[float | None]) -> float:
    """RMSE over the instances that have a label; NaN when none has."""
    pairs = [(p, y) for p, y in zip(predicted, labels) if y is not None]
    if not pairs:
        return math.nan
    return math.sqrt(sum((p - y) ** 2 for p, y in pairs) / len(pairs))


def write_predictions(path: str | Path, instances: list[dict], fares: list[float], labels: list[float | None]) -> None:
    with open(path, "w") as out:
        for instance, fare, label in zip(instances, fares, labels):
            record = {"instance": instance, "fare_amount": fare}
            if label is not None:
                record["label"] = label
            out.write(json.dumps(record) + "\n")
