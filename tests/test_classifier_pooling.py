"""bert-classify --pooling=mean: the classifier on the mean of the last layer's real tokens.

The shared `modeling.masked_mean` (also BertLayer's and bert-extract-features' "mean"), the model
(padding never counts), validation, and a tiny real run whose recorded pooling is what later
predict-only runs, `bert-predict` and `bert-freeze` use (equal to the run's test_results.tsv).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG
from test_serving_runtimes import FP32_TOL, mrpc_test_pairs, reference

from bert_finetune import classify, modeling, predict
from bert_finetune.errors import UserError
from bert_finetune.export import freeze, run_dir

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def test_masked_mean_counts_real_tokens_only():
    seq = tf.constant(np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3))
    mask = tf.constant([[1, 1, 0, 0], [0, 0, 0, 0]])
    got = modeling.masked_mean(seq, mask).numpy()
    np.testing.assert_array_equal(got[0], (seq[0, 0] + seq[0, 1]).numpy() / 2)
    np.testing.assert_array_equal(got[1], np.zeros(3))  # all padding: zeros, not NaN


def _features(lengths: list[int], seq_len: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = np.zeros([len(lengths), seq_len], np.int32)
    mask = np.zeros_like(ids)
    segments = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, TINY_CONFIG["vocab_size"], n)
        mask[i, :n] = 1
        segments[i, n // 2:n] = 1
    return {"input_ids": tf.constant(ids), "input_mask": tf.constant(mask),
            "segment_ids": tf.constant(segments), "label_ids": tf.constant([0] * len(lengths))}


def _same_weights(a: classify.ClassifierModel, b: classify.ClassifierModel) -> None:
    vars_a = a.variables_by_name()
    for name, var in b.variables_by_name().items():
        var.assign(vars_a[name])


def test_mean_pooling_ignores_padding_and_differs_from_cls():
    config = modeling.BertConfig(**TINY_CONFIG)
    tf.random.set_seed(3)
    mean = classify.ClassifierModel(config, 2, False, pooling="mean")
    cls = classify.ClassifierModel(config, 2, False)
    _same_weights(mean, cls)
    short, long = _features([5, 9, 3], 12), _features([5, 9, 3], 20)
    got = mean.logits(short, training=False).numpy()
    np.testing.assert_allclose(got, mean.logits(long, training=False).numpy(), atol=1e-5, rtol=0)

    out = mean.bert(short["input_ids"], short["input_mask"], short["segment_ids"], training=False)
    seq = out["sequence_output"].numpy()
    by_hand = np.stack([seq[i, :n].mean(0) for i, n in enumerate([5, 9, 3])])
    w, b = mean.head.output_weights.numpy(), mean.head.output_bias.numpy()
    np.testing.assert_allclose(got, by_hand @ w.T + b, atol=1e-5, rtol=0)
    assert np.abs(got - cls.logits(short, training=False).numpy()).max() > 1e-3


def test_cls_classifier_skips_the_last_layers_other_rows_with_the_same_logits():
    config = modeling.BertConfig(**TINY_CONFIG)
    model = classify.ClassifierModel(config, 3, False)
    features = _features([5, 9, 3], 12)
    out = model.bert(features["input_ids"], features["input_mask"], features["segment_ids"],
                     training=False)
    want = model.head.logits(out["pooled_output"], training=False).numpy()
    np.testing.assert_allclose(model.logits(features, training=False).numpy(), want, atol=1e-6,
                               rtol=0)
    graph = tf.function(lambda f: model.logits(f, False)).get_concrete_function(features).graph
    rows = sorted(op.outputs[0].shape[0] for op in graph.get_operations()
                  if op.type == "MatMul" and op.outputs[0].shape[-1] == config.intermediate_size)
    assert rows == [3] + [36] * (config.num_hidden_layers - 1)


def test_unknown_pooling_is_refused():
    config = modeling.BertConfig(**TINY_CONFIG)
    with pytest.raises(UserError, match="--pooling=max"):
        classify.ClassifierModel(config, 2, False, pooling="max")
    opts = classify.ClassifyOptions(task_name="mrpc", do_train=True, pooling="max")
    assert any("--pooling=max" in p for p in classify.validate(opts, {"mrpc": object}))


def test_run_records_mean_pooling(tiny_mean_pooled_run):
    flags = json.loads((tiny_mean_pooled_run / "run_flags.json").read_text())
    assert flags["pooling"] == "mean"
    assert run_dir.load_run(str(tiny_mean_pooled_run)).pooling == "mean"


def test_mean_pooled_run_predicts_differently(tiny_mean_pooled_run, tiny_classifier_run):
    mean_probs, _ = reference(tiny_mean_pooled_run)
    cls_probs, _ = reference(tiny_classifier_run)
    assert np.abs(mean_probs - cls_probs).max() > 1e-3  # the flag reached the model


def test_bert_predict_and_freeze_use_the_recorded_pooling(tiny_mean_pooled_run):
    probs, labels = reference(tiny_mean_pooled_run)
    a, b = mrpc_test_pairs(tiny_mean_pooled_run)
    model = predict.load_model(str(tiny_mean_pooled_run))
    np.testing.assert_allclose(model.predict(a, b), probs, atol=FP32_TOL, rtol=0)

    fn, _, _, keep = freeze.run_dir_inference_function(str(tiny_mean_pooled_run))
    texts = tf.constant([f"{x} ||| {y}" for x, y in zip(a, b, strict=True)])
    np.testing.assert_allclose(fn(texts)["probabilities"].numpy(), probs, atol=FP32_TOL, rtol=0)
    del keep


def test_predict_only_rerun_takes_the_recorded_pooling(tiny_mean_pooled_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_mean_pooled_run, run)
    (run / "test_results.tsv").unlink()
    data = tiny_mean_pooled_run.parent / "data"
    cmd = [sys.executable, "-m", "bert_finetune.cli.classify", "--do_predict=true",
           f"--data_dir={data}", f"--output_dir={run}", "--predict_batch_size=8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.loadtxt(run / "test_results.tsv", ndmin=2),
                               reference(tiny_mean_pooled_run)[0], atol=FP32_TOL, rtol=0)


def test_mean_pooling_in_bfloat16_stays_close_to_float32():
    config = modeling.BertConfig(**TINY_CONFIG)
    tf.random.set_seed(4)
    fp32 = classify.ClassifierModel(config, 2, False, pooling="mean")
    bf16 = classify.ClassifierModel(config, 2, False, compute_dtype="bfloat16", pooling="mean")
    _same_weights(fp32, bf16)
    features = _features([30, 7, 19], 32)
    want = fp32.logits(features, training=False).numpy()
    got = bf16.logits(features, training=False)
    assert got.dtype == tf.float32  # the mean and the head run in float32
    np.testing.assert_allclose(got.numpy(), want, atol=2e-2, rtol=0)  # bf16 encoder: ~3 digits
