"""The element-wise chains of training and inference as XLA kernels (bert_finetune.fused).

Tolerance (fp32): XLA's tanh, exp and reductions are not TensorFlow's to the last bit, so values
equal the plain ops' within rtol 1e-5 / atol 1e-6 and gradients within rtol 1e-5 / atol 1e-5 (a
few float32 ulps of O(1) numbers: the GELU's derivative, LayerNorm's sums over every row).
Dropout is compared eagerly, where a seed makes TensorFlow's random op draw the same numbers for
both. bfloat16: see BF16_CLOSE.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG
from test_runner import (  # noqa: F401
    BATCH,
    FEATURES,
    _model,
    assert_same_training,
    init_checkpoint,
    train_off_and_on,
)

from bert_finetune import fused, fused_matmul, modeling, onednn, weight_gradients, xla_kernels
from bert_finetune.classify import ClassifierModel
from bert_finetune.runner import loops

RNG = np.random.default_rng(11)
CLOSE = dict(rtol=1e-5, atol=1e-6)


def _tensor(*shape, scale=1.0):
    return tf.constant(RNG.standard_normal(shape) * scale, tf.float32)


def _value_and_grads(fn, inputs, upstream, seed=None):
    """fn(*inputs) and d(sum(fn * upstream))/d inputs, eagerly (seeded when given)."""
    if seed is not None:
        tf.random.set_seed(seed)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = fn(*inputs)
        loss = tf.reduce_sum(y * upstream)
    return y, tape.gradient(loss, inputs)


def _assert_same(got, want, names, **tolerance):
    (y_got, g_got), (y_want, g_want) = got, want
    np.testing.assert_allclose(y_got.numpy(), y_want.numpy(), err_msg="value", **CLOSE)
    for name, a, b in zip(names, g_got, g_want, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), err_msg=name, **(tolerance or CLOSE))


def test_gelu_equals_the_original_formula():
    x = _tensor(64, 37, scale=3.0)
    dy = _tensor(64, 37)
    got = _value_and_grads(fused.gelu, [x], dy)
    for plain in (modeling.gelu_reference, modeling.gelu):  # autodiff; the derivative written out
        _assert_same(got, _value_and_grads(plain, [x], dy), ["x"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(48, 24), (4, 12, 24)])  # a layer's [B*T, H]; embeddings
def test_layer_norm_equals_the_plain_one(shape):
    x, dy = _tensor(*shape, scale=2.0), _tensor(*shape)
    gamma, beta = _tensor(shape[-1], scale=0.5) + 1.0, _tensor(shape[-1])

    def fused_ln(x, g, b):
        return fused.layer_norm(x, g, b, modeling.LAYER_NORM_EPSILON)

    _assert_same(_value_and_grads(fused_ln, [x, gamma, beta], dy),
                 _value_and_grads(modeling.layer_norm, [x, gamma, beta], dy),
                 ["x", "gamma", "beta"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5])
def test_dropout_add_layer_norm_equals_the_plain_ops(rate):
    x, residual, dy = _tensor(96, 16), _tensor(96, 16), _tensor(96, 16)
    gamma, beta = _tensor(16, scale=0.5) + 1.0, _tensor(16)

    def fused_op(x, r, g, b):
        return fused.dropout_add_layer_norm(x, r, g, b, rate, modeling.LAYER_NORM_EPSILON)

    def plain(x, r, g, b):
        dropped = tf.nn.dropout(x, rate=rate) if rate else x
        return modeling.layer_norm(dropped + r, g, b)

    got = _value_and_grads(fused_op, [x, residual, gamma, beta], dy, seed=5)
    want = _value_and_grads(plain, [x, residual, gamma, beta], dy, seed=5)
    _assert_same(got, want, ["x", "residual", "gamma", "beta"], rtol=1e-5, atol=1e-5)
    dropped = float(tf.reduce_mean(tf.cast(tf.equal(got[1][0], 0.0), tf.float32)))
    assert abs(dropped - rate) < 0.08  # the x gradient is 0 exactly where x was dropped


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_attention_probs_equal_the_plain_ops(rate):
    batch, heads, seq, size = 3, 2, 10, 8
    scores, dy = _tensor(batch, heads, seq, seq, scale=4.0), _tensor(batch, heads, seq, seq)
    lengths = np.array([10, 6, 1])
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.float32)
    mask_adder = tf.constant((1.0 - mask)[:, None, None, :] * modeling.ATTENTION_MASK_ADDER)
    scale = 1.0 / math.sqrt(size)

    def fused_op(s):
        return fused.attention_probs(s, mask_adder, scale, rate)

    def plain(s):  # as BertModel._attention without the fused kernels
        probs = tf.nn.softmax(s * tf.cast(scale, tf.float32) + mask_adder, axis=-1)
        return modeling.dropout(probs, rate, True)

    got = _value_and_grads(fused_op, [scores], dy, seed=9)
    want = _value_and_grads(plain, [scores], dy, seed=9)
    _assert_same(got, want, ["scores"])
    assert not got[0].numpy()[2, :, :, 1:].any()  # padding gets no attention


# -- bfloat16: activations in and out in bfloat16, computed in float32 inside ------------------
# Tolerance (bfloat16): within 1e-2 of the reference's largest magnitude (bfloat16 keeps 8
# significant bits: 2^-8 = 0.4% a rounding), against the float32 ops on the same (bfloat16)
# values, or, where dropout draws in bfloat16, against the plain bfloat16 ops under the seed.
BF16_CLOSE = 1e-2


def _assert_bf16_close(got, want, names, dtypes):
    for name, a, b, dtype in zip(names, got, want, dtypes, strict=True):
        assert a.dtype == dtype, (name, a.dtype)
        a, b = (tf.cast(t, tf.float32).numpy() for t in (a, b))
        np.testing.assert_allclose(a, b, rtol=0, atol=BF16_CLOSE * np.abs(b).max(), err_msg=name)


def _bf16_value_and_grads(fn, inputs, upstream, activations, seed=None):
    """_value_and_grads with the inputs numbered in `activations` in bfloat16 (the others, as
    gamma and beta, float32), and the same values in float32 for a reference."""
    bf16 = [tf.cast(x, tf.bfloat16) if i in activations else x for i, x in enumerate(inputs)]
    f32 = [tf.cast(x, tf.float32) for x in bf16]

    def run(args):
        y, grads = _value_and_grads(lambda *a: tf.cast(fn(*a), tf.float32), args, upstream, seed)
        return [y, *grads]

    return run, bf16, f32


def test_bf16_gelu_is_the_float32_formula_rounded_once():
    x, dy = _tensor(64, 37, scale=3.0), _tensor(64, 37)
    _, bf16, f32 = _bf16_value_and_grads(None, [x], dy, {0})
    got = _value_and_grads(fused.gelu, bf16, tf.cast(dy, tf.bfloat16))
    want = _value_and_grads(modeling.gelu, f32, dy)
    _assert_bf16_close([got[0], *got[1]], [want[0], *want[1]], ["value", "x"],
                       [tf.bfloat16, tf.bfloat16])
    # The plain bfloat16 ops round after every step: the fused kernel's gradient is closer.
    plain = _value_and_grads(modeling.gelu, bf16, tf.cast(dy, tf.bfloat16))
    errors = [np.abs(tf.cast(g[1][0], tf.float32).numpy() - want[1][0].numpy()).max()
              for g in (got, plain)]
    assert errors[0] < errors[1], errors


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_bf16_layer_norms(rate):
    x, residual, dy = _tensor(96, 16, scale=2.0), _tensor(96, 16), _tensor(96, 16)
    gamma, beta = _tensor(16, scale=0.5) + 1.0, _tensor(16)

    def fused_op(x, r, g, b):
        return fused.dropout_add_layer_norm(x, r, g, b, rate, modeling.LAYER_NORM_EPSILON)

    def plain(x, r, g, b):
        return modeling.layer_norm(modeling.dropout(x, rate, True) + r, g, b)

    run, bf16, f32 = _bf16_value_and_grads(fused_op, [x, residual, gamma, beta], dy, {0, 1},
                                           seed=5)
    got = run(bf16)
    # Dropout draws in the activations' dtype (as tf.nn.dropout): the reference with the same
    # draws is the plain bfloat16 path; without dropout, float32 on the same values.
    want = _bf16_value_and_grads(plain, [x, residual, gamma, beta], dy, {0, 1}, seed=5)[0](
        bf16 if rate else f32)
    dtypes = [tf.float32, tf.bfloat16, tf.bfloat16, tf.float32, tf.float32]
    _assert_bf16_close(got, want, ["value", "x", "residual", "gamma", "beta"], dtypes)

    def fused_ln(x, g, b):
        return fused.layer_norm(x, g, b, modeling.LAYER_NORM_EPSILON)

    run, bf16, f32 = _bf16_value_and_grads(fused_ln, [x, gamma, beta], dy, {0})
    want = _bf16_value_and_grads(modeling.layer_norm, [x, gamma, beta], dy, {0})[0](f32)
    _assert_bf16_close(run(bf16), want, ["value", "x", "gamma", "beta"],
                       [tf.float32, tf.bfloat16, tf.float32, tf.float32])
    assert fused_ln(bf16[0], gamma, beta).dtype == tf.bfloat16


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_bf16_attention_probs(rate):
    scores, dy = _tensor(3, 2, 10, 10, scale=4.0), _tensor(3, 2, 10, 10)
    mask = (np.arange(10)[None, :] < np.array([10, 6, 1])[:, None]).astype(np.float32)
    mask_adder = tf.constant((1.0 - mask)[:, None, None, :] * modeling.ATTENTION_MASK_ADDER)

    def fused_op(s):
        return fused.attention_probs(s, mask_adder, 0.35, rate)

    def plain(s):  # BertModel._attention's plain ops: softmax and dropout in float32
        probs = tf.nn.softmax(tf.cast(s, tf.float32) * 0.35 + mask_adder, axis=-1)
        return modeling.dropout(probs, rate, True)

    run, bf16, f32 = _bf16_value_and_grads(fused_op, [scores], dy, {0}, seed=9)
    assert fused_op(bf16[0]).dtype == tf.bfloat16
    # The plain path drops the float32 probabilities: the fused kernel draws in float32 too.
    want = _bf16_value_and_grads(plain, [scores], dy, {0}, seed=9)[0](f32)
    _assert_bf16_close(run(bf16), want, ["value", "scores"], [tf.float32, tf.bfloat16])


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_forward_only_attention_probs(dtype):
    """Forward-only (inference) probabilities as the XLA kernel: the float32 formula on the same
    values (float32 1e-5; bfloat16 within 1e-2 of the largest), in the scores' dtype; all rows
    or one query row; padding gets none. (On oneDNN the encoder's inference uses
    fused_matmul.attention_scores instead: tests/test_fused_matmul.py.)"""
    mask = (np.arange(10)[None, :] < np.array([10, 6, 1])[:, None]).astype(np.float32)
    mask_adder = tf.constant((1.0 - mask)[:, None, None, :] * modeling.ATTENTION_MASK_ADDER)
    q, k = (tf.cast(_tensor(3, 2, 10, 8), dtype) for _ in "qk")
    scale = 1.0 / math.sqrt(8)

    @tf.function
    def probs(q, k):
        with xla_kernels.enabled(True, weight_gradients=False, forward_only=True):
            return fused.attention_probs(tf.matmul(q, k, transpose_b=True), mask_adder, scale,
                                         0.0)

    for rows in (10, 1):
        got = probs(q[:, :, :rows], k)
        names = [f.signature.name for f in
                 probs.get_concrete_function(q[:, :, :rows], k).graph.as_graph_def()
                 .library.function]
        assert any("softmax_inference" in n for n in names), names
        assert got.dtype == dtype
        scores = tf.matmul(tf.cast(q[:, :, :rows], tf.float32), tf.cast(k, tf.float32),
                           transpose_b=True)
        want = tf.nn.softmax(scores * scale + mask_adder, axis=-1).numpy()
        got = tf.cast(got, tf.float32).numpy()
        if dtype == tf.float32:
            np.testing.assert_allclose(got, want, **CLOSE)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=BF16_CLOSE)
        assert not got[2, :, :, 1:].any()  # padding gets no attention


def _compiled_in(fn, *args) -> list[str]:
    graph = tf.function(fn).get_concrete_function(*args).graph
    return [f.signature.name for f in graph.as_graph_def().library.function
            if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]


def _encoder_loss(model, ids, mask):
    def loss():
        with tf.GradientTape() as tape:
            out = model(ids, mask, training=True)["sequence_output"]
            value = tf.reduce_sum(tf.square(out))
        return tape.gradient(value, list(model.variables_by_name().values()))
    return loss


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_the_bias_kernels_equal_the_plain_ops(dtype):
    """The forward-only kernels that add a dense layer's bias (bfloat16 inference): the heads'
    transpose, both GELUs and the residual add + LayerNorm equal the float32 formulas on the
    same (rounded) values, returned in y's dtype."""
    y = tf.cast(_tensor(4, 6, 3, 5, scale=2.0), dtype)  # [B, T, N, D]
    bias = _tensor(3, 5)
    y2d, bias2d = tf.cast(_tensor(24, 15, scale=2.0), dtype), _tensor(15)
    z = tf.cast(y2d, tf.float32) + bias2d
    residual = tf.cast(_tensor(24, 15), dtype)
    gamma, beta = _tensor(15, scale=0.5) + 1.0, _tensor(15)
    with xla_kernels.enabled(True, weight_gradients=False, forward_only=True):
        got = [fused.bias_heads(y, bias), fused.bias_gelu(y2d, bias2d, exact=False),
               fused.bias_gelu(y2d, bias2d, exact=True),
               fused.bias_add_layer_norm(y2d, bias2d, residual, gamma, beta, 0.0,
                                         modeling.LAYER_NORM_EPSILON)]
    want = [tf.transpose(tf.cast(y, tf.float32) + bias, [0, 2, 1, 3]),
            modeling.gelu_reference(z), modeling.gelu_exact(z),
            modeling.layer_norm(z + tf.cast(residual, tf.float32), gamma, beta)]
    pairs = list(zip(got, want, strict=True))
    names = ["heads", "gelu", "gelu_exact", "add_layer_norm"]
    if dtype == tf.float32:
        for name, (a, b) in zip(names, pairs, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), err_msg=name, rtol=1e-5, atol=1e-5)
    else:
        _assert_bf16_close([a for a, _ in pairs], [b for _, b in pairs], names, [dtype] * 4)


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_the_bias_kernels_train_as_the_plain_ops(rate):
    """Their training forms (custom gradients): values and the gradients of y, the bias and the
    other inputs equal the plain ops' on y + bias (float32; dropout under the same seed)."""
    y4, dz4, bias4 = _tensor(4, 6, 3, 5), _tensor(4, 3, 6, 5), _tensor(3, 5)
    _assert_same(_value_and_grads(fused.bias_heads, [y4, bias4], dz4),
                 _value_and_grads(lambda y, b: tf.transpose(y + b, [0, 2, 1, 3]), [y4, bias4],
                                  dz4), ["y", "bias"])
    y, dy, bias = _tensor(24, 15, scale=2.0), _tensor(24, 15), _tensor(15)
    _assert_same(_value_and_grads(lambda y, b: fused.bias_gelu(y, b, exact=False), [y, bias], dy),
                 _value_and_grads(lambda y, b: modeling.gelu_reference(y + b), [y, bias], dy),
                 ["y", "bias"], rtol=1e-5, atol=1e-5)
    residual, gamma, beta = _tensor(24, 15), _tensor(15, scale=0.5) + 1.0, _tensor(15)

    def fused_op(y, b, r, g, be):
        return fused.bias_add_layer_norm(y, b, r, g, be, rate, modeling.LAYER_NORM_EPSILON)

    def plain(y, b, r, g, be):
        x = y + b
        return modeling.layer_norm((tf.nn.dropout(x, rate=rate) if rate else x) + r, g, be)

    inputs = [y, bias, residual, gamma, beta]
    _assert_same(_value_and_grads(fused_op, inputs, dy, seed=3),
                 _value_and_grads(plain, inputs, dy, seed=3),
                 ["y", "bias", "residual", "gamma", "beta"], rtol=1e-5, atol=1e-5)


