"""The encoder on independent slices of the batch (bert_finetune.batch_branches): the same
outputs, gradients, training and predictions as on the whole batch."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_runner import BATCH, CONFIG, FEATURES, _trainer, dataset_fn, init_checkpoint  # noqa: F401

from bert_finetune import batch_branches, modeling
from bert_finetune.classify import ClassifierModel
from bert_finetune.runner import branches, loops


def _inputs(batch: int, seq: int = 12):
    rng = np.random.default_rng(3)
    mask = (np.arange(seq)[None, :] < rng.integers(3, seq + 1, [batch, 1])).astype(np.int32)
    ids = rng.integers(1, CONFIG.vocab_size, [batch, seq]).astype(np.int32) * mask
    types = (np.arange(seq)[None, :] >= seq // 2).astype(np.int32) * mask
    return ids, mask, types


@pytest.fixture(autouse=True)
def any_width(monkeypatch):
    """The tiny test config is far narrower than batch_branches.MIN_WIDTH: slice it anyway."""
    monkeypatch.setattr(batch_branches, "MIN_WIDTH", 0)


@pytest.fixture(scope="module")
def model() -> modeling.BertModel:
    tf.random.set_seed(5)
    return modeling.BertModel(CONFIG)


def test_slices_cover_the_batch_in_order():
    rows = tf.reshape(tf.range(10), [5, 2])
    parts = batch_branches.slices([rows, rows * 10], 2)
    assert [p[0].shape[0] for p in parts] == [2, 3]
    np.testing.assert_array_equal(tf.concat([p[1] for p in parts], 0), rows * 10)
    assert len(batch_branches.slices([rows[:1]], 2)) == 1  # never an empty static slice
    assert batch_branches.count(768, 3072) == 1
    with batch_branches.enabled(3):
        assert batch_branches.count(768, 3072) == 3
    assert batch_branches.count(768, 3072) == 1


def test_narrow_models_run_whole(monkeypatch):
    """Below MIN_WIDTH (BERT-Mini's 256 x 1024) the batch runs whole: short ops cost more
    doubled than they overlap."""
    monkeypatch.undo()  # the real MIN_WIDTH
    assert batch_branches.MIN_WIDTH == 256 * 1024
    with batch_branches.enabled(2):
        assert batch_branches.count(256, 1024) == 2
        assert batch_branches.count(384, 1536) == 2
        assert batch_branches.count(128, 512) == 1
        assert batch_branches.count(CONFIG.hidden_size, CONFIG.intermediate_size) == 1


@pytest.mark.parametrize("batch", [5, 8])
def test_outputs_equal_the_whole_batch(model, batch):
    """Every output (padded rows included) and pooled_only, eagerly, odd and even batches."""
    ids, mask, types = _inputs(batch)
    whole = model(ids, mask, types)
    with batch_branches.enabled(2):
        split = model(ids, mask, types)
        pooled = model(ids, mask, types, pooled_only=True)["pooled_output"]
    for name in ("sequence_output", "pooled_output", "embedding_output"):
        np.testing.assert_allclose(split[name], whole[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert len(split["all_encoder_layers"]) == CONFIG.num_hidden_layers
    for got, want in zip(split["all_encoder_layers"], whole["all_encoder_layers"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled, whole["pooled_output"], rtol=1e-5, atol=1e-6)
    assert split["embedding_table"] is whole["embedding_table"]


def test_traced_graph_has_the_branches_and_any_batch_size(model):
    """With an unknown batch size the slices are cut at run time: batches of 7, 1 and 0 rows
    give the whole batch's values; the graph holds every matmul once per branch."""
    spec = [tf.TensorSpec([None, None], tf.int32)] * 3

    def traced(n):
        @tf.function(input_signature=spec)
        def pooled(ids, mask, types):
            with batch_branches.enabled(n):
                return model(ids, mask, types)["pooled_output"]
        return pooled

    one, two = traced(1), traced(2)
    count = {n: sum(op.type in ("MatMul", "BatchMatMulV2")
                    for op in f.get_concrete_function().graph.get_operations())
             for n, f in ((1, one), (2, two))}
    assert count[2] == 2 * count[1], count  # every matmul (the pooler's too) per slice
    ids, mask, types = _inputs(7)
    for rows in (7, 1, 0):
        got = two(ids[:rows], mask[:rows], types[:rows])
        assert got.shape == (rows, CONFIG.hidden_size)
        np.testing.assert_allclose(got, one(ids[:rows], mask[:rows], types[:rows]),
                                   rtol=1e-5, atol=1e-6)


def test_gradients_equal_the_whole_batch(model):
    """The weight gradients (summed over the slices) equal the whole batch's."""
    ids, mask, types = _inputs(6)
    grads = {}
    for n in (1, 2):
        with tf.GradientTape() as tape, batch_branches.enabled(n):
            out = model(ids, mask, types, training=True)  # dropout 0 in CONFIG
            loss = tf.reduce_sum(out["sequence_output"] ** 2) + tf.reduce_sum(
                out["pooled_output"])
        variables = model.variables_by_name()
        grads[n] = dict(zip(variables, tape.gradient(loss, list(variables.values())),
                            strict=True))
    dense = {n: {name: tf.convert_to_tensor(g).numpy() for name, g in grads[n].items()}
             for n in grads}  # the word embeddings' gradient comes as IndexedSlices
    # fp32 noise against the largest gradient: some are sums that (nearly) cancel, e.g. the
    # key bias's (exactly 0: softmax ignores a constant) and the padding id's embedding row
    scale = max(float(np.abs(g).max()) for g in dense[1].values())
    for name, want in dense[1].items():
        np.testing.assert_allclose(dense[2][name], want, rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=name)


def test_trainer_with_branches_equals_whole_batches(tmp_path, init_checkpoint):  # noqa: F811
    """Four real Trainer steps (clip, AdamWeightDecay) with the batch as 2 slices and whole,
    and with 2 accumulated micro-batches, each in 2 slices."""
    trainers = {}
    for n, accumulate in ((1, 1), (2, 1), (2, 2)):
        trainers[n, accumulate] = _trainer(
            tmp_path / f"{n}x{accumulate}", init_checkpoint, num_train_steps=4, batch_branches=n,
            gradient_accumulation_steps=accumulate)
        trainers[n, accumulate].train(dataset_fn)
    whole = trainers[1, 1]
    for key in ((2, 1), (2, 2)):
        np.testing.assert_allclose([v for _, v in trainers[key].history],
                                   [v for _, v in whole.history], rtol=1e-5, err_msg=str(key))
        for name, var in whole.task.variables_by_name().items():
            np.testing.assert_allclose(trainers[key].task.variables_by_name()[name].numpy(),
                                       var.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{key} {name}")


@pytest.mark.parametrize("accumulate", [1, 2])
def test_accumulated_micro_batches_run_in_slices(tmp_path, init_checkpoint, monkeypatch,  # noqa: F811
                                                 accumulate):
    """With gradient accumulation each micro-batch runs in slices too."""
    cut = []
    real = batch_branches.slices
    monkeypatch.setattr(batch_branches, "slices", lambda t, n: cut.append(n) or real(t, n))
    _trainer(tmp_path, init_checkpoint, num_train_steps=1, batch_branches=2,
             gradient_accumulation_steps=accumulate).train(dataset_fn)
    assert cut == [2], cut


def test_inference_step_with_branches_equals_whole_batches():
    """The runner's predict step on batches of 8 and a last one of 5 (unknown batch size)."""
    tf.random.set_seed(9)
    classifier = ClassifierModel(CONFIG, num_labels=3, is_regression=False)
    strategy = tf.distribute.get_strategy()
    features = {k: v[:21] for k, v in FEATURES.items()}
    dataset = tf.data.Dataset.from_tensor_slices(features).batch(BATCH)
    got = {n: [loops.inference_step(strategy, classifier, False, n)(batch)
               for batch in dataset] for n in (1, 2)}
    assert [b["predictions"].shape[0] for b in got[2]] == [8, 8, 5]
    for whole, split in zip(got[1], got[2], strict=True):
        np.testing.assert_array_equal(split["predictions"], whole["predictions"])
        np.testing.assert_allclose(split["per_example_loss"], whole["per_example_loss"],
                                   rtol=1e-5)


def test_default_per_device(monkeypatch):
    """Two slices on a CPU of two or more threads; the whole batch on one thread."""
    strategy = tf.distribute.get_strategy()
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 0)
    monkeypatch.setattr(branches.os, "cpu_count", lambda: 2)
    assert branches.batch_branches(strategy)[0] == branches.CPU_BRANCHES == 2
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 1)
    count, why = branches.batch_branches(strategy)
    assert count == 1 and "one CPU thread" in why
