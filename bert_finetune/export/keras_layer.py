"""`BertLayer`: BERT as a tf_keras layer on raw strings, the last N encoder layers fine-tuned.

The layer of "Fine-tuning BERT with Keras and tf.Module", on TF 2.x:

    import tf_keras
    from bert_finetune.export.keras_layer import BertLayer

    text = tf_keras.Input(shape=(), dtype=tf.string)          # "question ||| passage" for pairs
    pooled = BertLayer("bert_module/", seq_len=128, n_fine_tune_layers=3, pooling="cls")(text)
    out = tf_keras.layers.Dense(1, activation="sigmoid")(pooled)

It is a **tf_keras** (Keras 2) layer: `hub.KerasLayer` and TF Hub's reusable SavedModels live in
tf_keras on TF >= 2.16. Build the model with `tf_keras` (as above); `tf.keras` is Keras 3 there,
whose models cannot hold this layer. This library never sets `TF_USE_LEGACY_KERAS`.

`bert_path` is an exported module (`bert-export`) or a checkpoint directory (bert_config.json,
vocab.txt, a checkpoint; e.g. Google's download or a fine-tuned run's output_dir). Tokenization
runs in the graph (export/text_preprocessing.py: FullTokenizer's exact ids), so a saved model
takes raw strings; loading such a SavedModel needs `import tensorflow_text` first.

Shape legend: B = batch size, T = seq_len, H = hidden size.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras

from bert_finetune import checkpoints, modeling, tokenization
from bert_finetune.errors import UserError
from bert_finetune.export import module as module_lib
from bert_finetune.export import text_preprocessing as tp

POOLINGS = (None, "cls", "mean")


def _is_module(bert_path: str) -> bool:
    return module_lib.is_remote_handle(bert_path) or os.path.exists(
        os.path.join(bert_path, "saved_model.pb"))


def _read_config(bert_path: str) -> modeling.BertConfig:
    """The config of a module (its bundled asset) or of a checkpoint directory."""
    if module_lib.is_remote_handle(bert_path):
        import tensorflow_hub as hub

        bert_path = hub.resolve(bert_path)
    if os.path.exists(os.path.join(bert_path, "saved_model.pb")):
        path = os.path.join(bert_path, "assets", "bert_config.json")
        if not os.path.exists(path):
            raise UserError(f"{bert_path}: not a bert-export module (no assets/bert_config.json)")
        return modeling.BertConfig.from_json_file(path)
    if not os.path.isdir(bert_path):
        raise UserError(f"bert_path={bert_path}: not found (an exported module or a checkpoint "
                        "directory)")
    path = os.path.join(bert_path, "bert_config.json")
    if not os.path.exists(path):
        raise UserError(f"bert_path={bert_path} is neither a module (no saved_model.pb) nor a "
                        "checkpoint directory (no bert_config.json)")
    return modeling.BertConfig.from_json_file(path)


def fine_tuned_variable_names(config: modeling.BertConfig, n_fine_tune_layers: int,
                              pooling: str | None, fine_tune_embeddings: bool) -> set[str]:
    """Checkpoint names of the variables training may change: the last N encoder layers, the
    pooler when pooling is "cls" (it computes the output), the embeddings on request."""
    first = config.num_hidden_layers - n_fine_tune_layers
    names = set()
    for name, _, _ in modeling.variable_specs(config):
        part = name.split("/")
        if part[1] == "encoder" and int(part[2].split("_")[1]) >= first:
            names.add(name)
        elif part[1] == "pooler" and pooling == "cls":
            names.add(name)
        elif part[1] == "embeddings" and fine_tune_embeddings:
            names.add(name)
    return names


class _Holder(tf.__internal__.tracking.AutoTrackable):
    """Holds the BertModel of a checkpoint directory for saving, hidden from Keras' weights."""


def _by_checkpoint_name(variables, config: modeling.BertConfig) -> dict[str, tf.Variable]:
    """{checkpoint name: variable} of a loaded module (loading may prefix a name scope)."""
    names = [name for name, _, _ in modeling.variable_specs(config)]
    out = {}
    for var in variables:
        full = var.name.split(":")[0]
        match = [n for n in names if full == n or full.endswith("/" + n)]
        if len(match) == 1:
            out[match[0]] = var
    return out


