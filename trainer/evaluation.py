"""How well the model does: the loss TensorBoard shows during training, the full evaluation after it."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from trainer import data

log = logging.getLogger(__name__)


class TensorBoardLoss(keras.callbacks.Callback):
    """Scalars the lab watches: train loss every few steps, eval loss after each evaluation."""

    def __init__(self, logdir: Path, every: int = 50):
        super().__init__()
        self.train_writer = tf.summary.create_file_writer(str(logdir / "train"))
        self.eval_writer = tf.summary.create_file_writer(str(logdir / "eval"))
        self.every = every
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if logs and self.step % self.every == 0:
            with self.train_writer.as_default(step=self.step):
                tf.summary.scalar("loss", float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        with self.train_writer.as_default(step=self.step):
            tf.summary.scalar("loss", float(logs["loss"]))
        if "val_loss" in logs:
            with self.eval_writer.as_default(step=self.step):
                tf.summary.scalar("loss", float(logs["val_loss"]))
                tf.summary.scalar("rmse", float(logs["val_rmse"]))
        self.train_writer.flush()
        self.eval_writer.flush()
        log.info(
            "step %d: loss %.3f%s",
            self.step,
            logs.get("loss", float("nan")),
            f", eval loss {logs['val_loss']:.3f}" if "val_loss" in logs else "",
        )


def evaluate(model_fn, scan: data.ScanResult, batch_size: int = 4096, max_batches: int | None = None) -> dict:
    """RMSE/MAE on every parseable row (and on plausible rows only) of the scanned files.

    model_fn maps a dict of raw serving fields (tensors) to predicted fares.
    """
    ds = data.make_dataset(scan, batch_size=batch_size, training=False, with_mask=True)
    errors, masks = [], []
    for i, (features, label, mask) in enumerate(ds):
        if max_batches is not None and i >= max_batches:
            break
        pred = np.asarray(model_fn(features)).reshape(-1)
        errors.append(pred - label.numpy())
        masks.append(mask.numpy())
    err = np.concatenate(errors).astype(np.float64)
    mask = np.concatenate(masks)
    plausible = err[mask]
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "eval_rows": int(err.size),
        "rmse_plausible": float(np.sqrt(np.mean(plausible**2))) if plausible.size else float("nan"),
        "mae_plausible": float(np.mean(np.abs(plausible))) if plausible.size else float("nan"),
        "eval_rows_plausible": int(plausible.size),
    }
