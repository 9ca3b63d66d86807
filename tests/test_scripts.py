"""scripts/, configs/, examples/ and data/demo: dry runs, presets, smoke runs of demo and example."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED, TINY_CONFIG

SCRIPTS = REPO / "scripts"
CONFIGS = REPO / "configs"
DEMO_DATA = REPO / "data" / "demo" / "qnli"
BIN = Path(sys.executable).parent
TINY_32 = {  # the MiniLM vocab with a tiny random encoder (no checkpoint): a quick end-to-end run
    "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}


def _env(**overrides: str | None) -> dict[str, str]:
    """os.environ without the scripts' variables, plus `overrides` (None: leave unset)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("BERT_BASE_DIR", "GLUE_DIR", "OUTPUT_DIR", "TPU_NAME", "TPU_ZONE",
                        "GCP_PROJECT", "BERT_CLASSIFY", "DEMO_MODEL_DIR", "DEMO_QUICK")}
    env.update({k: v for k, v in overrides.items() if v is not None})
    return env


def _bash(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


def _argv(dry_run_output: str) -> list[str]:
    return shlex.split(dry_run_output.replace("\\\n", " "))


# -- shell syntax and dry runs -----------------------------------------------------------------
@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_shell_syntax(script):
    proc = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


GLUE_ENV = {"BERT_BASE_DIR": "/models/uncased L-12", "GLUE_DIR": "/data/glue",
            "BERT_CLASSIFY": "my-classify"}


def _model_flags(base: str) -> list[str]:
    return [f"--vocab_file={base}/vocab.txt", f"--bert_config_file={base}/bert_config.json",
            f"--init_checkpoint={base}/bert_model.ckpt"]


@pytest.mark.parametrize("task,folder,preset,extra", [
    ("MRPC", "MRPC", "mrpc", []),
    ("sts-b", "STS-B", "sts-b", []),
    ("MNLI-MM", "MNLI", "mnli", ["--task_name=MNLI-MM"]),
])
def test_run_glue_dry_run(task, folder, preset, extra):
    proc = _bash("run_glue.sh", "--dry-run", task, "--do_predict=true",
                 env=_env(**GLUE_ENV))
    assert proc.returncode == 0, proc.stderr
    assert _argv(proc.stdout) == [
        "my-classify", f"--flagfile={CONFIGS}/{preset}.flags", *extra,
        f"--data_dir=/data/glue/{folder}", *_model_flags("/models/uncased L-12"),
        f"--output_dir=/tmp/{task.lower()}_output", "--do_predict=true"]


def test_run_glue_output_dir_from_env():
    proc = _bash("run_glue.sh", "--dry-run", "rte", env=_env(**GLUE_ENV, OUTPUT_DIR="/out/rte"))
    assert proc.returncode == 0, proc.stderr
    assert _argv(proc.stdout)[-1] == "--output_dir=/out/rte"


def test_run_classifier_tpu_dry_run():
    env = _env(TPU_NAME="my-tpu", BERT_BASE_DIR="gs://b/base", GLUE_DIR="gs://b/glue",
               OUTPUT_DIR="gs://b/out", TPU_ZONE="us-central1-b", BERT_CLASSIFY="bc")
    proc = _bash("run_classifier_tpu.sh", "--dry-run", "--train_batch_size=64", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # all paths are gs://: no warning
    assert _argv(proc.stdout) == [
        "bc", f"--flagfile={CONFIGS}/mrpc.flags", f"--flagfile={CONFIGS}/tpu.flags",
        "--data_dir=gs://b/glue/MRPC", *_model_flags("gs://b/base"), "--output_dir=gs://b/out",
        "--tpu_name=my-tpu", "--tpu_zone=us-central1-b", "--train_batch_size=64"]
    assert "--use_tpu=true" in (CONFIGS / "tpu.flags").read_text().splitlines()


@pytest.mark.parametrize("script,env,missing", [
    ("run_glue.sh", {"GLUE_DIR": "/g"}, "BERT_BASE_DIR"),
    ("run_glue.sh", {"BERT_BASE_DIR": "/b"}, "GLUE_DIR"),
    ("run_classifier_tpu.sh", {"BERT_BASE_DIR": "gs://b", "GLUE_DIR": "gs://g",
                               "OUTPUT_DIR": "gs://o"}, "TPU_NAME"),
    ("run_classifier_tpu.sh", {"TPU_NAME": "t", "BERT_BASE_DIR": "gs://b",
                               "GLUE_DIR": "gs://g"}, "OUTPUT_DIR"),
])
def test_missing_env_var(script, env, missing):
    proc = _bash(script, "--dry-run", "MRPC", env=_env(**env))
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert f"{script}: error: {missing} is not set" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_run_glue_unknown_task():
    proc = _bash("run_glue.sh", "--dry-run", "SQUAD", env=_env(**GLUE_ENV))
    assert proc.returncode != 0
    assert "unknown GLUE task 'SQUAD'" in proc.stderr


# -- flag presets ------------------------------------------------------------------------------
_PARSE_PRESETS = r"""
import contextlib, io, json, sys
from absl import flags
from bert_finetune.cli import classify
FLAGS = flags.FLAGS
out = {}
for path in sys.argv[1:]:
    FLAGS.unparse_flags()
    argv = FLAGS(["bert-classify", "--flagfile=" + path])
    given = {name: FLAGS[name].value for name in FLAGS if FLAGS[name].present}
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            classify.main(argv)
            code = 0
        except SystemExit as e:
            code = e.code
    out[path] = {"flags": given, "code": code, "error": err.getvalue()}
print(json.dumps(out))
"""

PRESETS = sorted(p for p in CONFIGS.glob("*.flags") if not p.name.startswith("squad"))


def test_presets_parse_and_ask_for_paths():
    """Every preset parses; bert-classify then stops only on what the preset leaves out."""
    assert {p.stem for p in PRESETS} >= {"mrpc", "cola", "sst-2", "sts-b", "qnli", "rte", "mnli",
                                        "qqp", "wnli", "tpu", "demo"}
    proc = subprocess.run([sys.executable, "-c", _PARSE_PRESETS, *map(str, PRESETS)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for path in PRESETS:
        r = results[str(path)]
        assert r["code"] == 1, (path, r)
        assert r["error"].startswith("bert-classify: error: "), (path, r)
        assert "--data_dir is required" in r["error"], (path, r)
        assert "not found" not in r["error"], (path, r)  # the task name is a known one
        assert not {"data_dir", "vocab_file", "bert_config_file", "init_checkpoint",
                    "output_dir"} & set(r["flags"]), f"{path}: paths do not belong in a preset"
    # The original README's MRPC hyper-parameters, exactly.
    assert results[str(CONFIGS / "mrpc.flags")]["flags"] == {
        "task_name": "MRPC", "do_train": True, "do_eval": True, "max_seq_length": 128,
        "train_batch_size": 32, "learning_rate": 2e-5, "num_train_epochs": 3.0}
    assert results[str(CONFIGS / "tpu.flags")]["flags"]["use_tpu"] is True


def test_preset_through_the_console_script():
    proc = subprocess.run([str(BIN / "bert-classify"), f"--flagfile={CONFIGS}/mrpc.flags"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("bert-classify: error: ") and "--data_dir is required" in error


# -- demo data ---------------------------------------------------------------------------------
def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_demo_data_layout():
    train, dev, test = (_rows(DEMO_DATA / f"{s}.tsv") for s in ("train", "dev", "test"))
    assert train[0] == dev[0] == ["index", "question", "sentence", "label"]
    assert test[0] == ["index", "question", "sentence"]
    assert (len(train), len(dev), len(test)) == (4001, 401, 201)
    assert {len(r) for r in train + dev} == {4} and {len(r) for r in test} == {3}
    ids = [{r[0] for r in split[1:]} for split in (train, dev, test)]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 4600  # disjoint
    assert {r[3] for r in train[1:] + dev[1:]} == {"entailment", "not_entailment"}
    assert sum(p.stat().st_size for p in DEMO_DATA.parent.rglob("*")) < 1_500_000


def test_demo_data_follows_the_documented_procedure():
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    proc = subprocess.run([sys.executable, str(SCRIPTS / "prepare_demo_data.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# -- smoke runs --------------------------------------------------------------------------------
def test_demo_quick(minilm_google, tmp_path):
    out = tmp_path / "demo" / "qnli"
    env = _env(DEMO_QUICK="1", DEMO_MODEL_DIR=str(minilm_google), DEMO_OUTPUT_DIR=str(out),
               DEMO_VENV=str(BIN.parent))
    proc = _bash("demo.sh", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = (out / "eval_results.txt").read_text()
    assert "eval_accuracy = " in results and "global_step = 2" in results  # 64 rows / 32
    assert "Demo summary: dev accuracy" in proc.stdout
    assert "majority-class baseline 50.00%" in proc.stdout  # 4 of the first 8 dev rows
    assert (tmp_path / "demo" / "qnli.log").is_file()


def test_demo_reports_a_bad_model_dir(tmp_path):
    env = _env(DEMO_MODEL_DIR=str(tmp_path), DEMO_VENV=str(BIN.parent),
               DEMO_OUTPUT_DIR=str(tmp_path / "out"))
    proc = _bash("demo.sh", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        f"demo.sh: error: {tmp_path}/bert_config.json missing: not a converted "
        "(Google-format) model folder")


def _tiny_bert_base_dir(path: Path) -> Path:
    """A BERT_BASE_DIR of our own: 99-token vocab, 2-layer random encoder, bert_model.ckpt."""
    from bert_finetune import checkpoints, modeling

    words = "the cat sat on a mat number . 0 1 2 3 4 5 6 7 dog ran".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"w{i}" for i in range(TINY_CONFIG["vocab_size"] - len(vocab))]
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = dict(TINY_CONFIG, num_hidden_layers=2)
    (path / "bert_config.json").write_text(json.dumps(config))
    model = modeling.BertModel(modeling.BertConfig.from_dict(config))
    checkpoints.write_checkpoint(str(path / "bert_model.ckpt"),
                                 {n: v.numpy() for n, v in model.variables_by_name().items()})
    return path


def test_run_glue_smoke(tmp_path):
    """run_glue.sh for real: a tiny model on 8 RTE-layout rows of our own, one step."""
    rte = tmp_path / "glue" / "RTE"
    rte.mkdir(parents=True)
    rows = ["index\tsentence1\tsentence2\tlabel"] + [
        f"{i}\tThe cat sat on mat number {i}.\tA cat sat.\t"
        f"{'entailment' if i % 2 else 'not_entailment'}" for i in range(8)]
    for split in ("train", "dev"):
        (rte / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    base = _tiny_bert_base_dir(tmp_path / "base")
    env = _env(BERT_BASE_DIR=str(base), GLUE_DIR=str(tmp_path / "glue"),
               OUTPUT_DIR=str(tmp_path / "out"), BERT_CLASSIFY=str(BIN / "bert-classify"))
    proc = _bash("run_glue.sh", "rte", "--max_seq_length=16", "--train_batch_size=8",
                 "--num_train_epochs=1", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = (tmp_path / "out" / "eval_results.txt").read_text()
    assert "global_step = 1" in results and "eval_accuracy = " in results
    assert "*INIT_FROM_CKPT*" in proc.stderr  # the preset's run did start from BERT_BASE_DIR


def test_custom_task_example(minilm_google, tmp_path):
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps(TINY_32))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "custom_task.py"), "--task_name=my_sentiment",
         "--do_train=true", "--do_eval=true", "--do_predict=true",
         f"--data_dir={REPO / 'examples' / 'data'}", f"--vocab_file={minilm_google}/vocab.txt",
         f"--bert_config_file={config}", "--max_seq_length=32", "--train_batch_size=8",
         "--num_train_epochs=1", f"--output_dir={out}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "global_step = 5" in (out / "eval_results.txt").read_text()  # 40 rows / 8
    assert len((out / "test_results.tsv").read_text().splitlines()) == 4
    assert (out / "label_list.txt").read_text().split() == ["negative", "positive"]


def test_custom_task_names_bad_line(tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from custom_task import MySentimentProcessor
    finally:
        sys.path.remove(str(REPO / "examples"))
    from bert_finetune.errors import UserError

    (tmp_path / "train.tsv").write_text("sentence\tlabel\nGood.\tpositive\nBad.\tneutral\n")
    with pytest.raises(UserError, match=r"train\.tsv, line 3: label 'neutral'"):
        MySentimentProcessor().get_train_examples(str(tmp_path))
    examples = MySentimentProcessor().get_dev_examples(str(REPO / "examples" / "data"))
    assert (examples[1].guid, examples[1].label) == ("dev-1", "negative")