def test_the_encoder_uses_them_only_when_enabled_in_float32_and_bfloat16():
    config = modeling.BertConfig(**TINY_CONFIG)
    ids = tf.constant(RNG.integers(1, config.vocab_size, [2, 7]), tf.int32)
    mask = tf.ones_like(ids)
    model = modeling.BertModel(config)
    assert not _compiled_in(_encoder_loss(model, ids, mask))
    with xla_kernels.enabled(True):
        kernels = ("gelu_forward", "gelu_backward", "layer_norm_forward",
                   "dropout_add_norm_forward", "dropout_add_norm_backward", "softmax_dropout",
                   "softmax_dropout_backward")
        for dtype in (tf.float32, tf.bfloat16):
            model = modeling.BertModel(config, compute_dtype=dtype)
            names = _compiled_in(_encoder_loss(model, ids, mask))
            for kernel in kernels:
                assert any(kernel in n for n in names), (dtype, kernel, names)
            # bfloat16: the dense layers' biases added by the kernels, gradients included
            for kernel in ("bias_heads_backward", "bias_gelu_backward"):
                assert any(kernel in n for n in names) == (dtype == tf.bfloat16), (dtype, names)
        fp16 = modeling.BertModel(config, compute_dtype=tf.float16)
        assert not _compiled_in(_encoder_loss(fp16, ids, mask))
    assert not xla_kernels.is_on()


