"""bert-freeze: frozen-graph predictions equal the live model's (Keras model and fine-tuned run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from export_helpers import TINY, make_checkpoint, one_line_error, run_cli

from bert_finetune import checkpoints, classify, modeling, tokenization
from bert_finetune.data import features
from bert_finetune.data.examples import InputExample
from bert_finetune.errors import UserError
from bert_finetune.export import freeze

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["Is the sky blue? ||| Why is the sky blue?", "Amrozi accused his brother .",
         "Ünïcödé ΣΑΣ 日本 ||| x"]


@pytest.fixture(scope="module")
def ckpt_dir(minilm_google, tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("freeze") / "ckpt",
                           minilm_google / "vocab.txt")


def test_freeze_keras_model(ckpt_dir, tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import keras_bert_layer as example
    finally:
        sys.path.pop(0)
    tf_keras.utils.set_random_seed(3)
    model = example.build_model(str(ckpt_dir), seq_len=16)
    x = tf.constant(TEXTS)
    want = model.predict(x, verbose=0)
    description = freeze.freeze_keras_model(model, str(tmp_path / "model.pb"))
    assert description["inputs"] == {"text": "text:0"}
    assert description["outputs"] == {"probabilities": "probabilities:0"}
    got = freeze.load_frozen(str(tmp_path / "model.pb"))(x)["probabilities"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # fp32 (seen: identical)
    graph = (tmp_path / "model.pb").read_bytes()
    assert b"VarHandleOp" not in graph and b"RandomUniform" not in graph  # constants, no dropout


@pytest.fixture
def run_dir(ckpt_dir, tmp_path) -> Path:
    """A fine-tuned run's output_dir as bert-classify leaves it (tiny model, 3 labels)."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("bert_config.json", "vocab.txt", "do_lower_case.txt"):
        (out / name).write_bytes((ckpt_dir / name).read_bytes())
    (out / classify.LABELS_FILE).write_text("contradiction\nentailment\nneutral\n")
    (out / classify.RUN_FLAGS_FILE).write_text(json.dumps(
        {"max_seq_length": 20, "do_lower_case": True, "task_name": "mnli", "task_flags": {}}))
    tf.random.set_seed(5)
    model = classify.ClassifierModel(modeling.BertConfig.from_dict(TINY), 3, False)
    checkpoints.init_from_checkpoint(model.bert.variables_by_name(), str(ckpt_dir))
    model.head.output_bias.assign([0.3, -0.2, 0.1])
    checkpoints.CheckpointSaver(model.variables_by_name()).save(str(out), 7)
    return out


def test_freeze_run_dir_cli(run_dir, tmp_path):
    """The CLI on a run: the frozen graph's probabilities = the classifier on FullTokenizer
    features (bert-classify's predict path)."""
    pb = tmp_path / "frozen" / "run.pb"
    pb.parent.mkdir()
    proc = run_cli("bert_finetune.cli.freeze", f"--run_dir={run_dir}", f"--output_file={pb}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "outputs {'logits': 'logits:0', 'probabilities': 'probabilities:0'}" in proc.stdout
    description = json.loads(Path(str(pb) + ".json").read_text())
    assert description["labels"] == ["contradiction", "entailment", "neutral"]
    got = freeze.load_frozen(str(pb))(tf.constant(TEXTS))

    model = classify.ClassifierModel(modeling.BertConfig.from_dict(TINY), 3, False)
    checkpoints.init_from_checkpoint(model.variables_by_name(), str(run_dir),
                                     required=list(model.variables_by_name()))
    tokenizer = tokenization.FullTokenizer(str(run_dir / "vocab.txt"))
    feats = []
    for i, text in enumerate(TEXTS):
        a, _, b = text.partition(" ||| ")
        feats.append(features.convert_single_example(
            i, InputExample(str(i), a, b or None, "neutral"), description["labels"], 20,
            tokenizer))
    batch = {k: tf.constant([getattr(f, k) for f in feats]) for k in
             ("input_ids", "input_mask", "segment_ids")}
    batch["label_ids"] = tf.constant([f.label_id for f in feats])
    _, logits, probs = model.forward(batch, training=False)
    np.testing.assert_allclose(got["probabilities"], probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["logits"], logits, rtol=0, atol=1e-6)


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="is not a bert-classify output_dir"):
        freeze.freeze_run_dir(str(tmp_path), str(tmp_path / "x.pb"))
    with pytest.raises(UserError, match="--keras_model=.*: not found"):
        freeze.load_keras_model(str(tmp_path / "missing"))
    proc = run_cli("bert_finetune.cli.freeze", f"--output_file={tmp_path / 'x.pb'}")
    assert "give exactly one of --keras_model and --run_dir" in one_line_error(proc,
                                                                                "bert-freeze")
