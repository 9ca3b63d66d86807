"""Picks the tf.distribute strategy the way TPUEstimator users expect.

Cloud TPU from `--use_tpu`/`--tpu_name`/`--tpu_zone`/`--gcp_project`/`--master`;
MultiWorkerMirroredStrategy when `TF_CONFIG` names a cluster with several workers;
MirroredStrategy when several GPUs are visible; otherwise the default strategy.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
from absl import logging

from bert_finetune.errors import UserError

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON: {e.msg}") from None
    if not isinstance(config, dict):
        raise UserError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return config


def is_multi_worker_config() -> bool:
    """True when TF_CONFIG describes a cluster of more than one task."""
    cluster = _tf_config().get("cluster", {})
    return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker")) > 1


def get_strategy(use_tpu: bool = False, tpu_name: str | None = None, tpu_zone: str | None = None,
                 gcp_project: str | None = None, master: str | None = None,
                 strategy: str = "auto") -> tf.distribute.Strategy:
    """Returns the strategy for this process (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise UserError(f"--distribution_strategy={strategy}: expected one of {', '.join(STRATEGIES)}")
    if use_tpu or strategy == "tpu":
        tpu = tpu_name or master or ""
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=tpu, zone=tpu_zone, project=gcp_project)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except Exception as e:  # noqa: BLE001 - resolver failures come as many types
            # (metadata URLError, ValueError, OpError...); each is one user-facing line.
            raise UserError(f"--use_tpu: cannot reach TPU {tpu or '(local)'}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        logging.info("Running on TPU %s", tpu or "(local)")
        return tf.distribute.TPUStrategy(resolver)
    if strategy == "multi_worker" or (strategy == "auto" and is_multi_worker_config()):
        logging.info("Running with MultiWorkerMirroredStrategy (TF_CONFIG)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if strategy == "mirrored" or (strategy == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] if gpus else [d.name for d in
                                                       tf.config.list_logical_devices("CPU")]
        logging.info("Running with MirroredStrategy on %s", ", ".join(devices))
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, summaries and outputs."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.TPUStrategy)


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public tf.distribute name (MultiWorkerMirroredStrategy's class is named otherwise)."""
    for cls, name in ((tf.distribute.TPUStrategy, "TPUStrategy"),
                      (tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
                      (tf.distribute.MirroredStrategy, "MirroredStrategy"),
                      (tf.distribute.OneDeviceStrategy, "OneDeviceStrategy")):
        if isinstance(strategy, cls):
            return name
    return "default strategy"
