"""Remote paths (`gs://...` on Cloud TPU) go through tf.io.gfile, as the original's tf.gfile did.

There is no GCS here: TensorFlow's in-memory `ram://` file system stands in for it. One quirk of
ram:// (not of GCS) matters below: its IsDirectory() is true for any *string* prefix of a stored
name, so a checkpoint prefix `out/model.ckpt-3` "is a directory" as soon as
`out/model.ckpt-3.index` exists. GCS only treats `name/` prefixes as directories.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bert_finetune import classify, fileio, outputs, tokenization
from bert_finetune.cli import classify as cli_classify
from bert_finetune.data import features as F
from bert_finetune.data.examples import InputExample, PaddingInputExample
from bert_finetune.data.glue import MrpcProcessor
from bert_finetune.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
gfile = tf.io.gfile

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "."]
LABELS = ["0", "1"]
EXAMPLES = [InputExample("train-0", "The cat sat.", "On the mat.", "1"),
            InputExample("train-1", "the mat", None, "0"),
            InputExample("train-2", "cat", "cat", "1")]


def _entries_under(root: str) -> list[str]:
    """Every stored name below `root` (files and made directories), as full paths."""
    # Not gfile.walk / listdir: ram:// lists no directory that only exists through its files.
    found: set[str] = set()
    for depth in range(1, 6):
        found.update(gfile.glob(root + "/*" * depth))
    return sorted(found)


def _files_under(root: str) -> list[str]:
    """Every file below `root`, relative to it (sorted)."""
    return [p[len(root) + 1:] for p in _entries_under(root) if not gfile.isdir(p)]


@pytest.fixture
def ram():
    """A fresh ram:// folder, emptied afterwards (ram:// has no working rmtree)."""
    root = f"ram://test_remote_paths/{uuid.uuid4().hex}"
    yield root
    for path in reversed(_entries_under(root)):
        gfile.remove(path)


