"""BertLayer: trainable layers, pooling, in-graph ids, the article's model.fit, save/restore."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from export_helpers import TINY, make_checkpoint

from bert_finetune import tokenization
from bert_finetune.data import features
from bert_finetune.data.examples import InputExample
from bert_finetune.errors import UserError
from bert_finetune.export import module as module_lib
from bert_finetune.export.keras_layer import BertLayer

REPO = Path(__file__).resolve().parents[1]
LAYERS = TINY["num_hidden_layers"]  # 4


@pytest.fixture(scope="module")
def ckpt_dir(minilm_google, tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("keras") / "ckpt",
                           minilm_google / "vocab.txt")


@pytest.fixture(scope="module")
def module_dir(ckpt_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keras") / "module"
    module_lib.export_module(str(ckpt_dir / "bert_config.json"), str(ckpt_dir / "vocab.txt"),
                             str(ckpt_dir), str(out), with_preprocessor=False)
    return out


def _layer_names(layer) -> set[str]:
    """Checkpoint names of the layer's trainable weights (Keras prefixes the layer's scope)."""
    return {w.name.split(":")[0].split("/", 1)[1] for w in layer.trainable_weights}


@pytest.mark.parametrize("source", ["checkpoint", "module"])
def test_exactly_the_last_layers_train(ckpt_dir, module_dir, source):
    path = str(ckpt_dir if source == "checkpoint" else module_dir)
    layer = BertLayer(path, seq_len=16, n_fine_tune_layers=2, pooling="cls")
    layer(tf.constant(["hello world"]))
    names = _layer_names(layer)
    assert {n.split("/")[2] for n in names if "/encoder/" in n} == {"layer_2", "layer_3"}
    assert len([n for n in names if "/encoder/" in n]) == 2 * 16
    assert names - {n for n in names if "/encoder/" in n} == {
        "bert/pooler/dense/kernel", "bert/pooler/dense/bias"}
    assert len(layer.non_trainable_weights) == 5 + 2 * 16  # embeddings + layer_0, layer_1

    mean = BertLayer(path, seq_len=16, n_fine_tune_layers=1, pooling="mean",
                     fine_tune_embeddings=True)
    mean(tf.constant(["hello world"]))
    names = _layer_names(mean)
    assert {n.split("/")[2] for n in names if "/encoder/" in n} == {"layer_3"}
    assert not any("pooler" in n for n in names)  # unused by mean pooling
    assert {n for n in names if "/embeddings/" in n} == {
        "bert/embeddings/word_embeddings", "bert/embeddings/token_type_embeddings",
        "bert/embeddings/position_embeddings", "bert/embeddings/LayerNorm/gamma",
        "bert/embeddings/LayerNorm/beta"}
    frozen = BertLayer(path, seq_len=16, n_fine_tune_layers=0, pooling=None)
    out = frozen(tf.constant(["hello world", "a ||| b"]))
    assert frozen.trainable_weights == [] and out.shape == (2, 16, 32)


def test_mean_pooling_ignores_padding_and_pairs_match_tokenizer(ckpt_dir):
    texts = tf.constant(["The cat sat on the mat.", "Is it? ||| It is!", "x"])
    short = BertLayer(str(ckpt_dir), seq_len=16, pooling="mean")
    long = BertLayer(str(ckpt_dir), seq_len=48, pooling="mean")
    # An exp(-10000) attention weight is exactly 0 in float32: padding changes nothing.
    np.testing.assert_allclose(short(texts), long(texts), rtol=0, atol=1e-6)

    tokenizer = tokenization.FullTokenizer(str(ckpt_dir / "vocab.txt"))
    got = short._features(texts)
    for i, (a, b) in enumerate([("The cat sat on the mat.", None), ("Is it?", "It is!"),
                                ("x", None)]):
        f = features.convert_single_example(i, InputExample(str(i), a, b, "0"), ["0"], 16,
                                            tokenizer)
        for key in ("input_ids", "input_mask", "segment_ids"):
            np.testing.assert_array_equal(got[key][i], getattr(f, key))
    # The same features given as ids (do_preprocessing=False) give the same output.
    ids = BertLayer(str(ckpt_dir), seq_len=16, pooling="mean", do_preprocessing=False)
    np.testing.assert_allclose(ids(got), short(texts), rtol=0, atol=1e-6)


def _load_example():
    spec = importlib.util.spec_from_file_location("keras_bert_layer",
                                                  REPO / "examples" / "keras_bert_layer.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


@pytest.mark.slow  # ~1-2 min on 2 cores: MiniLM fit, SavedModel save + load
def test_article_model_fit_save_restore(minilm_google, shared_dir, tmp_path):
    """The example on the QQP sample with the real MiniLM (a random tiny model's [CLS] barely
    varies between inputs): fit lowers the loss; weights, JSON and SavedModel round trips give
    the same predictions."""
    ckpt_dir = minilm_google
    example = _load_example()
    data = tmp_path / "qqp"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(shared_dir / "data" / "glue" / "QQP" / "train_sample.tsv", data / name)
    out = tmp_path / "out"
    tf_keras.utils.set_random_seed(1)
    results = example.main([f"--bert_path={ckpt_dir}", "--task=QQP", f"--data_dir={data}",
                            f"--output_dir={out}", "--seq_len=32", "--epochs=3",
                            "--batch_size=8", "--learning_rate=1e-4"])
    losses = results["loss"]
    assert losses[-1] < losses[0] - 0.05, losses  # seen: 0.70 -> 0.63 -> 0.57
    assert (out / "eval_results.txt").read_text().startswith("eval_accuracy = ")

    texts, _ = example.read_pairs("QQP", str(data), "dev")
    x = tf.constant(texts[:8].tolist())
    trained = tf_keras.models.load_model(out / "saved_model")  # the whole model, class known
    want = trained.predict(x, verbose=0)

    fresh = example.build_model(str(ckpt_dir), seq_len=32)
    assert np.abs(fresh.predict(x, verbose=0) - want).max() > 1e-4  # not trained yet
    fresh.load_weights(out / "weights.h5")
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), want)

    rebuilt = tf_keras.models.model_from_json((out / "model.json").read_text())
    rebuilt.load_weights(out / "weights.h5")
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), want)
    layer = rebuilt.get_layer("bert_layer")
    assert layer.get_config()["n_fine_tune_layers"] == 3
    assert BertLayer.from_config(layer.get_config()).get_config() == layer.get_config()

    # Without the class: the SavedModel's serving function on raw strings.
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    served = tf.saved_model.load(str(out / "saved_model"))
    fn = served.signatures["serving_default"]
    got = list(fn(text=x).values())[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_bad_inputs(ckpt_dir, module_dir, tmp_path):
    with pytest.raises(UserError, match="n_fine_tune_layers=5 but .* has 4 encoder layers"):
        BertLayer(str(ckpt_dir), n_fine_tune_layers=5)
    with pytest.raises(UserError, match="unknown pooling 'max'"):
        BertLayer(str(ckpt_dir), pooling="max")
    with pytest.raises(UserError, match="takes a string tensor \\[B\\], got int32"):
        BertLayer(str(ckpt_dir), seq_len=16)(tf.constant([[1, 2, 3]]))
    with pytest.raises(UserError, match="neither a module .* nor a checkpoint directory"):
        BertLayer(str(tmp_path))
    broken = tmp_path / "broken"
    shutil.copytree(module_dir, broken)
    (broken / "saved_model.pb").write_bytes(b"not a graph")
    with pytest.raises(UserError, match="cannot load the module"):
        BertLayer(str(broken), seq_len=16)(tf.constant(["x"]))
    plain = tf.Module()
    plain.v = tf.Variable(1.0)
    tf.saved_model.save(plain, str(tmp_path / "plain"))
    (tmp_path / "plain" / "assets").mkdir(exist_ok=True)
    shutil.copy(ckpt_dir / "bert_config.json", tmp_path / "plain" / "assets")
    with pytest.raises(UserError, match="no `tokenization_info` signature"):
        BertLayer(str(tmp_path / "plain"), seq_len=16)(tf.constant(["x"]))
