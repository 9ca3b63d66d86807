"""The dense layers' weight gradients (x^T dy) by XLA's kernel, for the shapes where it is faster.

In training, a dense layer y = x @ W + b of the encoder (x: [B*T, H_in]) has three GEMMs: the
forward, the input gradient dy @ W^T and the weight gradient x^T @ dy, which contracts the B*T
tokens. On AVX2-only CPUs oneDNN ran that last one at about half the speed of the other two for
some shapes (BERT-Mini, H=256: 63-82 GFLOP/s against 135-150; XLA's kernel for the same product
127) and level or faster for others (MiniLM-L6's H=384). So the choice is measured, once per
shape and process, the first time a training step is traced: both kernels on random operands of
the shape, interleaved, best of `ROUNDS`; XLA's is used only when it took at most `MARGIN` of
oneDNN's time. Each choice is logged. The forward and the input gradient keep oneDNN's kernels,
and the values are the same GEMM's (equal within float32 rounding).

The bias gradient (dy summed over the rows) is XLA's column sum in every such step: TensorFlow's
own took 2.5-5x as long ([2048, 3072] float32: 5.6 vs 1.2 ms, one thread; 3.5% of BERT-Base's
float32 training step), measured on a 2 vCPU AMX Xeon, 2026-12-07.

Only in a training step traced with XLA kernels on (bert_finetune.xla_kernels: float32 or
bfloat16 on CPU, --use_xla not given; each dtype measured on its own); elsewhere (inference,
whose steps enable the element-wise kernels alone, exported models, Keras) `dense` is the plain
x @ W + b.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from absl import logging

from bert_finetune import fused, xla_kernels

ROUNDS = 5
MARGIN = 0.9
MIN_FLOPS = 3e8  # smaller products (the [CLS]-only last layer, tiny models): oneDNN, unmeasured

# (rows, H_in, H_out, dtype) -> XLA's kernel measured faster, for this process.
_CHOICES: dict[tuple[int, int, int, str], bool] = {}


@tf.function(jit_compile=True)
def _weight_gradient(x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    return tf.matmul(x, dy, transpose_a=True)  # [H_in, H_out]


@tf.function
def _plain_weight_gradient(x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    return tf.matmul(x, dy, transpose_a=True)


def measure(rows: int, n_in: int, n_out: int, dtype: tf.DType = tf.float32) -> tuple[float, float]:
    """(best seconds of oneDNN's x^T dy, of XLA's) on random [rows, n_in], [rows, n_out]."""
    rng = np.random.default_rng(0)  # not TF's: the run's seeded random ops stay as they were
    x = tf.constant(rng.standard_normal((rows, n_in)), dtype)
    dy = tf.constant(rng.standard_normal((rows, n_out)), dtype)
    kernels = (_plain_weight_gradient, _weight_gradient)
    for kernel in kernels:  # trace and compile
        kernel(x, dy).numpy()
    best = [float("inf")] * len(kernels)
    for _ in range(ROUNDS):
        for i, kernel in enumerate(kernels):
            began = time.perf_counter()
            kernel(x, dy).numpy()
            best[i] = min(best[i], time.perf_counter() - began)
    return best[0], best[1]


@tf.autograph.experimental.do_not_convert  # plain Python while a step is traced
def xla_is_faster(rows: int, n_in: int, n_out: int, dtype: tf.DType = tf.float32) -> bool:
    """Whether XLA's kernel computes x^T dy of these shapes faster (measured once per process)."""
    if 2 * rows * n_in * n_out < MIN_FLOPS:
        return False
    key = (rows, n_in, n_out, dtype.name)
    if key not in _CHOICES:
        with tf.init_scope():  # eagerly, even while a training step is being traced
            plain, compiled = measure(rows, n_in, n_out, dtype)
        _CHOICES[key] = compiled <= MARGIN * plain
        logging.info("Weight gradient [%d, %d]^T x [%d, %d]: oneDNN %.1f ms, XLA %.1f ms: %s",
                     rows, n_in, rows, n_out, plain * 1e3, compiled * 1e3,
                     "XLA" if _CHOICES[key] else "oneDNN")
    return _CHOICES[key]


def choices() -> dict[tuple[int, int, int, str], bool]:
    """{(rows, H_in, H_out, dtype): XLA's kernel chosen} measured so far in this process."""
    return dict(_CHOICES)


@tf.function(jit_compile=True)
def _bias_gradient(dy: tf.Tensor) -> tf.Tensor:  # summed in float32
    return tf.cast(tf.reduce_sum(tf.cast(dy, tf.float32), axis=0), dy.dtype)


def _dense_with(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, xla_weight_gradient: bool):
    @tf.custom_gradient
    def fused(x, kernel, bias):
        def grad(dy: tf.Tensor):
            weight = (_weight_gradient(x, dy) if xla_weight_gradient
                      else tf.matmul(x, dy, transpose_a=True))
            return tf.matmul(dy, kernel, transpose_b=True), weight, _bias_gradient(dy)

        return tf.matmul(x, kernel) + bias, grad

    return fused(x, kernel, bias)


def dense(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """x @ kernel + bias for x [rows, H_in]; with XLA kernels on (bert_finetune.xla_kernels),
    the kernel's gradient by XLA where that was measured faster for these (static) shapes, and
    the bias gradient by XLA's column sum."""
    if not xla_kernels.weight_gradients_on() or x.dtype not in fused.DTYPES:
        return tf.matmul(x, kernel) + bias
    rows, n_in = x.shape
    n_out = kernel.shape[-1]
    faster = None not in (rows, n_in, n_out) and xla_is_faster(rows, n_in, n_out, x.dtype)
    return _dense_with(x, kernel, bias, faster)
