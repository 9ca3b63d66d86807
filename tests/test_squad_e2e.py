"""bert-squad end to end: real SQuAD questions, the real MiniLM vocab, a tiny random model, the CLI.

v1.1 trains on a slice of the train stand-in (dev articles 00-15) and predicts on a slice of the
evaluation articles (16-47); the training run is killed at its first checkpoint and resumed.
v2.0 trains and predicts on slices of the CS224N half, then predicts again from output_dir alone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bert_finetune.runner import squad_metrics as sm

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
BIN = Path(sys.executable).parent
CONFIG = {
    "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}
SEQ = ["--max_seq_length=64", "--doc_stride=24", "--max_query_length=16"]
N_TRAIN, N_PREDICT, BATCH = 40, 25, 8


def cut_squad(src: Path, dst: Path, questions: int, skip_articles: int = 0) -> dict[str, list]:
    """The first `questions` questions (whole paragraphs cut short) of `src`; returns the gold."""
    data = json.loads(src.read_text(encoding="utf-8"))
    out, gold = [], {}
    for article in data["data"][skip_articles:]:
        paragraphs = []
        for p in article["paragraphs"]:
            qas = p["qas"][:questions - len(gold)]
            gold.update({qa["id"]: [a["text"] for a in qa["answers"]] for qa in qas})
            paragraphs.append(dict(p, qas=qas))
            if len(gold) == questions:
                break
        out.append(dict(article, paragraphs=paragraphs))
        if len(gold) == questions:
            break
    dst.write_text(json.dumps({"version": data["version"], "data": out}), encoding="utf-8")
    return gold


def run_cli(*flags, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1")
    return subprocess.run([sys.executable, "-m", "bert_finetune.cli.squad", *map(str, flags)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def check_ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc.stderr


def checkpoint_step(output_dir: Path) -> int | None:
    try:
        text = (output_dir / "checkpoint").read_text()
    except FileNotFoundError:
        return None
    m = re.search(r'^model_checkpoint_path: ".*model\.ckpt-(\d+)"', text, re.M)
    return int(m.group(1)) if m else None


def read_eval_results_txt(path: Path) -> dict[str, str]:
    pairs = [line.split(" = ") for line in path.read_text().splitlines()]
    assert all(len(p) == 2 for p in pairs)
    assert [k for k, _ in pairs] == sorted(k for k, _ in pairs)
    return dict(pairs)


def check_prediction_files(out: Path, gold: dict, v2: bool) -> dict:
    predictions = json.loads((out / "predictions.json").read_text())
    assert list(predictions) == list(gold)  # every question answered, in file order
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    assert list(nbest) == list(gold)
    for qid, entries in nbest.items():
        assert 1 <= len(entries) <= 20 + v2  # v2.0: plus "" when it missed the n-best
        for e in entries:
            assert list(e) == ["text", "probability", "start_logit", "end_logit"]
        assert sum(e["probability"] for e in entries) == pytest.approx(1.0)
        if not v2:
            assert predictions[qid] == entries[0]["text"] != ""
    results = json.loads((out / "eval_results.json").read_text())
    txt = read_eval_results_txt(out / "eval_results.txt")
    assert set(txt) == set(results)
    for key, value in results.items():
        assert txt[key] == (str(value) if isinstance(value, int) else str(np.float32(value)))
    if v2:
        null_odds = json.loads((out / "null_odds.json").read_text())
        assert list(null_odds) == list(gold)
        best = json.loads((out / "predictions_best_thresh.json").read_text())
        assert list(best) == list(gold)
        # Re-scoring the written files with the official definitions gives the same numbers.
        assert results["exact_match"] == pytest.approx(
            sm.evaluate_v2(gold, predictions)["exact"])
        assert results["best_f1"] == pytest.approx(sm.evaluate_v2(gold, best)["f1"])
        assert {"HasAns_exact", "NoAns_exact", "best_exact", "best_exact_thresh",
                "best_f1_thresh"} <= set(results)
    else:
        assert not (out / "null_odds.json").exists()
        assert results == pytest.approx(dict(sm.evaluate_v1(gold, predictions),
                                             global_step=results["global_step"]))
    return results


@pytest.fixture(scope="module")
def vocab(minilm_weights: Path) -> Path:
    return minilm_weights / "all-MiniLM-L6-v2" / "vocab.txt"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "bert_config.json"
    path.write_text(json.dumps(CONFIG))
    return path


# -- v1.1: train (killed at the first checkpoint, resumed) -> predict ----------------------------
def test_v1_train_killed_resumed_and_predict(shared_dir, vocab, config_file, tmp_path):
    squad_dir = shared_dir / "data" / "squad" / "v1.1"
    train_file, predict_file = tmp_path / "train.json", tmp_path / "dev.json"
    cut_squad(squad_dir / "dev-v1.1-articles-00-15.json", train_file, N_TRAIN)
    gold = cut_squad(squad_dir / "dev-v1.1-articles-16-47.json", predict_file, N_PREDICT)
    out = tmp_path / "out"
    epochs, save_every, per_loop = 60, 25, 5
    total = int(N_TRAIN / BATCH * epochs)  # 300, from the questions (windows are more)
    flags = [f"--vocab_file={vocab}", f"--bert_config_file={config_file}", "--do_train=true",
             f"--train_file={train_file}", *SEQ, f"--train_batch_size={BATCH}",
             f"--num_train_epochs={epochs}", f"--save_checkpoints_steps={save_every}",
             f"--iterations_per_loop={per_loop}", f"--output_dir={out}"]
    cmd = [sys.executable, "-m", "bert_finetune.cli.squad", *flags]
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 300
            while checkpoint_step(out) is None and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    first = (tmp_path / "first.log").read_text()
    assert proc.returncode == -signal.SIGKILL, first[-3000:]
    assert f"Num orig examples = {N_TRAIN}" in first and f"Num steps = {total}" in first
    windows = int(re.search(r"Num split examples = (\d+)", first).group(1))
    assert windows > N_TRAIN
    killed_at = checkpoint_step(out)
    assert killed_at is not None and 0 < killed_at < total

    log = check_ok(run_cli(*flags, "--do_predict=true", f"--predict_file={predict_file}",
                           "--predict_batch_size=7", cwd=tmp_path))
    assert re.search(rf"Resuming from .*model\.ckpt-{killed_at}\b", log)
    assert f"Continuing training at step {killed_at} of {total}" in log
    steps = [int(s) for s in re.findall(rf"step (\d+)/{total}\b", log)]
    assert killed_at < steps[0] <= killed_at + per_loop and steps[-1] == total
    assert re.search(r"Predict: \d+/\d+ batches +ETA", log)  # progress with ETA
    assert re.search(r"post-processing 25 questions took", log)
    results = check_prediction_files(out, gold, v2=False)
    assert results["global_step"] == total

    import tensorflow as tf

    shapes = tf.train.load_checkpoint(str(out / f"model.ckpt-{total}")
                                      ).get_variable_to_shape_map()
    assert shapes["cls/squad/output_weights"] == [2, CONFIG["hidden_size"]]
    assert shapes["cls/squad/output_bias"] == [2]
    assert shapes["bert/encoder/layer_1/output/dense/kernel"] == [37, 32]
    assert (out / "train.tf_record").is_file() and (out / "eval.tf_record").is_file()


# -- v2.0: train -> predict, then predict again from output_dir alone ---------------------------
def test_v2_train_predict_and_predict_from_output_dir(shared_dir, vocab, config_file, tmp_path):
    src = shared_dir / "data" / "squad" / "v2.0" / "dev-v2.0-cs224n-half.json"
    train_file, predict_file = tmp_path / "train.json", tmp_path / "dev.json"
    cut_squad(src, train_file, 24)
    gold = cut_squad(src, predict_file, 30, skip_articles=8)
    assert any(not g for g in gold.values()) and any(gold.values())
    out = tmp_path / "out"
    log = check_ok(run_cli(
        f"--vocab_file={vocab}", f"--bert_config_file={config_file}", "--do_train=true",
        f"--train_file={train_file}", "--do_predict=true", f"--predict_file={predict_file}",
        "--version_2_with_negative=true", *SEQ, "--train_batch_size=8",
        "--num_train_epochs=1", f"--output_dir={out}", cwd=tmp_path))
    assert "Num steps = 3" in log
    results = check_prediction_files(out, gold, v2=True)
    assert results["global_step"] == 3
    first = json.loads((out / "predictions.json").read_text())

    # Predict again with nothing repeated but the predict file: the recorded run gives the
    # config, vocab, casing, lengths and version_2_with_negative; the threshold is new.
    (out / "predictions.json").unlink()
    check_ok(run_cli(f"--output_dir={out}", "--do_predict=true",
                     f"--predict_file={predict_file}", "--null_score_diff_threshold=1e9",
                     cwd=tmp_path))
    again = json.loads((out / "predictions.json").read_text())
    assert list(again) == list(first)
    assert all(again.values())  # null only when null - best > 1e9: never
    assert all(again[q] == t for q, t in first.items() if t)  # same model, same answers
