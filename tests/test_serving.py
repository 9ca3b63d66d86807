"""bert-export --classifier: a SavedModel for TF Serving that answers raw strings.

One tiny bert-classify MRPC run (`tiny_classifier_run` in conftest) is copied, exported from the
copy, and the copy deleted before anything loads the export: every test here runs on an export
whose run directory is gone. Its `test_results.tsv` / `predictions.jsonl` are the reference
(fp32, max abs difference 1e-5).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_serving_rest
from test_serving_runtimes import FP32_TOL, mrpc_test_pairs, reference

from bert_finetune import predict
from bert_finetune.data import features as feature_lib
from bert_finetune.data.examples import InputExample
from bert_finetune.errors import UserError
from bert_finetune.export import classifier, publish, run_dir
from bert_finetune.tokenization import FullTokenizer

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def export_base(tiny_classifier_run, tmp_path_factory) -> Path:
    """EXPORT (the model base path) of a copy of the run, the copy deleted afterwards."""
    root = tmp_path_factory.mktemp("saved_model")
    copy = root / "run"
    shutil.copytree(tiny_classifier_run, copy)
    proc = subprocess.run(
        [sys.executable, "-m", "bert_finetune.cli.export", "--classifier", f"--run_dir={copy}",
         f"--output_dir={root / 'export'}"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(f"to {root / 'export' / '1'}")
    shutil.rmtree(copy)
    return root / "export"


@pytest.fixture(scope="module")
def loaded(export_base):
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    return tf.saved_model.load(str(export_base / "1"))


def test_versioned_layout(export_base, tiny_classifier_run):
    assert sorted(p.name for p in export_base.iterdir()) == ["1"]
    version = export_base / "1"
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables" / "variables.index").is_file()
    assets = version / "assets"
    for name in ("vocab.txt", "label_list.txt", "do_lower_case.txt"):
        assert (assets / name).read_bytes() == (tiny_classifier_run / name).read_bytes()
    info = json.loads((assets / "export_info.json").read_text())
    assert info["max_seq_length"] == 32 and info["sentence_pair"] is True
    assert info["checkpoint"] == "model.ckpt-2"


def test_signatures(loaded):
    serve = loaded.signatures["serving_default"]
    inputs = serve.structured_input_signature[1]
    assert {k: (v.dtype, v.shape.as_list()) for k, v in inputs.items()} == {
        "text_a": (tf.string, [None]), "text_b": (tf.string, [None])}
    outputs = serve.structured_outputs
    assert {k: (v.dtype, v.shape.as_list()) for k, v in outputs.items()} == {
        "labels": (tf.string, [None]), "probabilities": (tf.float32, [None, 2]),
        "label_ids": (tf.int64, [None])}
    ids = loaded.signatures["serve_ids"].structured_input_signature[1]
    assert sorted(ids) == ["input_ids", "input_mask", "segment_ids"]


def test_raw_strings_equal_bert_classify_results(loaded, tiny_classifier_run):
    probs, labels = reference(tiny_classifier_run)
    a, b = mrpc_test_pairs(tiny_classifier_run)
    out = loaded.signatures["serving_default"](text_a=tf.constant(a), text_b=tf.constant(b))
    np.testing.assert_allclose(out["probabilities"].numpy(), probs, atol=FP32_TOL, rtol=0)
    assert [x.decode() for x in out["labels"].numpy()] == labels
    assert [str(i) for i in out["label_ids"].numpy()] == labels  # MRPC's labels are "0", "1"
    assert len(set(labels)) == 2


def test_in_graph_features_equal_convert_single_example(loaded, tiny_classifier_run):
    """serve_ids on bert-classify's own features gives serving_default's answers."""
    a, b = mrpc_test_pairs(tiny_classifier_run)
    tokenizer = FullTokenizer(str(tiny_classifier_run / "vocab.txt"), do_lower_case=True)
    rows = [feature_lib.convert_single_example(9, InputExample(str(i), x, y, "0"), ["0", "1"],
                                               32, tokenizer)
            for i, (x, y) in enumerate(zip(a, b, strict=True))]
    feats = {k: tf.constant([getattr(r, k) for r in rows], tf.int32)
             for k in ("input_ids", "input_mask", "segment_ids")}
    by_ids = loaded.signatures["serve_ids"](**feats)["probabilities"].numpy()
    by_text = loaded.signatures["serving_default"](text_a=tf.constant(a), text_b=tf.constant(b))
    np.testing.assert_array_equal(by_ids, by_text["probabilities"].numpy())


def test_rest_row_and_columnar_bodies(loaded, tiny_classifier_run):
    probs, labels = reference(tiny_classifier_run)
    a, b = mrpc_test_pairs(tiny_classifier_run)
    serve = loaded.signatures["serving_default"]
    # Row format; one text as {"b64": ...}, as a client sends bytes.
    instances = [{"text_a": x, "text_b": y} for x, y in zip(a, b, strict=True)]
    instances[1]["text_a"] = {"b64": base64.b64encode(a[1].encode()).decode()}
    rows = json.loads(tf_serving_rest.call(serve, json.dumps({"instances": instances})))
    assert list(rows) == ["predictions"] and len(rows["predictions"]) == len(a)
    assert [r["labels"] for r in rows["predictions"]] == labels
    assert [str(r["label_ids"]) for r in rows["predictions"]] == labels
    np.testing.assert_allclose([r["probabilities"] for r in rows["predictions"]], probs,
                               atol=FP32_TOL, rtol=0)
    # Columnar format.
    cols = json.loads(tf_serving_rest.call(
        serve, json.dumps({"signature_name": "serving_default",
                           "inputs": {"text_a": a, "text_b": b}})))
    assert list(cols) == ["outputs"]
    assert cols["outputs"]["labels"] == labels
    np.testing.assert_allclose(cols["outputs"]["probabilities"], probs, atol=FP32_TOL, rtol=0)


def test_rest_bad_requests(loaded):
    serve = loaded.signatures["serving_default"]
    with pytest.raises(tf_serving_rest.RestError, match=r"Missing but required: \['text_b'\]"):
        tf_serving_rest.call(serve, json.dumps({"instances": [{"text_a": "only a"}]}))
    with pytest.raises(tf_serving_rest.RestError, match="is not of expected type: string"):
        tf_serving_rest.call(serve, json.dumps({"inputs": {"text_a": [5], "text_b": ["x"]}}))


def test_empty_text_b_is_a_single_sentence(loaded, tiny_classifier_run):
    """As in run_classifier.py: an empty text_b packs `[CLS] a [SEP]`."""
    a, _ = mrpc_test_pairs(tiny_classifier_run)
    tokenizer = FullTokenizer(str(tiny_classifier_run / "vocab.txt"), do_lower_case=True)
    rows = [feature_lib.convert_single_example(9, InputExample(str(i), x, None, "0"), ["0", "1"],
                                               32, tokenizer) for i, x in enumerate(a[:4])]
    feats = {k: tf.constant([getattr(r, k) for r in rows], tf.int32)
             for k in ("input_ids", "input_mask", "segment_ids")}
    want = loaded.signatures["serve_ids"](**feats)["probabilities"].numpy()
    got = loaded.signatures["serving_default"](text_a=tf.constant(a[:4]),
                                               text_b=tf.constant([""] * 4))
    np.testing.assert_allclose(got["probabilities"].numpy(), want, atol=FP32_TOL, rtol=0)


def test_bert_predict_stdin_loads_once(export_base, loaded, tiny_classifier_run):
    a, b = mrpc_test_pairs(tiny_classifier_run)
    stdin = "".join(f"{x}\t{y}\n" for x, y in zip(a, b, strict=True))
    proc = subprocess.run([sys.executable, "-m", "bert_finetune.cli.predict",
                           f"--model={export_base}", "--batch_size=4"],
                          input=stdin, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    want = loaded.signatures["serving_default"](text_a=tf.constant(a), text_b=tf.constant(b))
    assert [r["label"] for r in rows] == [x.decode() for x in want["labels"].numpy()]
    assert [(r["text"], r["text_b"]) for r in rows] == list(zip(a, b, strict=True))
    got = [[r["probabilities"]["0"], r["probabilities"]["1"]] for r in rows]
    np.testing.assert_allclose(got, want["probabilities"].numpy(), atol=FP32_TOL, rtol=0)
    loads = [line for line in proc.stderr.splitlines() if "Loaded model" in line]
    assert len(loads) == 1, loads  # 13 inputs in 4 batches, one load
    assert f"{export_base / '1'} (tensorflow, sentence pairs, 2 labels)" in loads[0]


def test_saved_model_cli_run(export_base):
    proc = subprocess.run(
        [sys.executable, "-m", "bert_finetune.cli.saved_model_cli", "run", "--dir",
         str(export_base / "1"), "--tag_set", "serve", "--signature_def", "serving_default",
         "--input_exprs", 'text_a=["He said so."];text_b=["So he said."]'],
        capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Result for output key labels:" in proc.stdout
    assert "Result for output key probabilities:" in proc.stdout


def test_export_dir_not_empty(export_base):
    with pytest.raises(UserError, match=r"exists and is not empty \(holds version 1\): pass "
                                        r"--overwrite to replace it, or --model_version=2"):
        publish.version_dir(str(export_base), None, overwrite=False)
    with pytest.raises(UserError, match="version 1 exists and is not empty"):
        publish.version_dir(str(export_base), 1, overwrite=False)
    assert publish.version_dir(str(export_base), 2, overwrite=False) == str(export_base / "2")
    assert publish.version_dir(str(export_base), None, overwrite=True) == str(export_base / "1")


def test_export_errors(tiny_classifier_run, tmp_path):
    bare = tmp_path / "run"
    shutil.copytree(tiny_classifier_run, bare,
                    ignore=shutil.ignore_patterns("model.ckpt-*", "checkpoint"))
    with pytest.raises(UserError, match="no fine-tuned checkpoint"):
        classifier.export_classifier(str(bare), str(tmp_path / "e"))
    with pytest.raises(UserError, match="--quantize=int8 applies to --format=tflite only"):
        classifier.export_classifier(str(tiny_classifier_run), str(tmp_path / "e"),
                                     quantize="int8")
    with pytest.raises(UserError, match="run_flags.json is missing"):
        run_dir.load_run(str(tmp_path))
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_single_sentence_signature(tiny_classifier_run, tmp_path):
    """A single-sentence task's serving_default takes text_a only (here: the MRPC run read as
    one, which serves `[CLS] a [SEP]`)."""
    import tensorflow_text  # noqa: F401

    from bert_finetune.export import serving

    record = run_dir.load_run(str(tiny_classifier_run), sentence_pair=False)
    path = serving.export_saved_model(record, str(tmp_path / "export"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["text_a"]
    a, _ = mrpc_test_pairs(tiny_classifier_run)
    model = predict.load_model(str(tmp_path / "export"))
    assert not model.info.sentence_pair
    with pytest.raises(UserError, match="single sentences: give no text_b"):
        model.predict(a, a)
    run_model = predict.load_model(str(tiny_classifier_run))
    want = run_model.predict(a, [""] * len(a))
    np.testing.assert_allclose(model.predict(a), want, atol=FP32_TOL, rtol=0)
    np.testing.assert_allclose(serve(text_a=tf.constant(a))["probabilities"].numpy(), want,
                               atol=FP32_TOL, rtol=0)
