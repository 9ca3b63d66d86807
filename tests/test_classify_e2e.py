"""bert-classify end to end: real GLUE rows, the real MiniLM vocab, a tiny random model, the CLI.

One MRPC train -> eval -> predict run is shared by the module (`mrpc_run`); tests that run the CLI
again on its output work on a copy, so the order of the tests does not matter.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# vocab_size fits the MiniLM vocab (30522); the rest is tiny and odd-sized (STYLE.md).
CONFIG = {
    "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}
GLUE = SHARED / "data" / "glue"
N_TRAIN, N_DEV, N_TEST, BATCH, EPOCHS = 50, 20, 13, 8, 2.0
# The original's count: int(num_examples / batch * epochs); 12.5 -> 12 checks the truncation.
NUM_STEPS = int(N_TRAIN / BATCH * EPOCHS)


# -- helpers -----------------------------------------------------------------------------------
def require_shared() -> None:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")


def cut(src: Path, dst: Path, rows: int, header: bool = True) -> None:
    """Copies the header (if any) and the first `rows` data lines, bytes as is (BOM included)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f:
        lines = f.read().split(b"\n")
    dst.write_bytes(b"\n".join(lines[:rows + int(header)]) + b"\n")


def run_cli(*flags: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1")
    return subprocess.run([sys.executable, "-m", "bert_finetune.cli.classify", *flags],
                          capture_output=True, text=True, cwd=cwd, env=env)


def check_ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc.stderr


def read_eval_results(path: Path) -> dict[str, str]:
    """`key = value` lines -> {key: value text}; checks the format on the way."""
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split(" = ") for line in lines]
    assert all(len(p) == 2 for p in pairs), lines
    keys = [k for k, _ in pairs]
    assert keys == sorted(keys)
    results = dict(pairs)
    for key, value in results.items():
        if key == "global_step":
            assert value == str(int(value))
        else:  # the original's str() of a numpy float32
            assert value == str(np.float32(value)), (key, value)
    return results


def read_test_results(path: Path) -> np.ndarray:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        assert all(v == str(np.float32(v)) for v in row), row
    return np.array(rows, dtype=np.float64)


def checkpoint_step(output_dir: Path) -> int | None:
    """The step of the `checkpoint` state file's latest checkpoint (None before the first)."""
    try:
        text = (output_dir / "checkpoint").read_text()
    except FileNotFoundError:
        return None
    m = re.search(r'^model_checkpoint_path: ".*model\.ckpt-(\d+)"', text, re.M)
    return int(m.group(1)) if m else None


def copy_run(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop))
    return dst


@dataclass
class Run:
    out: Path
    data: Path
    config: Path
    vocab: Path
    log: str
    flags: list[str]  # everything but --output_dir


@pytest.fixture(scope="module")
def vocab(minilm_weights: Path) -> Path:
    return minilm_weights / "all-MiniLM-L6-v2" / "vocab.txt"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "bert_config.json"
    path.write_text(json.dumps(CONFIG))
    return path


@pytest.fixture(scope="module")
def mrpc_data(tmp_path_factory) -> Path:
    require_shared()
    data = tmp_path_factory.mktemp("mrpc_data")
    cut(GLUE / "MRPC" / "train.tsv", data / "train.tsv", N_TRAIN)
    cut(GLUE / "MRPC" / "dev.tsv", data / "dev.tsv", N_DEV)
    cut(GLUE / "MRPC" / "test.tsv", data / "test.tsv", N_TEST)
    return data


def mrpc_flags(data: Path, config: Path, vocab: Path, **overrides) -> list[str]:
    flags = {
        "task_name": "MRPC", "do_train": "true", "do_eval": "true", "do_predict": "true",
        "data_dir": data, "vocab_file": vocab, "bert_config_file": config,
        "max_seq_length": 32, "train_batch_size": BATCH, "num_train_epochs": EPOCHS,
        "save_checkpoints_steps": 5, "iterations_per_loop": 3,
    }
    flags.update(overrides)
    return [f"--{k}={v}" for k, v in flags.items()]


@pytest.fixture(scope="module")
def mrpc_run(tmp_path_factory, mrpc_data, config_file, vocab) -> Run:
    out = tmp_path_factory.mktemp("mrpc") / "out"  # not there yet: the run creates it
    flags = mrpc_flags(mrpc_data, config_file, vocab)
    log = check_ok(run_cli(*flags, f"--output_dir={out}", cwd=out.parent))
    return Run(out, mrpc_data, config_file, vocab, log, flags)


