"""The bfloat16 encoder kernels copied once per inference run (bert_finetune.inference_weights):
which kernels, their values, and that each run copies the weights as they are then."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_runner import BATCH, FEATURES, _model

from bert_finetune import inference_weights
from bert_finetune.runner import loops


def test_only_a_bfloat16_encoders_kernels_are_copied_transposed():
    model = _model("bfloat16")
    copies = inference_weights.prepare(model)
    by_ref = {v.ref(): (name, v) for name, v in model.variables_by_name().items()}
    names = sorted(by_ref[ref][0] for ref in copies)
    layers = model.bert.config.num_hidden_layers
    assert len(names) == 6 * layers  # Q, K, V, attention output, intermediate, output
    assert all("/encoder/layer_" in n and n.endswith("/kernel") for n in names), names
    for ref, copy in copies.items():
        variable = by_ref[ref][1]
        assert copy.dtype == tf.bfloat16
        np.testing.assert_array_equal(
            copy.numpy(), tf.transpose(tf.cast(variable, tf.bfloat16)).numpy())
    assert inference_weights.prepare(_model("float32")) == {}


def test_outside_a_run_the_model_reads_its_variables():
    model = _model("bfloat16")
    kernel = model.bert.variables_by_name()["bert/encoder/layer_0/attention/self/query/kernel"]
    copies = inference_weights.prepare(model)
    assert inference_weights.transposed(kernel) is None
    with inference_weights.using(copies):
        assert inference_weights.transposed(kernel) is copies[kernel.ref()]
    assert inference_weights.transposed(kernel) is None


class _Encoder(tf.Module):
    """A task whose predictions are the encoder's sequence output."""

    def __init__(self, dtype: str):
        super().__init__()
        self.model = _model(dtype)

    def predict(self, f: dict) -> dict[str, tf.Tensor]:
        out = self.model.bert(f["input_ids"], f["input_mask"], f["segment_ids"])
        return {"sequence_output": tf.cast(out["sequence_output"], tf.float32)}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_each_inference_run_uses_the_weights_as_they_are_then(dtype):
    """Weights changed after one run (as by training between evaluations): the next run's
    step (kernels on) gives what the plain step gives on the new weights."""
    tf.random.set_seed(5)
    task = _Encoder(dtype)
    features = {k: tf.constant(v[:BATCH]) for k, v in FEATURES.items()}
    strategy = tf.distribute.get_strategy()

    def run(kernels: bool) -> np.ndarray:
        step = loops.inference_step(strategy, task, False, 1, kernels)
        return step(features)["sequence_output"].numpy()

    before = run(True)
    for name, variable in task.model.bert.variables_by_name().items():
        if name.endswith("/kernel"):
            variable.assign(tf.random.normal(variable.shape, stddev=0.2))
    after, plain = run(True), run(False)
    scale = np.abs(plain).max()
    assert np.abs(after - before).max() > 0.3 * scale  # a real change
    # bfloat16: the kernels add residuals in float32, the plain ops in bfloat16 (as in
    # tests/test_fused.py's inference step test)
    np.testing.assert_allclose(after, plain, rtol=0,
                               atol=(1e-5 if dtype == "float32" else 2e-2) * scale)
