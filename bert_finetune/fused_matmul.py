"""The intermediate dense layer and its GELU as one oneDNN matmul, for inference on CPU.

TensorFlow's oneDNN CPU kernels can apply the bias and a GELU to a matmul's output while it is
still in the cache (the internal `_FusedMatMul` op with fused_ops `BiasAdd` + `GeluApproximate`
or `GeluExact`; TensorFlow's graph rewrites did not form it from our GELU's ops nor from
tf.nn.gelu's, checked in float32 and bfloat16).
Done as a separate kernel, the GELU reads and writes the [B*T, I] activations once more: in
bfloat16 on an AMX CPU (BERT-Base, batch 32, seq 128) the GELU kernel took 7.3 ms per layer and
slice against 12 ms for the matmul itself, and the fused op takes the matmul's time alone.

Used by the encoder in float32 when its step is traced forward-only with XLA kernels on (the
runner's inference step on CPU; bert_finetune.xla_kernels) and TensorFlow runs on oneDNN (in
bfloat16 oneDNN runs this op, as any MatMul + bias, on a slower kernel than a bare matmul: there
the GELU kernel adds the bias instead, bert_finetune.fused.bias_deferred): `available()`
runs the op once on a small input and compares it with the plain ops before it is trusted
(TensorFlow without oneDNN, or another version, may lack the fusion). The op has no registered
gradient; `dense_gelu` gives it the plain ops' (recomputed), so a traced step stays
differentiable.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_library

from bert_finetune.onednn import onednn_enabled

# hidden_act -> the fused op's name for it (the original's tanh form and the exact erf form)
FUSED_GELU = {"gelu": "GeluApproximate", "gelu_exact": "GeluExact"}
DTYPES = (tf.float32, tf.bfloat16)


def _fused_op(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, gelu: str) -> tf.Tensor:
    if tf.executing_eagerly():  # an op without a Python wrapper is made in a graph only
        return _fused_op_function(x, kernel, bias, gelu)
    op = op_def_library._apply_op_helper(
        "_FusedMatMul", a=x, b=kernel, args=[bias], fused_ops=["BiasAdd", FUSED_GELU[gelu]],
        transpose_a=False, transpose_b=False, epsilon=0.0, leakyrelu_alpha=0.0,
        name="FusedMatMulGelu")[2]  # epsilon, alpha: unused attributes of other fusions
    return op.outputs[0]


_fused_op_function = tf.function(_fused_op)


def _plain(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, gelu: str) -> tf.Tensor:
    from bert_finetune import modeling  # the activation functions (modeling imports us)

    return modeling.get_activation(gelu)(tf.matmul(x, kernel) + bias)


@functools.cache
def available(gelu: str, dtype_name: str) -> bool:
    """Whether this TensorFlow runs the fused op for `gelu` in this dtype, equal (within the
    dtype's rounding) to the plain ops on a small input."""
    if gelu not in FUSED_GELU or not onednn_enabled():
        return False
    dtype = tf.as_dtype(dtype_name)
    rng = np.random.default_rng(0)
    with tf.init_scope():  # eagerly, also when asked while a function is traced
        args = [tf.cast(tf.constant(rng.normal(size=shape), tf.float32), dtype)
                for shape in ((8, 16), (16, 24), (24,))]
        try:
            fused = _fused_op(*args, gelu).numpy().astype(np.float32)
        except (tf.errors.OpError, ValueError, TypeError):
            return False
        plain = _plain(*args, gelu).numpy().astype(np.float32)
    tolerance = 1e-5 if dtype == tf.float32 else 2e-2
    return bool(np.allclose(fused, plain, rtol=tolerance, atol=tolerance))


def usable(gelu: str, dtype: tf.DType) -> bool:
    """Whether `dense_gelu` may be used for activations of `dtype` with `gelu`."""
    return dtype in DTYPES and available(gelu, dtype.name)


def dense_gelu(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, gelu: str) -> tf.Tensor:
    """GELU(x @ kernel + bias) as one fused oneDNN op (check `usable` first); `gelu` is the
    config's hidden_act, "gelu" or "gelu_exact"."""

    @tf.custom_gradient
    def fused(x, kernel, bias):
        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel, bias])
                y = _plain(x, kernel, bias, gelu)
            return tape.gradient(y, [x, kernel, bias], output_gradients=dy)

        # stop_gradient: the op has none; `grad` gives it (a tape would look for the op's own)
        return _fused_op(*[tf.stop_gradient(t) for t in (x, kernel, bias)], gelu), grad

    return fused(x, kernel, bias)
