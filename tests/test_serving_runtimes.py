"""ONNX and TFLite exports of a fine-tuned classifier, and bert-predict on every backend.

All on one tiny bert-classify MRPC run (`tiny_classifier_run` in conftest): its
`test_results.tsv` / `predictions.jsonl` are the reference. Tolerances (max abs difference of a
probability): TensorFlow on the run directory, ONNX Runtime and TFLite float32 1e-5 (the same
float32 graph, other kernels); TFLite dynamic-range int8 0.1 (int8 weights of a model whose
weights were drawn with stddev 0.4; the MRPC dev accuracy of a real fine-tune is in the README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_finetune import predict
from bert_finetune.errors import UserError
from bert_finetune.export import onnx_export, run_dir, tflite_export

FP32_TOL = 1e-5
INT8_TOL = 0.1


def mrpc_test_pairs(run: Path) -> tuple[list[str], list[str]]:
    """text_a, text_b of the run's test rows (columns 3 and 4 of MRPC's test.tsv)."""
    data = run.parent / "data" / "test.tsv"
    rows = [line.split("\t") for line in
            data.read_text(encoding="utf-8-sig").split("\n")[1:] if line]
    return [r[3] for r in rows], [r[4] for r in rows]


def reference(run: Path) -> tuple[np.ndarray, list[str]]:
    probs = np.loadtxt(run / "test_results.tsv", dtype=np.float64, ndmin=2)
    labels = [json.loads(line)["label"] for line in
              (run / "predictions.jsonl").read_text().splitlines()]
    return probs, labels


def run_predict(*flags: str, stdin: str = "", env_extra: dict | None = None
                ) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "bert_finetune.cli.predict", *flags],
                          input=stdin, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def record(tiny_classifier_run):
    return run_dir.load_run(str(tiny_classifier_run))


@pytest.fixture(scope="module")
def onnx_dir(record, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "export"
    onnx_export.export_onnx(record, str(out))
    return out


@pytest.fixture(scope="module")
def tflite_dirs(record, tmp_path_factory) -> dict[str, Path]:
    dirs = {}
    for quantize in tflite_export.QUANTIZE:
        dirs[quantize] = tmp_path_factory.mktemp("tflite") / quantize
        tflite_export.export_tflite(record, str(dirs[quantize]), quantize=quantize)
    return dirs


def test_run_record_is_read(record):
    assert record.label_list == ["0", "1"]
    assert record.sentence_pair and not record.is_regression
    assert record.max_seq_length == 32 and record.do_lower_case
    assert record.checkpoint.endswith("model.ckpt-2")


def test_run_dir_predictor_equals_bert_classify(tiny_classifier_run):
    probs, labels = reference(tiny_classifier_run)
    a, b = mrpc_test_pairs(tiny_classifier_run)
    model = predict.load_model(str(tiny_classifier_run))
    out = model.predict(a, b)
    np.testing.assert_allclose(out, probs, atol=FP32_TOL, rtol=0)
    assert [model.info.label_list[i] for i in out.argmax(1)] == labels
    assert len(set(labels)) == 2  # both classes occur: a label mix-up cannot pass


def test_onnx_export_layout_and_parity(tiny_classifier_run, onnx_dir):
    import onnx

    proto = onnx.load(str(onnx_dir / "model.onnx"))
    assert [i.name for i in proto.graph.input] == ["input_ids", "input_mask", "segment_ids"]
    assert sorted(o.name for o in proto.graph.output) == ["label_ids", "probabilities"]
    assert {o.domain: o.version for o in proto.opset_import}[""] == onnx_export.OPSET
    info = json.loads((onnx_dir / "export_info.json").read_text())
    assert info["opset"] == onnx_export.OPSET and info["sentence_pair"] is True
    for name in ("vocab.txt", "label_list.txt", "do_lower_case.txt"):
        assert (onnx_dir / name).read_bytes() == (tiny_classifier_run / name).read_bytes()

    probs, labels = reference(tiny_classifier_run)
    model = predict.load_model(str(onnx_dir), "onnxruntime")
    assert model.info.backend == "onnxruntime"
    out = model.predict(*mrpc_test_pairs(tiny_classifier_run))
    np.testing.assert_allclose(out, probs, atol=FP32_TOL, rtol=0)
    assert [model.info.label_list[i] for i in out.argmax(1)] == labels


def test_tflite_float32_and_int8(tiny_classifier_run, tflite_dirs):
    probs, labels = reference(tiny_classifier_run)
    pairs = mrpc_test_pairs(tiny_classifier_run)
    fp32 = predict.load_model(str(tflite_dirs["none"]))
    assert fp32.info.backend == "tflite"
    out = fp32.predict(*pairs)
    np.testing.assert_allclose(out, probs, atol=FP32_TOL, rtol=0)
    assert [fp32.info.label_list[i] for i in out.argmax(1)] == labels

    int8 = predict.load_model(str(tflite_dirs["int8"]), "tflite")
    out8 = int8.predict(*pairs)
    np.testing.assert_allclose(out8, probs, atol=INT8_TOL, rtol=0)
    assert not np.allclose(out8, probs, atol=FP32_TOL)  # it is quantized
    size = {q: (d / "model.tflite").stat().st_size for q, d in tflite_dirs.items()}
    # The word embeddings (30522 x 32) dominate: int8 weights are about a quarter of float32.
    assert size["int8"] < 0.35 * size["none"]


def test_bert_predict_onnxruntime_input_file(tiny_classifier_run, onnx_dir, tmp_path):
    """The CLI on a TSV file (MRPC's own test.tsv, columns by header name) to a JSONL file."""
    _, labels = reference(tiny_classifier_run)
    out = tmp_path / "predictions.jsonl"
    proc = run_predict(f"--model={onnx_dir}", "--backend=onnxruntime",
                       f"--input_file={tiny_classifier_run.parent / 'data' / 'test.tsv'}",
                       "--has_header", "--text_a_column=#1 String", "--text_b_column=#2 String",
                       "--batch_size=5", f"--output_file={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    a, b = mrpc_test_pairs(tiny_classifier_run)
    assert [r["text"] for r in rows] == a and [r["text_b"] for r in rows] == b
    assert [r["label"] for r in rows] == labels
    probs, _ = reference(tiny_classifier_run)
    got = np.array([[r["probabilities"]["0"], r["probabilities"]["1"]] for r in rows])
    np.testing.assert_allclose(got, probs, atol=FP32_TOL, rtol=0)


def test_onnxruntime_not_installed(onnx_dir, monkeypatch):
    """The message run_main prints as `bert-predict: error: ...` (one line, exit 1)."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError) as e:
        predict.load_model(str(onnx_dir), "onnxruntime")
    assert str(e.value) == ("--backend=onnxruntime needs onnxruntime, which is not installed: "
                            "pip install 'bert_finetune[onnx]'")


def test_tf2onnx_not_installed(record, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(UserError, match=r"needs tf2onnx.*pip install 'bert_finetune\[onnx\]'"):
        onnx_export.export_onnx(record, str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_predictor_input_errors(onnx_dir):
    model = predict.load_model(str(onnx_dir))
    with pytest.raises(UserError, match="fine-tuned on sentence pairs: give text_b"):
        model.predict(["only a"])
    with pytest.raises(UserError, match="text_b input 1 is not a string: 7"):
        model.predict(["a", "b"], ["c", 7])
    with pytest.raises(UserError, match="list of strings, not one string"):
        model.predict("abc", "def")
    with pytest.raises(UserError, match="stdin, line 2: .*text_a<TAB>text_b"):
        list(predict.line_examples(["a\tb\n", "no tab\n"], sentence_pair=True))
    with pytest.raises(UserError, match="give --text_b_column"):
        predict.file_examples("x.tsv", "tsv", "0", None, False, sentence_pair=True)


def test_flat_export_refuses_non_empty_dir(record, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="exists and is not empty: pass --overwrite"):
        tflite_export.export_tflite(record, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    tflite_export.export_tflite(record, str(out), overwrite=True)
    assert "keep.txt" not in {p.name for p in out.iterdir()}
    assert (out / "model.tflite").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_run_dir_without_checkpoint(tiny_classifier_run, tmp_path):
    import shutil

    bare = tmp_path / "run"
    shutil.copytree(tiny_classifier_run, bare,
                    ignore=shutil.ignore_patterns("model.ckpt-*", "checkpoint"))
    with pytest.raises(UserError, match=r"no fine-tuned checkpoint .*run bert-classify"):
        run_dir.load_run(str(bare))
