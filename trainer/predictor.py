"""Load an exported taxifare SavedModel and predict fares for raw serving instances.

Used by ``taxifare predict``, the pipeline's export/predict steps and the prediction server.
The input layout is read from the SavedModel's ``serving_default`` signature (one [None]
input per raw field: float32 numbers, ``pickup_datetime`` as a string), never hard-coded, so
a model of either course layout loads the same way. ``assets.extra/taxifare.json`` next to
the graph, when present, adds the layout name and the training metrics.

Instances are validated before anything reaches TensorFlow: a bad instance raises
:class:`InstanceError` naming its index and field, and the signature is then called once on
the whole batch with one numpy column per field.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from trainer import schema

log = logging.getLogger(__name__)

# The model's own metadata (layout, fields, metrics …), written by trainer.savedmodel beside the
# SavedModel under assets.extra/. Defined here, with its reader, so that finding and describing a
# model never imports TensorFlow.
METADATA_FILE = "taxifare.json"

SIGNATURE_NAME = "serving_default"
OUTPUT_KEY = "fare_amount"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# The exact course format; anything else goes through schema.parse_datetime and is normalised.
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC\Z")

_KIND_FLOAT = "float"
_KIND_INT = "int"
_KIND_STRING = "string"
_KIND_DATETIME = "datetime"


class ModelNotFoundError(FileNotFoundError):
    """No SavedModel where one was expected."""


class ModelLoadError(RuntimeError):
    """A SavedModel that does not offer the serving contract."""


class InstanceError(ValueError):
    """One bad serving instance: ``index`` in the batch, the ``field`` at fault (or None)."""

    def __init__(self, index: int, field: str | None, message: str):
        self.index = index
        self.field = field
        self.message = message
        where = f"instance {index}" + (f", field {field!r}" if field is not None else "")
        super().__init__(f"{where}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {"error": str(self), "index": self.index, "field": self.field}


def _is_saved_model(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


def find_saved_model(model_dir: str | Path) -> Path:
    """Resolve ``model_dir`` to one SavedModel directory.

    Accepts a SavedModel directory itself, an ``export/exporter`` folder of timestamped
    SavedModels (the newest is taken), or a training OUTPUT_DIR holding ``export/exporter``.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelNotFoundError(f"model directory {str(root)!r} does not exist")
    if _is_saved_model(root):
        return root
    for exporter in (root, root / "export" / "exporter", root / "exporter"):
        if not exporter.is_dir():
            continue
        # Hidden names are exports still being written (".<timestamp>.tmp").
        versions = [p for p in exporter.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_saved_model(p)]
        if versions:
            # Timestamp names sort numerically; non-numeric names after them, by name.
            return max(versions, key=lambda p: (p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    raise ModelNotFoundError(
        f"no SavedModel in {str(root)!r}: expected saved_model.pb there, or timestamped "
        "SavedModel folders in it, in its export/exporter/ or in its exporter/"
    )


def read_model_metadata(saved_model_dir: str | Path) -> dict[str, Any]:
    """The export's ``assets.extra/taxifare.json`` ({} when absent)."""
    path = Path(saved_model_dir) / "assets.extra" / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable model metadata: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: model metadata must be a JSON object")
    return data


@dataclass(frozen=True)
class _Field:
    name: str
    dtype: str  # the signature's dtype name: float32, string, ...
    kind: str
    np_dtype: Any


def _field_kind(name: str, dtype_name: str, datetime_field: str | None) -> tuple[str, Any]:
    if dtype_name == "string":
        kind = _KIND_DATETIME if name == datetime_field else _KIND_STRING
        return kind, object
    if dtype_name in ("float16", "float32", "float64", "bfloat16"):
        return _KIND_FLOAT, np.float32 if dtype_name == "bfloat16" else np.dtype(dtype_name)
    if dtype_name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        return _KIND_INT, np.dtype(dtype_name)
    raise ModelLoadError(f"signature input {name!r} has dtype {dtype_name}, which serving does not support")


@dataclass
class Predictor:
    """A loaded SavedModel's serving signature plus what a caller needs to know about it."""

    path: Path
    signature: Any
    input_fields: tuple[_Field, ...]
    output_key: str
    layout: str | None
    metadata: dict[str, Any]
    version: str
    load_seconds: float = 0.0
    loaded_at: float = 0.0
    _module: Any = field(default=None, repr=False)

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, model_dir: str | Path, warm_up: bool = True) -> Predictor:
        """Load the newest SavedModel under ``model_dir`` (see :func:`find_saved_model`)."""
        import tensorflow as tf

        started = time.perf_counter()
        path = find_saved_model(model_dir)
        metadata = read_model_metadata(path)
        try:
            module = tf.saved_model.load(str(path))
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise ModelLoadError(f"{path}: cannot load SavedModel: {exc}") from exc
        signatures = getattr(module, "signatures", {})
        if SIGNATURE_NAME not in signatures:
            raise ModelLoadError(f"{path}: no {SIGNATURE_NAME!r} signature (has {sorted(signatures)})")
        signature = signatures[SIGNATURE_NAME]
        args, kwargs = signature.structured_input_signature
        if args or not kwargs:
            raise ModelLoadError(f"{path}: {SIGNATURE_NAME} must take named inputs, one per field")

        layout_name = metadata.get("layout")
        datetime_field = None
        if layout_name in schema.LAYOUTS:
            datetime_field = schema.LAYOUTS[layout_name].pickup_datetime
        elif "pickup_datetime" in kwargs:
            datetime_field = "pickup_datetime"
        if layout_name is None:
            layout_name = _guess_layout(set(kwargs))

        fields = []
        for name, spec in kwargs.items():
            if spec.shape.rank != 1:
                raise ModelLoadError(f"{path}: input {name!r} has shape {spec.shape}; expected [None]")
            kind, np_dtype = _field_kind(name, spec.dtype.name, datetime_field)
            fields.append(_Field(name, spec.dtype.name, kind, np_dtype))
        # Schema order when the layout is known, so error messages and metadata read naturally.
        order = {n: i for i, n in enumerate(schema.LAYOUTS[layout_name].serving_fields)} if layout_name else {}
        fields.sort(key=lambda f: (order.get(f.name, len(order)), f.name))

        outputs = signature.structured_outputs
        if OUTPUT_KEY in outputs:
            output_key = OUTPUT_KEY
        elif len(outputs) == 1:
            output_key = next(iter(outputs))
        else:
            raise ModelLoadError(f"{path}: no {OUTPUT_KEY!r} output (has {sorted(outputs)})")

        predictor = cls(
            path=path,
            signature=signature,
            input_fields=tuple(fields),
            output_key=output_key,
            layout=layout_name,
            metadata=metadata,
            version=str(metadata.get("version") or path.name),
            _module=module,
        )
        if warm_up:
            predictor.warm_up()
        predictor.load_seconds = time.perf_counter() - started
        predictor.loaded_at = time.time()
        log.info(
            "loaded %s (layout %s, version %s) in %.2f s",
            path,
            layout_name,
            predictor.version,
            predictor.load_seconds,
        )
        return predictor

    def warm_up(self) -> None:
        """Run the graph once for a single instance and once for a batch (first calls are slow)."""
        instance = self.example_instance()
        for size in (1, 64):
            self.predict([instance] * size)

    # ------------------------------------------------------------- describing
    @property
    def fields(self) -> dict[str, str]:
        """Input field name → dtype name (``float32``, ``string``)."""
        return {f.name: f.dtype for f in self.input_fields}

    def example_instance(self) -> dict[str, Any]:
        """A valid instance: the layout's lab test instance, or a neutral one."""
        if self.layout in schema.TEST_INSTANCES and set(schema.TEST_INSTANCES[self.layout]) == set(self.fields):
            return dict(schema.TEST_INSTANCES[self.layout])
        example: dict[str, Any] = {}
        for f in self.input_fields:
            if f.kind == _KIND_DATETIME:
                example[f.name] = schema.DATED_TEST_INSTANCE["pickup_datetime"]
            elif f.kind == _KIND_STRING:
                example[f.name] = ""
            else:
                example[f.name] = 1
        return example

    def describe(self) -> dict[str, Any]:
        """What a client needs: version, layout, signature, metrics, load time."""
        outputs = self.signature.structured_outputs
        return {
            "version": self.version,
            "path": str(self.path),
            "layout": self.layout,
            "signature": {
                "name": SIGNATURE_NAME,
                "inputs": self.fields,
                "outputs": {k: v.dtype.name for k, v in outputs.items()},
            },
            "metrics": self.metadata.get("metrics", {}),
            "load_seconds": round(self.load_seconds, 4),
            "loaded_at": self.loaded_at,
        }

    # ------------------------------------------------------------- predicting
    def to_columns(self, instances: Sequence[Any]) -> dict[str, np.ndarray]:
        """Validate ``instances`` and turn them into one numpy column per input field."""
        if isinstance(instances, (str, bytes, Mapping)) or not isinstance(instances, Sequence):
            raise TypeError(f"instances must be a list of objects, got {type(instances).__name__}")
        names = frozenset(f.name for f in self.input_fields)
        columns: dict[str, list] = {f.name: [] for f in self.input_fields}
        checks = [(f.name, f.kind, columns[f.name].append) for f in self.input_fields]
        for index, instance in enumerate(instances):
            if type(instance) is not dict and not isinstance(instance, Mapping):
                raise InstanceError(index, None, f"expected a JSON object of fields, got {json_type(instance)}")
            if instance.keys() != names:
                _raise_key_mismatch(index, instance, names, self.input_fields)
            for name, kind, append in checks:
                value = instance[name]
                if kind == _KIND_FLOAT:
                    append(_check_float(index, name, value))
                elif kind == _KIND_DATETIME:
                    append(_check_datetime(index, name, value))
                elif kind == _KIND_INT:
                    append(_check_int(index, name, value))
                else:
                    if type(value) is not str:
                        raise InstanceError(index, name, f"expected a string, got {json_type(value)}")
                    if not value.isascii():
                        try:
                            value.encode("utf-8")
                        except UnicodeEncodeError:
                            raise InstanceError(index, name, "not valid Unicode text") from None
                    append(value)
        return {f.name: np.array(columns[f.name], dtype=f.np_dtype) for f in self.input_fields}

    def predict_columns(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """One signature call on already-validated columns; returns the fares as float32."""
        import tensorflow as tf

        # Tensors made here are cheaper than letting the signature convert numpy arrays itself.
        outputs = self.signature(**{name: tf.constant(column) for name, column in columns.items()})
        return outputs[self.output_key].numpy().reshape(-1)

    def predict(self, instances: Sequence[Mapping[str, Any]]) -> list[float]:
        """Fares for ``instances``, in order. Raises InstanceError for the first bad instance."""
        if len(instances) == 0:
            return []
        columns = self.to_columns(instances)
        fares = self.predict_columns(columns)
        if fares.shape[0] != len(instances):
            raise ModelLoadError(f"{self.path}: model returned {fares.shape[0]} values for {len(instances)} instances")
        return fares.tolist()


def _guess_layout(names: set[str]) -> str | None:
    for layout in schema.LAYOUTS.values():
        if names == set(layout.serving_fields):
            return layout.name
    return None


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _raise_key_mismatch(index: int, instance: Mapping, names: frozenset, fields: Sequence[_Field]) -> None:
    for f in fields:
        if f.name not in instance:
            raise InstanceError(index, f.name, f"missing field (expected fields: {', '.join(x.name for x in fields)})")
    for key in instance:
        if key not in names:
            raise InstanceError(
                index, str(key), f"unknown field (expected fields: {', '.join(x.name for x in fields)})"
            )
    raise InstanceError(index, None, "fields do not match the model's inputs")  # pragma: no cover


def _check_float(index: int, name: str, value: Any) -> float:
    kind = type(value)
    if kind is float:
        if math.isfinite(value) and -_FLOAT32_MAX <= value <= _FLOAT32_MAX:
            return value
        if not math.isfinite(value):
            raise InstanceError(index, name, f"expected a finite number, got {value}")
        raise InstanceError(index, name, f"{value} is outside the float32 range")
    if kind is int:
        if -_FLOAT32_MAX <= value <= _FLOAT32_MAX:
            return value
        raise InstanceError(index, name, f"{value} is outside the float32 range")
    if isinstance(value, (bool, np.bool_)):
        raise InstanceError(index, name, "expected a number, got a boolean")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _check_float(index, name, float(value))
    if isinstance(value, str):
        raise InstanceError(index, name, f"expected a number, got {json_type(value)}")
    raise InstanceError(index, name, f"expected a number, got {json_type(value)}")


def _check_int(index: int, name: str, value: Any) -> int:
    number = _check_float(index, name, value)
    if number != int(number):
        raise InstanceError(index, name, f"expected a whole number, got {value}")
    return int(number)


def _check_datetime(index: int, name: str, value: Any) -> str:
    if type(value) is not str:
        raise InstanceError(index, name, f"expected a string like '2011-01-28 20:42:59 UTC', got {json_type(value)}")
    if _DATETIME_RE.match(value):
        try:
            datetime.fromisoformat(value[:19])
            return value
        except ValueError:
            pass  # e.g. month 13: let the schema's parser produce the message below
    try:
        parsed = schema.parse_datetime(value)
    except ValueError:
        raise InstanceError(index, name, f"{value[:60]!r} is not a time like '2011-01-28 20:42:59 UTC'") from None
    # Lenient spellings strptime accepts (single-digit month, padding) reach the graph canonical.
    return parsed.strftime(schema.DATETIME_FORMAT)
