"""The dense layers' weight gradients by XLA's kernel (bert_finetune.weight_gradients).

Tolerance (fp32): XLA's GEMM sums in another order than oneDNN's, so gradients equal the plain
path's within rtol 1e-5 / atol 1e-6, not bitwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_runner import assert_same_training, init_checkpoint, train_off_and_on  # noqa: F401

from bert_finetune import fused, weight_gradients, xla_kernels
from bert_finetune.runner import xla

STRATEGY = tf.distribute.get_strategy()


@pytest.fixture
def fresh_choices(monkeypatch):
    monkeypatch.setattr(weight_gradients, "_CHOICES", {})


def _compiled(graph: tf.Graph) -> list[str]:
    return [f.signature.name for f in graph.as_graph_def().library.function
            if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]


def _grads(on: bool, x, w, b, r):
    @tf.function
    def step(x, w, b):
        with tf.GradientTape() as tape, xla_kernels.enabled(on):
            tape.watch([x, w, b])
            y = weight_gradients.dense(x, w, b)
            loss = tf.reduce_sum(tf.tanh(y) * r)
        return y, tape.gradient(loss, [x, w, b])

    return step(x, w, b), step.get_concrete_function(x, w, b).graph


@pytest.mark.parametrize("xla_weight_gradient", [True, False])
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_dense_gradients_equal_the_plain_ones(monkeypatch, xla_weight_gradient, dtype):
    """The kernel's gradient by XLA where chosen, the bias gradient by XLA's column sum
    always (summed in float32): equal to the plain ops' (bfloat16: within its rounding)."""
    monkeypatch.setattr(weight_gradients, "xla_is_faster", lambda *shape: xla_weight_gradient)
    rng = np.random.default_rng(3)
    x, w, b, r = (tf.cast(tf.constant(rng.standard_normal(s), tf.float32), dtype)
                  for s in ((64, 24), (24, 40), (40,), (64, 40)))
    (y_plain, g_plain), plain_graph = _grads(False, x, w, b, r)
    (y_xla, g_xla), xla_graph = _grads(True, x, w, b, r)
    np.testing.assert_array_equal(y_xla.numpy(), y_plain.numpy())  # the forward is unchanged
    tolerance = 1e-5 if dtype == tf.float32 else 2e-2
    for name, got, want in zip(("x", "kernel", "bias"), g_xla, g_plain, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(),
                                   tf.cast(want, tf.float32).numpy(), rtol=tolerance,
                                   atol=tolerance if dtype == tf.bfloat16 else 1e-6,
                                   err_msg=name)
    assert not _compiled(plain_graph)
    compiled = _compiled(xla_graph)
    assert bool([n for n in compiled if "weight_gradient" in n]) == xla_weight_gradient, compiled
    assert [n for n in compiled if "bias_gradient" in n], compiled


def test_unknown_shapes_keep_onednns_weight_gradient(monkeypatch):
    @tf.function(input_signature=[tf.TensorSpec([None, 24]), tf.TensorSpec([24, 40]),
                                  tf.TensorSpec([40])])
    def unknown_rows(x, w, b):
        with tf.GradientTape() as tape, xla_kernels.enabled(True):
            tape.watch([x, w, b])
            y = weight_gradients.dense(x, w, b)
        return tape.gradient(y, [x, w, b])

    monkeypatch.setattr(weight_gradients, "xla_is_faster",
                        lambda *shape: pytest.fail("a dynamic shape cannot be measured"))
    compiled = _compiled(unknown_rows.get_concrete_function().graph)
    assert not [n for n in compiled if "weight_gradient" in n], compiled
    grads = unknown_rows(tf.ones([5, 24]), tf.ones([24, 40]), tf.zeros([40]))
    np.testing.assert_array_equal(grads[2].numpy(), [5.0] * 40)


