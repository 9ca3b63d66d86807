"""Inference's dense + GELU as one oneDNN op (bert_finetune.fused_matmul) and the forward-only
step (bert_finetune.xla_kernels.forward_only): the same values as the plain ops, differentiable,
and used only where they apply.

TensorFlow turns oneDNN on by itself only on CPUs with AVX512_VNNI/BF16 or AMX, so what needs it
runs in a child process with TF_ENABLE_ONEDNN_OPTS=1 (as our commands set it), on any x86 CPU.
Tolerance: float32 within rtol 1e-5 / atol 1e-5 of the plain ops; bfloat16 within 1e-2 of the
largest magnitude (one rounding of the output against the plain ops' several).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG

from bert_finetune import batch_branches, fused_matmul, modeling, onednn, xla_kernels

CHILD = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    from bert_finetune import fused_matmul, modeling, xla_kernels
    from bert_finetune.onednn import onednn_enabled
    from bert_finetune.runner import loops

    assert onednn_enabled()
    rng = np.random.default_rng(5)
    plain_gelu = {"gelu": modeling.gelu_reference, "gelu_exact": modeling.gelu_exact}
    for gelu, act in plain_gelu.items():
        for dtype in (tf.float32, tf.bfloat16):
            assert fused_matmul.usable(gelu, dtype), (gelu, dtype)
            x, w, b = (tf.cast(tf.constant(rng.normal(0, s, shape), tf.float32), dtype)
                       for shape, s in (((24, 40), 1.0), ((40, 56), 0.3), ((56,), 0.5)))
            dy = tf.cast(tf.constant(rng.normal(size=(24, 56)), tf.float32), dtype)
            results = []
            for fn in (lambda x, w, b: fused_matmul.dense_gelu(x, w, b, gelu),
                       lambda x, w, b: act(tf.matmul(x, w) + b)):
                with tf.GradientTape() as tape:
                    tape.watch([x, w, b])
                    y = tf.function(fn)(x, w, b)
                results.append([y, *tape.gradient(y, [x, w, b], output_gradients=dy)])
            for name, got, want in zip(("value", "x", "kernel", "bias"), *results):
                got, want = (tf.cast(t, tf.float32).numpy() for t in (got, want))
                if dtype == tf.float32:
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
                else:
                    np.testing.assert_allclose(got, want, rtol=0, err_msg=name,
                                               atol=1e-2 * np.abs(want).max())

    # The runner's inference step: the fused op in its graph, the plain ops' predictions.
    config = modeling.BertConfig(**__CONFIG__)
    model = modeling.BertModel(config)
    ids = tf.constant(rng.integers(1, config.vocab_size, (6, 11)), tf.int32)
    mask = tf.constant((np.arange(11)[None] < np.array([[11], [4], [9], [11], [1], [7]])),
                       tf.int32)

    class Task:
        @staticmethod
        def predict(f):
            out = model(f["ids"], f["mask"])
            return {"sequence_output": out["sequence_output"], "pooled": out["pooled_output"]}

    outputs = {}
    for on in (False, True):
        step = loops.inference_step(tf.distribute.get_strategy(), Task(), False, 2, on)
        outputs[on] = step({"ids": ids, "mask": mask})
        graph = step.get_concrete_function({"ids": ids, "mask": mask}).graph
        types = {op.type for op in graph.get_operations()} | {
            n.op for f in graph.as_graph_def().library.function for n in f.node_def}
        assert ("_FusedMatMul" in types) == on, types
        assert ("_MklFusedBatchMatMulV2" in types) == on, types  # the attention's scores
    for name in outputs[True]:
        np.testing.assert_allclose(outputs[True][name].numpy(), outputs[False][name].numpy(),
                                   rtol=1e-5, atol=1e-5, err_msg=name)

    # The fixed-weight op: the plain ops' values on two inputs in turn (the second read from
    # oneDNN's copy of the weight), with or without the GELU.
    for gelu in (None, *plain_gelu):
        for dtype in (tf.float32, tf.bfloat16):
            assert fused_matmul.fixed_usable(gelu, dtype), (gelu, dtype)
            w, b = (tf.cast(tf.constant(rng.normal(0, s, shape), tf.float32), dtype)
                    for shape, s in (((40, 56), 0.3), ((56,), 0.5)))
            w_t = tf.transpose(w)
            fixed = tf.function(lambda x: fused_matmul.fixed_matmul(x, w_t) if gelu is None
                                else fused_matmul.fixed_dense_gelu(x, w_t, b, gelu))
            for _ in range(2):
                x = tf.cast(tf.constant(rng.normal(size=(24, 40)), tf.float32), dtype)
                want = tf.matmul(x, w) if gelu is None else plain_gelu[gelu](tf.matmul(x, w) + b)
                got, want = (tf.cast(t, tf.float32).numpy() for t in (fixed(x), want))
                atol = 1e-5 if dtype == tf.float32 else 1e-2 * np.abs(want).max()
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol, err_msg=str(gelu))
    try:
        fused_matmul.fixed_matmul(x, w_t)
        raise AssertionError("made eagerly")
    except ValueError:
        pass

    # The attention's scores with their scale and mask inside oneDNN's batched matmul: the
    # float32 formula's values for every query row and for one (bfloat16: within its rounding
    # of the operands' products, the scale and the -10000 adder).
    mask_adder = tf.constant(np.where(np.arange(9)[None] < np.array([[9], [5], [1]]), 0.0,
                                      -10000.0)[:, None, None, :], tf.float32)
    for dtype in (tf.float32, tf.bfloat16):
        assert fused_matmul.scores_usable(dtype), dtype
        q, k = (tf.cast(tf.constant(rng.normal(size=(3, 2, 9, 8)), tf.float32), dtype)
                for _ in "qk")
        scores = tf.function(lambda q, k: fused_matmul.attention_scores(q, k, 0.35, mask_adder))
        for rows in (9, 1):
            got = scores(q[:, :, :rows], k)
            assert got.dtype == dtype and got.shape == (3, 2, rows, 9)
            want = (tf.matmul(tf.cast(q[:, :, :rows], tf.float32), tf.cast(k, tf.float32),
                              transpose_b=True) * 0.35 + mask_adder).numpy()
            got = tf.cast(got, tf.float32).numpy()
            rtol, atol = (1e-5, 1e-5) if dtype == tf.float32 else (8e-3, 0.1)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)

    # The runner's bfloat16 inference step: every encoder dense layer (6 a layer) on the fixed
    # op reading the run's copies; two batches in turn give the plain step's outputs.
    bf16_model = modeling.BertModel(config, compute_dtype=tf.bfloat16)

    class Bf16Task(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = bf16_model

        def predict(self, f):
            return {"out": tf.cast(self.model(f["ids"], f["mask"])["sequence_output"],
                                   tf.float32)}

    batches = [{"ids": tf.constant(rng.integers(1, config.vocab_size, (6, 11)), tf.int32),
                "mask": mask} for _ in range(2)]
    outputs = {}
    for on in (False, True):
        step = loops.inference_step(tf.distribute.get_strategy(), Bf16Task(), False, 1, on)
        outputs[on] = [step(f)["out"].numpy() for f in batches]
        ops = [op for op in step.get_concrete_function(batches[0]).graph.get_operations()
               if op.type == "_MklNativeFusedMatMul"]
        assert len(ops) == (6 * config.num_hidden_layers if on else 0), len(ops)
        assert all(op.get_attr("is_filter_const") and op.get_attr("transpose_b") for op in ops)
    for got, want in zip(outputs[True], outputs[False]):
        # the kernels add each residual in float32, the plain ops in bfloat16
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-2 * np.abs(want).max())
    # weights changed (as by training between evaluations): the next run reads the new ones
    for name, variable in bf16_model.variables_by_name().items():
        if name.endswith("/kernel"):
            variable.assign(tf.random.normal(variable.shape, stddev=0.2))
    after = {on: loops.inference_step(tf.distribute.get_strategy(), Bf16Task(), False, 1, on)(
        batches[0])["out"].numpy() for on in (True, False)}
    scale = np.abs(after[False]).max()
    assert np.abs(after[True] - outputs[True][0]).max() > 0.3 * scale
    np.testing.assert_allclose(after[True], after[False], rtol=0, atol=2e-2 * scale)
    print("ok")
""")


