"""Result files: byte-exact formats of the original run_classifier.py, atomic writes."""

import json
import logging
import os

import numpy as np
import pytest

from bert_finetune import fileio, outputs
from bert_finetune.errors import UserError


def test_format_value_matches_original_str_of_numpy_scalars():
    assert outputs.format_value(np.float32(0.84313726)) == "0.84313726"
    assert outputs.format_value(43 / 51) == "0.84313726"  # A Python float goes through float32.
    assert outputs.format_value(np.float64(0.5)) == "0.5"
    assert outputs.format_value(1.0) == "1.0"
    assert outputs.format_value(np.int64(343)) == "343"
    assert outputs.format_value(343) == "343"
    assert outputs.format_value(np.array(0.25, dtype=np.float32)) == "0.25"


def test_eval_results_bytes(tmp_path, caplog):
    path = tmp_path / "eval_results.txt"
    results = {
        "loss": 0.5,
        "global_step": np.int64(343),
        "eval_loss": 0.5,
        "eval_accuracy": np.float32(0.84313726),
    }
    with caplog.at_level(logging.INFO):
        outputs.write_eval_results(path, results)
    assert path.read_bytes() == (
        b"eval_accuracy = 0.84313726\neval_loss = 0.5\nglobal_step = 343\nloss = 0.5\n"
    )
    assert "***** Eval results *****" in caplog.text
    assert "global_step = 343" in caplog.text
    assert outputs.read_eval_results(path) == {
        "eval_accuracy": "0.84313726",
        "eval_loss": "0.5",
        "global_step": "343",
        "loss": "0.5",
    }


def test_read_eval_results_errors_name_the_file(tmp_path):
    path = tmp_path / "eval_results.txt"
    path.write_text("eval_accuracy = 0.5\nnot a result line\n")
    with pytest.raises(UserError, match=r"eval_results.txt:2: expected 'key = value'"):
        outputs.read_eval_results(path)
    with pytest.raises(UserError, match="missing.txt"):
        outputs.read_eval_results(tmp_path / "missing.txt")


def test_test_results_drop_padding_and_use_float32_str(tmp_path):
    path = tmp_path / "test_results.tsv"
    probabilities = np.array([[0.1, 0.9], [1 / 3, 2 / 3], [0.5, 0.5]])  # Last row is padding.
    outputs.write_test_results(path, probabilities, num_real=2)
    assert path.read_bytes() == b"0.1\t0.9\n0.33333334\t0.6666667\n"


def test_test_results_regression_one_column(tmp_path):
    path = tmp_path / "test_results.tsv"
    outputs.write_test_results(path, np.array([[3.25], [0.5], [0.0]], np.float32), num_real=3)
    assert path.read_text().splitlines() == ["3.25", "0.5", "0.0"]
    outputs.write_test_results(path, np.array([1.5, 2.0], np.float32), num_real=2)  # [B] too.
    assert path.read_text() == "1.5\n2.0\n"


def test_test_results_too_few_rows_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="1 predictions for 2 real examples"):
        outputs.write_test_results(tmp_path / "t.tsv", np.zeros((1, 2)), num_real=2)
    assert not (tmp_path / "t.tsv").exists()


def test_predictions_jsonl_round_trip(tmp_path):
    path = tmp_path / "predictions.jsonl"
    probabilities = np.array([[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]], np.float32)
    outputs.write_predictions_jsonl(path, ["test-0", "test-1"], ["0", "1"], probabilities, 2)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records == [
        {
            "guid": "test-0",
            "label": "1",
            "probabilities": {"0": float(np.float32(0.2)), "1": float(np.float32(0.8))},
        },
        {
            "guid": "test-1",
            "label": "0",
            "probabilities": {"0": float(np.float32(0.7)), "1": float(np.float32(0.3))},
        },
    ]
    # The floats are the float32 values exactly: converting back is lossless.
    assert np.float32(records[0]["probabilities"]["1"]) == probabilities[0, 1]


def test_predictions_jsonl_regression(tmp_path):
    path = tmp_path / "predictions.jsonl"
    outputs.write_predictions_jsonl(
        path, ["a", "b"], [], np.array([[4.5], [1.25]], np.float32), 2, is_regression=True
    )
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"guid": "a", "prediction": 4.5},
        {"guid": "b", "prediction": 1.25},
    ]


def test_interrupted_write_leaves_no_file(tmp_path):
    path = tmp_path / "predictions.jsonl"
    # The second guid cannot be serialised: the write fails after the first line went out.
    with pytest.raises(TypeError):
        outputs.write_predictions_jsonl(path, ["ok", object()], ["0", "1"], np.full((2, 2), 0.5), 2)
    assert os.listdir(tmp_path) == []


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "eval_results.txt"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), fileio.atomic_open(path) as f:
        f.write("half of the new")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["eval_results.txt"]  # No temporary left behind.


def test_atomic_write_text_and_bytes(tmp_path):
    fileio.atomic_write(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_bytes() == "héllo\n".encode()
    fileio.atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin"]


def test_ensure_output_dir(tmp_path):
    nested = tmp_path / "runs" / "mrpc"
    fileio.ensure_output_dir(nested)
    assert nested.is_dir()
    fileio.ensure_output_dir(nested)  # Existing directory: fine.
    a_file = tmp_path / "out"
    a_file.write_text("")
    with pytest.raises(UserError, match=r"^--output_dir=.*out is a file, not a directory$"):
        fileio.ensure_output_dir(a_file)


def test_predictions_jsonl_line_separators_stay_escaped(tmp_path):
    # U+2028/U+2029 are valid in JSON strings but split lines for str.splitlines() and JS.
    path = tmp_path / "predictions.jsonl"
    guids = ["a\u2028b", "c\u2029d é"]
    outputs.write_predictions_jsonl(path, guids, ["0", "1"], np.full((2, 2), 0.5, np.float32), 2)
    text = path.read_text(encoding="utf-8")
    assert "\u2028" not in text and "\u2029" not in text and "é" in text
    assert [json.loads(line)["guid"] for line in text.splitlines()] == guids
