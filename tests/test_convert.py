"""bert-convert: a Hugging Face BERT (safetensors) -> Google's checkpoint with original names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import save_file

from bert_finetune.convert import convert_hf_to_google, hf_to_google_names
from bert_finetune.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Tiny odd sizes (FF: intermediate size) so that a mixed-up axis cannot go unnoticed.
V, H, N_HEADS, FF, L, P, T = 99, 32, 4, 37, 2, 40, 2

HF_CONFIG = {
    "architectures": ["BertModel"], "model_type": "bert", "vocab_size": V, "hidden_size": H,
    "num_hidden_layers": L, "num_attention_heads": N_HEADS, "intermediate_size": FF,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": P, "type_vocab_size": T, "initializer_range": 0.02,
    "layer_norm_eps": 1e-12, "position_embedding_type": "absolute", "pad_token_id": 0,
}

# Written out by hand (not from the converter's table) so the test checks the names themselves.
_LAYER_VARIABLES = {
    "attention/self/query/kernel": (H, H), "attention/self/query/bias": (H,),
    "attention/self/key/kernel": (H, H), "attention/self/key/bias": (H,),
    "attention/self/value/kernel": (H, H), "attention/self/value/bias": (H,),
    "attention/output/dense/kernel": (H, H), "attention/output/dense/bias": (H,),
    "attention/output/LayerNorm/gamma": (H,), "attention/output/LayerNorm/beta": (H,),
    "intermediate/dense/kernel": (H, FF), "intermediate/dense/bias": (FF,),
    "output/dense/kernel": (FF, H), "output/dense/bias": (H,),
    "output/LayerNorm/gamma": (H,), "output/LayerNorm/beta": (H,),
}
GOOGLE_SHAPES = {
    "bert/embeddings/word_embeddings": (V, H),
    "bert/embeddings/token_type_embeddings": (T, H),
    "bert/embeddings/position_embeddings": (P, H),
    "bert/embeddings/LayerNorm/gamma": (H,),
    "bert/embeddings/LayerNorm/beta": (H,),
    **{f"bert/encoder/layer_{n}/{k}": s for n in range(L) for k, s in _LAYER_VARIABLES.items()},
    "bert/pooler/dense/kernel": (H, H),
    "bert/pooler/dense/bias": (H,),
}
HEAD_SHAPES = {
    "cls/predictions/transform/dense/kernel": (H, H),
    "cls/predictions/transform/dense/bias": (H,),
    "cls/predictions/transform/LayerNorm/gamma": (H,),
    "cls/predictions/transform/LayerNorm/beta": (H,),
    "cls/predictions/output_bias": (V,),
    "cls/seq_relationship/output_weights": (2, H),
    "cls/seq_relationship/output_bias": (2,),
}


def _hf_tensors(seed: int = 0, heads: bool = False) -> dict[str, np.ndarray]:
    """A random BertModel state dict (torch layouts: Linear weight is [out, in])."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    t = {
        "embeddings.word_embeddings.weight": r(V, H),
        "embeddings.position_embeddings.weight": r(P, H),
        "embeddings.token_type_embeddings.weight": r(T, H),
        "embeddings.LayerNorm.weight": r(H), "embeddings.LayerNorm.bias": r(H),
        "embeddings.position_ids": np.arange(P, dtype=np.int64)[None],
        "pooler.dense.weight": r(H, H), "pooler.dense.bias": r(H),
    }
    for n in range(L):
        p = f"encoder.layer.{n}."
        for part in ("query", "key", "value"):
            t[f"{p}attention.self.{part}.weight"] = r(H, H)
            t[f"{p}attention.self.{part}.bias"] = r(H)
        t[f"{p}attention.output.dense.weight"] = r(H, H)
        t[f"{p}attention.output.dense.bias"] = r(H)
        t[f"{p}attention.output.LayerNorm.weight"] = r(H)
        t[f"{p}attention.output.LayerNorm.bias"] = r(H)
        t[f"{p}intermediate.dense.weight"] = r(FF, H)
        t[f"{p}intermediate.dense.bias"] = r(FF)
        t[f"{p}output.dense.weight"] = r(H, FF)
        t[f"{p}output.dense.bias"] = r(H)
        t[f"{p}output.LayerNorm.weight"] = r(H)
        t[f"{p}output.LayerNorm.bias"] = r(H)
    if heads:
        t.update({
            "cls.predictions.transform.dense.weight": r(H, H),
            "cls.predictions.transform.dense.bias": r(H),
            "cls.predictions.transform.LayerNorm.weight": r(H),
            "cls.predictions.transform.LayerNorm.bias": r(H),
            "cls.predictions.bias": r(V),
            "cls.predictions.decoder.weight": t["embeddings.word_embeddings.weight"].copy(),
            "cls.seq_relationship.weight": r(2, H),
            "cls.seq_relationship.bias": r(2),
        })
    return t


