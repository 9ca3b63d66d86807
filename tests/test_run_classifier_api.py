"""The original run_classifier.py names stay importable and work together."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from conftest import TINY_CONFIG

from bert_finetune import checkpoints, modeling
from bert_finetune import run_classifier as rc


def test_model_fn_builder_and_create_model(tmp_path):
    config = modeling.BertConfig(**TINY_CONFIG)
    source = modeling.BertModel(config)
    prefix = checkpoints.write_checkpoint(
        str(tmp_path / "bert_model.ckpt"),
        {n: v.numpy() for n, v in source.variables_by_name().items()})
    model = rc.model_fn_builder(config, num_labels=3, init_checkpoint=prefix)(
        tf.distribute.get_strategy())
    np.testing.assert_array_equal(model.variables_by_name()["bert/pooler/dense/kernel"].numpy(),
                                  source.variables_by_name()["bert/pooler/dense/kernel"].numpy())
    assert model.variables_by_name()["output_weights"].shape == (3, 32)
    ids = tf.constant([[2, 5, 7, 3, 0]])
    mask = tf.constant([[1, 1, 1, 1, 0]])
    seg = tf.zeros_like(ids)
    loss, per_example, logits, probs = rc.create_model(model, False, ids, mask, seg,
                                                       tf.constant([1]))
    assert logits.shape == (1, 3) and per_example.shape == (1,)
    np.testing.assert_allclose(float(loss), -np.log(probs.numpy()[0, 1]), rtol=1e-5)
    np.testing.assert_allclose(probs.numpy().sum(), 1.0, rtol=1e-6)


def test_original_names_exist():
    for name in ("DataProcessor", "InputExample", "InputFeatures", "PaddingInputExample",
                 "convert_single_example", "file_based_convert_examples_to_features",
                 "file_based_input_fn_builder", "_truncate_seq_pair", "MrpcProcessor",
                 "ColaProcessor", "MnliProcessor", "XnliProcessor"):
        assert hasattr(rc, name), name
