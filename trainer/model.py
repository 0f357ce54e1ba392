"""The taxifare model: the job's settings, the Keras model, and training it (``train_and_evaluate``)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import field, make_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from trainer import data, hparams
from trainer.distribution import choose_strategy
from trainer.evaluation import TensorBoardLoss, evaluate
from trainer.features import CROSS_BUCKETS, GRID_CELLS, TaxiFeatures, Winsorize, feature_names
from trainer.savedmodel import export_model
from trainer.schema import Layout

log = logging.getLogger(__name__)

# The hyperparameters' defaults live in trainer.hparams; these are the model's fixed choices.
_HP = hparams.config_defaults()
DEFAULT_LOSS = "huber:5"  # squared error within $5, linear beyond: meter-less outlier fares weigh less
NORMALIZATION_SAMPLE_ROWS = 100_000
EVAL_EVERY_STEPS = 500
CACHE_MAX_ROWS = 10_000_000  # packed in memory up to 320 MB (data.pack_rows); larger data streams every pass


# The job's settings: where the data is, the hyperparameters (one field per trainer flag, typed
# and defaulted by trainer.hparams) and the model's other knobs.
TrainConfig = make_dataclass(
    "TrainConfig",
    [
        ("train_data_paths", str | Sequence[str]),
        ("eval_data_paths", str | Sequence[str]),
        ("output_dir", str),
        *((h.flag, Any, field(default=h.check(h.default))) for h in hparams.HPARAMS),
        ("layout", str, field(default="auto")),
        ("eval_steps", int | None, field(default=None)),
        ("cache", bool | None, field(default=None)),  # None: cache the parsed rows when they fit (CACHE_MAX_ROWS)
        ("dropout", float, field(default=0.0)),
        ("l2", float, field(default=0.0)),
        ("clip_quantile", float, field(default=0.001)),
        ("loss", str, field(default=DEFAULT_LOSS)),
        # Run the training step eagerly instead of compiling it into a graph: for a run of a few
        # steps (validate's smoke run) compiling costs more than the steps; the export is traced as always.
        ("eager", bool, field(default=False)),
    ],
)


# ---------------------------------------------------------------------------------------------
# Model


def serving_inputs(layout: Layout) -> dict[str, keras.KerasTensor]:
    """One named Keras input per raw serving field: float32, or string for the pickup time."""
    return {
        name: keras.Input(shape=(), dtype="string" if name == layout.pickup_datetime else "float32", name=name)
        for name in layout.serving_fields
    }


def build_model(
    layout: Layout,
    normalization_sample: dict[str, np.ndarray],
    *,
    hidden_units: Sequence[int] = _HP["hidden_units"],
    learning_rate: float = _HP["learning_rate"],
    train_steps: int = _HP["train_steps"],
    label_mean: float = 0.0,
    embedding_dim: int = _HP["embedding_dim"],
    dropout: float = 0.0,
    l2: float = 0.0,
    clip_quantile: float = 0.001,
    loss: str = DEFAULT_LOSS,
    towers: int = _HP["towers"],
    eager: bool = False,
) -> keras.Model:
    """The Keras model: raw fields → features → normalise → embeddings + DNN → fare.

    ``normalization_sample`` holds raw serving fields of training rows; the normalisation mean
    and variance are adapted on their engineered features.
    """
    inputs = serving_inputs(layout)
    feats = TaxiFeatures(layout.name, name="features")(inputs)

    sample_features = TaxiFeatures(layout.name)({k: tf.constant(v) for k, v in normalization_sample.items()})[
        "numeric"
    ].numpy()
    clip = Winsorize(clip_quantile, name="winsorize")
    clip.adapt(sample_features)
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(np.asarray(clip(sample_features)))
    parts = [norm(clip(feats["numeric"]))]
    if embedding_dim > 0:
        for key, size in (("pickup_cell", GRID_CELLS), ("dropoff_cell", GRID_CELLS), ("trip_cell", CROSS_BUCKETS)):
            emb = keras.layers.Embedding(
                size,
                embedding_dim,
                name=f"{key}_embedding",
                embeddings_regularizer=keras.regularizers.l2(l2) if l2 else None,
            )
            parts.append(emb(feats[key]))
    x = keras.layers.Concatenate(name="all_features")(parts)
    regularizer = keras.regularizers.l2(l2) if l2 else None
    tower_outputs = []
    for t in range(towers):
        h = x
        for i, units in enumerate(hidden_units):
            h = keras.layers.Dense(
                units, activation="relu", kernel_regularizer=regularizer, name=f"tower{t}_hidden{i}"
            )(h)
            if dropout:
                h = keras.layers.Dropout(dropout, name=f"tower{t}_dropout{i}")(h)
        tower_outputs.append(
            keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(label_mean), name=f"tower{t}_fare")(h)
        )
    fares = tower_outputs[0] if towers == 1 else keras.layers.Concatenate(name="tower_fares")(tower_outputs)
    model = TaxifareModel(inputs, fares, name=f"taxifare_{layout.name}")

    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(train_steps, 1), alpha=0.05)
    delta = float(loss.split(":")[1]) if loss.startswith("huber:") else None
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=TowerLoss(delta),
        metrics=[EnsembleRMSE(name="rmse")],
        run_eagerly=eager,
    )
    return model


def fare_model(model: keras.Model) -> keras.Model:
    """The serving model: the mean of the towers' fares, shape [batch]."""
    fare = keras.layers.Lambda(lambda t: keras.ops.mean(t, axis=1), name="fare_amount")(model.output)
    return keras.Model(model.inputs, fare, name=model.name + "_serving")


