"""bert-classify --bert_hub_module_handle: run_classifier_with_tfhub.py on an exported module.

One tiny module (random 4-layer encoder, the real MiniLM vocab) and one MRPC train -> eval ->
predict run through it are shared by the module's tests (`hub_run`); tests that run again on its
output work on a copy.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import make_checkpoint, one_line_error, run_cli

from bert_finetune import checkpoints, classify
from bert_finetune.data.glue import PROCESSORS
from bert_finetune.export import module as module_lib

N_TRAIN, N_DEV, N_TEST, BATCH = 40, 16, 9, 8


def _cut(src: Path, dst: Path, rows: int) -> None:
    """The header and the first `rows` data lines, bytes as is (BOM included)."""
    lines = src.read_bytes().split(b"\n")
    dst.write_bytes(b"\n".join(lines[:rows + 1]) + b"\n")


def _eval_results(path: Path) -> dict[str, str]:
    return dict(line.split(" = ") for line in path.read_text().splitlines())


@dataclasses.dataclass
class HubModule:
    src: Path  # the checkpoint the module was exported from
    module: Path
    data: Path  # an MRPC slice


@dataclasses.dataclass
class HubRun(HubModule):
    out: Path
    flags: list[str]  # everything but --output_dir


@pytest.fixture(scope="module")
def hub_module(tmp_path_factory, minilm_google, shared_dir) -> HubModule:
    tmp = tmp_path_factory.mktemp("hub")
    src = make_checkpoint(tmp / "ckpt", minilm_google / "vocab.txt")
    module = tmp / "module"
    module_lib.export_module(str(src / "bert_config.json"), str(src / "vocab.txt"), str(src),
                             str(module), with_preprocessor=False)
    data = tmp / "mrpc"
    data.mkdir()
    mrpc = shared_dir / "data" / "glue" / "MRPC"
    for name, rows in (("train.tsv", N_TRAIN), ("dev.tsv", N_DEV), ("test.tsv", N_TEST)):
        _cut(mrpc / name, data / name, rows)
    return HubModule(src, module, data)


@pytest.fixture(scope="module")
def hub_run(hub_module, tmp_path_factory) -> HubRun:
    flags = ["--task_name=MRPC", "--do_train", "--do_eval", "--do_predict",
             f"--data_dir={hub_module.data}", f"--bert_hub_module_handle={hub_module.module}",
             "--max_seq_length=32", f"--train_batch_size={BATCH}", f"--eval_batch_size={BATCH}",
             f"--predict_batch_size={BATCH}", "--learning_rate=1e-3", "--num_train_epochs=1",
             "--save_checkpoints_steps=3"]
    out = tmp_path_factory.mktemp("hub_run") / "out"
    proc = run_cli("bert_finetune.cli.classify", *flags, f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return HubRun(hub_module.src, hub_module.module, hub_module.data, out, flags)


def test_hub_run_writes_the_standard_files(hub_run, minilm_google):
    out = hub_run.out
    results = _eval_results(out / "eval_results.txt")
    assert set(results) == {"eval_accuracy", "eval_f1", "eval_loss", "global_step", "loss"}
    assert results["global_step"] == "5"  # int(40 / 8 * 1)
    rows = (out / "test_results.tsv").read_text().splitlines()
    assert len(rows) == N_TEST and all(len(r.split("\t")) == 2 for r in rows)
    assert len((out / "predictions.jsonl").read_text().splitlines()) == N_TEST
    # The record of a checkpoint run, made from the module's assets.
    assert (out / "vocab.txt").read_bytes() == (minilm_google / "vocab.txt").read_bytes()
    assert (out / "do_lower_case.txt").read_text().strip() == "true"
    assert json.loads((out / "bert_config.json").read_text()) == json.loads(
        (hub_run.src / "bert_config.json").read_text())
    assert (out / "label_list.txt").read_text() == "0\n1\n"
    record = json.loads((out / "run_flags.json").read_text())
    assert record["bert_hub_module_handle"] == str(hub_run.module)
    assert record["init_checkpoint"] is None

    # Checkpoints carry the original names; fine-tuning moved the module's encoder weights.
    names = checkpoints.list_variables(str(out))
    assert {"output_weights", "output_bias", "global_step",
            "bert/encoder/layer_3/output/dense/kernel",
            "bert/encoder/layer_3/output/dense/kernel/adam_m"} <= set(names)
    reader = checkpoints.reader(tf.train.latest_checkpoint(str(out)))
    before = checkpoints.reader(str(hub_run.src / "bert_model.ckpt"))
    for name in ("bert/encoder/layer_0/attention/self/query/kernel",
                 "bert/embeddings/word_embeddings", "bert/pooler/dense/kernel"):
        assert np.abs(reader.get_tensor(name) - before.get_tensor(name)).max() > 1e-5, name
    # ... and not the module on disk (training worked on the loaded copy).
    loaded = module_lib.load_module(str(hub_run.module))
    query = {v.name.split(":")[0]: v for v in loaded.variables}[
        "bert/encoder/layer_0/attention/self/query/kernel"]
    np.testing.assert_array_equal(query.numpy(), before.get_tensor(
        "bert/encoder/layer_0/attention/self/query/kernel"))


def test_hub_run_predicts_without_the_module(hub_run, tmp_path):
    """The fine-tuned output_dir is a checkpoint run: bert-predict's loader needs no module."""
    from bert_finetune import predict

    with open(hub_run.data / "test.tsv", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter="\t", quotechar=None))[1:]
    hidden = hub_run.module.rename(tmp_path / "module")  # the module is gone while predicting
    try:
        probs = predict.load_model(str(hub_run.out)).predict([r[3] for r in rows],
                                                             [r[4] for r in rows])
    finally:
        hidden.rename(hub_run.module)
    want = np.array([line.split("\t") for line in
                     (hub_run.out / "test_results.tsv").read_text().splitlines()], np.float64)
    np.testing.assert_allclose(probs, want, atol=1e-5)  # other batching: float32 rounding