def test_the_encoder_with_them_equals_the_plain_one_eagerly():
    """The whole encoder with dropout, eagerly under one seed: same outputs and gradients."""
    config = modeling.BertConfig(**TINY_CONFIG)
    ids = tf.constant(RNG.integers(1, config.vocab_size, [3, 9]), tf.int32)
    mask = tf.constant((np.arange(9)[None, :] < np.array([[9], [5], [2]])).astype(np.int32))
    tf.random.set_seed(3)
    model = ClassifierModel(config, num_labels=2, is_regression=False)

    def run(on: bool):
        tf.random.set_seed(21)
        with xla_kernels.enabled(on), tf.GradientTape() as tape:
            out = model.bert(ids, mask, training=True)
            loss = tf.reduce_sum(out["sequence_output"] * 0.1) + tf.reduce_sum(
                out["pooled_output"])
        variables = list(model.bert.variables_by_name().values())
        return [out["sequence_output"]] + tape.gradient(loss, variables)

    for got, want in zip(run(True), run(False), strict=True):
        np.testing.assert_allclose(tf.convert_to_tensor(got).numpy(),
                                   tf.convert_to_tensor(want).numpy(), rtol=1e-4, atol=1e-5)


def test_the_bf16_encoder_with_them_is_close_to_the_plain_one_eagerly():
    """In bfloat16 with dropout, eagerly under one seed: the same units dropped; the outputs
    and every gradient within 5e-2 of its largest magnitude (bfloat16 rounding through 5
    layers, forward and back: the plain ops round after every op, the kernels once; measured
    at most 2.4e-2, and 0.5-0.9 with other dropout masks). The attention's key bias is left
    out: its gradient is 0 but for rounding (the softmax does not change when a row shifts)."""
    config = modeling.BertConfig(**TINY_CONFIG)
    ids = tf.constant(RNG.integers(1, config.vocab_size, [3, 9]), tf.int32)
    mask = tf.constant((np.arange(9)[None, :] < np.array([[9], [5], [2]])).astype(np.int32))
    weights = tf.constant(RNG.standard_normal([3, 9, config.hidden_size]), tf.float32)
    model = modeling.BertModel(config, compute_dtype=tf.bfloat16)
    names = [n for n in model.variables_by_name()
             if not n.endswith("attention/self/key/bias") and "/pooler/" not in n]

    def run(on: bool):
        tf.random.set_seed(21)
        with xla_kernels.enabled(on), tf.GradientTape() as tape:
            out = model(ids, mask, training=True)
            loss = tf.reduce_sum(tf.cast(out["sequence_output"], tf.float32) * weights)
        variables = model.variables_by_name()
        return [out["sequence_output"]] + tape.gradient(loss, [variables[n] for n in names])

    for name, got, want in zip(["sequence_output", *names], run(True), run(False), strict=True):
        got, want = (tf.cast(tf.convert_to_tensor(t), tf.float32).numpy() for t in (got, want))
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-2 * np.abs(want).max(),
                                   err_msg=name)


