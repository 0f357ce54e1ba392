"""The trained model as a SavedModel: the raw-field ``serving_default`` signature and the metadata beside it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import tensorflow as tf

from trainer import schema
from trainer.predictor import METADATA_FILE
from trainer.schema import Layout


def serving_signature(layout: Layout) -> dict[str, tf.TensorSpec]:
    return {
        name: tf.TensorSpec([None], tf.string if name == layout.pickup_datetime else tf.float32, name=name)
        for name in layout.serving_fields
    }


def _new_export_dir(base: Path) -> Path:
    stamp = int(time.time())
    while (base / str(stamp)).exists():
        stamp += 1
    return base / str(stamp)


def export_model(model: keras.Model, layout: Layout, export_base: Path, metadata: dict) -> Path:
    """Write a SavedModel with the raw-field ``serving_default`` signature and its metadata."""
    target = _new_export_dir(export_base)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(instances):
        fare = model(instances, training=False)
        return {schema.LABEL: tf.reshape(tf.cast(fare, tf.float32), [-1])}

    archive.add_endpoint("serving_default", serve, input_signature=[serving_signature(layout)])
    tmp = target.with_name(f".{target.name}.tmp")
    archive.write_out(str(tmp), verbose=False)
    extra = tmp / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    tmp.rename(target)  # readers never see a half-written export
    return target
