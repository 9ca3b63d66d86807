"""bert-export --squad: a bert-squad run served from raw strings, against its own predictions.json.

One tiny bert-squad run (real SQuAD paragraphs and the contexts of
test_squad_answers.py, the real MiniLM vocab, max_seq_length 128, one training step), exported
from a copy of its output_dir that is deleted before anything loads the export. Reference:
the run's predictions.json / nbest_predictions.json. For every question (one window or several)
the export's answer is the same string, its probability and score equal the n-best entry's
(1e-5: float32 outputs of float64 sums) and it made as many windows as bert-squad.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
import tf_serving_rest
from export_helpers import one_line_error
from test_squad_answers import CONTEXTS, QUESTIONS

from bert_finetune import checkpoints, predict, squad
from bert_finetune.data import squad as squad_data
from bert_finetune.data import squad_features
from bert_finetune.errors import UserError
from bert_finetune.export import classifier, run_dir, squad_serving
from bert_finetune.tokenization import FullTokenizer

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
CONFIG = {
    "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 128, "type_vocab_size": 2,
    "initializer_range": 0.02,
}
SEQ, STRIDE, QUERY = 128, 32, 24
TOL = 1e-5


def _paragraphs(src: Path, questions: int, long_ones: int) -> list[dict]:
    """Paragraphs of `src` with up to 3 questions each (answers dropped): first ones cut to
    their first 50 words (so that they fit one window at max_seq_length 128), then `long_ones`
    whole long ones (several windows)."""
    data = json.loads(src.read_text(encoding="utf-8"))["data"]
    short, long_, count = [], [], 0
    for article in data:
        for p in article["paragraphs"]:
            qas = [{"id": qa["id"], "question": qa["question"]} for qa in p["qas"][:3]]
            if count < questions:
                # Cut at a whitespace run, keeping the context's own characters.
                cut = [m.start() for m in re.finditer(r"\s+", p["context"])][50:51]
                short.append({"context": p["context"][:cut[0]] if cut else p["context"],
                              "qas": qas})
                count += len(qas)
            elif len(p["context"].split()) > 150 and len(long_) < long_ones:
                long_.append({"context": p["context"], "qas": qas[:1]})
    return short + long_


@pytest.fixture(scope="module")
def squad_run(shared_dir, minilm_hf, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("squad_serving")
    src = shared_dir / "data" / "squad" / "v1.1"
    train = json.loads((src / "dev-v1.1-articles-00-15.json").read_text(encoding="utf-8"))
    paragraph = train["data"][0]["paragraphs"][0]
    train["data"] = [{"title": "t", "paragraphs": [dict(paragraph, qas=paragraph["qas"][:8])]}]
    (root / "train.json").write_text(json.dumps(train))
    paragraphs = _paragraphs(src / "dev-v1.1-articles-16-47.json", 30, 3)
    paragraphs += [{"context": c, "qas": [{"id": f"c{i}", "question": q}]}
                   for i, (c, q) in enumerate(zip(CONTEXTS, QUESTIONS, strict=True))]
    (root / "dev.json").write_text(json.dumps({"version": "1.1", "data": [
        {"title": "d", "paragraphs": paragraphs}]}))
    (root / "bert_config.json").write_text(json.dumps(CONFIG))
    out = root / "run"
    # The library behind the bert-squad CLI (test_squad_e2e.py runs the CLI itself), in
    # process: one training step, then predictions.json.
    opts = squad.SquadOptions(
        vocab_file=str(minilm_hf / "vocab.txt"), bert_config_file=str(root / "bert_config.json"),
        output_dir=str(out), do_train=True, train_file=str(root / "train.json"),
        do_predict=True, predict_file=str(root / "dev.json"), max_seq_length=SEQ,
        doc_stride=STRIDE, max_query_length=QUERY, train_batch_size=8, num_train_epochs=1.0)
    assert squad.validate(opts) == []
    squad.run(opts)
    return out


@pytest.fixture(scope="module")
def export_base(squad_run, tmp_path_factory) -> Path:
    """EXPORT of a copy of the run, the copy deleted before anything loads the export."""
    root = tmp_path_factory.mktemp("squad_export")
    copy = root / "run"
    shutil.copytree(squad_run, copy)
    proc = subprocess.run(
        [sys.executable, "-m", "bert_finetune.cli.export", "--squad", f"--run_dir={copy}",
         f"--output_dir={root / 'export'}"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(f"to {root / 'export' / '1'}")
    shutil.rmtree(copy)
    return root / "export"


@pytest.fixture(scope="module")
def serve(export_base):
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    return tf.saved_model.load(str(export_base / "1")).signatures["serving_default"]


@pytest.fixture(scope="module")
def questions(squad_run) -> list[dict]:
    """{id, question, context, windows} of every question of the run's predict file."""
    path = str(squad_run.parent / "dev.json")
    examples = squad_data.read_squad_examples(path, False)
    windows = [0] * len(examples)

    def count(f):
        windows[f.example_index] += 1

    tokenizer = FullTokenizer(str(squad_run / "vocab.txt"), True)
    squad_features.convert_examples_to_features(examples, tokenizer, SEQ, STRIDE, QUERY, False,
                                                count)
    items = [{"id": qid, "question": qa["question"], "context": ctx}
             for ctx, qa, qid in squad_data.iter_questions(squad_data.load_squad_json(path),
                                                           path)]
    for item, n in zip(items, windows, strict=True):
        item["windows"] = n
    return items