# -- 1. MRPC train -> eval -> predict ---------------------------------------------------------
def test_mrpc_eval_results(mrpc_run):
    results = read_eval_results(mrpc_run.out / "eval_results.txt")
    assert set(results) == {"eval_accuracy", "eval_f1", "eval_loss", "global_step", "loss"}
    assert int(results["global_step"]) == NUM_STEPS == 12
    assert 0.0 <= float(results["eval_accuracy"]) <= 1.0
    assert 0.0 <= float(results["eval_f1"]) <= 1.0
    assert np.isfinite(float(results["eval_loss"])) and float(results["eval_loss"]) > 0
    # Accuracy over 20 dev examples is a multiple of 1/20.
    assert float(results["eval_accuracy"]) * N_DEV == pytest.approx(
        round(float(results["eval_accuracy"]) * N_DEV), abs=1e-4)
    assert f"Num steps = {NUM_STEPS}" in mrpc_run.log
    assert f"({N_DEV} actual, 0 padding)" in mrpc_run.log


def test_mrpc_test_results_and_predictions(mrpc_run):
    probs = read_test_results(mrpc_run.out / "test_results.tsv")
    assert probs.shape == (N_TEST, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    lines = (mrpc_run.out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == N_TEST
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert record["guid"] == f"test-{i + 1}"  # row index in the file, header included
        assert set(record["probabilities"]) == {"0", "1"}
        p = [record["probabilities"]["0"], record["probabilities"]["1"]]
        np.testing.assert_allclose(p, probs[i], rtol=1e-6)
        assert record["label"] == str(int(np.argmax(p)))


def test_mrpc_checkpoints_carry_original_names(mrpc_run):
    import tensorflow as tf

    out = mrpc_run.out
    # save_checkpoints_steps=5 and the final step.
    for step in (5, 10, NUM_STEPS):
        assert (out / f"model.ckpt-{step}.index").is_file()
    latest = tf.train.latest_checkpoint(str(out))
    assert latest.endswith(f"model.ckpt-{NUM_STEPS}")
    reader = tf.train.load_checkpoint(latest)
    shapes = reader.get_variable_to_shape_map()
    h = CONFIG["hidden_size"]
    assert shapes["bert/embeddings/word_embeddings"] == [CONFIG["vocab_size"], h]
    assert shapes["bert/encoder/layer_1/attention/self/query/kernel"] == [h, h]
    assert shapes["bert/pooler/dense/kernel"] == [h, h]
    assert shapes["output_weights"] == [2, h]
    assert shapes["output_bias"] == [2]
    for var in ("bert/embeddings/word_embeddings", "output_weights", "output_bias"):
        assert shapes[f"{var}/adam_m"] == shapes[var]
        assert shapes[f"{var}/adam_v"] == shapes[var]
    assert int(reader.get_tensor("global_step")) == NUM_STEPS
    assert not any(".ATTRIBUTES" in name for name in shapes)


def test_mrpc_records_the_run(mrpc_run, vocab):
    out = mrpc_run.out
    flags = json.loads((out / "run_flags.json").read_text())
    assert flags["task_name"] == "MRPC" and flags["do_train"] is True
    assert flags["max_seq_length"] == 32 and flags["train_batch_size"] == BATCH
    config = json.loads((out / "bert_config.json").read_text())
    assert {k: config[k] for k in CONFIG} == CONFIG
    assert (out / "label_list.txt").read_text() == "0\n1\n"
    assert (out / "vocab.txt").read_bytes() == vocab.read_bytes()
    assert (out / "do_lower_case.txt").read_text().strip() == "true"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_mrpc_tensorboard_events(mrpc_run):
    import tensorflow as tf

    events = list(mrpc_run.out.glob("events.out.tfevents.*"))
    assert events
    tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value}
    assert {"loss", "learning_rate"} <= tags
    eval_events = list((mrpc_run.out / "eval").glob("events.out.tfevents.*"))
    eval_tags = {value.tag for path in eval_events
                 for event in tf.compat.v1.train.summary_iterator(str(path))
                 for value in event.summary.value}
    assert {"eval_accuracy", "eval_loss", "eval_f1"} <= eval_tags


# -- 2. a second run reuses the records; a finished run says so --------------------------------
def test_rerun_reuses_records_and_training_is_complete(mrpc_run, tmp_path):
    out = copy_run(mrpc_run.out, tmp_path / "out")
    before = sorted(p.name for p in out.glob("model.ckpt-*"))
    flags = mrpc_flags(mrpc_run.data, mrpc_run.config, mrpc_run.vocab, do_eval="false",
                       do_predict="false")
    log = check_ok(run_cli(*flags, f"--output_dir={out}", cwd=tmp_path))
    assert re.search(r"Reusing .*train\.tf_record", log)
    assert re.search(rf"Training already complete.* step {NUM_STEPS} of {NUM_STEPS}", log)
    assert "skipping" not in log.lower()
    assert sorted(p.name for p in out.glob("model.ckpt-*")) == before


# -- 3. resume after a killed run ----------------------------------------------------------------
def test_resume_after_kill(mrpc_data, config_file, vocab, tmp_path):
    out = tmp_path / "out"
    epochs, save_every, per_loop = 60, 25, 5
    total = int(N_TRAIN / BATCH * epochs)  # 375: long enough to be killed half way
    flags = mrpc_flags(mrpc_data, config_file, vocab, do_eval="false", do_predict="false",
                       num_train_epochs=epochs, save_checkpoints_steps=save_every,
                       iterations_per_loop=per_loop)
    cmd = [sys.executable, "-m", "bert_finetune.cli.classify", *flags, f"--output_dir={out}"]
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 180
            # Wait for the `checkpoint` state file (written after the model.ckpt-N files).
            while checkpoint_step(out) is None and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    killed_at = checkpoint_step(out)
    assert killed_at is not None and 0 < killed_at < total

    log = check_ok(run_cli(*flags, f"--output_dir={out}", cwd=tmp_path))
    assert re.search(rf"Resuming from .*model\.ckpt-{killed_at}\b", log)
    assert f"Continuing training at step {killed_at} of {total}" in log
    steps = [int(s) for s in re.findall(rf"step (\d+)/{total}\b", log)]
    assert killed_at < steps[0] <= killed_at + per_loop and steps[-1] == total
    assert checkpoint_step(out) == total

    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(out / f"model.ckpt-{total}"))
    assert int(reader.get_tensor("global_step")) == total


