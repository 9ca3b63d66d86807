"""Shared by the export tests: a tiny random BERT checkpoint directory with the real vocab."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tensorflow as tf

from bert_finetune import checkpoints, modeling

# vocab_size fits the MiniLM vocab (30522); the rest is tiny and odd-sized (STYLE.md).
TINY = {
    "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}


def make_checkpoint(directory: Path, vocab: Path, config: dict | None = None,
                    seed: int = 0) -> Path:
    """bert_config.json, vocab.txt, do_lower_case.txt and a random bert_model.ckpt in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    config = dict(config or TINY)
    (directory / "bert_config.json").write_text(json.dumps(config))
    shutil.copy(vocab, directory / "vocab.txt")
    (directory / "do_lower_case.txt").write_text("true\n")
    tf.random.set_seed(seed)
    model = modeling.BertModel(modeling.BertConfig.from_dict(config))
    arrays = {name: v.numpy() for name, v in model.variables_by_name().items()}
    checkpoints.write_checkpoint(str(directory / "bert_model.ckpt"), arrays)
    return directory


def run_cli(module: str, *flags: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", module, *flags], capture_output=True,
                          text=True, cwd=cwd, env=env)


def one_line_error(proc: subprocess.CompletedProcess, program: str) -> str:
    """The stderr error line of a failed CLI run (asserting it is one line, no traceback)."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.startswith(f"{program}: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]