def test_trainer_with_xla_kernels_equals_plain(tmp_path, init_checkpoint,  # noqa: F811
                                               monkeypatch):
    """Four real training steps of the tiny classifier (dropout 0): same losses and variables."""
    monkeypatch.setattr(weight_gradients, "xla_is_faster", lambda *shape: False)  # fused alone
    runs = train_off_and_on(tmp_path, init_checkpoint, "xla_kernels")
    for on, (_, compiled) in runs.items():
        assert bool([n for n in compiled if "layer_norm_forward" in n]) == on, compiled
    assert_same_training(runs, 1e-5, rtol=1e-4, atol=1e-6)


def _varying_lengths(ctx: tf.distribute.InputContext, skip_batches: int) -> tf.data.Dataset:
    """Batches of 12 and 7 tokens in turn, of unknown static length (as length buckets give)."""
    d = tf.data.Dataset.from_tensor_slices(FEATURES).repeat()
    d = d.batch(ctx.get_per_replica_batch_size(BATCH), drop_remainder=True).enumerate()

    def trim(i, batch):
        length = tf.where(i % 2 == 0, 12, 7)
        return {k: v[:, :length] if len(v.shape) == 2 else v for k, v in batch.items()}

    return d.map(trim).skip(skip_batches)


def test_trainer_with_xla_kernels_on_varying_lengths(tmp_path, init_checkpoint,  # noqa: F811
                                                     monkeypatch):
    """Length-bucketed training: the kernels compile per length at run time; same training."""
    monkeypatch.setattr(weight_gradients, "xla_is_faster", lambda *shape: False)
    runs = train_off_and_on(tmp_path, init_checkpoint, "xla_kernels", _varying_lengths)
    assert any("layer_norm_forward" in n for n in runs[True][1])
    assert_same_training(runs, 1e-5, rtol=1e-4, atol=1e-6)


