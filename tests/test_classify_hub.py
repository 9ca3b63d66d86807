"""bert-classify --bert_hub_module_handle: run_classifier_with_tfhub.py on an exported module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from export_helpers import make_checkpoint, run_cli

from bert_finetune import checkpoints
from bert_finetune.export import module as module_lib


def _cut(src: Path, dst: Path, rows: int) -> None:
    """The header and the first `rows` data lines, bytes as is (BOM included)."""
    lines = src.read_bytes().split(b"\n")
    dst.write_bytes(b"\n".join(lines[:rows + 1]) + b"\n")


def test_hub_module_train_eval_predict(minilm_google, shared_dir, tmp_path):
    src = make_checkpoint(tmp_path / "ckpt", minilm_google / "vocab.txt")
    handle = tmp_path / "module"
    module_lib.export_module(str(src / "bert_config.json"), str(src / "vocab.txt"), str(src),
                             str(handle), with_preprocessor=False)
    data = tmp_path / "mrpc"
    data.mkdir()
    mrpc = shared_dir / "data" / "glue" / "MRPC"
    for name, rows in (("train.tsv", 40), ("dev.tsv", 16), ("test.tsv", 9)):
        _cut(mrpc / name, data / name, rows)
    out = tmp_path / "out"
    proc = run_cli("bert_finetune.cli.classify", "--task_name=MRPC", "--do_train", "--do_eval",
                   "--do_predict", f"--data_dir={data}", f"--bert_hub_module_handle={handle}",
                   "--max_seq_length=32", "--train_batch_size=8", "--eval_batch_size=8",
                   "--predict_batch_size=8", "--learning_rate=1e-3", "--num_train_epochs=1",
                   f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The standard output files of a checkpoint run.
    results = dict(line.split(" = ") for line in
                   (out / "eval_results.txt").read_text().splitlines())
    assert {"eval_accuracy", "eval_f1", "eval_loss", "global_step", "loss"} <= set(results)
    assert results["global_step"] == "5"  # int(40 / 8 * 1)
    rows = (out / "test_results.tsv").read_text().splitlines()
    assert len(rows) == 9 and all(len(r.split("\t")) == 2 for r in rows)
    assert (out / "vocab.txt").read_bytes() == (minilm_google / "vocab.txt").read_bytes()
    assert (out / "do_lower_case.txt").read_text().strip() == "true"

    # Checkpoints carry the original names; fine-tuning moved the module's encoder weights.
    names = checkpoints.list_variables(str(out))
    assert "output_weights" in names and "bert/encoder/layer_3/output/dense/kernel" in names
    reader = checkpoints.reader(tf.train.latest_checkpoint(str(out)))
    before = checkpoints.reader(str(src / "bert_model.ckpt"))
    name = "bert/encoder/layer_0/attention/self/query/kernel"
    assert np.abs(reader.get_tensor(name) - before.get_tensor(name)).max() > 1e-5


def test_hub_bad_handles(tmp_path):
    """Checked by validate() before anything is written (the CLI prints them on one line)."""
    from bert_finetune import classify
    from bert_finetune.data.glue import PROCESSORS

    (tmp_path / "data").mkdir()
    not_module = tmp_path / "not_module"
    not_module.mkdir()
    opts = classify.ClassifyOptions(task_name="MRPC", do_train=True,
                                    data_dir=str(tmp_path / "data"),
                                    bert_hub_module_handle=str(not_module), vocab_file="v.txt",
                                    output_dir=str(tmp_path / "out"))
    problems = " | ".join(classify.validate(opts, PROCESSORS))
    assert "is not a module: no saved_model.pb" in problems
    assert "--vocab_file is not used with --bert_hub_module_handle" in problems
    assert "--bert_config_file is required" not in problems
    plain = tf.Module()
    plain.v = tf.Variable(1.0)
    tf.saved_model.save(plain, str(tmp_path / "plain"))
    opts.bert_hub_module_handle, opts.vocab_file = str(tmp_path / "plain"), None
    assert classify.validate(opts, PROCESSORS) == [
        f"--bert_hub_module_handle: {tmp_path / 'plain'}: the module has no `tokenization_info` "
        "signature (vocab file and casing); export it with `bert-export`"]
    assert not (tmp_path / "out").exists()
