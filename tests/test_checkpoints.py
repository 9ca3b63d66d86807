"""Original-name checkpoint I/O: init from a Google checkpoint, save, load back, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG

from bert_finetune import checkpoints, modeling
from bert_finetune.errors import UserError


def _model(**overrides) -> modeling.BertModel:
    return modeling.BertModel(modeling.BertConfig(**{**TINY_CONFIG, **overrides}))


def _google_style_checkpoint(tmp_path, model, extra=None):
    """A checkpoint as Google released them: bert/* plus optimizer slots and global_step."""
    arrays = {n: v.numpy() for n, v in model.variables_by_name().items()}
    for n, a in list(arrays.items()):
        arrays[n + "/adam_m"] = np.zeros_like(a)
        arrays[n + "/adam_v"] = np.zeros_like(a)
    arrays["global_step"] = np.array(1000, np.int64)
    arrays["cls/seq_relationship/output_weights"] = np.ones((2, 32), np.float32)
    arrays.update(extra or {})
    return checkpoints.write_checkpoint(str(tmp_path / "src" / "bert_model.ckpt"), arrays)


def test_init_save_load_round_trip(tmp_path):
    source = _model()
    prefix = _google_style_checkpoint(tmp_path, source)
    target = _model()
    restored = checkpoints.init_from_checkpoint(target.variables_by_name(), prefix)
    assert sorted(restored) == sorted(source.variables_by_name())
    for name, var in target.variables_by_name().items():
        np.testing.assert_array_equal(var.numpy(), source.variables_by_name()[name].numpy())

    step = tf.Variable(7, dtype=tf.int64)
    saved = {**target.variables_by_name(), "global_step": step}
    out = tmp_path / "out"
    out.mkdir()
    path = checkpoints.CheckpointSaver(saved).save(str(out), 7)
    assert path.endswith("model.ckpt-7")
    assert tf.train.latest_checkpoint(str(out)) == path
    shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    assert set(shapes) == set(saved)
    assert "bert/encoder/layer_3/attention/self/query/kernel" in shapes
    reader = tf.train.load_checkpoint(path)
    for name, var in target.variables_by_name().items():
        np.testing.assert_array_equal(reader.get_tensor(name), var.numpy())
    # ... and it loads back as --init_checkpoint, by prefix or by directory.
    again = _model()
    assert len(checkpoints.init_from_checkpoint(again.variables_by_name(), str(out))) == 87


def test_restored_variables_are_logged(tmp_path, caplog):
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO)
    prefix = _google_style_checkpoint(tmp_path, _model())
    with caplog.at_level("INFO"):
        checkpoints.init_from_checkpoint(_model().variables_by_name(), prefix)
    assert caplog.text.count("*INIT_FROM_CKPT*") == 87


def test_keeps_last_k(tmp_path):
    var = {"w": tf.Variable([1.0])}
    saver = checkpoints.CheckpointSaver(var, max_to_keep=2)
    for step in (1, 2, 3):
        saver.save(str(tmp_path), step)
    assert not list(tmp_path.glob("model.ckpt-1.*"))
    assert list(tmp_path.glob("model.ckpt-3.index"))
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [p.split("/")[-1] for p in state.all_model_checkpoint_paths] == [
        "model.ckpt-2", "model.ckpt-3"]


def test_shape_mismatch_names_variable_shapes_and_file(tmp_path):
    prefix = _google_style_checkpoint(tmp_path, _model())
    bigger = _model(intermediate_size=41)
    with pytest.raises(UserError) as e:
        checkpoints.init_from_checkpoint(bigger.variables_by_name(), prefix)
    msg = str(e.value)
    assert "intermediate/dense" in msg and "[32, 37]" in msg and "[32, 41]" in msg
    assert prefix in msg


def test_missing_encoder_variable_is_an_error(tmp_path):
    prefix = _google_style_checkpoint(tmp_path, _model(num_hidden_layers=2))
    with pytest.raises(UserError, match=r"layer_2.* missing from the checkpoint"):
        checkpoints.init_from_checkpoint(_model().variables_by_name(), prefix)


def test_missing_or_unreadable_checkpoint(tmp_path):
    with pytest.raises(UserError, match="no checkpoint found"):
        checkpoints.init_from_checkpoint({}, str(tmp_path / "bert_model.ckpt"))
    with pytest.raises(UserError, match="holds no checkpoint"):
        checkpoints.init_from_checkpoint({}, str(tmp_path))
    (tmp_path / "junk.ckpt.index").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable TensorFlow checkpoint"):
        checkpoints.init_from_checkpoint({}, str(tmp_path / "junk.ckpt"))


def test_head_of_another_shape_starts_fresh(tmp_path):
    """A checkpoint's classifier head with 3 labels does not block a 2-label task."""
    model = _model()
    prefix = _google_style_checkpoint(
        tmp_path, model, {"output_weights": np.ones((3, 32), np.float32)})
    head = tf.Variable(tf.zeros([2, 32]))
    variables = {**_model().variables_by_name(), "output_weights": head}
    restored = checkpoints.init_from_checkpoint(variables, prefix)
    assert "output_weights" not in restored and len(restored) == 87
    np.testing.assert_array_equal(head.numpy(), np.zeros((2, 32)))
