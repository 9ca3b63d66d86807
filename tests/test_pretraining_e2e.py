"""create-pretraining-data -> bert-pretrain -> bert-classify on a tiny config, and bad input."""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG
from pretraining_text import sentence, write_corpus, write_vocab

from bert_finetune import checkpoints, classify, modeling, outputs
from bert_finetune import create_pretraining_data as cpd
from bert_finetune import pretraining as pt
from bert_finetune.data.glue import Sst2Processor

REPO = Path(__file__).resolve().parents[1]
EVAL_KEYS = ["global_step", "loss", "masked_lm_accuracy", "masked_lm_loss",
             "next_sentence_accuracy", "next_sentence_loss"]


@pytest.fixture
def setup(tmp_path):
    """Records (T=32, P=5), the tiny config and a `bert/`-only checkpoint (no cls/ heads)."""
    vocab = write_vocab(tmp_path / "vocab.txt")
    corpus = write_corpus(tmp_path / "corpus.txt", num_documents=60)
    records = tmp_path / "records" / "train.tfrecord"
    assert cpd.run(cpd.CreatePretrainingDataOptions(
        input_file=str(corpus), output_file=str(records), vocab_file=str(vocab),
        max_seq_length=32, max_predictions_per_seq=5, dupe_factor=3)) > 400
    (tmp_path / "bert_config.json").write_text(json.dumps(TINY_CONFIG))
    encoder = modeling.BertModel(modeling.BertConfig(**TINY_CONFIG))
    prefix = checkpoints.write_checkpoint(
        str(tmp_path / "encoder" / "bert_model.ckpt"),
        {n: v.numpy() for n, v in encoder.variables_by_name().items()})
    return tmp_path, records, prefix


def _opts(root: Path, records: Path, prefix: str, **kw) -> pt.PretrainingOptions:
    values = dict(input_file=str(records), output_dir=str(root / "pretrain"),
                  bert_config_file=str(root / "bert_config.json"), init_checkpoint=prefix,
                  max_seq_length=32, max_predictions_per_seq=5, train_batch_size=16,
                  eval_batch_size=16, num_train_steps=40, num_warmup_steps=4,
                  learning_rate=1e-3, iterations_per_loop=10, save_checkpoints_steps=20,
                  max_eval_steps=8)
    values.update(kw)
    return pt.PretrainingOptions(**values)


