"""Multi-worker training from TF_CONFIG: this task's role, and the tf.distribute strategy it trains under."""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

log = logging.getLogger(__name__)


def cluster_from_tf_config() -> tuple[dict, dict]:
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return config.get("cluster", {}), config.get("task", {})


def worker_role(cluster: dict, task: dict) -> tuple[int, bool]:
    """(number of training workers, is this task the chief) from TF_CONFIG's cluster and task.

    The chief is the "chief" task, or worker 0 when the cluster has no chief. Only the chief
    writes the export, metrics and TensorBoard files.
    """
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if workers <= 1:
        return max(workers, 1), True
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    return workers, kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def choose_strategy() -> tuple[tf.distribute.Strategy, bool]:
    """(strategy, is_chief): MultiWorkerMirroredStrategy when TF_CONFIG has several workers."""
    cluster, task = cluster_from_tf_config()
    workers, is_chief = worker_role(cluster, task)
    if workers <= 1:
        return tf.distribute.get_strategy(), True
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    log.info("multi-worker training: %d workers, this is %s (chief=%s)", workers, task, is_chief)
    return strategy, is_chief