class TaxifareModel(keras.Model):
    """A functional Keras model that also trains under MultiWorkerMirroredStrategy.

    Two gaps of Keras 3.15's multi-worker fit are closed here: it builds the model from a first
    batch averaged across workers with ``strategy.reduce``, which fails for dict inputs (and
    cannot average strings) — the inputs are declared up front, so a batch of this worker's
    data builds it just as well; and it averages the step's scalar logs along axis 0 — they are
    given that axis.
    """

    def _multi_worker(self) -> bool:
        extended = getattr(getattr(self, "_distribute_strategy", None), "extended", None)
        return bool(extended is not None and getattr(extended, "_in_multi_worker_mode", lambda: False)())

    def _reducible(self, logs):
        # Keras averages multi-worker step logs along axis 0, which scalars do not have.
        if self._multi_worker():
            return {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def train_step(self, data):
        return self._reducible(super().train_step(data))

    def test_step(self, data):
        return self._reducible(super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and strategy is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda x: (
                        strategy.experimental_local_results(x)[0]
                        if isinstance(x, tf.distribute.DistributedValues)
                        else x
                    ),
                    batch,
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


class TowerLoss(keras.losses.Loss):
    """Each tower fits the fare on its own (so their mean is an ensemble): Huber or squared error."""

    def __init__(self, delta: float | None = None, name: str = "tower_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.delta = delta

    def call(self, y_true, y_pred):
        err = y_pred - keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), (-1, 1))
        if self.delta is None:
            per_tower = keras.ops.square(err)
        else:
            abs_err = keras.ops.abs(err)
            quad = keras.ops.minimum(abs_err, self.delta)
            per_tower = 0.5 * keras.ops.square(quad) + self.delta * (abs_err - quad)
        return keras.ops.mean(per_tower, axis=1)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


class EnsembleRMSE(keras.metrics.RootMeanSquaredError):
    """RMSE of the towers' mean fare."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(keras.ops.reshape(y_true, (-1,)), keras.ops.mean(y_pred, axis=1), sample_weight)


# ---------------------------------------------------------------------------------------------
# Training


def _normalization_sample(scan: data.ScanResult, rows: int) -> tuple[dict[str, np.ndarray], float]:
    """Raw fields of up to ``rows`` plausible training rows, and their mean fare."""
    ds = data.make_dataset(scan, batch_size=8192, training=False, drop_implausible=True, cache=False)
    feats: dict[str, list] = {}
    labels: list = []
    taken = 0
    for features, label in ds:
        for k, v in features.items():
            feats.setdefault(k, []).append(v.numpy())
        labels.append(label.numpy())
        taken += int(label.shape[0])
        if taken >= rows:
            break
    if taken == 0:
        raise data.DataError("no plausible training rows: nothing to learn from")
    sample = {k: np.concatenate(v)[:rows] for k, v in feats.items()}
    return sample, float(np.concatenate(labels).mean())


def train_and_evaluate(
    train_data_paths: str | Sequence[str],
    eval_data_paths: str | Sequence[str],
    output_dir: str | os.PathLike,
    **options,
) -> dict:
    """Train, evaluate, export: the whole job behind ``python -m trainer.task``.

    Scans the CSVs, builds the model (feature engineering and normalisation inside the graph),
    trains for ``train_steps`` batches while logging train/eval loss to TensorBoard, evaluates on
    every parseable row of the evaluation files, and exports a SavedModel whose
    ``serving_default`` signature takes the raw serving fields to
    ``OUTPUT_DIR/export/exporter/<timestamp>/``. Returns the metrics written to
    ``OUTPUT_DIR/eval_metrics.json``.
    """
    config = TrainConfig(train_data_paths, eval_data_paths, str(output_dir), **options)
    return run(config)


def run(config: TrainConfig) -> dict:
    started = time.monotonic()
    strategy, is_chief = choose_strategy()
    keras.utils.set_random_seed(config.seed)

    train_scan = data.scan_files(data.expand_paths(config.train_data_paths), config.layout)
    layout = train_scan.layout
    eval_scan = data.scan_files(data.expand_paths(config.eval_data_paths), layout)
    dropped = train_scan.dropped
    log.info("training rows: %d plausible of %d; dropped %s", train_scan.plausible, train_scan.rows, dropped)
    if train_scan.plausible == 0:
        raise data.DataError("no plausible training rows: nothing to learn from")

    output_dir = Path(config.output_dir)
    write_dir = output_dir if is_chief else Path(tempfile.mkdtemp(prefix="taxifare-worker-"))
    write_dir.mkdir(parents=True, exist_ok=True)

    sample, label_mean = _normalization_sample(train_scan, NORMALIZATION_SAMPLE_ROWS)
    with strategy.scope():
        model = build_model(
            layout,
            sample,
            hidden_units=config.hidden_units,
            learning_rate=config.learning_rate,
            train_steps=config.train_steps,
            label_mean=label_mean,
            embedding_dim=config.embedding_dim,
            dropout=config.dropout,
            l2=config.l2,
            clip_quantile=config.clip_quantile,
            loss=config.loss,
            towers=config.towers,
            eager=config.eager,
        )

    cache = config.cache if config.cache is not None else train_scan.rows <= CACHE_MAX_ROWS
    train_ds = data.make_dataset(train_scan, config.train_batch_size, training=True, cache=cache, seed=config.seed)
    eval_ds = data.make_dataset(eval_scan, 4096, training=False, cache=eval_scan.rows <= CACHE_MAX_ROWS)
    if config.eval_steps:
        eval_ds = eval_ds.take(config.eval_steps)
    every = min(EVAL_EVERY_STEPS, config.train_steps)
    epochs = max(1, math.ceil(config.train_steps / every))
    tensorboard = TensorBoardLoss(write_dir / "tensorboard", every=max(1, min(50, every)))
    fit_started = time.monotonic()
    model.fit(
        train_ds,
        steps_per_epoch=every,
        epochs=epochs,
        validation_data=eval_ds,
        callbacks=[tensorboard],
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
    )
    steps_done = int(model.optimizer.iterations.numpy())
    train_seconds = time.monotonic() - fit_started

    serving = fare_model(model)
    metrics = evaluate(lambda f: serving(f, training=False), eval_scan, max_batches=config.eval_steps)
    metrics.update(
        layout=layout.name,
        train_rows=train_scan.plausible,
        train_rows_read=train_scan.rows,
        train_rows_dropped=dropped,
        eval_rows_implausible=eval_scan.dropped,
        steps=steps_done,
        batch_size=config.train_batch_size,
        hidden_units=list(config.hidden_units),
        learning_rate=config.learning_rate,
        train_seconds=round(train_seconds, 2),
    )
    metadata = {
        "layout": layout.name,
        "fields": {n: ("string" if n == layout.pickup_datetime else "float32") for n in layout.serving_fields},
        "features": list(feature_names(layout)),
        "metrics": {k: metrics[k] for k in ("rmse", "mae", "rmse_plausible", "eval_rows")},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_rows": train_scan.plausible,
        "train_rows_dropped": dropped,
        "train_data": [f.path for f in train_scan.files],
        "steps": steps_done,
        "hidden_units": list(config.hidden_units),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    export_dir = export_model(serving, layout, write_dir / "export" / "exporter", metadata)
    metrics["export_dir"] = str(export_dir) if is_chief else None
    metrics["seconds"] = round(time.monotonic() - started, 2)
    (write_dir / "eval_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if not is_chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    log.info(
        "eval RMSE %.3f on %d rows (plausible only %.3f), MAE %.3f; exported to %s in %.1f s",
        metrics["rmse"],
        metrics["eval_rows"],
        metrics["rmse_plausible"],
        metrics["mae"],
        export_dir,
        metrics["seconds"],
    )
    return metrics
