"""Training's element-wise chains as one XLA kernel each, forward and backward.

Between its GEMMs, a training step of the encoder runs chains of element-wise TensorFlow ops
over the largest activations: the GELU ([B*T, I]; ~7 ops forward, ~12 backward), the
attention's scale + mask + softmax + dropout ([B, N, T, T]) and each layer's dropout +
residual + LayerNorm ([B*T, H]). TensorFlow runs each op as a pass over memory of its own; XLA
fuses a chain into one loop. On AVX2-only CPUs (measured for BERT-Mini's and MiniLM-L6's shapes)
the GELU's forward + backward took 21 -> 8 ms and a LayerNorm's 7 -> 5 ms.

Each function here is a `tf.custom_gradient` whose forward and backward are
`tf.function(jit_compile=True)`s, computing the same formulas as the plain ops of
bert_finetune.modeling (equal within float32 rounding: XLA's tanh and exp are not TensorFlow's
to the last bit). Dropout is tf.nn.dropout's: the same random op (`tf.random.uniform`), units
kept where the draw is >= rate and scaled by 1 / (1 - rate). Run eagerly under a seed, both
drop the same units; in a traced step TensorFlow derives each random op's seed from its place
in the graph, so a seeded run is repeatable but drops other units than the plain ops would.

In bfloat16 (mixed precision: float32 variables, bfloat16 activations) each kernel reads and
writes the activations in bfloat16 and computes in float32 inside, as the plain path's softmax
and LayerNorm do (its GELU, dropout and residual add run in bfloat16); what the backward pass
keeps of LayerNorm and softmax stays float32. TensorFlow's bfloat16 element-wise ops convert
every element on its own, so the fused kernels save more there than in float32.

Only in a step traced with XLA kernels on (bert_finetune.xla_kernels): training in float32 or
bfloat16 on CPU without --use_xla, and the runner's inference step on CPU when it is not compiled
whole; elsewhere (exported models, Keras) the model runs the plain ops. Other dtypes (float16)
always run the plain ops.
"""

from __future__ import annotations

import tensorflow as tf

from bert_finetune import xla_kernels

DTYPES = (tf.float32, tf.bfloat16)


def active(x: tf.Tensor) -> bool:
    """Whether the encoder should use the fused kernels for activations like `x` here: with
    XLA kernels on (bert_finetune.xla_kernels), in float32 or bfloat16."""
    return xla_kernels.is_on() and x.dtype in DTYPES


def _f32(x: tf.Tensor) -> tf.Tensor:
    """x in float32 (no op for float32)."""
    return tf.cast(x, tf.float32)


def _rows(t: tf.Tensor) -> list[int]:
    """The axes of t but the last (a reduction over rows)."""
    return list(range(len(t.shape) - 1))


def _keep_scale(rate: float) -> float:
    """The factor tf.nn.dropout scales kept units by (1 / keep_prob, in float32)."""
    return 1.0 / (1.0 - rate)


def _dropout_randoms(x: tf.Tensor, dtype: tf.DType | None = None) -> tf.Tensor:
    """Uniform [0, 1) draws of x's shape, by the op tf.nn.dropout uses, in the dtype the plain
    path drops in (x's by default)."""
    return tf.random.uniform(tf.shape(x), dtype=dtype or x.dtype)


# -- GELU (the original's tanh approximation) ------------------------------------------------
# The original's constants, shared with modeling.gelu.
GELU_C = 0.7978845608028654  # sqrt(2 / pi)
GELU_A = 0.044715  # the cubic term of the tanh approximation


def gelu_derivative(x: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    """d GELU / dx at x, given t = tanh(GELU_C (x + GELU_A x^3))."""
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)


def _gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    return tf.tanh(GELU_C * (x + GELU_A * (x * x * x)))


def _gelu_f32(x32: tf.Tensor) -> tf.Tensor:
    """The original's GELU of float32 x32."""
    return x32 * (0.5 * (1.0 + _gelu_tanh(x32)))