def _matmuls_with_a_bias_add(graph: tf.Graph) -> int:
    """MatMuls of the graph whose output gets a bias (a 1-D Add / BiasAdd), which TensorFlow's
    oneDNN rewrite fuses into one inner-product op."""
    def adds_a_bias(consumer, matmul):
        return consumer.type in ("AddV2", "Add", "BiasAdd") and any(
            t.shape.rank == 1 for t in consumer.inputs if t.op is not matmul)

    return sum(1 for op in graph.get_operations() if op.type == "MatMul"
               and any(adds_a_bias(c, op) for c in op.outputs[0].consumers()))


# a bare MatMul, or oneDNN's op on a weight fixed for the step (bert_finetune.fused_matmul)
_COPY_MATMULS = ("MatMul", "_MklNativeFusedMatMul")


def _matmuls_on_copies(graph: tf.Graph) -> int:
    """MatMuls of the graph on a bfloat16 [out, in] weight captured from outside the step (a
    copy of bert_finetune.inference_weights), not on a variable read in the step; where
    oneDNN's fixed-weight op runs, all are that op."""
    fixed = fused_matmul.fixed_usable(None, tf.bfloat16)
    return sum(1 for op in graph.get_operations() if op.type in _COPY_MATMULS
               and (op.type != "MatMul") == fixed
               and op.get_attr("transpose_b") and op.inputs[1].op.type == "Placeholder"
               and op.inputs[1].dtype == tf.bfloat16)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_inference_step_with_them_equals_the_plain_one(dtype, monkeypatch):
    """The runner's predict step with the kernels (as on CPU without --use_xla): the encoder's
    every row (padded rows included) and the classifier's [CLS]-only path give the plain ops'
    outputs (float32 as in the kernels' tests; bfloat16 within 2e-2 of the largest magnitude);
    in bfloat16 the dense layers are bare MatMuls whose biases the kernels add; no weight
    gradient is measured."""
    measured = []
    monkeypatch.setattr(weight_gradients, "xla_is_faster", lambda *a: measured.append(a))
    tf.random.set_seed(4)
    model = _model(dtype)
    features = {k: tf.constant(v[:BATCH]) for k, v in FEATURES.items()}

    class Task(tf.Module):  # the sequence output too: the last layer in full, not only [CLS]
        def __init__(self):
            super().__init__()
            self.model = model

        def predict(self, f):
            out = model.bert(f["input_ids"], f["input_mask"], f["segment_ids"])
            return {"sequence_output": tf.cast(out["sequence_output"], tf.float32),
                    **model.predict(f)}

    outputs = {}
    for on in (False, True):
        step = loops.inference_step(tf.distribute.get_strategy(), Task(), False, 2, on)
        outputs[on] = step(features)
        graph = step.get_concrete_function(features).graph
        names = [f.signature.name for f in graph.as_graph_def().library.function]
        # forward-only kernels (nothing kept for a backward pass); the GELU as its own kernel
        # or inside the dense layer's oneDNN op (tests/test_fused_matmul.py)
        assert any("add_norm_inference" in n for n in names) == on, names
        # the softmax: an XLA kernel, or on oneDNN its fused matmul + softmax
        assert any("softmax_inference" in n for n in names) == (
            on and not onednn.onednn_enabled()), names
        assert not any("layer_norm_forward" in n for n in names), names
        fused_gelu = bool({"_FusedMatMul", "_MklNativeFusedMatMul"}
                          & {op.type for op in graph.get_operations()})
        gelu_kernel = any("gelu_forward" in n or "bias_gelu" in n for n in names)
        assert (gelu_kernel or fused_gelu) == on, names
        # bfloat16: the dense layers' MatMuls bare, their biases added by the next kernel
        deferred = on and dtype == "bfloat16"
        assert any("bias_heads" in n for n in names) == deferred, names
        with_bias = _matmuls_with_a_bias_add(graph)
        # bfloat16: they read the kernels' copies made once for the run, laid out [out, in]
        # (bert_finetune.inference_weights): six a layer, both passes (one batch slice: the
        # tiny model is too narrow for batch_branches)
        layers = model.bert.config.num_hidden_layers
        assert _matmuls_on_copies(graph) == (6 * layers * 2 if deferred else 0)
        if deferred:  # only the poolers' (two encoder passes) and the classifier's
            assert with_bias <= 3, with_bias
        else:  # in each layer of both passes (the full one, the classifier's [CLS]-only one)
            # five, and the GELU's, unless it is the fused oneDNN op
            assert with_bias >= 5 * model.bert.config.num_hidden_layers * 2, with_bias
    for name in ("sequence_output", "predictions", "per_example_loss"):
        got, want = outputs[True][name].numpy(), outputs[False][name].numpy()
        if dtype == "float32":
            np.testing.assert_allclose(got, want, err_msg=name, **CLOSE)
        else:
            # 2 x BF16_CLOSE: the forward-only kernels add each residual in float32, the plain
            # ops in bfloat16 (1-2 bfloat16 ulps apart after 5 layers; measured 1.1e-2)
            np.testing.assert_allclose(got, want, rtol=0, err_msg=name,
                                       atol=2 * BF16_CLOSE * np.abs(want).max())
    assert measured == []
