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
    epochs, save_every, per_loop = 16, 15, 5
    total = int(N_TRAIN / BATCH * epochs)  # 80, from the questions (windows are more)
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
    assert re.search(rf"Features: {N_TRAIN}/{N_TRAIN} examples \(\d+ features\)  ETA", first)
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
    # Prediction progress is the runner's (quiet under 5 s, tests/test_progress.py); the
    # summary line always comes.
    assert re.search(r"Predicted \d+ windows in [\d.]+ s; post-processing \d+ questions", log)
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
    # config, vocab, casing, lengths and version_2_with_negative; the threshold is new, and
    # --use_xla pads the records to fixed batches of 7 (the padding is dropped again).
    (out / "predictions.json").unlink()
    log = check_ok(run_cli(f"--output_dir={out}", "--do_predict=true",
                           f"--predict_file={predict_file}", "--null_score_diff_threshold=1e9",
                           "--use_xla=true", "--predict_batch_size=7", cwd=tmp_path))
    windows = int(re.search(r"Num split examples = (\d+)", log).group(1))
    assert windows % 7  # so padding was needed
    again = json.loads((out / "predictions.json").read_text())
    assert list(again) == list(first)
    assert all(again.values())  # null only when null - best > 1e9: never
    assert all(again[q] == t for q, t in first.items() if t)  # same model, same answers

    # Length-bucketed prediction (each batch padded to its longest window): the same answers
    # and null odds as full padding.
    (out / "predictions.json").unlink()
    null_odds = json.loads((out / "null_odds.json").read_text())
    check_ok(run_cli(f"--output_dir={out}", "--do_predict=true", f"--predict_file={predict_file}",
                     "--length_buckets=1", cwd=tmp_path))
    assert json.loads((out / "predictions.json").read_text()) == first
    bucketed_odds = json.loads((out / "null_odds.json").read_text())
    assert list(bucketed_odds) == list(null_odds)
    np.testing.assert_allclose(list(bucketed_odds.values()), list(null_odds.values()),
                               atol=1e-4)


# -- bad input: one line naming the file (and question), nothing written ------------------------
def _opts(vocab, config_file, out, **kw):
    from bert_finetune import squad

    return squad.SquadOptions(vocab_file=str(vocab), bert_config_file=str(config_file),
                              output_dir=str(out), max_seq_length=64, doc_stride=24,
                              max_query_length=16, **kw)


def _qa(qid, context="Paris is in France.", answers=None, **extra):
    qa = {"question": "Where is Paris?",
          "answers": [{"text": "France", "answer_start": 12}] if answers is None else answers,
          **extra}
    if qid is not None:
        qa["id"] = qid
    return {"context": context, "qas": [qa]}


