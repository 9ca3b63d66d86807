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

On weights fixed for the life of a traced step (the bfloat16 copies the runner's inference step
makes once per run, bert_finetune.inference_weights) the same kernel runs faster still:
`fixed_matmul` and `fixed_dense_gelu` make oneDNN's op (`_MklNativeFusedMatMul`, the form
TensorFlow's graph rewrites turn `_FusedMatMul` into) with `is_filter_const`, the flag those
rewrites set when the weight is a graph constant. oneDNN then lays the weight out in its
blocked format once, on the op's first run, and keeps that copy for the op's life: in bfloat16
on an AMX CPU, [4096, 768] x [768, 3072] took 10.1 ms against 11.9 ms for the bare matmul on
the [out, in] copy and 20 ms for the same op without the flag. An op made so must never see
another weight: only the captured copies, which never change, are given to it (a new run traces
a new step with new copies and new ops). The matmul alone adds a zero bias (the op's first
post-op is always BiasAdd) and leaves the real one to the next XLA kernel, in float32
(bert_finetune.fused.bias_deferred); the GELU layer applies its bias and GELU in the op.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2
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

# TensorFlow's kernel label for its oneDNN ops in native (TensorFlow) layout, which its graph
# rewrite gives the ops it makes (mkl_op_registry::kMklNameChangeOpLabel)
_ONEDNN_LABEL = attr_value_pb2.AttrValue(s=b"MklNameChangeOp")


def _fixed_op(x: tf.Tensor, kernel_t: tf.Tensor, bias: tf.Tensor, gelu: str | None) -> tf.Tensor:
    """x @ kernel_t^T + bias (and GELU `gelu`) as oneDNN's op with the weight declared fixed
    (in a traced function only: the op keeps its first weight for its life)."""
    if tf.executing_eagerly():
        raise ValueError("a fixed-weight matmul is made in a traced function only")
    fused_ops = ["BiasAdd"] if gelu is None else ["BiasAdd", FUSED_GELU[gelu]]
    op = op_def_library._apply_op_helper(
        "_MklNativeFusedMatMul", a=x, b=kernel_t, args=[bias], fused_ops=fused_ops,
        transpose_a=False, transpose_b=True, is_filter_const=True, epsilon=0.0,
        leakyrelu_alpha=0.0, name="FixedWeightMatMul")[2]
    op._set_attr("_kernel", _ONEDNN_LABEL)
    return op.outputs[0]


def _plain(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, gelu: str) -> tf.Tensor:
    from bert_finetune import modeling  # the activation functions (modeling imports us)

    return modeling.get_activation(gelu)(tf.matmul(x, kernel) + bias)


def _close(got: np.ndarray, want: np.ndarray, dtype: tf.DType) -> bool:
    """A probe's result equals the plain ops' within the dtype's rounding."""
    tolerance = 1e-5 if dtype == tf.float32 else 2e-2
    return bool(np.allclose(got, want, rtol=tolerance, atol=tolerance))


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
    return _close(fused, plain, dtype)


@functools.cache
def fixed_available(gelu: str | None, dtype_name: str) -> bool:
    """Whether this TensorFlow runs the fixed-weight op (`gelu`: None for the matmul alone)
    in this dtype, equal (within the dtype's rounding) to the plain ops on two inputs in turn
    (the second run reads oneDNN's copy of the weight)."""
    if (gelu is not None and gelu not in FUSED_GELU) or not onednn_enabled():
        return False
    dtype = tf.as_dtype(dtype_name)
    rng = np.random.default_rng(1)
    with tf.init_scope():
        xs = [tf.cast(tf.constant(rng.normal(size=(8, 16)), tf.float32), dtype) for _ in "ab"]
        kernel, bias = (tf.cast(tf.constant(rng.normal(size=shape), tf.float32), dtype)
                        for shape in ((16, 24), (24,)))
        kernel_t = tf.transpose(kernel)
        step = tf.function(lambda x: _fixed_op(x, kernel_t, bias, gelu))
        try:
            fused = [step(x).numpy().astype(np.float32) for x in xs]
        except (tf.errors.OpError, ValueError, TypeError):
            return False
        plain = [(tf.matmul(x, kernel) + bias if gelu is None else _plain(x, kernel, bias, gelu))
                 .numpy().astype(np.float32) for x in xs]
    return all(_close(f, p, dtype) for f, p in zip(fused, plain, strict=True))


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