@tf.function(jit_compile=True)
def _gelu_forward(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(_gelu_f32(_f32(x)), x.dtype)


@tf.function(jit_compile=True)
def _gelu_backward(dy: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    x32 = _f32(x)
    return tf.cast(_f32(dy) * gelu_derivative(x32, _gelu_tanh(x32)), x.dtype)


@tf.custom_gradient
def gelu(x: tf.Tensor):
    """The original's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Keeps only x for
    the backward pass, which computes the tanh again: one [B*T, I] tensor less in memory and
    two passes less over it than keeping the tanh (as modeling.gelu does)."""
    return _gelu_forward(x), lambda dy: _gelu_backward(dy, x)


# -- LayerNorm, optionally after dropout + residual ------------------------------------------
def _normalize(z: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float):
    """LayerNorm of float32 z: (y, xhat, rstd), all float32."""
    mean = tf.reduce_mean(z, axis=-1, keepdims=True)
    centered = z - mean
    rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True) + epsilon)
    xhat = centered * rstd
    return xhat * gamma + beta, xhat, rstd


def _normalize_backward(dy: tf.Tensor, xhat: tf.Tensor, rstd: tf.Tensor, gamma: tf.Tensor):
    dgamma = tf.reduce_sum(dy * xhat, axis=_rows(dy))
    dbeta = tf.reduce_sum(dy, axis=_rows(dy))
    dxhat = dy * gamma
    dz = rstd * (dxhat - tf.reduce_mean(dxhat, axis=-1, keepdims=True)
                 - xhat * tf.reduce_mean(dxhat * xhat, axis=-1, keepdims=True))
    return dz, dgamma, dbeta


@tf.function(jit_compile=True)
def _layer_norm_forward(x, gamma, beta, epsilon):
    y, xhat, rstd = _normalize(_f32(x), gamma, beta, epsilon)
    return tf.cast(y, x.dtype), xhat, rstd


@tf.function(jit_compile=True)
def _layer_norm_backward(dy, xhat, rstd, gamma):
    dz, dgamma, dbeta = _normalize_backward(_f32(dy), xhat, rstd, gamma)
    return tf.cast(dz, dy.dtype), dgamma, dbeta


@tf.function(jit_compile=True)
def _add_norm_inference(x, residual, gamma, beta, epsilon, bias=None):
    """LayerNorm(x [+ bias] + residual) (residual None: of x [+ bias]), the sum in float32;
    keeps nothing for a backward pass."""
    z = _f32(x) if bias is None else _f32(x) + bias
    z = z if residual is None else z + _f32(residual)
    return tf.cast(_normalize(z, gamma, beta, epsilon)[0], x.dtype)


def layer_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
    """LayerNorm over the last axis (as modeling.layer_norm: computed in float32, returned in
    x's dtype; gamma and beta float32)."""
    if xla_kernels.forward_only():  # tensors, not variables: a function keyed on a (mirrored)
        # variable would keep the first model's weights
        return _add_norm_inference(x, None, tf.convert_to_tensor(gamma),
                                   tf.convert_to_tensor(beta), epsilon)

    @tf.custom_gradient
    def fused(x, gamma, beta):
        y, xhat, rstd = _layer_norm_forward(x, gamma, beta, epsilon)
        return y, lambda dy: _layer_norm_backward(dy, xhat, rstd, gamma)

    return fused(x, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta))


@tf.function(jit_compile=True)
def _dropout_add_norm_forward(x, randoms, residual, gamma, beta, rate, epsilon, bias=None):
    """LayerNorm(dropout(x [+ bias]) + residual), the bias (float32) added in float32."""
    keep = randoms >= rate
    x32 = _f32(x) if bias is None else _f32(x) + bias
    z = tf.where(keep, x32 * _keep_scale(rate), tf.zeros_like(x32)) + _f32(residual)
    y, xhat, rstd = _normalize(z, gamma, beta, epsilon)
    return tf.cast(y, x.dtype), xhat, rstd, keep


@tf.function(jit_compile=True)
def _dropout_add_norm_backward(dy, xhat, rstd, gamma, keep, rate, bias_gradient=False):
    """(dx, dresidual, dgamma, dbeta[, dbias in float32 with bias_gradient])."""
    dz, dgamma, dbeta = _normalize_backward(_f32(dy), xhat, rstd, gamma)
    dx = tf.where(keep, dz * _keep_scale(rate), tf.zeros_like(dz))
    grads = (tf.cast(dx, dy.dtype), tf.cast(dz, dy.dtype), dgamma, dbeta)
    return grads + (tf.reduce_sum(dx, axis=_rows(dx)),) if bias_gradient else grads