def test_dense_gelu_and_the_inference_step_on_onednn():
    """gelu (tanh) and gelu_exact, float32 and bfloat16: the fused op's values and gradients
    are the plain ops'; the runner's inference step uses it and predicts what the plain step
    does. The fixed-weight op (matmul alone, or with either GELU) gives the plain ops' values
    run after run; the bfloat16 inference step runs its encoder's dense layers on it and
    predicts what the plain step does."""
    code = CHILD.replace("__CONFIG__", repr({**TINY_CONFIG, "num_hidden_layers": 2}))
    env = dict(os.environ, **{onednn.ONEDNN_OPTS: "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


VERBOSE_CHILD = textwrap.dedent("""
    import tensorflow as tf
    from bert_finetune import modeling
    from bert_finetune.runner import loops

    model = modeling.BertModel(modeling.BertConfig(**__CONFIG__), compute_dtype=tf.__DTYPE__)

    class Task(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def predict(self, f):
            return {"out": self.model(f["ids"], f["mask"])["sequence_output"]}

    mask = tf.sequence_mask([11, 4, 9, 7], 11, tf.int32)
    step = loops.inference_step(tf.distribute.get_strategy(), Task(), False, 1, True)
    step({"ids": tf.ones((4, 11), tf.int32), "mask": mask})
    print("MARK", flush=True)
    step({"ids": tf.ones((4, 11), tf.int32), "mask": mask})
""")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_attention_scale_and_mask_run_inside_onednns_matmul(dtype):
    """The inference step on oneDNN (ONEDNN_VERBOSE): in every layer the Q.K^T batched matmul
    carries the softmax's scale and mask as post-ops, and the softmax is oneDNN's."""
    layers = 2
    code = VERBOSE_CHILD.replace("__CONFIG__", repr(
        {**TINY_CONFIG, "num_hidden_layers": layers})).replace("__DTYPE__", dtype)
    env = dict(os.environ, **{onednn.ONEDNN_OPTS: "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                              "ONEDNN_VERBOSE": "1"})
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "MARK" in done.stdout, done.stderr[-3000:]
    lines = [line for line in done.stdout.split("MARK", 1)[1].splitlines()
             if ",exec," in line]
    fused = [line for line in lines if ",matmul," in line
             and "binary_mul" in line and "binary_add" in line]
    softmax = [line for line in lines if ",softmax," in line]
    assert len(fused) == layers and len(softmax) == layers, "\n".join(lines)


def test_not_used_when_the_probe_fails(monkeypatch):
    """Without oneDNN, or when the op fails or differs from the plain ops, the probe says no
    and the encoder keeps its GELU kernel."""
    fused_matmul.available.cache_clear()
    try:
        monkeypatch.setattr(fused_matmul, "onednn_enabled", lambda: False)
        assert not fused_matmul.usable("gelu", tf.float32)
        fused_matmul.available.cache_clear()
        monkeypatch.setattr(fused_matmul, "onednn_enabled", lambda: True)

        def broken(*args):
            raise tf.errors.UnimplementedError(None, None, "Fusion is not implemented")

        monkeypatch.setattr(fused_matmul, "_fused_op", broken)
        assert not fused_matmul.usable("gelu", tf.bfloat16)
        fused_matmul.available.cache_clear()
        monkeypatch.setattr(fused_matmul, "_fused_op", lambda x, w, b, g: tf.matmul(x, w) + b)
        assert not fused_matmul.usable("gelu_exact", tf.float32)  # no GELU: differs
        assert not fused_matmul.usable("relu", tf.float32)
        assert not fused_matmul.usable("gelu", tf.float16)

        # the fixed-weight op: not used when it fails or differs
        fused_matmul.fixed_available.cache_clear()
        monkeypatch.setattr(fused_matmul, "_fixed_op", broken)
        assert not fused_matmul.fixed_usable(None, tf.bfloat16)
        # the attention's scores: not used when the op fails or differs
        fused_matmul.scores_available.cache_clear()
        monkeypatch.setattr(fused_matmul, "_scores_op", broken)
        assert not fused_matmul.scores_usable(tf.float32)
        fused_matmul.scores_available.cache_clear()
        monkeypatch.setattr(fused_matmul, "_scores_op",
                            lambda q, k, scale, mask: tf.matmul(q, k, transpose_b=True) * scale)
        assert not fused_matmul.scores_usable(tf.bfloat16)  # no mask: differs
        assert not fused_matmul.scores_usable(tf.float16)
        fused_matmul.fixed_available.cache_clear()
        monkeypatch.setattr(fused_matmul, "_fixed_op",
                            lambda x, w_t, b, g: tf.matmul(x, w_t, transpose_b=True) + b)
        assert fused_matmul.fixed_usable(None, tf.float32)
        assert not fused_matmul.fixed_usable("gelu", tf.float32)  # no GELU: differs
        assert not fused_matmul.fixed_usable("gelu", tf.float16)

        config = modeling.BertConfig(**TINY_CONFIG)
        model = modeling.BertModel(config)
        ids = tf.ones((2, 5), tf.int32)
        with xla_kernels.enabled(True, weight_gradients=False, forward_only=True):
            graph = tf.function(lambda i: model(i)["pooled_output"]).get_concrete_function(
                ids).graph
        names = [f.signature.name for f in graph.as_graph_def().library.function]
        assert any("gelu_forward" in n for n in names), names
        assert any("softmax_inference" in n for n in names), names  # the softmax kernel
    finally:
        fused_matmul.available.cache_clear()
        fused_matmul.fixed_available.cache_clear()
        fused_matmul.scores_available.cache_clear()


def _encoder_grads(model, ids, mask, **enabled):
    with xla_kernels.enabled(**enabled), tf.GradientTape() as tape:
        out = model(ids, mask)
        loss = tf.reduce_sum(out["sequence_output"] ** 2) + tf.reduce_sum(out["pooled_output"])
    return [out["sequence_output"], *tape.gradient(loss, list(model.variables_by_name().values()))]


def test_a_forward_only_trace_stays_differentiable():
    """The forward-only kernels keep nothing for a backward pass, yet autodiff through them
    (and through the fused op where it is used) gives the plain ops' gradients (within float32
    rounding of sums over the batch: 1e-5 of the largest magnitude)."""
    config = modeling.BertConfig(**TINY_CONFIG)
    rng = np.random.default_rng(3)
    ids = tf.constant(rng.integers(1, config.vocab_size, (3, 8)), tf.int32)
    mask = tf.constant((np.arange(8)[None] < np.array([[8], [5], [2]])), tf.int32)
    tf.random.set_seed(8)
    model = modeling.BertModel(config)
    got = _encoder_grads(model, ids, mask, on=True, weight_gradients=False, forward_only=True)
    want = _encoder_grads(model, ids, mask, on=False)
    for name, a, b in zip(["sequence_output", *model.variables_by_name()], got, want,
                          strict=True):
        a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(b).max()),
                                   err_msg=name)


@pytest.mark.parametrize("forward_only", [False, True])
def test_batch_slices_share_the_weight_casts_only_forward_only(forward_only):
    """bfloat16, two batch slices: forward-only, each weight is cast once for both; otherwise
    each slice casts its own (their gradients then add in float32)."""
    config = modeling.BertConfig(**{**TINY_CONFIG, "hidden_size": 256, "intermediate_size": 1024,
                                    "num_attention_heads": 4, "num_hidden_layers": 2})
    model = modeling.BertModel(config, compute_dtype=tf.bfloat16)
    ids = tf.ones((4, 6), tf.int32)
    with batch_branches.enabled(2), xla_kernels.enabled(False, forward_only=forward_only):
        assert batch_branches.count(config.hidden_size, config.intermediate_size) == 2
        graph = tf.function(lambda i: model(i)["sequence_output"]).get_concrete_function(
            ids).graph
    shape = [config.hidden_size, config.intermediate_size]  # the intermediate kernels alone
    kernel_casts = [op for op in graph.get_operations()
                    if op.type == "Cast" and op.outputs[0].shape.as_list() == shape]
    assert len(kernel_casts) == config.num_hidden_layers * (1 if forward_only else 2)