@pytest.mark.slow
def test_hub_rerun_resumes_and_eval_only_from_output_dir(hub_run, tmp_path):
    """Rerun with the same flags: training complete (the checkpoint restored into the module's
    variables), same eval; then an eval + predict run from output_dir alone (no module, no
    model flags) gives the same results again."""
    out = shutil.copytree(hub_run.out, tmp_path / "out")
    (out / "eval_results.txt").unlink()
    proc = run_cli("bert_finetune.cli.classify", *hub_run.flags, f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Training already complete" in proc.stderr
    want = _eval_results(hub_run.out / "eval_results.txt")
    assert _eval_results(out / "eval_results.txt") == want

    (out / "eval_results.txt").unlink()
    (out / "test_results.tsv").unlink()
    proc = run_cli("bert_finetune.cli.classify", "--do_eval", "--do_predict",
                   f"--data_dir={hub_run.data}", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _eval_results(out / "eval_results.txt")
    assert got["global_step"] == want["global_step"] and got["eval_accuracy"] == \
        want["eval_accuracy"]
    np.testing.assert_allclose(float(got["eval_loss"]), float(want["eval_loss"]), rtol=1e-5)
    probs = [[float(x) for x in line.split("\t")] for line in
             (out / "test_results.tsv").read_text().splitlines()]
    first = [[float(x) for x in line.split("\t")] for line in
             (hub_run.out / "test_results.tsv").read_text().splitlines()]
    np.testing.assert_allclose(probs, first, atol=1e-6)  # same checkpoint, same batches


_MIRRORED = r"""
import sys
import tensorflow as tf
from absl import logging
logging.set_verbosity(logging.INFO)
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from bert_finetune import classify
from bert_finetune.data.glue import PROCESSORS
data, module, out = sys.argv[1:4]
opts = classify.ClassifyOptions(
    task_name="MRPC", do_train=True, data_dir=data, bert_hub_module_handle=module,
    max_seq_length=32, train_batch_size=8, learning_rate=1e-3, num_train_epochs=1,
    output_dir=out, distribution_strategy="mirrored")
assert classify.validate(opts, PROCESSORS) == []
classify.run(opts, PROCESSORS["mrpc"]())
"""


@pytest.mark.slow
def test_hub_under_mirrored_strategy(hub_run, tmp_path):
    """2 replicas (logical CPUs): the module loads under the strategy and its weights train."""
    import subprocess
    import sys

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _MIRRORED, str(hub_run.data),
                           str(hub_run.module), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Running with MirroredStrategy on" in proc.stderr
    reader = checkpoints.reader(tf.train.latest_checkpoint(str(out)))
    assert int(reader.get_tensor("global_step")) == 5
    before = checkpoints.reader(str(hub_run.src / "bert_model.ckpt"))
    name = "bert/encoder/layer_0/attention/self/query/kernel"
    assert np.abs(reader.get_tensor(name) - before.get_tensor(name)).max() > 1e-5


def test_hub_bad_options_all_reported(hub_module, tmp_path):
    """Checked by validate() before anything is written, every problem at once."""
    (tmp_path / "data").mkdir()
    out = tmp_path / "out"
    not_module = tmp_path / "not_module"
    not_module.mkdir()
    opts = classify.ClassifyOptions(task_name="MRPC", do_train=True,
                                    data_dir=str(tmp_path / "data"),
                                    bert_hub_module_handle=str(not_module), vocab_file="v.txt",
                                    init_checkpoint="ckpt", compute_dtype="bfloat16",
                                    output_dir=str(out))
    assert classify.validate(opts, PROCESSORS) == [
        "--vocab_file=v.txt is not used with --bert_hub_module_handle (the module has the "
        "config, vocab and weights)",
        "--init_checkpoint=ckpt is not used with --bert_hub_module_handle (the module has the "
        "config, vocab and weights)",
        "--compute_dtype=bfloat16: --bert_hub_module_handle runs the module as exported, "
        "in float32",
        f"--bert_hub_module_handle: {not_module} is not a module: no saved_model.pb in it "
        "(export one with `bert-export`)"]

    # A SavedModel without tokenization_info; a missing directory.
    plain = tf.Module()
    plain.v = tf.Variable(1.0)
    tf.saved_model.save(plain, str(tmp_path / "plain"))
    opts = classify.ClassifyOptions(task_name="MRPC", do_train=True,
                                    data_dir=str(tmp_path / "data"),
                                    bert_hub_module_handle=str(tmp_path / "plain"),
                                    output_dir=str(out))
    assert classify.validate(opts, PROCESSORS) == [
        f"--bert_hub_module_handle: {tmp_path / 'plain'}: the module has no `tokenization_info` "
        "signature (vocab file and casing); export it with `bert-export`"]
    opts.bert_hub_module_handle = str(tmp_path / "nowhere")
    assert classify.validate(opts, PROCESSORS) == [
        f"--bert_hub_module_handle: {tmp_path / 'nowhere'}: module directory not found"]

    # A real module: only the sequence length its config cannot take.
    opts.bert_hub_module_handle = str(hub_module.module)
    assert classify.validate(opts, PROCESSORS) == [  # max_seq_length 128 > 64 positions
        "Cannot use sequence length 128 because the BERT model was only trained up to sequence "
        f"length 64 (--max_seq_length, --bert_hub_module_handle={hub_module.module})"]
    opts.max_seq_length = 32
    assert classify.validate(opts, PROCESSORS) == []
    # Without a module the model files are required, as before.
    opts.bert_hub_module_handle = None
    assert "--bert_config_file is required" in classify.validate(opts, PROCESSORS)
    assert not out.exists()


def test_hub_cli_one_line_error(hub_module, tmp_path):
    """--do_lower_case is the module's; given with a handle, it is an error (with the others)."""
    out = tmp_path / "out"
    proc = run_cli("bert_finetune.cli.classify", "--task_name=MRPC", "--do_train",
                   f"--data_dir={hub_module.data}",
                   f"--bert_hub_module_handle={hub_module.module}", "--do_lower_case=false",
                   f"--bert_config_file={hub_module.src}/bert_config.json",
                   "--max_seq_length=32", f"--output_dir={out}")
    line = one_line_error(proc, "bert-classify")
    assert "--do_lower_case is not used with --bert_hub_module_handle" in line
    assert "--bert_config_file=" in line and " | " in line
    assert not out.exists()
