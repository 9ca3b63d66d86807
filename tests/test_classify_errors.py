"""bert-classify on bad input: one `bert-classify: error:` line naming the file/line/flag, exit 1.

Every case runs the CLI as a user would and checks that nothing was left behind: the output
directory is not even created, since flags and data files are all checked before any write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MRPC = SHARED / "data" / "glue" / "MRPC"
CONFIG = {
    "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}


@dataclass
class Env:
    tmp: Path
    data: Path  # a good MRPC data_dir (train/dev/test)
    config: Path
    vocab: Path
    google_ckpt: Path
    out: Path  # not created: the runs must not create it either

    def data_dir_with(self, name: str, edit: Callable[[list[bytes]], list[bytes]]) -> Path:
        """A copy of the good data_dir whose file `name` has its lines passed through `edit`."""
        target = self.tmp / f"data_{name.replace('.', '_')}"
        target.mkdir()
        for src in self.data.iterdir():
            lines = src.read_bytes().split(b"\n")
            (target / src.name).write_bytes(b"\n".join(edit(lines) if src.name == name
                                                       else lines))
        return target

    def flags(self, **overrides) -> list[str]:
        flags = {
            "task_name": "MRPC", "do_train": "true", "do_eval": "true", "do_predict": "true",
            "data_dir": self.data, "vocab_file": self.vocab, "bert_config_file": self.config,
            "max_seq_length": 32, "train_batch_size": 8, "num_train_epochs": 1,
            "output_dir": self.out,
        }
        flags.update(overrides)
        return [f"--{k}={v}" for k, v in flags.items() if v is not None]


@pytest.fixture
def env(tmp_path: Path, minilm_weights: Path, minilm_google: Path) -> Env:
    data = tmp_path / "data"
    data.mkdir()
    for name, rows in (("train.tsv", 12), ("dev.tsv", 8), ("test.tsv", 5)):
        lines = (MRPC / name).read_bytes().split(b"\n")
        (data / name).write_bytes(b"\n".join(lines[:rows + 1]) + b"\n")  # header (and BOM) kept
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps(CONFIG))
    return Env(tmp_path, data, config, minilm_weights / "all-MiniLM-L6-v2" / "vocab.txt",
               minilm_google, tmp_path / "out")


def run_cli(env: Env, flags: list[str]) -> str:
    """Runs bert-classify expecting failure; returns the error line (checked for form)."""
    proc = subprocess.run([sys.executable, "-m", "bert_finetune.cli.classify", *flags],
                          capture_output=True, text=True, cwd=env.tmp,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1"))
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("bert-classify: error: "), proc.stderr[-2000:]
    assert not env.out.exists(), sorted(p.name for p in env.out.iterdir())
    return lines[-1]


def _replace_line(number: int, old: bytes, new: bytes):
    """An edit that replaces `old` by `new` once in 1-based line `number`."""
    def edit(lines: list[bytes]) -> list[bytes]:
        assert old in lines[number - 1]
        lines[number - 1] = lines[number - 1].replace(old, new, 1)
        return lines
    return edit


# -- flags ----------------------------------------------------------------------------------------
def test_missing_data_dir_flag(env):
    assert "--data_dir is required" in run_cli(env, env.flags(data_dir=None))


def test_data_dir_not_found(env):
    line = run_cli(env, env.flags(data_dir=env.tmp / "nope"))
    assert f"--data_dir={env.tmp / 'nope'}" in line and "not found" in line


def test_no_do_flag(env):
    line = run_cli(env, env.flags(do_train="false", do_eval="false", do_predict="false"))
    assert "do_train" in line and "do_eval" in line and "do_predict" in line


def test_unknown_task_lists_valid_names(env):
    line = run_cli(env, env.flags(task_name="FOO"))
    assert "--task_name=FOO" in line
    for name in ("cola", "mnli", "mrpc", "sts-b", "generic"):
        assert name in line


def test_unknown_flag(env):
    line = run_cli(env, [*env.flags(), "--bogus_flag=3"])
    assert "bogus_flag" in line


def test_output_dir_is_a_file(env):
    afile = env.tmp / "afile"
    afile.write_text("keep me\n")
    line = run_cli(env, env.flags(output_dir=afile))
    assert f"--output_dir={afile}" in line and "is a file" in line
    assert afile.read_text() == "keep me\n"


def test_max_seq_length_beyond_position_embeddings(env):
    line = run_cli(env, env.flags(max_seq_length=128))
    assert "128" in line and "64" in line and "max_seq_length" in line


# -- model files ----------------------------------------------------------------------------------
def test_bad_config_json(env):
    bad = env.tmp / "bad_config.json"
    bad.write_text('{"vocab_size": 30522, "hidden_size": 32,\n')
    line = run_cli(env, env.flags(bert_config_file=bad))
    assert str(bad) in line and "JSON" in line


def test_vocab_bigger_than_config(env):
    small = env.tmp / "small_config.json"
    small.write_text(json.dumps(dict(CONFIG, vocab_size=99)))
    line = run_cli(env, env.flags(bert_config_file=small))
    assert str(env.vocab) in line and "30522" in line and "vocab_size=99" in line


def test_casing_mismatch_with_checkpoint(env):
    assert (env.google_ckpt / "do_lower_case.txt").read_text().strip() == "true"
    line = run_cli(env, env.flags(init_checkpoint=env.google_ckpt, do_lower_case="false"))
    assert str(env.google_ckpt / "do_lower_case.txt") in line
    assert "--do_lower_case=True" in line


def test_several_problems_in_one_line(env):
    small = env.tmp / "small_config.json"
    small.write_text(json.dumps(dict(CONFIG, vocab_size=99)))
    line = run_cli(env, env.flags(task_name="FOO", data_dir=env.tmp / "nope",
                                  bert_config_file=small, max_seq_length=128,
                                  train_batch_size=0))
    for part in ("--task_name=FOO", "--data_dir=", "vocab_size=99", "sequence length 128",
                 "--train_batch_size=0"):
        assert part in line, part


# -- data files (read before anything is written) -------------------------------------------------
def test_missing_train_file(env):
    (env.data / "train.tsv").unlink()
    line = run_cli(env, env.flags())
    assert f"{env.data / 'train.tsv'}: no such file" in line


def test_empty_train_file(env):
    (env.data / "train.tsv").write_bytes(b"")
    line = run_cli(env, env.flags())
    assert str(env.data / "train.tsv") in line and "no data rows" in line


def test_ragged_row_names_the_line(env):
    def drop_last_column(lines: list[bytes]) -> list[bytes]:
        lines[4] = lines[4].rsplit(b"\t", 1)[0]
        return lines

    data = env.data_dir_with("train.tsv", drop_last_column)
    line = run_cli(env, env.flags(data_dir=data))
    assert f"{data / 'train.tsv'}, line 5:" in line and "expected 5" in line and "found 4" in line


def test_unknown_label_in_dev_fails_before_training(env):
    data = env.data_dir_with("dev.tsv", _replace_line(7, b"1\t3039165", b"2\t3039165"))
    line = run_cli(env, env.flags(data_dir=data))
    assert f"{data / 'dev.tsv'}, line 7:" in line and "label '2'" in line


def test_non_utf8_test_file_names_the_line(env):
    data = env.data_dir_with("test.tsv", _replace_line(4, b"federal", b"f\xe9deral"))
    line = run_cli(env, env.flags(data_dir=data))
    assert f"{data / 'test.tsv'}, line 4:" in line and "UTF-8" in line


def test_unreachable_tpu(env):
    line = run_cli(env, env.flags(use_tpu="true", tpu_name="no-such-tpu-here"))
    assert "--use_tpu" in line and "no-such-tpu-here" in line


def test_use_tpu_needs_tpu_name(env):
    line = run_cli(env, env.flags(use_tpu="true"))
    assert "--tpu_name" in line


def test_config_does_not_match_checkpoint(env):
    """A checkpoint of another size is caught up front (before any output is written)."""
    bigger = env.tmp / "bigger_config.json"
    cfg = json.loads((env.google_ckpt / "bert_config.json").read_text())
    cfg["intermediate_size"] = 1000
    bigger.write_text(json.dumps(cfg))
    line = run_cli(env, env.flags(bert_config_file=bigger,
                                  init_checkpoint=env.google_ckpt / "bert_model.ckpt"))
    assert "intermediate/dense" in line and "[384, 1536]" in line and "[384, 1000]" in line
