"""bert-extract-features: the original's JSONL, parity with the reference activations, pooling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG
from pretraining_text import write_vocab

from bert_finetune import checkpoints, modeling
from bert_finetune import extract_features as ef
from bert_finetune.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_reference_activations_through_the_command(minilm_google, shared_dir, tmp_path):
    """Layers -1..-6 within 1e-4 of ../shared/data/reference (HF fp32, exact GELU).

    The tolerance sits between fp32 noise (~2e-6) and the tanh-GELU gap (4.5e-3); the 6-decimal
    rounding of the original format adds at most 5e-7. The `control` example is left out: its
    text holds "\\r\\n", which cannot be one line of a line-based input file.
    """
    # dict(): an NpzFile reads (and decompresses) an array again at every subscript.
    ref = dict(np.load(shared_dir / "data" / "reference" / "minilm_reference.npz"))
    rows = [i for i, n in enumerate(ref["names"]) if n != "control"]
    lines = []
    for i in rows:
        a, b = str(ref["text_a"][i]), str(ref["text_b"][i])
        lines.append(f"{a} ||| {b}" if b else a)
    (tmp_path / "input.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "output.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "bert_finetune.cli.extract_features",
         f"--input_file={tmp_path / 'input.txt'}", f"--output_file={out}",
         f"--vocab_file={minilm_google / 'vocab.txt'}",
         f"--bert_config_file={minilm_google / 'bert_config.json'}",
         f"--init_checkpoint={minilm_google / 'bert_model.ckpt'}",
         "--layers=-1,-2,-3,-4,-5,-6", "--max_seq_length=128", "--batch_size=4"],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(lines)  # one line per input line
    worst = 0.0
    for n, (i, rec) in enumerate(zip(rows, records, strict=True)):
        assert list(rec) == ["linex_index", "features"] and rec["linex_index"] == n
        tokens = [f["token"] for f in rec["features"]]
        assert tokens == str(ref["tokens"][i]).split(" ")
        for t, feature in enumerate(rec["features"]):
            assert [layer["index"] for layer in feature["layers"]] == [-1, -2, -3, -4, -5, -6]
            for layer in feature["layers"]:
                want = ref["all_encoder_layers"][layer["index"], i, t]
                got = np.array(layer["values"], np.float32)
                assert got.shape == want.shape == (384,)
                worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-4, worst


@pytest.fixture
def tiny(tmp_path):
    """A tiny random BERT saved as a Google-format checkpoint, and its vocab."""
    config = modeling.BertConfig(**TINY_CONFIG)
    (tmp_path / "bert_config.json").write_text(json.dumps(TINY_CONFIG))
    model = modeling.BertModel(config)
    prefix = checkpoints.write_checkpoint(
        str(tmp_path / "ckpt" / "bert_model.ckpt"),
        {n: v.numpy() for n, v in model.variables_by_name().items()})
    write_vocab(tmp_path / "vocab.txt")
    return tmp_path, model, prefix


def _opts(root: Path, prefix: str, **kw) -> ef.ExtractFeaturesOptions:
    values = dict(input_file=str(root / "in.txt"), output_file=str(root / "out.jsonl"),
                  bert_config_file=str(root / "bert_config.json"), init_checkpoint=prefix,
                  vocab_file=str(root / "vocab.txt"), max_seq_length=16, batch_size=3,
                  layers="-1,0")
    values.update(kw)
    return ef.ExtractFeaturesOptions(**values)


def test_pooling_mean_ignores_padding_and_cls_is_the_first_token(tiny):
    root, model, prefix = tiny
    lines = ["the cat is jumping", "a dog ||| the red bird was singing", "", "big city"] * 2
    (root / "in.txt").write_text("\n".join(lines) + "\n")
    tokens = ef.ExtractFeaturesOptions()  # defaults are the original's
    assert (tokens.layers, tokens.batch_size, tokens.max_seq_length) == ("-1,-2,-3,-4", 32, 128)

    # Token vectors (the original format), for reference values.
    assert ef.run(_opts(root, prefix)) == len(lines)
    records = [json.loads(x) for x in (root / "out.jsonl").read_text().splitlines()]
    assert [r["linex_index"] for r in records] == list(range(len(lines)))
    assert [f["token"] for f in records[2]["features"]] == ["[CLS]", "[SEP]"]
    assert [f["token"] for f in records[0]["features"]] == [
        "[CLS]", "the", "cat", "is", "jump", "##ing", "[SEP]"]

    def token_matrix(rec, j):  # [tokens, H] of layer j
        return np.array([f["layers"][j]["values"] for f in rec["features"]])

    for seq_length in (16, 40):  # more padding must not change the mean
        out = root / f"mean{seq_length}.npy"
        ef.run(_opts(root, prefix, pooling="mean", output_format="npy", output_file=str(out),
                     max_seq_length=seq_length))
        mean = np.load(out)
        assert mean.shape == (len(lines), 2, 32)
        for n, rec in enumerate(records):
            for j in range(2):
                np.testing.assert_allclose(mean[n, j], token_matrix(rec, j).mean(0), atol=2e-6)
    ef.run(_opts(root, prefix, pooling="cls", output_file=str(root / "cls.jsonl")))
    cls = [json.loads(x) for x in (root / "cls.jsonl").read_text().splitlines()]
    assert len(cls) == len(lines)
    for rec, c in zip(records, cls, strict=True):
        assert c["linex_index"] == rec["linex_index"] and c["pooling"] == "cls"
        assert [layer["index"] for layer in c["layers"]] == [-1, 0]
        for j in range(2):
            assert c["layers"][j]["values"] == rec["features"][0]["layers"][j]["values"]


def test_bad_input(tiny):
    root, _, prefix = tiny
    (root / "in.txt").write_text("fine\na ||| b ||| c\n")
    with pytest.raises(UserError, match=r"in\.txt, line 2: more than one '\|\|\|'"):
        ef.run(_opts(root, prefix))
    assert not (root / "out.jsonl").exists()
    (root / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty.txt is empty"):
        ef.run(_opts(root, prefix, input_file=str(root / "empty.txt")))
    problems = " | ".join(ef.validate(_opts(root, prefix, layers="-1,5,-6")))
    assert "layer 5 is out of range for a 5-layer model (use -5..4" in problems
    problems = " | ".join(ef.validate(_opts(root, prefix, layers="last", pooling="none",
                                            output_format="npy")))
    assert "--layers=last: expected comma-separated integers" in problems
    assert "--output_format=npy writes one vector per line and layer" in problems
    assert ef.validate(_opts(root, prefix, layers="-5,4")) == []


def test_cli_error_is_one_line(tiny):
    root, _, prefix = tiny
    (root / "in.txt").write_text("a ||| b ||| c\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bert_finetune.cli.extract_features",
         *[f"--{k}={v}" for k, v in vars(_opts(root, prefix, layers="-1,-7")).items()
           if v is not None and k in ("input_file", "output_file", "bert_config_file",
                                      "init_checkpoint", "vocab_file", "layers")]],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]  # every problem on one line
    assert last.startswith("bert-extract-features: error: ")
    assert "--layers=-1,-7: layer -7 is out of range" in last
    assert "Traceback" not in proc.stderr
    assert not (root / "out.jsonl").exists()