def _normalised(text: str) -> str:
    return re.sub("[ \t\r\n\u202f]+", " ", text)


def test_layout_and_signatures(export_base, serve):
    version = export_base / "1"
    assert sorted(p.name for p in export_base.iterdir()) == ["1"]
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assets = version / "assets"
    assert sorted(p.name for p in assets.iterdir()) == ["do_lower_case.txt", "export_info.json",
                                                        "vocab.txt"]
    info = json.loads((assets / "export_info.json").read_text())
    assert info["task"] == "squad"
    assert (info["max_seq_length"], info["doc_stride"], info["max_query_length"]) == (
        SEQ, STRIDE, QUERY)
    assert (info["n_best_size"], info["max_answer_length"]) == (20, 30)
    assert info["version_2_with_negative"] is False and info["checkpoint"] == "model.ckpt-1"
    inputs = serve.structured_input_signature[1]
    assert {k: (v.dtype, v.shape.as_list()) for k, v in inputs.items()} == {
        "question": (tf.string, [None]), "context": (tf.string, [None])}
    assert {k: v.dtype for k, v in serve.structured_outputs.items()} == {
        "answer": tf.string, "score": tf.float32, "probability": tf.float32,
        "answer_start": tf.int64, "answer_end": tf.int64, "num_windows": tf.int64}


def test_answers_equal_bert_squad_predictions(serve, squad_run, questions):
    predictions = json.loads((squad_run / "predictions.json").read_text())
    nbest = json.loads((squad_run / "nbest_predictions.json").read_text())
    out = serve(question=tf.constant([q["question"] for q in questions]),
                context=tf.constant([q["context"] for q in questions]))
    out = {k: v.numpy() for k, v in out.items()}
    assert list(predictions) == [q["id"] for q in questions]
    for i, q in enumerate(questions):
        assert out["num_windows"][i] == q["windows"], q["id"]
        answer = out["answer"][i].decode("utf-8")
        assert answer == predictions[q["id"]], q["id"]
        entry = nbest[q["id"]][0]
        assert entry["text"] == answer
        assert out["probability"][i] == pytest.approx(entry["probability"], abs=TOL)
        assert out["score"][i] == pytest.approx(entry["start_logit"] + entry["end_logit"],
                                                abs=TOL)
        start, end = out["answer_start"][i], out["answer_end"][i]
        if answer == "empty":  # the original's nonce: no span qualified
            assert start == end == -1
        else:
            assert _normalised(q["context"][start:end]) == answer
    windows = [q["windows"] for q in questions]
    assert windows.count(1) >= 25 and max(windows) >= 3


def test_rest_row_and_columnar_bodies(serve, questions):
    qs = questions[:5]
    direct = serve(question=tf.constant([q["question"] for q in qs]),
                   context=tf.constant([q["context"] for q in qs]))
    answers = [a.decode("utf-8") for a in direct["answer"].numpy()]
    rows = json.loads(tf_serving_rest.call(serve, json.dumps(
        {"instances": [{"question": q["question"], "context": q["context"]} for q in qs]})))
    assert [r["answer"] for r in rows["predictions"]] == answers
    assert [r["answer_start"] for r in rows["predictions"]] == \
        direct["answer_start"].numpy().tolist()
    cols = json.loads(tf_serving_rest.call(serve, json.dumps({"inputs": {
        "question": [q["question"] for q in qs], "context": [q["context"] for q in qs]}})))
    assert cols["outputs"]["answer"] == answers
    with pytest.raises(tf_serving_rest.RestError, match=r"Missing but required: \['context'\]"):
        tf_serving_rest.call(serve, json.dumps({"instances": [{"question": "q"}]}))
    with pytest.raises(tf_serving_rest.RestError, match="is not of expected type: string"):
        tf_serving_rest.call(serve, json.dumps({"inputs": {"question": [1], "context": ["c"]}}))