def dropout_add_layer_norm(x: tf.Tensor, residual: tf.Tensor, gamma: tf.Tensor,
                           beta: tf.Tensor, rate: float, epsilon: float) -> tf.Tensor:
    """LayerNorm(dropout(x, rate) + residual): a layer's output; rate 0 for no dropout."""
    if rate <= 0.0 and xla_kernels.forward_only():
        return _add_norm_inference(x, residual, tf.convert_to_tensor(gamma),
                                   tf.convert_to_tensor(beta), epsilon)
    if rate <= 0.0:
        return layer_norm(x + residual, gamma, beta, epsilon)

    @tf.custom_gradient
    def fused(x, residual, gamma, beta):
        y, xhat, rstd, keep = _dropout_add_norm_forward(x, _dropout_randoms(x), residual, gamma,
                                                        beta, rate, epsilon)
        return y, lambda dy: _dropout_add_norm_backward(dy, xhat, rstd, gamma, keep, rate)

    return fused(x, residual, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta))


# -- The attention's probabilities -----------------------------------------------------------
def _probabilities(scores, mask_adder, scale):
    """softmax(scores * scale + mask_adder) in float32 (inside a kernel)."""
    return tf.nn.softmax(_f32(scores) * scale + mask_adder, axis=-1)


@tf.function(jit_compile=True)
def _softmax(scores, mask_adder, scale):
    return _probabilities(scores, mask_adder, scale)  # float32


@tf.function(jit_compile=True)
def _softmax_inference(scores, mask_adder, scale):
    """The probabilities in the scores' dtype (computed in float32), nothing kept."""
    return tf.cast(_probabilities(scores, mask_adder, scale), scores.dtype)


@tf.function(jit_compile=True)
def _softmax_backward(dprobs, probs, scale):
    dprobs = _f32(dprobs)
    return probs * (dprobs - tf.reduce_sum(dprobs * probs, axis=-1, keepdims=True)) * scale


@tf.function(jit_compile=True)
def _softmax_dropout(scores, mask_adder, scale, randoms, rate):
    probs = _probabilities(scores, mask_adder, scale)  # float32
    out = tf.where(randoms >= rate, probs * _keep_scale(rate), tf.zeros_like(probs))
    return tf.cast(out, scores.dtype), probs


@tf.function(jit_compile=True)
def _softmax_dropout_backward(dy, out, probs, scale):
    # out = keep * probs / keep_prob, so with dprobs = keep * dy / keep_prob the softmax
    # gradient probs * (dprobs - sum(dprobs * probs)) is out * dy - probs * sum(out * dy):
    # no keep mask to save (out is kept anyway, as the input of the probs.V matmul).
    weighted = _f32(out) * _f32(dy)
    return tf.cast((weighted - probs * tf.reduce_sum(weighted, axis=-1, keepdims=True)) * scale,
                   dy.dtype)


def attention_probs(scores: tf.Tensor, mask_adder: tf.Tensor, scale: float,
                    rate: float) -> tf.Tensor:
    """dropout(softmax(scores * scale + mask_adder), rate) for Q.K^T scores [B, N, R, T] (the
    batched matmul's output) and mask_adder [B, 1, 1, T] (float32); rate 0 for no dropout. In
    the scores' dtype, computed in float32. (Forward-only on oneDNN the encoder uses
    bert_finetune.fused_matmul.attention_scores and oneDNN's softmax instead.)"""
    if rate <= 0.0 and xla_kernels.forward_only():
        return _softmax_inference(scores, mask_adder, scale)
    if rate <= 0.0:
        @tf.custom_gradient
        def fused(scores, mask_adder):
            probs = _softmax(scores, mask_adder, scale)
            return tf.cast(probs, scores.dtype), lambda dy: (
                tf.cast(_softmax_backward(dy, probs, scale), scores.dtype), None)
    else:
        @tf.custom_gradient
        def fused(scores, mask_adder):
            # The plain path drops the float32 probabilities: float32 draws here too.
            out, probs = _softmax_dropout(scores, mask_adder, scale,
                                          _dropout_randoms(scores, tf.float32), rate)
            return out, lambda dy: (_softmax_dropout_backward(dy, out, probs, scale), None)

    return fused(scores, mask_adder)


# -- Dense layers whose bias the next kernel adds (bfloat16) ----------------------------------
# TensorFlow fuses MatMul + bias into one oneDNN op, and for bfloat16 weights that are not
# constants oneDNN runs it as its generic `gemm:jit` inner product instead of its AMX / AVX512
# matmul kernel (`brg_matmul`): on an AMX Xeon, [2048, 768] x [768, 3072] took 1.2-1.4x as long
# alone and ~2x as long within BERT-Base's inference step (ONEDNN_VERBOSE). A bare MatMul keeps
# the fast kernel, and the bias goes into the element-wise kernel that follows: the heads'
# transpose (Q, K, V), the GELU, or the dropout + residual add + LayerNorm; in training their
# backward kernels also sum the bias gradient (no separate pass over dy). float32 is left as it
# is (its inner product is as fast as its matmul, measured). Biases are float32 (the variables)
# and added in float32.
# What the run logs add when it applies.
BIAS_DEFERRED_LOG = ("the dense layers as bare oneDNN matmuls, their biases added in those "
                     "kernels (bert_finetune.fused.bias_deferred)")