# -- 4. predict from a trained output_dir, nothing repeated --------------------------------------
def test_predict_without_repeated_flags(mrpc_run, tmp_path):
    out = copy_run(mrpc_run.out, tmp_path / "out",
                   drop=("test_results.tsv", "predictions.jsonl", "predict.tf_record*"))
    data = tmp_path / "data"  # only a test file: nothing else is needed to predict
    cut(GLUE / "MRPC" / "test.tsv", data / "test.tsv", 7)
    recorded = (out / "run_flags.json").read_text()
    check_ok(run_cli(f"--output_dir={out}", f"--data_dir={data}", "--do_predict=true",
                     cwd=tmp_path))
    probs = read_test_results(out / "test_results.tsv")
    assert probs.shape == (7, 2)
    # Same checkpoint, same examples: the first 7 rows of the full run (batching aside).
    full = read_test_results(mrpc_run.out / "test_results.tsv")
    np.testing.assert_allclose(probs, full[:7], atol=1e-6)
    # An eval/predict-only run leaves the record of the training run alone.
    assert (out / "run_flags.json").read_text() == recorded


# -- 7. static shapes: eval/predict padded with PaddingInputExample ------------------------------
def test_use_xla_pads_eval_and_predict(mrpc_run, tmp_path):
    out = copy_run(mrpc_run.out, tmp_path / "out",
                   drop=("eval_results.txt", "test_results.tsv", "predictions.jsonl"))
    log = check_ok(run_cli(f"--output_dir={out}", f"--data_dir={mrpc_run.data}",
                           "--do_eval=true", "--do_predict=true", "--use_xla=true",
                           "--eval_batch_size=8", "--predict_batch_size=8", cwd=tmp_path))
    assert "Num examples = 24 (20 actual, 4 padding)" in log
    assert "Num examples = 16 (13 actual, 3 padding)" in log
    probs = read_test_results(out / "test_results.tsv")
    assert probs.shape == (N_TEST, 2)
    np.testing.assert_allclose(probs, read_test_results(mrpc_run.out / "test_results.tsv"),
                               atol=1e-6)
    assert len((out / "predictions.jsonl").read_text().splitlines()) == N_TEST
    # Padding is weighted out of the metrics ("loss", the batch-mean TPUEstimator reported,
    # includes it, as in the original).
    padded = read_eval_results(out / "eval_results.txt")
    plain = read_eval_results(mrpc_run.out / "eval_results.txt")
    for key in ("eval_accuracy", "eval_f1", "global_step"):
        assert padded[key] == plain[key]
    assert float(padded["eval_loss"]) == pytest.approx(float(plain["eval_loss"]), rel=1e-5)