def test_pretrain_then_classify(setup, tmp_path):
    root, records, prefix = setup
    opts = _opts(root, records, prefix, do_train=True, do_eval=True)
    assert pt.validate(opts) == []
    # Before: the encoder with fresh cls/ heads (eval only, into another directory).
    before = pt.run(_opts(root, records, prefix, do_eval=True, output_dir=str(root / "before")))

    proc = subprocess.run(
        [sys.executable, "-m", "bert_finetune.cli.pretrain", "--do_train=true", "--do_eval=true",
         *[f"--{k}={v}" for k, v in vars(opts).items()
           if v is not None and k in ("input_file", "output_dir", "bert_config_file",
                                      "init_checkpoint", "max_seq_length",
                                      "max_predictions_per_seq", "train_batch_size",
                                      "eval_batch_size", "num_train_steps", "num_warmup_steps",
                                      "learning_rate", "iterations_per_loop",
                                      "save_checkpoints_steps", "max_eval_steps")]],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The checkpoint had no cls/ heads: initialised fresh, and the log says so.
    fresh = re.search(r"Initialised fresh \(not restored from [^)]*\): (.*)", proc.stderr)
    assert fresh and "cls/predictions/transform/dense/kernel" in fresh.group(1)
    assert "cls/seq_relationship/output_weights" in fresh.group(1)
    assert "bert/" not in fresh.group(1)

    losses = [float(x) for x in re.findall(r"step \d+/40\s+loss = ([0-9.]+)", proc.stderr)]
    assert len(losses) == 4 and losses[-1] < losses[0]
    results = outputs.read_eval_results(root / "pretrain" / "eval_results.txt")
    assert list(results) == EVAL_KEYS
    assert results["global_step"] == "40"
    # The masked-LM loss fell well below that of the fresh heads (~ln 99 = 4.6).
    assert float(results["masked_lm_loss"]) < float(before["masked_lm_loss"]) - 0.5
    assert float(results["masked_lm_accuracy"]) > float(before["masked_lm_accuracy"])

    names = tf.train.load_checkpoint(str(root / "pretrain")).get_variable_to_shape_map()
    h, v = TINY_CONFIG["hidden_size"], TINY_CONFIG["vocab_size"]
    expected = {"cls/predictions/transform/dense/kernel": [h, h],
                "cls/predictions/transform/dense/bias": [h],
                "cls/predictions/transform/LayerNorm/gamma": [h],
                "cls/predictions/transform/LayerNorm/beta": [h],
                "cls/predictions/output_bias": [v],
                "cls/seq_relationship/output_weights": [2, h],
                "cls/seq_relationship/output_bias": [2]}
    assert {n: list(s) for n, s in names.items()
            if n.startswith("cls/") and "adam" not in n} == expected  # output weights are tied
    assert list(names["bert/embeddings/word_embeddings"]) == [v, h]

    # bert-classify fine-tunes from the pretraining output directory.
    rng = random.Random(1)
    data = tmp_path / "sst"
    data.mkdir()
    for split in ("train", "dev"):
        rows = "".join(f"{sentence(rng)}\t{rng.randint(0, 1)}\n" for _ in range(12))
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    copts = classify.ClassifyOptions(
        data_dir=str(data), bert_config_file=str(root / "bert_config.json"), task_name="sst-2",
        vocab_file=str(root / "vocab.txt"), output_dir=str(tmp_path / "classify"),
        init_checkpoint=str(root / "pretrain"), max_seq_length=32, do_train=True,
        do_eval=True, train_batch_size=4, eval_batch_size=4, num_train_epochs=1.0)
    assert classify.validate(copts, {"sst-2": Sst2Processor}) == []
    results = classify.run(copts, Sst2Processor())
    assert results["global_step"] == 3
    tuned = tf.train.load_checkpoint(str(tmp_path / "classify"))
    pretrained = tf.train.load_checkpoint(str(root / "pretrain"))
    # Initialised from the pretrained encoder: 3 small steps keep it close to it, far from
    # the random init the classifier would otherwise have drawn.
    name = "bert/encoder/layer_0/attention/self/query/kernel"
    diff = abs(tuned.get_tensor(name) - pretrained.get_tensor(name)).max()
    assert diff < 0.01, diff


@pytest.mark.slow
def test_lamb_trains_through_the_runner(setup):
    root, records, prefix = setup
    pt.run(_opts(root, records, prefix, do_train=True, optimizer="lamb", num_train_steps=2,
                 iterations_per_loop=2, learning_rate=1e-2))
    assert tf.train.latest_checkpoint(str(root / "pretrain")).endswith("model.ckpt-2")
    names = tf.train.load_checkpoint(str(root / "pretrain")).get_variable_to_shape_map()
    assert "cls/predictions/output_bias/adam_m" in names


def test_records_not_matching_the_flags(setup):
    root, records, prefix = setup
    text = " | ".join(pt.validate(_opts(root, records, prefix, do_train=True,
                                        max_seq_length=64, max_predictions_per_seq=20)))
    assert f"--max_seq_length=64 but the records of {records} were made with max_seq_length=32" \
        in text
    assert "--max_predictions_per_seq=20 but the records of" in text
    assert "made with max_predictions_per_seq=5" in text
    empty = root / "empty.tfrecord"
    with tf.io.TFRecordWriter(str(empty)):
        pass
    text = " | ".join(pt.validate(_opts(root, str(empty), prefix, do_train=True)))
    assert f"{empty} holds no records" in text
    text = " | ".join(pt.validate(_opts(root, str(root / "nothing*.tfrecord"), prefix)))
    assert "nothing*.tfrecord: no file matches" in text
    assert "At least one of `do_train` or `do_eval` must be True." in text


def test_cli_error_is_one_line_and_nothing_is_written(setup):
    root, records, prefix = setup
    proc = subprocess.run(
        [sys.executable, "-m", "bert_finetune.cli.pretrain", "--do_train=true",
         f"--input_file={records}", f"--output_dir={root / 'out'}",
         f"--bert_config_file={root / 'bert_config.json'}", "--max_seq_length=128"],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bert-pretrain: error: --max_seq_length=128 but the records of")
    assert "--max_predictions_per_seq=20 but the records of" in last  # every problem at once
    assert "Traceback" not in proc.stderr
    assert not (root / "out").exists()


def test_runner_additions_reach_pretraining(setup, tmp_path, caplog):
    """--gradient_accumulation_steps and --seed work in bert-pretrain as in the other tasks: two
    runs with the same seed (and micro-batches) end with the same weights."""
    root, records, prefix = setup
    ends = []
    for run in ("a", "b"):
        out = tmp_path / run
        opts = _opts(root, records, prefix, do_train=True, num_train_steps=2,
                     iterations_per_loop=2, gradient_accumulation_steps=2, seed=7,
                     output_dir=str(out))
        assert pt.validate(opts) == []
        with caplog.at_level(logging.INFO, logger="absl"):  # whatever verbosity a test left
            pt.run(opts)
        ends.append(tf.train.load_checkpoint(str(out)))
    said = [r.getMessage() for r in caplog.records if "Gradient accumulation" in r.getMessage()]
    assert len(said) == 2 and said[0].strip().startswith(
        f"Gradient accumulation: 2 micro-batches of {opts.train_batch_size // 2} examples per "
        f"replica (1 replica(s)) for each optimizer step on {opts.train_batch_size} examples"), said
    name = "bert/encoder/layer_0/attention/self/query/kernel"
    np.testing.assert_array_equal(ends[0].get_tensor(name), ends[1].get_tensor(name))
    assert abs(ends[0].get_tensor(name) -
               tf.train.load_checkpoint(prefix).get_tensor(name)).max() > 0  # it trained
    problems = pt.validate(_opts(root, records, prefix, do_train=True, length_buckets=8,
                                 gradient_accumulation_steps=3))
    assert any("--length_buckets=8" in p for p in problems), problems
    assert any("--gradient_accumulation_steps=3" in p for p in problems), problems