def write(path: str, data: str | bytes) -> None:
    with gfile.GFile(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def read(path: str) -> bytes:
    with gfile.GFile(path, "rb") as f:
        return f.read()


# -- fileio ------------------------------------------------------------------------------------
def test_is_remote():
    assert fileio.is_remote("gs://bucket/x") and fileio.is_remote("ram://x")
    assert not fileio.is_remote("/tmp/x") and not fileio.is_remote(Path("rel/x"))


def test_atomic_write_and_read_back(ram):
    path = f"{ram}/out/eval.txt"
    fileio.atomic_write(path, "a = 1\r\nb = 2\n")
    assert read(path) == b"a = 1\r\nb = 2\n"  # written as is (newline="")
    assert fileio.read_text(path) == "a = 1\nb = 2\n"  # read like open(): universal newlines
    fileio.atomic_write(path, b"\x00\xff")  # replaces
    assert fileio.read_bytes(path) == b"\x00\xff"
    assert fileio.file_size(path) == 2
    with fileio.atomic_open(f"{ram}/out/latin.txt", "w", encoding="latin-1") as f:
        f.writelines(["caf\u00e9\n", "x\n"])  # GFile itself has no writelines
    assert read(f"{ram}/out/latin.txt") == b"caf\xe9\nx\n"
    assert _files_under(ram) == ["out/eval.txt", "out/latin.txt"]  # no temporary left
    assert fileio.is_file(path) and not fileio.is_dir(path)
    assert fileio.is_dir(f"{ram}/out") and not fileio.is_file(f"{ram}/out")


def test_atomic_open_failure_keeps_the_old_file(ram):
    path = f"{ram}/test_results.tsv"
    fileio.atomic_write(path, "old\n")
    with pytest.raises(RuntimeError, match="boom"), fileio.atomic_open(path) as f:
        f.write("half of the new")
        raise RuntimeError("boom")
    assert read(path) == b"old\n"
    assert _files_under(ram) == ["test_results.tsv"]  # the temporary was deleted


def test_missing_remote_files(ram):
    missing = f"{ram}/nope.txt"
    assert not fileio.is_file(missing)
    with pytest.raises(FileNotFoundError) as e:
        fileio.read_text(missing)
    assert e.value.filename == missing
    fileio.remove_if_exists(missing)  # no error
    write(f"{ram}/a/b.txt", "x")
    with pytest.raises(IsADirectoryError):
        fileio.read_bytes(f"{ram}/a")


def test_ensure_output_dir(ram):
    out = f"{ram}/runs/mrpc"
    fileio.ensure_output_dir(out)
    assert gfile.isdir(out)
    fileio.ensure_output_dir(out)  # existing: fine
    write(f"{ram}/a_file", "x")
    with pytest.raises(UserError, match=r"--output_dir=ram://.*/a_file is a file"):
        fileio.ensure_output_dir(f"{ram}/a_file")


def test_local_paths_do_not_import_tensorflow(tmp_path):
    """The plain-os route stays: local writes and reads never load TensorFlow."""
    code = (
        "import sys\n"
        "from bert_finetune import fileio, tokenization\n"
        f"d = {str(tmp_path / 'out')!r}\n"
        "fileio.ensure_output_dir(d)\n"
        "fileio.atomic_write(d + '/do_lower_case.txt', 'false\\n')\n"
        "assert fileio.read_text(d + '/do_lower_case.txt') == 'false\\n'\n"
        "assert tokenization.read_do_lower_case_sidecar(d) is False\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- outputs -----------------------------------------------------------------------------------
def test_eval_and_test_results(ram):
    path = f"{ram}/out/eval_results.txt"
    outputs.write_eval_results(path, {"eval_accuracy": np.float32(0.84313726),
                                      "global_step": np.int64(343), "loss": 0.5})
    assert read(path) == b"eval_accuracy = 0.84313726\nglobal_step = 343\nloss = 0.5\n"
    assert outputs.read_eval_results(path) == {
        "eval_accuracy": "0.84313726", "global_step": "343", "loss": "0.5"}
    with pytest.raises(UserError, match=r"ram://.*/missing.txt: cannot read eval results"):
        outputs.read_eval_results(f"{ram}/out/missing.txt")
    outputs.write_test_results(f"{ram}/out/test_results.tsv", np.array([[0.1, 0.9], [0.5, 0.5]]),
                               num_real=1)
    assert read(f"{ram}/out/test_results.tsv") == b"0.1\t0.9\n"


# -- features ----------------------------------------------------------------------------------
def test_cached_records_written_then_reused(ram, record_writes):
    vocab = f"{ram}/model/vocab.txt"
    write(vocab, "".join(t + "\n" for t in VOCAB))
    tokenizer = tokenization.FullTokenizer(vocab, do_lower_case=True)
    calls = record_writes
    path = f"{ram}/out/train.tf_record"
    examples = [*EXAMPLES, PaddingInputExample()]

    def convert(exs):
        return F.cached_convert_examples_to_features(exs, LABELS, 12, tokenizer, path,
                                                     {"task": "mrpc"})

    assert convert(examples) == 4
    assert calls == [path]
    meta = json.loads(read(path + F.META_SUFFIX))
    assert meta["num_examples"] == 4 and meta["num_real_examples"] == 3
    assert meta["record_file_bytes"] == gfile.stat(path).length > 0
    first = read(path)
    records = [tf.train.Example.FromString(r) for r in tf.data.TFRecordDataset(path)
               .as_numpy_iterator()]
    ids = [list(r.features.feature["input_ids"].int64_list.value) for r in records]
    assert ids[0][:8] == [2, 5, 6, 7, 10, 3, 8, 5]  # [CLS] the cat sat . [SEP] on the
    assert [r.features.feature["is_real_example"].int64_list.value[0] for r in records] == \
        [1, 1, 1, 0]

    assert convert(examples) == 4  # unchanged inputs: reused
    assert calls == [path] and read(path) == first
    convert(examples[:2])  # changed inputs: rewritten
    assert calls == [path, path]
    assert _files_under(ram) == ["model/vocab.txt", "out/train.tf_record",
                                 "out/train.tf_record.meta.json"]


def test_failed_record_write_leaves_nothing(ram):
    vocab = f"{ram}/vocab.txt"
    write(vocab, "".join(t + "\n" for t in VOCAB))
    tokenizer = tokenization.FullTokenizer(vocab)
    bad = [*EXAMPLES, InputExample("train-3", "cat", None, "maybe")]
    with pytest.raises(UserError, match="train-3"):
        F.cached_convert_examples_to_features(bad, LABELS, 12, tokenizer, f"{ram}/t.tf_record")
    assert _files_under(ram) == ["vocab.txt"]


# -- casing sidecar and the recorded run -------------------------------------------------------
def test_sidecar_on_remote_paths(ram):
    model = f"{ram}/uncased_L-12_H-768_A-12"
    assert tokenization.read_do_lower_case_sidecar(model + "/bert_model.ckpt") is None
    write(model + "/do_lower_case.txt", "false\n")
    write(model + "/vocab.txt", "[CLS]\n")
    assert tokenization.read_do_lower_case_sidecar(model) is False  # a directory
    assert tokenization.read_do_lower_case_sidecar(model + "/vocab.txt") is False  # beside
    # The sidecar wins over the name, which alone would refuse do_lower_case=False.
    tokenization.validate_case_matches_checkpoint(False, model + "/bert_model.ckpt")
    with pytest.raises(UserError, match=r"ram://.*/do_lower_case.txt says `false`"):
        tokenization.validate_case_matches_checkpoint(True, model + "/bert_model.ckpt")


def test_recorded_run_on_remote_output_dir(ram):
    out = f"{ram}/out"
    assert cli_classify._recorded_run(out) is None
    assert cli_classify._recorded_labels(out) is None
    write(f"{out}/{classify.RUN_FLAGS_FILE}", json.dumps({"task_name": "MRPC"}))
    write(f"{out}/{classify.LABELS_FILE}", "not_entailment\nentailment\n")
    assert cli_classify._recorded_run(out) == {"task_name": "MRPC"}
    assert cli_classify._recorded_labels(out) == ["not_entailment", "entailment"]
    write(f"{out}/{classify.RUN_FLAGS_FILE}", "{not json")
    with pytest.raises(UserError, match=r"ram://.*/run_flags.json: cannot read the recorded run"):
        cli_classify._recorded_run(out)


# -- bert-classify end to end on ram:// --------------------------------------------------------
N_TRAIN, N_DEV, N_TEST, BATCH = 12, 6, 5, 4
NUM_STEPS = N_TRAIN // BATCH  # one epoch


def _mrpc_on_ram(root: str) -> classify.ClassifyOptions:
    """Copies a few MRPC rows, a vocab of their words and a tiny config into ram://."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    words: set[str] = set()
    basic = tokenization.BasicTokenizer(do_lower_case=True)
    for name, rows in (("train.tsv", N_TRAIN), ("dev.tsv", N_DEV), ("test.tsv", N_TEST)):
        lines = (SHARED / "data" / "glue" / "MRPC" / name).read_bytes().split(b"\n")[:rows + 1]
        write(f"{root}/data/{name}", b"\n".join(lines) + b"\n")
        for line in lines[1:]:
            for text in line.decode("utf-8-sig").split("\t")[-2:]:
                words.update(basic.tokenize(text))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    write(f"{root}/model/vocab.txt", "".join(t + "\n" for t in vocab))
    config = {"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 37, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
              "max_position_embeddings": 64, "type_vocab_size": 2, "initializer_range": 0.02}
    write(f"{root}/model/bert_config.json", json.dumps(config))
    return classify.ClassifyOptions(
        data_dir=f"{root}/data", bert_config_file=f"{root}/model/bert_config.json",
        task_name="MRPC", vocab_file=f"{root}/model/vocab.txt", output_dir=f"{root}/out",
        max_seq_length=32, train_batch_size=BATCH, eval_batch_size=BATCH,
        predict_batch_size=BATCH, num_train_epochs=1.0, save_checkpoints_steps=2)


def test_classify_train_on_ram(ram):
    opts = _mrpc_on_ram(ram)
    opts.do_train = True
    assert classify.validate(opts, {"mrpc": MrpcProcessor}) == []
    classify.run(opts, MrpcProcessor())
    out = gfile.listdir(opts.output_dir)
    for name in (f"model.ckpt-{NUM_STEPS}.index", f"model.ckpt-{NUM_STEPS}.data-00000-of-00001",
                 "model.ckpt-2.index", "checkpoint", "train.tf_record",
                 "train.tf_record.meta.json", "bert_config.json", "vocab.txt", "label_list.txt",
                 "do_lower_case.txt", classify.RUN_FLAGS_FILE):
        assert name in out, (name, out)
    assert any(n.startswith("events.out.tfevents.") for n in out)  # the summary writer's
    assert not [n for n in out if ".tmp" in n]
    assert tf.train.latest_checkpoint(opts.output_dir).endswith(f"model.ckpt-{NUM_STEPS}")
    assert read(f"{opts.output_dir}/vocab.txt") == read(opts.vocab_file)
    assert cli_classify._recorded_run(opts.output_dir)["task_name"] == "MRPC"
    assert cli_classify._recorded_labels(opts.output_dir) == ["0", "1"]


def test_classify_train_eval_predict_on_ram(ram):
    opts = _mrpc_on_ram(ram)
    opts.do_train = opts.do_eval = opts.do_predict = True
    results = classify.run(opts, MrpcProcessor())
    out = opts.output_dir
    names = gfile.listdir(out)
    assert f"model.ckpt-{NUM_STEPS}.index" in names
    assert int(outputs.read_eval_results(f"{out}/eval_results.txt")["global_step"]) == NUM_STEPS
    assert int(results["global_step"]) == NUM_STEPS
    rows = fileio.read_text(f"{out}/test_results.tsv").splitlines()
    assert len(rows) == N_TEST and all(len(r.split("\t")) == 2 for r in rows)
    assert not [n for n in names if ".tmp" in n]