BAD_FILES = {
    "malformed": ('{"data": [', r"not valid JSON: line 1 column 11"),
    "empty": ("", r"the file is empty"),
    "no_data": ({"version": "1.1"}, r"no 'data' list"),
    "no_paragraphs": ({"data": [{"title": "x"}]}, r"data\[0\] has no 'paragraphs'"),
    "no_qas": ({"data": [{"paragraphs": [{"context": "c"}]}]},
               r"data\[0\]\.paragraphs\[0\] has no 'qas'"),
    "no_questions": ({"data": []}, r"no questions in the file"),
    "offset": ({"data": [{"paragraphs": [_qa("q7", answers=[
        {"text": "France", "answer_start": 30}])]}]},
               r"question q7: answer_start=30 .* outside its 19-char context"),
    "v2_without_flag": ({"data": [{"paragraphs": [_qa("q9", answers=[],
                                                      is_impossible=True)]}]},
                        r"question q9 has is_impossible=true: this is a SQuAD 2\.0 file; "
                        r"pass --version_2_with_negative=true"),
    "no_ids": ({"data": [{"paragraphs": [_qa(None), _qa(None)]}]},
               r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'id'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_predict_file_fails_before_writing(shared_dir, vocab, config_file, tmp_path, case):
    from bert_finetune import squad
    from bert_finetune.errors import UserError

    content, message = BAD_FILES[case]
    bad = tmp_path / f"{case}.json"
    bad.write_text(content if isinstance(content, str) else json.dumps(content))
    good = tmp_path / "train.json"
    good.write_text(json.dumps({"data": [{"paragraphs": [_qa("t1")]}]}))
    out = tmp_path / "out"
    opts = _opts(vocab, config_file, out, do_train=True, train_file=str(good), do_predict=True,
                 predict_file=str(bad))
    assert squad.validate(opts) == []
    with pytest.raises(UserError, match=message) as e:
        squad.run(opts)
    assert str(e.value).startswith(f"{bad}: ")
    assert not out.exists()  # the train file was fine, but nothing was started


def test_cli_reports_every_flag_problem_and_bad_files_on_one_line(vocab, config_file, tmp_path):
    proc = run_cli(f"--vocab_file={vocab}", f"--bert_config_file={config_file}",
                   f"--output_dir={tmp_path / 'out'}", "--do_train=true", "--do_predict=true",
                   f"--predict_file={tmp_path / 'missing.json'}", "--max_seq_length=128",
                   "--max_query_length=125", cwd=tmp_path)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("bert-squad: error: ")
    for problem in ("If `do_train` is True, then `train_file` must be specified.",
                    f"--predict_file={tmp_path / 'missing.json'}: no such file",
                    "The max_seq_length (128) must be greater than max_query_length (125) + 3",
                    "Cannot use sequence length 128"):
        assert problem in line, line
    assert not (tmp_path / "out").exists()

    bad = tmp_path / "dev.json"
    bad.write_text('{"data": [')
    proc = run_cli(f"--vocab_file={vocab}", f"--bert_config_file={config_file}",
                   f"--output_dir={tmp_path / 'out'}", "--do_predict=true",
                   f"--predict_file={bad}", *SEQ, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"bert-squad: error: {bad}: not valid JSON: line 1 column 11: Expecting value")
    assert not (tmp_path / "out").exists()


# -- scripts/run_squad.sh and the presets -------------------------------------------------------
def _bash(*args: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("BERT_BASE_DIR", "SQUAD_DIR", "OUTPUT_DIR", "BERT_SQUAD")}
    return subprocess.run(["bash", str(SCRIPTS / "run_squad.sh"), *args], capture_output=True,
                          text=True, env={**base, **env}, cwd=REPO, timeout=600)


@pytest.mark.parametrize("version, suffix, v2", [("v1", "v1.1", False), ("V2", "v2.0", True)])
def test_run_squad_dry_run(version, suffix, v2):
    proc = _bash("--dry-run", version, "--num_train_epochs=1",
                 env={"BERT_BASE_DIR": "/m/b", "SQUAD_DIR": "/d", "BERT_SQUAD": "my-squad"})
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.replace("\\\n", " ").split()
    tag = "v2" if v2 else "v1"
    assert argv[0] == "my-squad"
    assert argv[1:] == [f"--flagfile={REPO}/configs/squad_{tag}.flags",
                        f"--train_file=/d/train-{suffix}.json",
                        f"--predict_file=/d/dev-{suffix}.json", "--vocab_file=/m/b/vocab.txt",
                        "--bert_config_file=/m/b/bert_config.json",
                        "--init_checkpoint=/m/b/bert_model.ckpt",
                        f"--output_dir=/tmp/squad_{tag}_output", "--num_train_epochs=1"]
    preset = (REPO / "configs" / f"squad_{tag}.flags").read_text()
    assert ("--version_2_with_negative=true" in preset) == v2
    assert "--learning_rate=3e-5" in preset and "--doc_stride=128" in preset


def test_run_squad_needs_env_and_version():
    proc = _bash("--dry-run", "v1", env={"SQUAD_DIR": "/d"})
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("run_squad.sh: error: BERT_BASE_DIR is not set: export "
                                   "BERT_BASE_DIR=<folder with vocab.txt, bert_config.json and "
                                   "bert_model.ckpt>")
    proc = _bash("--dry-run", "v3", env={"SQUAD_DIR": "/d", "BERT_BASE_DIR": "/b"})
    assert "unknown SQuAD version 'v3'" in proc.stderr


def test_run_squad_smoke(shared_dir, vocab, tmp_path):
    """run_squad.sh for real on a tiny BERT_BASE_DIR: the preset, predict only (training is
    covered above), 6 questions."""
    from bert_finetune import checkpoints, modeling

    base = tmp_path / "base"
    base.mkdir()
    (base / "vocab.txt").write_bytes(vocab.read_bytes())
    (base / "bert_config.json").write_text(json.dumps(CONFIG))
    model = modeling.BertModel(modeling.BertConfig.from_dict(CONFIG))
    checkpoints.write_checkpoint(str(base / "bert_model.ckpt"),
                                 {n: v.numpy() for n, v in model.variables_by_name().items()})
    squad_dir = tmp_path / "squad"
    squad_dir.mkdir()
    src = shared_dir / "data" / "squad" / "v1.1"
    gold = cut_squad(src / "dev-v1.1-articles-16-47.json", squad_dir / "dev-v1.1.json", 6)
    out = tmp_path / "out"
    proc = _bash("v1", "--max_seq_length=64", "--doc_stride=32", "--max_query_length=16",
                 "--do_train=false",
                 env={"BERT_BASE_DIR": str(base), "SQUAD_DIR": str(squad_dir),
                      "OUTPUT_DIR": str(out), "BERT_SQUAD": str(BIN / "bert-squad")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = check_prediction_files(out, gold, v2=False)
    assert results["global_step"] == 0
    assert "*INIT_FROM_CKPT*" in proc.stderr  # the preset's run did start from BERT_BASE_DIR
    assert "bert_model.ckpt and an untrained head" in proc.stderr
