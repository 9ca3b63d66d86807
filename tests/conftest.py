"""Shared fixtures: the repo, ../shared, the real MiniLM weights and a tiny BERT config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS_CACHE = REPO / ".cache" / "weights"

# Odd sizes expose mixed-up axes (STYLE.md).
TINY_CONFIG = {
    "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 5, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}


def require_shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def minilm_weights() -> Path:
    """Materialises the real all-MiniLM-L6-v2 weights into .cache/weights (skip without shared).

    If ../shared is there and the tool fails, that is a failure: a skipped parity test proves
    nothing.
    """
    shared = require_shared()
    WEIGHTS_CACHE.parent.mkdir(parents=True, exist_ok=True)
    # One materialisation at a time: pytest-xdist workers each run this session fixture.
    with FileLock(str(WEIGHTS_CACHE.parent / "weights.lock")):
        proc = subprocess.run(
            [sys.executable, str(shared / "tools" / "minilm-weights"), str(WEIGHTS_CACHE)],
            capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"minilm-weights failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return WEIGHTS_CACHE


@pytest.fixture(scope="session")
def minilm_google(minilm_weights: Path) -> Path:
    return minilm_weights / "all-MiniLM-L6-v2-google-ckpt"


@pytest.fixture(scope="session")
def minilm_hf(minilm_weights: Path) -> Path:
    return minilm_weights / "all-MiniLM-L6-v2"


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


@pytest.fixture
def record_writes(monkeypatch) -> list[str]:
    """The output files each real TFRecord write goes to (a reuse writes none)."""
    from bert_finetune.data import features

    calls: list[str] = []
    real = features.file_based_convert_examples_to_features

    def spy(*args, **kw):
        calls.append(args[4])
        return real(*args, **kw)

    monkeypatch.setattr(features, "file_based_convert_examples_to_features", spy)
    return calls


# -- a tiny fine-tuned classifier (serving tests) ------------------------------------------------
# The real MiniLM vocab and MiniLM's activation. The run starts from a seeded checkpoint (encoder
# and head) with weights of stddev 0.4, so that an (almost) untrained model already gives clearly
# different probabilities, and both labels, to different inputs, the same on every run.
SERVING_CONFIG = {**TINY_CONFIG, "vocab_size": 30522, "num_hidden_layers": 2,
                  "hidden_act": "gelu_exact", "initializer_range": 0.4}
SERVING_SEED = 5  # 3 of the 13 test pairs get label "1", none within 0.07 of 0.5


def _seeded_checkpoint(prefix: Path, config: dict) -> None:
    import numpy as np

    from bert_finetune import checkpoints, modeling

    rng = np.random.default_rng(SERVING_SEED)
    std = config["initializer_range"]
    specs = modeling.variable_specs(modeling.BertConfig(**config))
    specs += [("output_weights", [2, config["hidden_size"]], "normal"),
              ("output_bias", [2], "zeros")]
    arrays = {}
    for name, shape, kind in specs:
        if kind == "normal":
            arrays[name] = np.clip(rng.normal(0.0, std, shape), -2 * std, 2 * std)
        else:
            arrays[name] = np.full(shape, 1.0 if kind == "ones" else 0.0)
    checkpoints.write_checkpoint(str(prefix), {k: v.astype(np.float32)
                                               for k, v in arrays.items()})


def _tiny_classifier_run(root: Path, vocab_dir: Path, *extra_flags: str) -> Path:
    import os

    data = root / "data"
    data.mkdir()
    # Header + rows, bytes as in GLUE (BOM included); max_seq_length 32 truncates most pairs.
    for split, rows in (("train", 16), ("test", 13)):
        lines = (SHARED / "data" / "glue" / "MRPC" / f"{split}.tsv").read_bytes().split(b"\n")
        (data / f"{split}.tsv").write_bytes(b"\n".join(lines[:rows + 1]) + b"\n")
    config = root / "bert_config.json"
    config.write_text(json.dumps(SERVING_CONFIG))
    init = root / "init" / "model.ckpt"
    _seeded_checkpoint(init, SERVING_CONFIG)
    out = root / "run"
    cmd = [sys.executable, "-m", "bert_finetune.cli.classify", "--task_name=MRPC",
           "--do_train=true", "--do_predict=true", f"--data_dir={data}",
           f"--vocab_file={vocab_dir / 'vocab.txt'}", f"--bert_config_file={config}",
           f"--init_checkpoint={init}", "--max_seq_length=32", "--train_batch_size=8",
           "--num_train_epochs=1", "--predict_batch_size=8", f"--output_dir={out}", *extra_flags]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_classifier_run(tmp_path_factory, minilm_google: Path) -> Path:
    """A bert-classify MRPC run (train 2 steps, predict 13 test rows) of a tiny model on the real
    MiniLM vocab, through `python -m bert_finetune.cli.classify`. Treat it as read-only.

    Both labels occur among the 13 predictions (tests check it, so that a label mix-up fails).
    """
    return _tiny_classifier_run(tmp_path_factory.mktemp("tiny_classifier"), minilm_google)


@pytest.fixture(scope="session")
def tiny_mean_pooled_run(tmp_path_factory, minilm_google: Path) -> Path:
    """The same run as `tiny_classifier_run` (same data, init and seed) with `--pooling=mean`."""
    return _tiny_classifier_run(tmp_path_factory.mktemp("tiny_mean_pooled"), minilm_google,
                                "--pooling=mean")