def bias_deferred(x: tf.Tensor) -> bool:
    """Whether a dense layer on x should run as a bare MatMul whose bias the next kernel adds:
    with XLA kernels on (training or inference), on bfloat16 activations."""
    return active(x) and x.dtype == tf.bfloat16


@tf.function(jit_compile=True)
def _bias_heads(y, bias):
    return tf.transpose(tf.cast(_f32(y) + bias, y.dtype), [0, 2, 1, 3])


@tf.function(jit_compile=True)
def _bias_heads_backward(dz):
    dy = tf.transpose(dz, [0, 2, 1, 3])
    return dy, tf.reduce_sum(_f32(dy), axis=[0, 1])


def bias_heads(y: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """transpose(y + bias, [0, 2, 1, 3]): a projection [B, T, N, D] (without its bias) to the
    heads' layout [B, N, T, D]; bias [N, D] float32, added in float32."""
    if xla_kernels.forward_only():
        return _bias_heads(y, bias)

    @tf.custom_gradient
    def fused(y, bias):
        return _bias_heads(y, bias), _bias_heads_backward

    return fused(y, bias)


@tf.function(jit_compile=True)
def _bias_gelu(y, bias, exact):
    x = _f32(y) + bias
    if exact:
        return tf.cast(0.5 * x * (1.0 + tf.math.erf(x * (2.0 ** -0.5))), y.dtype)
    return tf.cast(_gelu_f32(x), y.dtype)


@tf.function(jit_compile=True)
def _bias_gelu_forward(y, bias):
    x = tf.cast(_f32(y) + bias, y.dtype)  # kept for the backward pass, as the plain path keeps
    return _gelu_forward(x), x


@tf.function(jit_compile=True)
def _bias_gelu_backward(dout, x):
    x32 = _f32(x)
    dx = _f32(dout) * gelu_derivative(x32, _gelu_tanh(x32))
    return tf.cast(dx, x.dtype), tf.reduce_sum(dx, axis=_rows(dx))


def bias_gelu(y: tf.Tensor, bias: tf.Tensor, exact: bool) -> tf.Tensor:
    """GELU(y + bias) (the original's tanh form, or the erf form with `exact`: forward-only),
    computed in float32 and returned in y's dtype; bias float32."""
    if xla_kernels.forward_only():
        return _bias_gelu(y, bias, bool(exact))
    if exact:
        raise ValueError("bias_gelu: the erf form has no training kernel")

    @tf.custom_gradient
    def fused(y, bias):
        out, x = _bias_gelu_forward(y, bias)
        return out, lambda dout: _bias_gelu_backward(dout, x)

    return fused(y, bias)


def bias_add_layer_norm(y: tf.Tensor, bias: tf.Tensor, residual: tf.Tensor, gamma: tf.Tensor,
                        beta: tf.Tensor, rate: float, epsilon: float) -> tf.Tensor:
    """LayerNorm(dropout(y + bias, rate) + residual), the sum in float32; bias float32; rate 0
    for no dropout."""
    gamma, beta = tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta)
    if rate <= 0.0 and xla_kernels.forward_only():
        return _add_norm_inference(y, residual, gamma, beta, epsilon, bias)

    @tf.custom_gradient
    def fused(y, bias, residual, gamma, beta):
        # without dropout, a single "draw" that keeps every unit
        randoms = _dropout_randoms(y) if rate > 0.0 else tf.ones([1] * len(y.shape), y.dtype)
        out, xhat, rstd, keep = _dropout_add_norm_forward(y, randoms, residual, gamma, beta,
                                                          rate, epsilon, bias)

        def grad(dout):
            dx, dresidual, dgamma, dbeta, dbias = _dropout_add_norm_backward(
                dout, xhat, rstd, gamma, keep, rate, bias_gradient=True)
            return dx, dbias, dresidual, dgamma, dbeta

        return out, grad

    return fused(y, bias, residual, gamma, beta)