def fixed_usable(gelu: str | None, dtype: tf.DType) -> bool:
    """Whether `fixed_matmul` (`gelu` None) or `fixed_dense_gelu` may be used for activations
    of `dtype`."""
    return dtype in DTYPES and fixed_available(gelu, dtype.name)


def fixed_matmul(x: tf.Tensor, kernel_t: tf.Tensor) -> tf.Tensor:
    """x @ kernel_t^T, kernel_t [out, in] a weight that never changes for the life of the traced
    step (check `fixed_usable(None, ...)` first). Forward only: no gradient."""
    zero = tf.zeros(kernel_t.shape[:1], x.dtype)
    return _fixed_op(x, kernel_t, zero, None)


def fixed_dense_gelu(x: tf.Tensor, kernel_t: tf.Tensor, bias: tf.Tensor, gelu: str) -> tf.Tensor:
    """GELU(x @ kernel_t^T + bias) on a fixed weight [out, in], as `fixed_matmul` (check
    `fixed_usable(gelu, ...)` first)."""
    return _fixed_op(x, kernel_t, bias, gelu)


# -- The attention's scores -------------------------------------------------------------------
def _scores_op(q: tf.Tensor, k: tf.Tensor, scale: tf.Tensor, mask_adder: tf.Tensor) -> tf.Tensor:
    """q @ k^T * scale + mask_adder as oneDNN's batched matmul with two post-ops."""
    if tf.executing_eagerly():  # an op without a Python wrapper is made in a graph only
        return _scores_op_function(q, k, scale, mask_adder)
    op = op_def_library._apply_op_helper(
        "_MklFusedBatchMatMulV2", x=q, y=k, args=[scale, mask_adder], fused_ops=["Mul", "Add"],
        adj_x=False, adj_y=True, epsilon=0.0, leakyrelu_alpha=0.0, name="AttentionScores")[2]
    return op.outputs[0]


_scores_op_function = tf.function(_scores_op)


@functools.cache
def scores_available(dtype_name: str) -> bool:
    """Whether this TensorFlow runs `attention_scores` in this dtype, equal (within the dtype's
    rounding) to the plain ops, for every query row and for one."""
    if not onednn_enabled():
        return False
    dtype = tf.as_dtype(dtype_name)
    rng = np.random.default_rng(2)
    with tf.init_scope():
        q, k = (tf.cast(tf.constant(rng.normal(size=(2, 3, 5, 4)), tf.float32), dtype)
                for _ in "qk")
        mask = tf.constant([[[[0.0] * 5]], [[[0.0] * 3 + [-10000.0] * 2]]], tf.float32)
        step = tf.function(lambda q, k: attention_scores(q, k, 0.5, mask))
        try:
            fused = [step(x, k).numpy().astype(np.float32) for x in (q, q[:, :, :1])]
        except (tf.errors.OpError, ValueError, TypeError):
            return False
        plain = [(tf.matmul(tf.cast(x, tf.float32), tf.cast(k, tf.float32), transpose_b=True)
                  * 0.5 + mask).numpy() for x in (q, q[:, :, :1])]
    return all(_close(f, p, dtype) for f, p in zip(fused, plain, strict=True))


def scores_usable(dtype: tf.DType) -> bool:
    """Whether `attention_scores` may be used for activations of `dtype`."""
    return dtype in DTYPES and scores_available(dtype.name)


def attention_scores(q: tf.Tensor, k: tf.Tensor, scale: float, mask_adder: tf.Tensor
                     ) -> tf.Tensor:
    """q @ k^T * scale + mask_adder for the heads q [B, N, R, D], k [B, N, T, D] and
    mask_adder [B, 1, 1, T] (float32): one oneDNN batched matmul that applies the scale and
    the mask to its float32 accumulator, in q's dtype (check `scores_usable` first). The scale
    and mask are rounded to the dtype (the scale exactly for head sizes 4^k). The op has no
    registered gradient; the plain matmuls' is given (so a traced step stays differentiable)."""
    dtype = q.dtype
    scale = tf.constant(scale, dtype)

    @tf.custom_gradient
    def fused(q, k, mask):
        def grad(dy):
            return (tf.matmul(dy, k) * scale, tf.matmul(dy, q, transpose_a=True) * scale, None)

        # stop_gradient: the op has none; `grad` gives it (a tape would look for the op's own)
        return _scores_op(tf.stop_gradient(q), tf.stop_gradient(k), scale,
                          tf.stop_gradient(mask)), grad

    return fused(q, k, tf.cast(mask_adder, dtype))