@tf_keras.utils.register_keras_serializable(package="bert_finetune")
class BertLayer(tf_keras.layers.Layer):
    """BERT on raw strings (or on id tensors), as a tf_keras layer.

    Args:
      bert_path: an exported module directory (or hub URL) or a checkpoint directory.
      seq_len: T, the packed length (the original's max_seq_length).
      n_fine_tune_layers: how many of the last encoder layers are trainable (0 = none).
      pooling: None -> sequence output [B, T, H]; "cls" -> pooled output (the pooler on
        [CLS]) [B, H]; "mean" -> mean of the real tokens' vectors [B, H].
      do_preprocessing: True: input is a string tensor [B] (or [B, 1]), "a ||| b" a pair;
        False: input is [input_ids, input_mask, segment_ids] (or a dict of them), int [B, T].
      fine_tune_embeddings: also train the embedding tables and their LayerNorm.
      do_lower_case: casing of the tokenizer for a checkpoint directory (default: its
        do_lower_case.txt, else True); a module carries its own in `tokenization_info`.
    """

    def __init__(self, bert_path: str, seq_len: int = 128, n_fine_tune_layers: int = 3,
                 pooling: str | None = "cls", do_preprocessing: bool = True,
                 fine_tune_embeddings: bool = False, do_lower_case: bool | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise UserError(f"BertLayer: unknown pooling {pooling!r} (use None, 'cls' or 'mean')")
        config = _read_config(bert_path)
        if not 0 <= n_fine_tune_layers <= config.num_hidden_layers:
            raise UserError(f"BertLayer: n_fine_tune_layers={n_fine_tune_layers} but {bert_path} "
                            f"has {config.num_hidden_layers} encoder layers")
        if not 3 <= seq_len <= config.max_position_embeddings:
            raise UserError(f"BertLayer: seq_len={seq_len} must be in [3, "
                            f"{config.max_position_embeddings}] (max_position_embeddings)")
        self.bert_path = bert_path
        self.seq_len = int(seq_len)
        self.n_fine_tune_layers = int(n_fine_tune_layers)
        self.pooling = pooling
        self.do_preprocessing = bool(do_preprocessing)
        self.fine_tune_embeddings = bool(fine_tune_embeddings)
        self.do_lower_case = do_lower_case
        self.bert_config = config
        self._from_module = _is_module(bert_path)
        self._encoder = None

    # -- construction -------------------------------------------------------------------------
    def build(self, input_shape):
        if self._from_module:
            obj = module_lib.load_module(self.bert_path)
            vocab_file, lower = module_lib.tokenization_info(obj)
            variables = _by_checkpoint_name(obj.variables, self.bert_config)
            self._encoder = obj
        else:
            model = modeling.BertModel(self.bert_config)
            checkpoints.init_from_checkpoint(model.variables_by_name(), self.bert_path)
            vocab_file = os.path.join(self.bert_path, "vocab.txt")
            lower = self._checkpoint_casing()
            variables = model.variables_by_name()
            # Not a tf.Module: Keras saves it with the layer but does not collect its variables
            # as trainable (add_weight below decides that).
            self._encoder = _Holder()
            self._encoder.bert = model
        trainable = fine_tuned_variable_names(self.bert_config, self.n_fine_tune_layers,
                                              self.pooling, self.fine_tune_embeddings)
        missing = trainable - set(variables)
        if missing:
            raise UserError(f"{self.bert_path}: variable {sorted(missing)[0]} not found")
        for name, var in variables.items():
            self.add_weight(name=name, shape=var.shape, dtype=var.dtype,
                            trainable=name in trainable, experimental_autocast=False,
                            getter=lambda *_, v=var, **__: v)
        self._preprocessor = None
        if self.do_preprocessing:
            self._preprocessor = tp.BertPreprocessor(vocab_file, lower, self.seq_len)
        super().build(input_shape)

    def _checkpoint_casing(self) -> bool:
        if self.do_lower_case is not None:
            prefix = checkpoints.resolve_checkpoint(self.bert_path)
            tokenization.validate_case_matches_checkpoint(self.do_lower_case, prefix)
            return bool(self.do_lower_case)
        sidecar = tokenization.read_do_lower_case_sidecar(self.bert_path)
        return True if sidecar is None else sidecar

    # -- forward -----------------------------------------------------------------------------
    def _features(self, inputs) -> dict[str, tf.Tensor]:
        if self.do_preprocessing:
            text = tf.convert_to_tensor(inputs)
            if text.dtype != tf.string:
                raise UserError(f"BertLayer(do_preprocessing=True) takes a string tensor [B], "
                                f"got {text.dtype.name}; pass do_preprocessing=False for ids")
            if text.shape.rank == 2:
                text = tf.squeeze(text, axis=1)  # Input(shape=(1,), dtype=string), the article's
            return self._preprocessor(*tp.split_pairs(text))
        if isinstance(inputs, dict):
            ids = [inputs[name] for name in module_lib.INPUT_NAMES]
        else:
            ids = list(inputs)
        if len(ids) != 3:
            raise UserError("BertLayer(do_preprocessing=False) takes [input_ids, input_mask, "
                            f"segment_ids], got {len(ids)} tensors")
        ids = [tf.cast(t, tf.int32) for t in ids]
        return dict(zip(module_lib.INPUT_NAMES, ids, strict=True))

    @tf.autograph.experimental.do_not_convert  # plain Python control flow; tracing is faster
    def call(self, inputs, training=None):
        features = self._features(inputs)
        if self._from_module:
            def run(flag: bool):
                return self._encoder(features, training=flag)
        else:
            bert = self._encoder.bert
            pooled_only = self.pooling == "cls"  # skip the last layer's other rows

            def run(flag: bool):
                return bert(features["input_ids"], features["input_mask"],
                            features["segment_ids"], training=flag, pooled_only=pooled_only)
        if training is None or isinstance(training, bool):
            out = run(bool(training))
        else:
            out = tf.cond(tf.cast(training, tf.bool), lambda: run(True), lambda: run(False))
        if self.pooling == "cls":
            return out["pooled_output"]  # [B, H]
        sequence = out["sequence_output"]  # [B, T, H]
        if self.pooling is None:
            return sequence
        return modeling.masked_mean(sequence, features["input_mask"])  # [B, H]

    def compute_output_shape(self, input_shape):
        h = self.bert_config.hidden_size
        batch = input_shape[0] if not isinstance(input_shape, (list, dict)) else None
        if self.pooling is None:
            return tf.TensorShape([batch, self.seq_len, h])
        return tf.TensorShape([batch, h])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "bert_path": self.bert_path, "seq_len": self.seq_len,
            "n_fine_tune_layers": self.n_fine_tune_layers, "pooling": self.pooling,
            "do_preprocessing": self.do_preprocessing,
            "fine_tune_embeddings": self.fine_tune_embeddings,
            "do_lower_case": self.do_lower_case,
        })
        return config