def make_hf_dir(root: Path, tensors: dict[str, np.ndarray] | None = None, prefix: str = "",
                vocab_size: int = V, tokenizer_config: dict | None = None, **config) -> Path:
    """Writes a tiny HF BERT directory; `prefix` ("bert.") prefixes the non-head keys."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = _hf_tensors() if tensors is None else tensors
    save_file({(k if k.startswith("cls.") else prefix + k): v for k, v in tensors.items()},
              str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({**HF_CONFIG, **config}, indent=2))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (root / "vocab.txt").write_text(
        "".join(f"{w}\n" for w in specials + [f"tok{n}" for n in range(vocab_size - 5)]))
    if tokenizer_config is not None:
        (root / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return root


def _read_ckpt(out: Path) -> tuple[dict, tf.train.CheckpointReader]:
    reader = tf.train.load_checkpoint(str(out / "bert_model.ckpt"))
    return {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}, reader


def test_converts_tiny_model(tmp_path):
    src = _hf_tensors()
    hf = make_hf_dir(tmp_path / "hf", src)
    out = tmp_path / "out"
    summary = convert_hf_to_google(str(hf), str(out))

    shapes, reader = _read_ckpt(out)
    assert len(GOOGLE_SHAPES) == 5 + 16 * L + 2
    assert shapes == GOOGLE_SHAPES
    # Kernels are transposed torch weights; everything else is copied as is.
    np.testing.assert_array_equal(reader.get_tensor("bert/encoder/layer_1/intermediate/dense/kernel"),
                                  src["encoder.layer.1.intermediate.dense.weight"].T)
    np.testing.assert_array_equal(reader.get_tensor("bert/encoder/layer_0/output/dense/kernel"),
                                  src["encoder.layer.0.output.dense.weight"].T)
    np.testing.assert_array_equal(reader.get_tensor("bert/encoder/layer_1/attention/self/key/kernel"),
                                  src["encoder.layer.1.attention.self.key.weight"].T)
    np.testing.assert_array_equal(reader.get_tensor("bert/embeddings/word_embeddings"),
                                  src["embeddings.word_embeddings.weight"])
    np.testing.assert_array_equal(reader.get_tensor("bert/encoder/layer_0/output/LayerNorm/beta"),
                                  src["encoder.layer.0.output.LayerNorm.bias"])
    for google, hf_name, transpose in hf_to_google_names(L):
        value = reader.get_tensor(google)
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, src[hf_name].T if transpose else src[hf_name])

    config = json.loads((out / "bert_config.json").read_text())
    assert config == {k: v for k, v in HF_CONFIG.items() if k not in (
        "architectures", "model_type", "layer_norm_eps", "position_embedding_type",
        "pad_token_id")} | {"hidden_act": "gelu_exact"}
    assert (out / "do_lower_case.txt").read_text() == "true\n"
    assert (out / "vocab.txt").read_bytes() == (hf / "vocab.txt").read_bytes()
    assert tf.train.latest_checkpoint(str(out)) == str(out / "bert_model.ckpt")
    assert sorted(os.listdir(out)) == sorted([
        "bert_config.json", "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index",
        "checkpoint", "do_lower_case.txt", "vocab.txt"])
    assert summary["num_variables"] == len(GOOGLE_SHAPES)
    assert summary["skipped"] == ["embeddings.position_ids"]
    assert summary["heads"] == []


@pytest.mark.parametrize("hf_act,google_act", [
    ("gelu", "gelu_exact"), ("gelu_new", "gelu"), ("gelu_pytorch_tanh", "gelu"), ("relu", "relu"),
])
def test_activation_names(tmp_path, hf_act, google_act):
    hf = make_hf_dir(tmp_path / "hf", hidden_act=hf_act)
    summary = convert_hf_to_google(str(hf), str(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "bert_config.json").read_text())["hidden_act"] == google_act
    assert summary["hidden_act"] == google_act


def test_prefixed_keys_and_pretraining_heads(tmp_path):
    """A BertForPreTraining state dict: `bert.` prefix, MLM and NSP heads, tied decoder."""
    src = _hf_tensors(seed=1, heads=True)
    hf = make_hf_dir(tmp_path / "hf", src, prefix="bert.", architectures=["BertForPreTraining"],
                     tokenizer_config={"do_lower_case": False})
    out = tmp_path / "out"
    summary = convert_hf_to_google(str(hf), str(out))

    shapes, reader = _read_ckpt(out)
    assert shapes == GOOGLE_SHAPES | HEAD_SHAPES
    np.testing.assert_array_equal(reader.get_tensor("cls/predictions/transform/dense/kernel"),
                                  src["cls.predictions.transform.dense.weight"].T)
    np.testing.assert_array_equal(reader.get_tensor("cls/predictions/transform/LayerNorm/gamma"),
                                  src["cls.predictions.transform.LayerNorm.weight"])
    np.testing.assert_array_equal(reader.get_tensor("cls/predictions/output_bias"),
                                  src["cls.predictions.bias"])
    # Google keeps the NSP weights [2, H], like torch: not transposed.
    np.testing.assert_array_equal(reader.get_tensor("cls/seq_relationship/output_weights"),
                                  src["cls.seq_relationship.weight"])
    np.testing.assert_array_equal(reader.get_tensor("cls/seq_relationship/output_bias"),
                                  src["cls.seq_relationship.bias"])
    np.testing.assert_array_equal(reader.get_tensor("bert/pooler/dense/kernel"),
                                  src["pooler.dense.weight"].T)
    assert summary["heads"] == ["cls/predictions", "cls/seq_relationship"]
    assert "cls.predictions.decoder.weight" in summary["skipped"]
    assert (out / "do_lower_case.txt").read_text() == "false\n"


def test_tokenizer_config_without_do_lower_case_means_lower_case(tmp_path):
    hf = make_hf_dir(tmp_path / "hf", tokenizer_config={"model_max_length": 512})
    convert_hf_to_google(str(hf), str(tmp_path / "out"))
    assert (tmp_path / "out" / "do_lower_case.txt").read_text() == "true\n"


def test_existing_output_dir_keeps_other_files(tmp_path):
    hf = make_hf_dir(tmp_path / "hf")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "bert_config.json").write_text("{}")
    convert_hf_to_google(str(hf), str(out))
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "bert_config.json").read_text())["hidden_size"] == H
    assert not [n for n in os.listdir(out) if "bert-convert" in n]  # no temporary left
    assert not [n for n in os.listdir(tmp_path) if "bert-convert" in n]


def _assert_error(tmp_path, hf, *fragments):
    out = tmp_path / "new" / "out"
    with pytest.raises(UserError) as e:
        convert_hf_to_google(str(hf), str(out))
    message = str(e.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    # Nothing half-written: the output (and the parent made for it) does not exist.
    assert not (tmp_path / "new").exists()
    return message


def test_missing_weights(tmp_path):
    hf = make_hf_dir(tmp_path / "hf")
    (hf / "model.safetensors").unlink()
    _assert_error(tmp_path, hf, str(hf / "model.safetensors"), "not found")
    (hf / "pytorch_model.bin").write_bytes(b"not really")
    _assert_error(tmp_path, hf, "pytorch_model.bin", "PyTorch")


def test_missing_hf_dir(tmp_path):
    _assert_error(tmp_path, tmp_path / "nowhere", str(tmp_path / "nowhere"))


@pytest.mark.parametrize("config,fragments", [
    ({"model_type": "roberta"}, ["config.json", "roberta"]),
    ({"model_type": "bert", "architectures": ["GPT2LMHeadModel"]}, ["config.json", "GPT2"]),
    ({"hidden_act": "silu"}, ["config.json", "silu"]),
    ({"layer_norm_eps": 1e-5}, ["config.json", "layer_norm_eps", "1e-05"]),
    ({"position_embedding_type": "relative_key"}, ["config.json", "relative_key"]),
    ({"hidden_size": "32"}, ["config.json", "hidden_size", "'32'"]),
    ({"num_attention_heads": 5}, ["config.json", "num_attention_heads 5"]),
])
def test_bad_config(tmp_path, config, fragments):
    _assert_error(tmp_path, make_hf_dir(tmp_path / "hf", **config), *fragments)


def test_malformed_config_json(tmp_path):
    hf = make_hf_dir(tmp_path / "hf")
    (hf / "config.json").write_text('{\n  "hidden_size": 32,\n  oops\n}')
    _assert_error(tmp_path, hf, str(hf / "config.json") + ":3:", "malformed JSON")


def test_inconsistent_shape_leaves_existing_output_untouched(tmp_path):
    src = _hf_tensors()
    # A Google-style [in, out] kernel saved where torch's [out, in] weight belongs.
    src["encoder.layer.1.intermediate.dense.weight"] = np.zeros((H, FF), np.float32)
    hf = make_hf_dir(tmp_path / "hf", src)
    message = _assert_error(tmp_path, hf, "model.safetensors",
                            "encoder.layer.1.intermediate.dense.weight", f"[{H}, {FF}]",
                            f"expected [{FF}, {H}]")
    assert message.startswith(str(hf / "model.safetensors"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        convert_hf_to_google(str(hf), str(out))
    assert os.listdir(out) == ["notes.txt"]


def test_missing_and_unmapped_tensors(tmp_path):
    src = _hf_tensors()
    del src["pooler.dense.bias"]
    _assert_error(tmp_path, make_hf_dir(tmp_path / "a", src), "pooler.dense.bias", "missing")
    src = _hf_tensors()
    src["classifier.weight"] = np.zeros((3, H), np.float32)  # its bias is missing
    _assert_error(tmp_path, make_hf_dir(tmp_path / "b", src), "classifier.bias")
    src = _hf_tensors()
    src["some_other_head.weight"] = np.zeros((3, H), np.float32)
    _assert_error(tmp_path, make_hf_dir(tmp_path / "d", src), "some_other_head.weight")
    src = _hf_tensors(heads=True)
    del src["cls.seq_relationship.bias"]
    _assert_error(tmp_path, make_hf_dir(tmp_path / "c", src), "cls/seq_relationship",
                  "cls.seq_relationship.bias")


def test_missing_or_wrong_vocab(tmp_path):
    hf = make_hf_dir(tmp_path / "hf")
    (hf / "vocab.txt").unlink()
    _assert_error(tmp_path, hf, str(hf / "vocab.txt"), "not found")
    hf = make_hf_dir(tmp_path / "hf2", vocab_size=98)
    _assert_error(tmp_path, hf, str(hf / "vocab.txt"), "98 tokens", f"vocab_size {V}")


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bert_finetune.cli.convert", *args],
                          capture_output=True, text=True, cwd=REPO)


def test_cli_bad_dir_is_one_line_error(tmp_path):
    result = _run_cli(f"--hf_model_dir={tmp_path / 'nowhere'}", f"--output_dir={tmp_path / 'o'}")
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"bert-convert: error: --hf_model_dir={tmp_path / 'nowhere'}: directory not found"]
    assert not (tmp_path / "o").exists()


def test_cli_reports_every_flag_problem(tmp_path):
    result = _run_cli(f"--hf_model_dir={tmp_path / 'nowhere'}")
    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert "--hf_model_dir" in line and "--output_dir is required" in line
    assert "Traceback" not in result.stderr


def test_cli_unknown_flag_is_one_line_error():
    result = _run_cli("--hf_model_dri=x")
    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith("bert-convert: error:") and "hf_model_dri" in line


# ---------------------------------------------------------------- real weights (all-MiniLM-L6-v2)

# `minilm_weights` comes from conftest.py.


def test_minilm_matches_reference_checkpoint(tmp_path, minilm_weights):
    out = tmp_path / "minilm"
    convert_hf_to_google(str(minilm_weights / "all-MiniLM-L6-v2"), str(out))
    reference = minilm_weights / "all-MiniLM-L6-v2-google-ckpt"

    ours = tf.train.load_checkpoint(str(out / "bert_model.ckpt"))
    theirs = tf.train.load_checkpoint(str(reference / "bert_model.ckpt"))
    names = ours.get_variable_to_shape_map()
    assert names == theirs.get_variable_to_shape_map()
    assert len(names) == 5 + 16 * 6 + 2
    for name in names:
        a, b = ours.get_tensor(name), theirs.get_tensor(name)
        assert a.dtype == b.dtype == np.float32
        assert a.shape == b.shape and a.tobytes() == b.tobytes(), name
    assert (json.loads((out / "bert_config.json").read_text())
            == json.loads((reference / "bert_config.json").read_text()))
    for name in ("vocab.txt", "do_lower_case.txt"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()


def test_fine_tuned_classifier_and_qa_heads(tmp_path):
    """BertForSequenceClassification / BertForQuestionAnswering keep their heads, by the names
    run_classifier.py (output_weights [C, H]) and run_squad.py (cls/squad/*) use."""
    rng = np.random.default_rng(5)
    src = _hf_tensors()
    src["classifier.weight"] = rng.standard_normal((3, H)).astype(np.float32)
    src["classifier.bias"] = rng.standard_normal(3).astype(np.float32)
    src["qa_outputs.weight"] = rng.standard_normal((2, H)).astype(np.float32)
    src["qa_outputs.bias"] = rng.standard_normal(2).astype(np.float32)
    out = tmp_path / "out"
    convert_hf_to_google(str(make_hf_dir(tmp_path / "hf", src, prefix="bert.")), str(out))
    shapes, reader = _read_ckpt(out)
    assert tuple(shapes["output_weights"]) == (3, H) and tuple(shapes["output_bias"]) == (3,)
    assert tuple(shapes["cls/squad/output_weights"]) == (2, H)
    np.testing.assert_array_equal(reader.get_tensor("output_weights"), src["classifier.weight"])
    np.testing.assert_array_equal(reader.get_tensor("cls/squad/output_bias"), src["qa_outputs.bias"])
    src["classifier.bias"] = np.zeros(4, np.float32)  # 4 labels' bias, 3 labels' weights
    _assert_error(tmp_path, make_hf_dir(tmp_path / "bad", src), "classifier.bias", "[3]")
