"""bert-export: a self-contained hub module whose outputs are modeling.BertModel's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import make_checkpoint, one_line_error, run_cli

from bert_finetune import checkpoints, modeling, tokenization
from bert_finetune.data import features
from bert_finetune.data.examples import InputExample
from bert_finetune.errors import UserError
from bert_finetune.export import module as module_lib

SPEC = tf.TensorSpec([None, None], tf.int32)


def _inputs(vocab_size: int, seed: int = 0) -> dict[str, tf.Tensor]:
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, vocab_size, (3, 16)).astype(np.int32)
    mask = np.array([[1] * 16, [1] * 10 + [0] * 6, [1] * 5 + [0] * 11], np.int32)
    segments = np.array([[0] * 8 + [1] * 8] * 3, np.int32) * mask
    return {"input_ids": tf.constant(ids), "input_mask": tf.constant(mask),
            "segment_ids": tf.constant(segments)}


def test_minilm_module_parity(minilm_google, tmp_path):
    """Export the real MiniLM checkpoint, delete the source, hub.load: outputs = BertModel's."""
    import tensorflow_hub as hub

    src = tmp_path / "src"
    shutil.copytree(minilm_google, src)
    config = modeling.BertConfig.from_json_file(str(src / "bert_config.json"))
    reference = modeling.BertModel(config)
    checkpoints.init_from_checkpoint(reference.variables_by_name(), str(src / "bert_model.ckpt"))
    vocab_text = (src / "vocab.txt").read_bytes()
    export_dir = tmp_path / "module"
    summary = module_lib.export_module(
        str(src / "bert_config.json"), str(src / "vocab.txt"), str(src / "bert_model.ckpt"),
        str(export_dir), with_preprocessor=False)
    assert summary["do_lower_case"] is True  # from the do_lower_case.txt sidecar
    shutil.rmtree(src)

    obj = hub.load(str(export_dir))
    inputs = _inputs(config.vocab_size)
    got = obj.signatures["tokens"](**inputs)
    # The same graph (dynamic [B, T] shapes) as the signature: equal to <= 1e-6.
    graph_ref = tf.function(lambda i, m, s: reference(i, m, s), input_signature=[SPEC] * 3)
    want = graph_ref(inputs["input_ids"], inputs["input_mask"], inputs["segment_ids"])
    for key in ("pooled_output", "sequence_output"):
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6, err_msg=key)
    # Against eager BertModel, kernels fused differently round differently: float32 rounding
    # of activations up to ~6 (observed 2.5e-6).
    eager = reference(inputs["input_ids"], inputs["input_mask"], inputs["segment_ids"])
    for key in ("pooled_output", "sequence_output"):
        np.testing.assert_allclose(got[key], eager[key], rtol=0, atol=1e-5, err_msg=key)

    # Inference is deterministic, training (dropout) is not.
    a = obj(inputs, training=False)["sequence_output"]
    b = obj(inputs, training=False)["sequence_output"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, got["sequence_output"], rtol=0, atol=1e-5)  # as above
    c = obj(inputs, training=True)["sequence_output"]
    d = obj(inputs, training=True)["sequence_output"]
    assert np.abs(c - d).max() > 1e-2 and np.abs(c - a).max() > 1e-2

    vocab_file, lower = module_lib.tokenization_info(obj)
    assert lower is True
    assert Path(vocab_file).resolve().parent == (export_dir / "assets").resolve()
    assert Path(vocab_file).read_bytes() == vocab_text
    assert len(obj.variables) == len(obj.trainable_variables) == 103
    assert {v.name.split(":")[0] for v in obj.variables} == set(reference.variables_by_name())
    assert list(obj.regularization_losses) == []


@pytest.fixture(scope="module")
def tiny_module(minilm_google, tmp_path_factory) -> Path:
    """A tiny random checkpoint exported with the CLI (all layers, preprocessor, seq 24)."""
    tmp = tmp_path_factory.mktemp("tiny_module")
    src = make_checkpoint(tmp / "ckpt", minilm_google / "vocab.txt")
    export_dir = tmp / "module"
    proc = run_cli("bert_finetune.cli.export", f"--init_checkpoint={src}",
                   f"--export_dir={export_dir}", "--all_encoder_layers", "--max_seq_length=24")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote a module with 71 variables (do_lower_case=True)" in proc.stdout
    return export_dir


