"""How many independent slices of the batch the encoder runs as (bert_finetune.batch_branches).

Measured on the AVX2-only AMD EPYC with 2 cores (README, "The batch as two slices side by
side"): two slices ran training and inference of BERT-Base, MiniLM-L6 and BERT-Mini 3-17% faster
(medians), small batches no slower, four slices no better than two. More cores were not
measured, so the default is two slices on any CPU of two or more threads; one thread has nothing
to fill. Models narrower than BERT-Mini run whole anyway (batch_branches.MIN_WIDTH). GPU (not measured) and TPU (one program per core, wants the
whole batch) run it whole.
"""

from __future__ import annotations

import os

import tensorflow as tf

from bert_finetune.runner.distribute import is_tpu

CPU_BRANCHES = 2


def batch_branches(strategy: tf.distribute.Strategy) -> tuple[int, str]:
    """(slices of each replica's batch to run side by side, why, for the log)."""
    if is_tpu(strategy):
        return 1, "TPU: the whole batch"
    if tf.config.list_logical_devices("GPU"):
        return 1, "default on GPU (not measured): the whole batch"
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
    if threads < 2:
        return 1, "one CPU thread: the whole batch"
    return CPU_BRANCHES, (f"default on CPU ({threads} threads), for models at least as wide "
                          "as BERT-Mini (hidden x intermediate >= 256 x 1024); narrower ones run "
                          "the whole batch")