# -- 5. regression (STS-B) and MCC (CoLA) ---------------------------------------------------------
def test_stsb_regression(config_file, vocab, tmp_path):
    require_shared()
    data, out = tmp_path / "data", tmp_path / "out"
    for split, rows in (("train", 40), ("dev", 16), ("test", 9)):
        cut(GLUE / "STS-B" / f"{split}.tsv", data / f"{split}.tsv", rows)
    check_ok(run_cli(*mrpc_flags(data, config_file, vocab, task_name="STS-B",
                                 num_train_epochs=1, save_checkpoints_steps=100),
                     f"--output_dir={out}", cwd=tmp_path))
    results = read_eval_results(out / "eval_results.txt")
    assert {"eval_pearson", "eval_spearman", "eval_mse", "eval_loss"} <= set(results)
    assert int(results["global_step"]) == 40 // 8
    assert -1.0 <= float(results["eval_pearson"]) <= 1.0
    assert float(results["eval_mse"]) >= 0
    values = read_test_results(out / "test_results.tsv")
    assert values.shape == (9, 1)
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 9
    np.testing.assert_allclose([r["prediction"] for r in records], values[:, 0], rtol=1e-6)


def test_cola_mcc(config_file, vocab, tmp_path):
    require_shared()
    data, out = tmp_path / "data", tmp_path / "out"
    cut(GLUE / "CoLA" / "train.tsv", data / "train.tsv", 40, header=False)
    cut(GLUE / "CoLA" / "dev.tsv", data / "dev.tsv", 16, header=False)
    check_ok(run_cli(*mrpc_flags(data, config_file, vocab, task_name="CoLA", do_predict="false",
                                 num_train_epochs=1, save_checkpoints_steps=100),
                     f"--output_dir={out}", cwd=tmp_path))
    results = read_eval_results(out / "eval_results.txt")
    assert set(results) == {"eval_accuracy", "eval_mcc", "eval_loss", "global_step", "loss"}
    assert -1.0 <= float(results["eval_mcc"]) <= 1.0


# -- 6. the generic task, configured by flags ----------------------------------------------------
def _tsv_rows(path: Path, rows: int) -> list[list[str]]:
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().split("\n")
    return [line.split("\t") for line in lines[1:rows + 1]]


def test_generic_csv_with_header_names(config_file, vocab, tmp_path):
    require_shared()
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    names = {"0": "negative", "1": "positive"}
    sst = GLUE / "SST-2"
    for split, rows in (("train", 40), ("dev", 12)):
        with open(data / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "sentiment"])
            writer.writerows([s, names[y]] for s, y in _tsv_rows(sst / f"{split}.tsv", rows))
    with open(data / "test.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)  # no label column: test files need none
        writer.writerow(["id", "sentence"])
        writer.writerows(_tsv_rows(sst / "test.tsv", 7))
    check_ok(run_cli(*mrpc_flags(data, config_file, vocab, task_name="generic",
                                 num_train_epochs=1, save_checkpoints_steps=100),
                     "--input_format=csv", "--text_a_column=sentence",
                     "--label_column=sentiment", f"--output_dir={out}", cwd=tmp_path))
    assert (out / "label_list.txt").read_text() == "negative\npositive\n"  # inferred, sorted
    results = read_eval_results(out / "eval_results.txt")
    assert int(results["global_step"]) == 40 // 8 and "eval_accuracy" in results
    assert read_test_results(out / "test_results.tsv").shape == (7, 2)
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["guid"] for r in records] == [f"test-{i}" for i in range(7)]
    assert all(set(r["probabilities"]) == {"negative", "positive"} for r in records)


def test_generic_jsonl_pairs_then_predict_from_output_dir(config_file, vocab, tmp_path):
    require_shared()
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    rte = GLUE / "RTE"
    for split, rows in (("train", 40), ("dev", 12), ("test", 7)):
        with open(data / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for fields in _tsv_rows(rte / f"{split}.tsv", rows):
                obj = {"premise": fields[1], "hypothesis": fields[2]}
                if split != "test":
                    obj["label"] = fields[3]
                f.write(json.dumps(obj) + "\n")
    check_ok(run_cli(*mrpc_flags(data, config_file, vocab, task_name="generic",
                                 num_train_epochs=1, save_checkpoints_steps=100),
                     "--input_format=jsonl", "--text_a_column=premise",
                     "--text_b_column=hypothesis", "--label_column=label",
                     f"--output_dir={out}", cwd=tmp_path))
    assert (out / "label_list.txt").read_text() == "entailment\nnot_entailment\n"
    assert "eval_accuracy" in read_eval_results(out / "eval_results.txt")
    first = read_test_results(out / "test_results.tsv")
    assert first.shape == (7, 2)
    # Predicting later needs neither the flags nor the train file the labels came from.
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    shutil.copy(data / "test.jsonl", only_test / "test.jsonl")
    (out / "test_results.tsv").unlink()
    check_ok(run_cli(f"--output_dir={out}", f"--data_dir={only_test}", "--do_predict=true",
                     cwd=tmp_path))
    np.testing.assert_allclose(read_test_results(out / "test_results.tsv"), first, atol=1e-6)