def test_choice_is_measured_once_per_shape_with_a_margin(monkeypatch, fresh_choices):
    calls = []
    timings = {(4096, 256, 1024): (1.0, 0.7), (4096, 384, 1536): (1.0, 0.95)}

    def fake_measure(rows, n_in, n_out, dtype):
        calls.append((rows, n_in, n_out))
        return timings[(rows, n_in, n_out)]

    monkeypatch.setattr(weight_gradients, "measure", fake_measure)
    assert weight_gradients.xla_is_faster(4096, 256, 1024)
    assert weight_gradients.xla_is_faster(4096, 256, 1024)
    assert not weight_gradients.xla_is_faster(4096, 384, 1536)  # 5% faster is within MARGIN
    assert not weight_gradients.xla_is_faster(32, 256, 256)  # below MIN_FLOPS: not measured
    assert calls == [(4096, 256, 1024), (4096, 384, 1536)]
    assert weight_gradients.choices() == {(4096, 256, 1024, "float32"): True,
                                          (4096, 384, 1536, "float32"): False}


def test_measure_times_both_kernels():
    plain, compiled = weight_gradients.measure(256, 64, 128)
    assert 0 < plain < 1 and 0 < compiled < 1


def test_measured_while_tracing_under_a_seed_leaves_the_random_stream(fresh_choices,
                                                                       monkeypatch):
    """The measurement runs eagerly inside a trace and uses numpy's generator, not TF's."""
    monkeypatch.setattr(weight_gradients, "MIN_FLOPS", 0)
    rng = np.random.default_rng(5)
    x, w, b = (tf.constant(rng.standard_normal(s), tf.float32) for s in ((64, 24), (24, 40), (40,)))

    def draws(measure_first: bool):
        tf.random.set_seed(11)
        if measure_first:
            _grads(True, x, w, b, tf.ones([64, 40]))
        return tf.random.uniform([3]).numpy()

    np.testing.assert_array_equal(draws(True), draws(False))
    assert (64, 24, 40, "float32") in weight_gradients.choices()


def test_trainer_with_xla_weight_gradients_equals_plain(tmp_path, init_checkpoint,  # noqa: F811
                                                         monkeypatch):
    """A few real training steps of the tiny classifier: same losses and variables."""
    monkeypatch.setattr(weight_gradients, "xla_is_faster", lambda *shape: True)
    monkeypatch.setattr(fused, "active", lambda x: False)  # the weight gradients alone
    runs = train_off_and_on(tmp_path, init_checkpoint, "xla_kernels")
    for on, (_, compiled) in runs.items():
        assert bool([n for n in compiled if "weight_gradient" in n]) == on, compiled
    assert_same_training(runs, 1e-5, rtol=1e-4, atol=1e-6)


def test_where_the_runner_allows_it(monkeypatch):
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    assert xla.training_kernels_xla(None, STRATEGY, "float32")[0]
    for given in (True, False):
        use, why = xla.training_kernels_xla(given, STRATEGY, "float32")
        assert not use and f"--use_xla={str(given).lower()}" in why
    assert xla.training_kernels_xla(None, STRATEGY, "bfloat16")[0]
    assert xla.inference_kernels_xla(None, False, STRATEGY)[0]  # not compiled: on CPU
    use, why = xla.inference_kernels_xla(None, True, STRATEGY)
    assert not use and "compiled" in why
    use, why = xla.inference_kernels_xla(False, False, STRATEGY)  # no XLA at all
    assert not use and "--use_xla=false" in why
    use, why = xla.training_kernels_xla(None, STRATEGY, "float16")
    assert not use and "float16" in why
    use, why = xla.inference_kernels_xla(None, False, STRATEGY, "float16")  # runs the plain ops
    assert not use and "float16" in why
    assert xla.inference_kernels_xla(None, False, STRATEGY, "bfloat16")[0]
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["gpu"] if kind == "GPU" else [])
    use, why = xla.training_kernels_xla(None, STRATEGY, "float32")
    assert not use and "GPU" in why
    use, why = xla.inference_kernels_xla(None, False, STRATEGY)
    assert not use and "GPU" in why