@pytest.mark.slow  # tf_keras fit tracing; test_classify_hub covers training through the module
def test_keras_layer_fine_tunes_module_variables(tiny_module):
    """hub.KerasLayer(trainable=True) sees every variable, and training moves them."""
    import tensorflow_hub as hub
    import tf_keras

    layer = hub.KerasLayer(str(tiny_module), trainable=True)
    inputs = {name: tf_keras.Input([16], dtype=tf.int32, name=name)
              for name in module_lib.INPUT_NAMES}
    pooled = layer(inputs)["pooled_output"]
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(pooled))
    assert len(layer.trainable_weights) == 71
    data = _inputs(30522)
    before = {v.name: v.numpy() for v in layer.trainable_weights}
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(data, np.ones([3, 1], np.float32), epochs=2, verbose=0)
    moved = [v.name for v in layer.trainable_weights
             if not np.array_equal(before[v.name], v.numpy())]
    assert "bert/encoder/layer_0/attention/self/query/kernel:0" in moved
    assert len(moved) >= 60  # all but a few (e.g. unused rows never change the table name)


def test_all_layers_and_preprocessor(tiny_module, minilm_google):
    import tensorflow_hub as hub

    obj = hub.load(str(tiny_module))
    out = obj.signatures["tokens"](**_inputs(30522))
    assert out["all_encoder_layers"].shape == (4, 3, 16, 32)
    np.testing.assert_array_equal(out["all_encoder_layers"][-1], out["sequence_output"])

    pre = module_lib.load_preprocessor(str(tiny_module))
    texts = ["Is this the Same question? ||| Is this the same question!", "One sentence only."]
    got = pre(tf.constant(texts))
    tokenizer = tokenization.FullTokenizer(str(minilm_google / "vocab.txt"))
    for i, text in enumerate(texts):
        a, _, b = text.partition("|||")
        f = features.convert_single_example(i, InputExample(str(i), a, b or None, "0"), ["0"],
                                            24, tokenizer)
        np.testing.assert_array_equal(got["input_ids"][i], f.input_ids)
        np.testing.assert_array_equal(got["segment_ids"][i], f.segment_ids)
        np.testing.assert_array_equal(got["input_mask"][i], f.input_mask)
    # The encoder itself holds no tensorflow_text op: it loads without that package.
    graph = (tiny_module / "saved_model.pb").read_bytes()
    assert b"Wordpiece" not in graph and b"NormalizeUTF8" not in graph


def test_bad_inputs(tmp_path, minilm_google):
    with pytest.raises(UserError, match="is not a module: no saved_model.pb"):
        module_lib.load_module(str(tmp_path))
    with pytest.raises(UserError, match="module directory not found"):
        module_lib.load_module(str(tmp_path / "nope"))
    plain = tf.Module()
    plain.v = tf.Variable(1.0)
    tf.saved_model.save(plain, str(tmp_path / "plain"))
    with pytest.raises(UserError, match="has no `tokenization_info` signature"):
        module_lib.load_module(str(tmp_path / "plain"))

    src = make_checkpoint(tmp_path / "ckpt", minilm_google / "vocab.txt")
    with pytest.raises(UserError, match="missing.json: config file not found"):
        module_lib.export_module(str(tmp_path / "missing.json"), str(src / "vocab.txt"),
                                 str(src), str(tmp_path / "out"))
    with pytest.raises(UserError, match="says `true` \\(a lowercased model\\)"):
        module_lib.export_module(str(src / "bert_config.json"), str(src / "vocab.txt"),
                                 str(src), str(tmp_path / "out"), do_lower_case=False)
    assert not (tmp_path / "out").exists()
    # The CLI: every missing flag in one line.
    proc = run_cli("bert_finetune.cli.export", f"--export_dir={tmp_path / 'out'}")
    line = one_line_error(proc, "bert-export")
    assert "--init_checkpoint is required" in line and "--vocab_file is required" in line