def test_bert_predict_stdin_loads_once(export_base, serve, questions):
    qs = questions[:10]
    stdin = "".join(json.dumps({"question": q["question"], "context": q["context"]}) + "\n"
                    for q in qs)
    proc = subprocess.run([sys.executable, "-m", "bert_finetune.cli.predict",
                           f"--model={export_base}", "--batch_size=4"],
                          input=stdin, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.split("\n") if line]
    want = serve(question=tf.constant([q["question"] for q in qs]),
                 context=tf.constant([q["context"] for q in qs]))
    assert [r["answer"] for r in rows] == [a.decode("utf-8") for a in want["answer"].numpy()]
    assert [r["question"] for r in rows] == [q["question"] for q in qs]
    assert [r["answer_end"] for r in rows] == want["answer_end"].numpy().tolist()
    loads = [line for line in proc.stderr.splitlines() if "Loaded model" in line]
    assert len(loads) == 1, loads  # 10 questions in 3 batches, one load
    assert f"{export_base / '1'} (tensorflow, question answering)" in loads[0]


@pytest.mark.slow
def test_bert_predict_squad_file_and_run_dir(squad_run, questions, tmp_path):
    """--input_format=squad on the run directory itself (the same graph, built in memory)."""
    out = tmp_path / "answers.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bert_finetune.cli.predict",
                           f"--model={squad_run}", f"--input_file={squad_run.parent / 'dev.json'}",
                           "--input_format=squad", f"--output_file={out}"],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    predictions = json.loads((squad_run / "predictions.json").read_text())
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert [r["id"] for r in rows] == [q["id"] for q in questions]
    assert [r["answer"] for r in rows] == [predictions[q["id"]] for q in questions]


@pytest.mark.slow
def test_saved_model_cli_run(export_base):
    proc = subprocess.run(
        [sys.executable, "-m", "bert_finetune.cli.saved_model_cli", "run", "--dir",
         str(export_base / "1"), "--tag_set", "serve", "--signature_def", "serving_default",
         "--input_exprs", 'question=["Where is Paris?"];context=["Paris is in France."]'],
        capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Result for output key answer:" in proc.stdout


def test_bad_input(export_base, squad_run, tmp_path):
    model = predict.load_model(str(export_base))
    assert model.info.task == "squad"
    with pytest.raises(UserError, match=r"question input 1 is not a string: 3"):
        model.answer(["a", 3], ["b", "c"])
    with pytest.raises(UserError, match="2 questions but 1 contexts"):
        model.answer(["a", "b"], ["c"])
    with pytest.raises(UserError, match="is a bert-squad model: give a question and a context"):
        model.predict(["text"])
    with pytest.raises(UserError, match=r'stdin, line 2: no "context"'):
        list(predict.question_lines(['{"question": "q", "context": "c"}', '{"question": "q"}']))
    with pytest.raises(UserError, match="stdin, line 1: not JSON"):
        list(predict.question_lines(["What is it?"]))
    # A run without a checkpoint; a bert-squad run exported as a classifier and vice versa.
    bare = tmp_path / "bare"
    shutil.copytree(squad_run, bare, ignore=shutil.ignore_patterns("model.ckpt-*", "checkpoint"))
    with pytest.raises(UserError, match="no fine-tuned checkpoint .* run bert-squad"):
        squad_serving.export_squad(str(bare), str(tmp_path / "e"))
    with pytest.raises(UserError, match="is a bert-squad run .* export it with --squad"):
        classifier.export_classifier(str(squad_run), str(tmp_path / "e"))
    fake = tmp_path / "classifier_run"
    shutil.copytree(squad_run, fake, ignore=shutil.ignore_patterns("model.ckpt-*", "checkpoint"))
    checkpoints.write_checkpoint(str(fake / "model.ckpt-1"), {
        "output_weights": tf.zeros([2, 32]).numpy()})
    (fake / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-1"\n')
    with pytest.raises(UserError, match=r"has no cls/squad/output_weights: not a bert-squad run"):
        run_dir.load_squad_run(str(fake))
    # The non-empty export directory.
    with pytest.raises(UserError, match="exists and is not empty"):
        squad_serving.export_squad(str(squad_run), str(export_base))
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_cli_errors_are_one_line(export_base, squad_run):
    proc = subprocess.run([sys.executable, "-m", "bert_finetune.cli.export", "--squad",
                           f"--run_dir={squad_run}", "--output_dir=/nonexistent/x",
                           "--format=onnx"], capture_output=True, text=True, env=ENV)
    line = one_line_error(proc, "bert-export")
    assert "--format=onnx: --squad exports --format=saved_model only" in line
