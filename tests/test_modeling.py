"""BertModel: shapes on a tiny odd-sized config, names, dtypes, dropout, and parity with the
reference activations of an independent implementation on real weights."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, SHARED, TINY_CONFIG

from bert_finetune import checkpoints, modeling, tokenization
from bert_finetune.errors import UserError

REFERENCE = SHARED / "data" / "reference" / "minilm_reference.npz"
PARITY_ATOL = 1e-4  # the fp32 tolerance; fp32 noise is ~2e-6, exact-vs-tanh gelu ~4.5e-3


def _tiny(**overrides) -> modeling.BertConfig:
    return modeling.BertConfig(**{**TINY_CONFIG, **overrides})


def _inputs(batch=3, seq=11, vocab=99, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, seq)).astype(np.int32)
    mask = np.ones((batch, seq), np.int32)
    mask[1, 7:] = 0
    segments = np.zeros((batch, seq), np.int32)
    segments[:, 5:] = 1
    return ids, mask, segments


def test_output_shapes_on_tiny_odd_config():
    config = _tiny()
    model = modeling.BertModel(config)
    out = model(*_inputs())
    assert out["sequence_output"].shape == (3, 11, 32)
    assert out["pooled_output"].shape == (3, 32)
    assert len(out["all_encoder_layers"]) == 5
    assert all(x.shape == (3, 11, 32) for x in out["all_encoder_layers"])
    assert out["embedding_output"].shape == (3, 11, 32)
    assert out["embedding_table"].shape == (99, 32)
    np.testing.assert_array_equal(out["sequence_output"], out["all_encoder_layers"][-1])


def test_variable_names_are_the_checkpoint_names():
    model = modeling.BertModel(_tiny())
    names = model.variables_by_name()
    assert len(names) == 5 + 16 * 5 + 2
    assert names["bert/embeddings/word_embeddings"].shape == (99, 32)
    assert names["bert/embeddings/LayerNorm/gamma"].shape == (32,)
    assert names["bert/encoder/layer_3/attention/self/query/kernel"].shape == (32, 32)
    assert names["bert/encoder/layer_4/intermediate/dense/kernel"].shape == (32, 37)
    assert names["bert/encoder/layer_4/output/dense/kernel"].shape == (37, 32)
    assert names["bert/pooler/dense/kernel"].shape == (32, 32)
    assert all(v.dtype == tf.float32 for v in names.values())


def test_one_hot_embeddings_equal_gather():
    config = _tiny()
    tf.random.set_seed(1)
    gather = modeling.BertModel(config)
    one_hot = modeling.BertModel(config, use_one_hot_embeddings=True)
    for name, var in one_hot.variables_by_name().items():
        var.assign(gather.variables_by_name()[name])
    inputs = _inputs()
    np.testing.assert_allclose(one_hot(*inputs)["sequence_output"],
                               gather(*inputs)["sequence_output"], atol=1e-5)


def test_padding_does_not_change_real_tokens():
    model = modeling.BertModel(_tiny())
    ids, mask, seg = _inputs()
    out = model(ids, mask, seg)["sequence_output"].numpy()
    ids2 = ids.copy()
    ids2[1, 7:] = 3  # different padding ids
    out2 = model(ids2, mask, seg)["sequence_output"].numpy()
    np.testing.assert_allclose(out[1, :7], out2[1, :7], atol=1e-6)


def test_dropout_only_in_training():
    model = modeling.BertModel(_tiny(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3))
    inputs = _inputs()
    a = model(*inputs)["sequence_output"].numpy()
    b = model(*inputs)["sequence_output"].numpy()
    np.testing.assert_array_equal(a, b)
    c = model(*inputs, training=True)["sequence_output"].numpy()
    assert np.abs(a - c).max() > 1e-3


def test_pooled_only_equals_the_full_pooled_output_and_its_gradients():
    config = _tiny()
    model = modeling.BertModel(config)
    ids, mask, segments = _inputs()
    variables = list(model.variables_by_name().values())
    with tf.GradientTape(persistent=True) as tape:
        full = model(ids, mask, segments)["pooled_output"]
        short = model(ids, mask, segments, pooled_only=True)
        loss_full = tf.reduce_sum(tf.square(full) * np.arange(config.hidden_size))
        loss_short = tf.reduce_sum(tf.square(short["pooled_output"]) * np.arange(config.hidden_size))
    assert sorted(short) == ["pooled_output"]
    np.testing.assert_allclose(short["pooled_output"].numpy(), full.numpy(), atol=1e-6, rtol=0)
    grads_full = tape.gradient(loss_full, variables)
    grads_short = tape.gradient(loss_short, variables)
    for var, a, b in zip(variables, grads_full, grads_short, strict=True):
        assert (a is None) == (b is None), var.name
        if a is not None:
            np.testing.assert_allclose(tf.convert_to_tensor(b).numpy(),
                                       tf.convert_to_tensor(a).numpy(), atol=1e-5, rtol=1e-4,
                                       err_msg=var.name)


@pytest.mark.parametrize("fn", [modeling.BertModel.__call__, modeling.BertModel._layer,
                                modeling.BertModel._attention, modeling.BertModel._embeddings])
def test_autograph_converts_the_encoder(fn):
    """Called inside tf.function, a function AutoGraph cannot convert logs a warning on every
    run ("could not transform ... for/else statement not yet supported")."""
    tf.autograph.to_code(fn)


def test_pooled_only_computes_one_row_per_sequence_in_the_last_layer():
    """The saving is real: the last layer's FFN runs on [B, I], the others on [B*T, I]."""
    config = _tiny()
    model = modeling.BertModel(config)
    ids, mask, segments = _inputs(batch=3, seq=11)
    fn = tf.function(lambda *a: model(*a, pooled_only=True)["pooled_output"])
    graph = fn.get_concrete_function(ids, mask, segments).graph
    ffn_rows = sorted(op.outputs[0].shape[0] for op in graph.get_operations()
                      if op.type == "MatMul" and op.outputs[0].shape[-1] == config.intermediate_size)
    assert ffn_rows == [3] + [33] * (config.num_hidden_layers - 1)


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-6), ("bfloat16", 2e-2)])
def test_gelu_gradient_equals_autodiff(dtype, atol):
    # gelu's written-out derivative (it keeps 2 tensors for the backward pass, not 5) against
    # autodiff of the same formula; the forward is the same ops, so bitwise equal.
    x = tf.constant(np.linspace(-8, 8, 2001), dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        fast, ref = modeling.gelu(x), modeling.gelu_reference(x)
    np.testing.assert_array_equal(tf.cast(fast, tf.float32), tf.cast(ref, tf.float32))
    np.testing.assert_allclose(tf.cast(tape.gradient(fast, x), tf.float32),
                               tf.cast(tape.gradient(ref, x), tf.float32), atol=atol)


def test_model_gradients_equal_with_autodiff_gelu(monkeypatch):
    # Every variable's gradient through the whole encoder, written-out gelu vs autodiff (fp32).
    tf.random.set_seed(4)
    model = modeling.BertModel(_tiny())
    variables = list(model.variables_by_name().values())
    inputs = _inputs()

    def grads():
        with tf.GradientTape() as tape:
            out = model(*inputs)
            loss = tf.reduce_sum(out["sequence_output"] ** 2) + tf.reduce_sum(out["pooled_output"])
        return [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables)]

    fast = grads()
    monkeypatch.setattr(modeling, "gelu", modeling.gelu_reference)
    for name, a, b in zip(model.variables_by_name(), fast, grads(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(np.abs(b).max(), 1e-3),
                                   err_msg=name)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_forward_matches_float32(dtype):
    # Tolerances: bf16 keeps 8 bits of mantissa (~4e-3 relative), fp16 11 bits. Outputs are
    # LayerNorm-ed (|x| up to ~4), so 0.15 (bf16) / 0.02 (fp16) max abs after 5 layers.
    tf.random.set_seed(3)
    config = _tiny()
    fp32 = modeling.BertModel(config)
    low = modeling.BertModel(config, compute_dtype=dtype)
    for name, var in low.variables_by_name().items():
        var.assign(fp32.variables_by_name()[name])
    assert all(v.dtype == tf.float32 for v in low.variables_by_name().values())
    inputs = _inputs()
    ref = fp32(*inputs)
    out = low(*inputs)
    assert out["sequence_output"].dtype == tf.as_dtype(dtype)
    tol = 0.15 if dtype == "bfloat16" else 0.02
    diff = np.abs(tf.cast(out["sequence_output"], tf.float32).numpy() - ref["sequence_output"])
    assert diff.max() < tol
    pooled = np.abs(tf.cast(out["pooled_output"], tf.float32).numpy() - ref["pooled_output"])
    assert pooled.max() < tol


@pytest.mark.parametrize("act,fn", [
    ("gelu", lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    ("gelu_exact", lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    ("relu", lambda x: np.maximum(x, 0)),
    ("tanh", np.tanh),
    ("linear", lambda x: x),
])
def test_activations_by_name(act, fn):
    x = np.linspace(-4, 4, 41).astype(np.float32)
    f = modeling.get_activation(act)
    y = x if f is None else f(tf.constant(x)).numpy()
    np.testing.assert_allclose(y, fn(x), atol=1e-6)


def test_gelu_is_the_tanh_approximation_not_exact():
    x = tf.constant([1.5])
    assert abs(float(modeling.gelu(x)[0]) - float(modeling.gelu_exact(x)[0])) > 1e-4


def test_config_json_round_trip(tmp_path):
    config = _tiny(hidden_act="gelu_exact")
    path = tmp_path / "bert_config.json"
    config.to_json_file(str(path))
    assert json.loads(path.read_text()) == config.to_dict()
    assert modeling.BertConfig.from_json_file(str(path)) == config


@pytest.mark.parametrize("change,needle", [
    ({"num_attention_heads": 5}, "not a multiple of the number of attention heads"),
    ({"hidden_act": "swish"}, "hidden_act"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
    ({"bogus_key": 1}, "unknown key"),
    ({"model_type": "bert"}, "Hugging Face config.json"),
])
def test_bad_config_names_the_file(tmp_path, change, needle):
    path = tmp_path / "my_config.json"
    path.write_text(json.dumps({**TINY_CONFIG, **change}))
    with pytest.raises(UserError) as e:
        modeling.BertConfig.from_json_file(str(path))
    assert str(path) in str(e.value) and needle in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_and_malformed_config(tmp_path):
    with pytest.raises(UserError, match="not found"):
        modeling.BertConfig.from_json_file(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"vocab_size": 99,\n oops}')
    with pytest.raises(UserError, match=r"bad.json: invalid JSON at line 2"):
        modeling.BertConfig.from_json_file(str(bad))


def test_sequence_longer_than_positions_is_an_error():
    model = modeling.BertModel(_tiny(max_position_embeddings=8))
    with pytest.raises(UserError, match="max_position_embeddings"):
        model(np.zeros((1, 9), np.int32))


# -- parity with the reference implementation on real weights ---------------------------------
def _assert_parity(model: modeling.BertModel, ref) -> None:
    out = model(ref["input_ids"], ref["input_mask"], ref["segment_ids"])
    m = ref["input_mask"].astype(bool)
    np.testing.assert_allclose(out["embedding_output"].numpy()[m], ref["embedding_output"][m],
                               atol=PARITY_ATOL, rtol=0)
    layers = np.stack([x.numpy() for x in out["all_encoder_layers"]])
    np.testing.assert_allclose(layers[:, m], ref["all_encoder_layers"][:, m],
                               atol=PARITY_ATOL, rtol=0)
    np.testing.assert_allclose(out["sequence_output"].numpy()[m], ref["sequence_output"][m],
                               atol=PARITY_ATOL, rtol=0)
    np.testing.assert_allclose(out["pooled_output"].numpy(), ref["pooled_output"],
                               atol=PARITY_ATOL, rtol=0)
    pooled = model(ref["input_ids"], ref["input_mask"], ref["segment_ids"], pooled_only=True)
    np.testing.assert_allclose(pooled["pooled_output"].numpy(), ref["pooled_output"],
                               atol=PARITY_ATOL, rtol=0)


def _reference_ids(vocab_file, ref) -> None:
    """Our tokenizer + original packing gives exactly the reference's ids."""
    tok = tokenization.FullTokenizer(str(vocab_file), do_lower_case=True)
    from bert_finetune.data.examples import InputExample
    from bert_finetune.data.features import convert_single_example
    for i in range(len(ref["names"])):
        text_b = str(ref["text_b"][i]) or None
        ex = InputExample(f"ref-{i}", str(ref["text_a"][i]), text_b, "0")
        feat = convert_single_example(10, ex, ["0"], 128, tok)
        np.testing.assert_array_equal(feat.input_ids, ref["input_ids"][i])
        np.testing.assert_array_equal(feat.input_mask, ref["input_mask"][i])
        np.testing.assert_array_equal(feat.segment_ids, ref["segment_ids"][i])


def test_parity_with_reference_on_google_checkpoint(minilm_google):
    ref = np.load(REFERENCE)
    _reference_ids(minilm_google / "vocab.txt", ref)
    config = modeling.BertConfig.from_json_file(str(minilm_google / "bert_config.json"))
    assert config.hidden_act == "gelu_exact"
    model = modeling.BertModel(config)
    restored = checkpoints.init_from_checkpoint(model.variables_by_name(),
                                                str(minilm_google / "bert_model.ckpt"))
    assert len(restored) == 103
    _assert_parity(model, ref)


def test_tanh_gelu_breaks_parity(minilm_google):
    """The tolerance tells exact from tanh GELU, so parity above is not luck."""
    ref = np.load(REFERENCE)
    config = modeling.BertConfig.from_json_file(str(minilm_google / "bert_config.json"))
    config.hidden_act = "gelu"
    model = modeling.BertModel(config)
    checkpoints.init_from_checkpoint(model.variables_by_name(), str(minilm_google))
    with pytest.raises(AssertionError):
        _assert_parity(model, ref)


def test_parity_after_bert_convert_from_hf(minilm_hf, tmp_path):
    out_dir = tmp_path / "converted"
    proc = subprocess.run([sys.executable, "-m", "bert_finetune.cli.convert",
                           f"--hf_model_dir={minilm_hf}", f"--output_dir={out_dir}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = np.load(REFERENCE)
    _reference_ids(out_dir / "vocab.txt", ref)
    config = modeling.BertConfig.from_json_file(str(out_dir / "bert_config.json"))
    assert config.hidden_act == "gelu_exact"  # HF "gelu" is exact erf GELU
    assert (out_dir / "do_lower_case.txt").read_text().strip() == "true"
    model = modeling.BertModel(config)
    checkpoints.init_from_checkpoint(model.variables_by_name(), str(out_dir))  # a directory
    _assert_parity(model, ref)
