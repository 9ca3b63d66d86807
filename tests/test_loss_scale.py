"""float16 training: dynamic loss scaling keeps gradients alive and skips overflowed steps."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from conftest import TINY_CONFIG

from bert_finetune import modeling
from bert_finetune.classify import ClassifierModel
from bert_finetune.runner import loops


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 99, size=(8, 16)).astype(np.int32)
    return {"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids),
            "label_ids": (np.arange(8) % 2).astype(np.int32),
            "is_real_example": np.ones(8, np.int32)}


def _trainer(tmp_path, dtype, **kw):
    tf.random.set_seed(0)
    config = modeling.BertConfig(**{**TINY_CONFIG, "hidden_dropout_prob": 0.0,
                                    "attention_probs_dropout_prob": 0.0})
    model = ClassifierModel(config, 2, False, compute_dtype=dtype)
    model.head.dropout_prob = 0.0
    opts = loops.TrainOptions(output_dir=str(tmp_path), train_batch_size=8, num_train_steps=20,
                              num_warmup_steps=0, learning_rate=1e-3, save_checkpoints_steps=20,
                              iterations_per_loop=20,
                              dynamic_loss_scale=dtype == "float16", **kw)
    return loops.Trainer(tf.distribute.get_strategy(), model, opts)


def _dataset_fn(ctx, skip):
    return tf.data.Dataset.from_tensors(_batch()).repeat()


def test_float16_training_learns_and_saves_the_scale(tmp_path):
    trainer = _trainer(tmp_path, "float16")
    result = trainer.train(_dataset_fn)
    first, last = trainer.history[0][1], result["loss"]
    assert np.isfinite(last)
    assert float(trainer.loss_scale.numpy()) >= 1.0
    reader = tf.train.load_checkpoint(str(tmp_path / "model.ckpt-20"))
    assert reader.has_tensor("loss_scale")
    assert reader.get_tensor("bert/pooler/dense/kernel").dtype == np.float32
    # Overfits a single batch, like the float32 run.
    ref = _trainer(tmp_path / "fp32", "float32")
    ref_result = ref.train(_dataset_fn)
    assert last < 0.5 * np.log(2) and ref_result["loss"] < 0.5 * np.log(2), (first, last)


def test_overflow_skips_the_update_and_halves_the_scale(tmp_path):
    # A loss scale of 1e38 overflows float16 gradients at once: the step must leave every
    # variable unchanged, then halve the scale.
    trainer = _trainer(tmp_path, "float16", initial_loss_scale=1e38)
    before = {n: v.numpy().copy() for n, v in trainer.task.variables_by_name().items()}
    iterator = trainer.make_iterator(_dataset_fn)
    trainer.train_steps(iterator, tf.constant(1))
    for name, var in trainer.task.variables_by_name().items():
        np.testing.assert_array_equal(var.numpy(), before[name], err_msg=name)
    assert float(trainer.loss_scale.numpy()) == np.float32(1e38) / 2
    assert int(trainer.global_step.numpy()) == 1
