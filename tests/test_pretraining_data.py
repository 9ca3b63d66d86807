"""bert-create-pretraining-data: the original's algorithm, its records and its errors."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from pretraining_text import write_corpus, write_vocab

from bert_finetune import create_pretraining_data as task
from bert_finetune import tokenization
from bert_finetune.data import pretraining, pretraining_records
from bert_finetune.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def corpus(tmp_path):
    return write_vocab(tmp_path / "vocab.txt"), write_corpus(tmp_path / "corpus.txt")


def _instances(vocab, corpus, seed=12345, max_seq_length=32, dupe_factor=2,
               max_predictions_per_seq=5, whole_word=False, masked_lm_prob=0.15,
               max_shard_tokens=pretraining.DEFAULT_MAX_SHARD_TOKENS):
    tok = tokenization.FullTokenizer(str(vocab), True)
    return list(pretraining.iter_instances(
        [str(corpus)], tok, max_seq_length, dupe_factor, 0.1, masked_lm_prob,
        max_predictions_per_seq, random.Random(seed), whole_word, max_shard_tokens))


def _digest(instances) -> str:
    h = hashlib.sha256()
    for x in instances:
        h.update(json.dumps([x.tokens, x.segment_ids, x.masked_lm_positions, x.masked_lm_labels,
                             x.is_random_next]).encode())
    return h.hexdigest()


def test_same_instances_as_the_original(corpus):
    # Golden digest of the instances google-research/bert's create_pretraining_data.py
    # (commit d452612, its functions run unchanged on this vocab and corpus, seed 12345,
    # max_seq_length 32, dupe_factor 2, max_predictions_per_seq 5) produced.
    instances = _instances(*corpus)
    assert len(instances) == 247
    assert _digest(instances) == "50110bc80792691783f7daf024dff695ec65745b190278755db63a3669f6a10d"


def test_deterministic_for_a_seed(corpus):
    a, b = _instances(*corpus), _instances(*corpus)
    assert _digest(a) == _digest(b)
    assert _digest(_instances(*corpus, seed=1)) != _digest(a)


def test_sharding_bounds_memory_and_stays_deterministic(corpus):
    whole = _instances(*corpus)
    sharded = _instances(*corpus, max_shard_tokens=300)
    assert _digest(sharded) == _digest(_instances(*corpus, max_shard_tokens=300))
    assert _digest(sharded) != _digest(whole)  # shards shuffle on their own
    # The same text, the same packing rules: about as many instances.
    assert abs(len(sharded) - len(whole)) < 0.2 * len(whole)
    tok = tokenization.FullTokenizer(str(corpus[0]), True)
    shards = list(pretraining.iter_document_shards([str(corpus[1])], tok, 300))
    assert len(shards) > 3
    assert sum(len(s) for s in shards) == 40  # every document, each in one shard
    assert all(sum(len(t) for doc in s[:-1] for t in doc) < 300 for s in shards)


def test_masking_rules(corpus):
    instances = _instances(*corpus, max_predictions_per_seq=20, dupe_factor=5)
    masked = kept = total = 0
    for inst in instances:
        n = len(inst.tokens)
        labels = dict(zip(inst.masked_lm_positions, inst.masked_lm_labels, strict=True))
        original = [labels.get(i, t) for i, t in enumerate(inst.tokens)]
        # (A random replacement word may be any vocab entry, [SEP] included, as the original.)
        assert n <= 32 and original[0] == "[CLS]" and original[-1] == "[SEP]"
        assert original.count("[SEP]") == 2 and "[CLS]" not in original[1:]
        positions = inst.masked_lm_positions
        assert positions == sorted(set(positions))
        assert len(positions) == min(20, max(1, round(n * 0.15)))
        for p, label in zip(positions, inst.masked_lm_labels, strict=True):
            assert label not in ("[CLS]", "[SEP]")
            masked += inst.tokens[p] == "[MASK]"
            kept += inst.tokens[p] == label
        total += len(positions)
    # Ratio of masked positions to tokens: round(n * 0.15) per sequence.
    ratio = total / sum(len(i.tokens) for i in instances)
    assert abs(ratio - 0.15) < 0.02
    assert abs(masked / total - 0.8) < 0.05  # 80% [MASK]
    assert 0.05 < kept / total < 0.2  # ~10% kept (+ random words that happen to match)


def test_about_half_the_next_sentences_are_random(corpus):
    vocab, _ = corpus
    text = write_corpus(corpus[1].parent / "many.txt", num_documents=120, seed=3,
                        sentences=(6, 14))
    instances = _instances(vocab, text, max_seq_length=64)
    share = np.mean([i.is_random_next for i in instances])
    assert 0.4 < share < 0.6, share
    # Segment ids: A (with [CLS] and its [SEP]) then B.
    for inst in instances:
        labels = dict(zip(inst.masked_lm_positions, inst.masked_lm_labels, strict=True))
        first_sep = [labels.get(i, t) for i, t in enumerate(inst.tokens)].index("[SEP]")
        assert inst.segment_ids == [0] * (first_sep + 1) + [1] * (len(inst.tokens) - first_sep - 1)


def test_whole_word_mask_masks_every_piece_of_a_word(corpus):
    instances = _instances(*corpus, whole_word=True, dupe_factor=5, max_predictions_per_seq=20)
    words_seen = 0
    for inst in instances:
        labels = dict(zip(inst.masked_lm_positions, inst.masked_lm_labels, strict=True))
        original = [labels.get(i, t) for i, t in enumerate(inst.tokens)]
        # Group the pieces into words: a `##` piece joins the word before it.
        words: list[list[int]] = []
        for i, t in enumerate(original):
            if t.startswith("##") and words and original[words[-1][0]] not in ("[CLS]", "[SEP]"):
                words[-1].append(i)
            else:
                words.append([i])
        for word in words:
            hit = [i in labels for i in word]
            assert all(hit) or not any(hit), (original, inst.masked_lm_positions)
            words_seen += len(word) > 1 and all(hit)
    assert words_seen > 10  # multi-piece words were masked, whole
    # Per-piece mode does split some words.
    split = 0
    for inst in _instances(*corpus, dupe_factor=5, max_predictions_per_seq=20):
        pos = set(inst.masked_lm_positions)
        labels = dict(zip(inst.masked_lm_positions, inst.masked_lm_labels, strict=True))
        for i in range(1, len(inst.tokens)):
            if labels.get(i, inst.tokens[i]).startswith("##"):
                split += (i in pos) != (i - 1 in pos)
    assert split > 0


def _opts(tmp_path, vocab, text, **kw) -> task.CreatePretrainingDataOptions:
    values = dict(input_file=str(text), output_file=str(tmp_path / "out" / "a.tfrecord"),
                  vocab_file=str(vocab), max_seq_length=32, max_predictions_per_seq=5,
                  dupe_factor=2)
    values.update(kw)
    return task.CreatePretrainingDataOptions(**values)


def test_records_parse_with_the_original_spec(tmp_path, corpus):
    vocab, text = corpus
    out_a, out_b = tmp_path / "out" / "a.tfrecord", tmp_path / "out" / "b.tfrecord"
    opts = _opts(tmp_path, vocab, text, output_file=f"{out_a},{out_b}")
    assert task.validate(opts) == []
    assert task.run(opts) == 247
    instances = _instances(vocab, text)
    tok = tokenization.FullTokenizer(str(vocab), True)
    spec = pretraining_records.name_to_features(32, 5)
    records = {f: [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(str(f))]
               for f in (out_a, out_b)}
    assert (len(records[out_a]), len(records[out_b])) == (124, 123)  # round-robin
    for n, inst in enumerate(instances):
        rec = {k: v.numpy() for k, v in records[(out_a, out_b)[n % 2]][n // 2].items()}
        ids = tok.convert_tokens_to_ids(inst.tokens)
        assert rec["input_ids"].tolist() == ids + [0] * (32 - len(ids))
        assert rec["input_mask"].tolist() == [1] * len(ids) + [0] * (32 - len(ids))
        assert rec["segment_ids"].tolist() == inst.segment_ids + [0] * (32 - len(ids))
        k = len(inst.masked_lm_positions)
        assert rec["masked_lm_positions"].tolist() == inst.masked_lm_positions + [0] * (5 - k)
        assert rec["masked_lm_ids"].tolist() == tok.convert_tokens_to_ids(
            inst.masked_lm_labels) + [0] * (5 - k)
        assert rec["masked_lm_weights"].tolist() == [1.0] * k + [0.0] * (5 - k)
        assert rec["next_sentence_labels"].tolist() == [int(inst.is_random_next)]
    assert pretraining_records.record_lengths(str(out_a)) == (32, 5)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bert_finetune.cli.create_pretraining_data",
                           *args], capture_output=True, text=True, cwd=REPO)


def test_cli_logs_examples_and_total(tmp_path, corpus):
    vocab, text = corpus
    out = tmp_path / "x.tfrecord"
    proc = _cli(f"--input_file={text}", f"--output_file={out}", f"--vocab_file={vocab}",
                "--max_seq_length=32", "--max_predictions_per_seq=5", "--dupe_factor=2",
                "--do_whole_word_mask=true")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("*** Example ***") == 20
    expected = len(_instances(vocab, text, whole_word=True))
    assert f"Wrote {expected} total instances" in proc.stderr
    assert "masked_lm_weights: 1.0" in proc.stderr
    assert out.is_file()


@pytest.mark.parametrize("case", ["empty", "no_match", "bad_values"])
def test_cli_bad_input_is_one_line(tmp_path, corpus, case):
    vocab, text = corpus
    out = tmp_path / "x.tfrecord"
    args = [f"--output_file={out}", f"--vocab_file={vocab}"]
    if case == "empty":
        (tmp_path / "empty.txt").write_text("\n \n")  # blank lines only: no text
        args.append(f"--input_file={tmp_path / 'empty.txt'}")
        expected = "holds no text"
    elif case == "no_match":
        args.append(f"--input_file={text},{tmp_path / 'nothing*.txt'}")
        expected = "nothing*.txt: no file matches"
    else:
        args += [f"--input_file={text}", "--max_seq_length=4", "--masked_lm_prob=0"]
        expected = "--max_seq_length=4 must be at least 5"
    proc = _cli(*args)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("bert-create-pretraining-data: error:"), proc.stderr
    assert expected in lines[-1]
    assert "Traceback" not in proc.stderr
    if case == "bad_values":
        assert "--masked_lm_prob=0.0 must be in (0, 1]" in lines[-1]  # every problem at once
    assert not out.exists() and not list(tmp_path.glob(".x.tfrecord*"))


def test_validate_reports_every_problem(tmp_path):
    problems = task.validate(task.CreatePretrainingDataOptions(
        dupe_factor=0, short_seq_prob=2.0, max_predictions_per_seq=0))
    text = " | ".join(problems)
    for needle in ("--input_file is required", "--output_file is required",
                   "--vocab_file is required", "--dupe_factor=0", "--short_seq_prob=2.0",
                   "--max_predictions_per_seq=0"):
        assert needle in text
    with pytest.raises(UserError, match="no file matches"):
        task.expand_globs(str(tmp_path / "none*.txt"))


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_squad_converter(tmp_path):
    conv = _load_script("squad_to_pretraining_text")
    assert conv.split_sentences('He said "Go." Then 3 left!  (Really?) Yes.  The U.S. team won.') \
        == ['He said "Go."', "Then 3 left!", "(Really?)", "Yes.", "The U.S. team won."]
    squad = {"version": "1.1", "data": [
        {"title": "A", "paragraphs": [{"context": "One. Two two.", "qas": []},
                                      {"context": "Three?", "qas": []}]},
        {"title": "B", "paragraphs": [{"context": "  ", "qas": []}]},
        {"title": "C", "paragraphs": [{"context": "Four\nfour.", "qas": []}]}]}
    (tmp_path / "s.json").write_text(json.dumps(squad))
    assert conv.main([str(tmp_path / "s.json"), "-o", str(tmp_path / "t.txt")]) == 0
    assert (tmp_path / "t.txt").read_text() == "One.\nTwo two.\nThree?\n\nFour four.\n"
    assert conv.main([str(tmp_path / "missing.json")]) == 1


@pytest.mark.slow
def test_recorded_run_script_smoke(tmp_path):
    """scripts/pretrain_squad_minilm.sh end to end on a tiny model and two tiny SQuAD files."""
    from conftest import TINY_CONFIG

    from bert_finetune import checkpoints, modeling

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_vocab(model_dir / "vocab.txt")
    (model_dir / "bert_config.json").write_text(json.dumps(TINY_CONFIG))
    encoder = modeling.BertModel(modeling.BertConfig(**TINY_CONFIG))
    checkpoints.write_checkpoint(str(model_dir / "bert_model.ckpt"),
                                 {n: v.numpy() for n, v in encoder.variables_by_name().items()})
    squad = tmp_path / "squad"
    squad.mkdir()
    rng = random.Random(0)
    from pretraining_text import sentence

    for name in ("dev-v1.1-articles-00-15.json", "dev-v1.1-articles-16-47.json"):
        data = [{"title": str(a), "paragraphs": [
            {"context": " ".join(sentence(rng) for _ in range(6)), "qas": []}]}
            for a in range(8)]
        (squad / name).write_text(json.dumps({"version": "1.1", "data": data}))
    env = dict(os.environ, STEPS="2", SAVE_EVERY="1", BATCH="4", SEQ="32", PREDS="5",
               EVAL_STEPS="2", VENV=str(Path(sys.executable).parent.parent))
    proc = subprocess.run(["bash", str(REPO / "scripts" / "pretrain_squad_minilm.sh"),
                           str(model_dir), str(squad), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    for key in ("before:", "eval-1:", "eval-2:", "masked_lm_accuracy"):
        assert key in summary
