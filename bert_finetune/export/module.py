"""A self-contained BERT module: TF Hub's "reusable SavedModel" made from a BERT checkpoint.

The TF2 counterpart of the original's `hub.Module` (`create_module_spec` + the `{"train"}` and
default tag sets) and of what `run_classifier_with_tfhub.py` loads:

  export_dir/
    saved_model.pb, variables/     the encoder (plain TF ops: loads anywhere, no tensorflow_text)
    assets/vocab.txt, assets/bert_config.json
    preprocessor/                  raw text -> input_ids/input_mask/segment_ids, as its own
                                   SavedModel (tensorflow_text ops: `import tensorflow_text` first)

The encoder object has
  - `__call__(inputs, training)`: inputs {input_ids, input_mask, segment_ids} int32 [B, T] ->
    {pooled_output [B, H], sequence_output [B, T, H] (, all_encoder_layers [L, B, T, H])};
    traced for training=True (dropout on, the TF1 `{"train"}` graph) and False (off, the
    default graph). This is what `hub.KerasLayer(export_dir, trainable=True)` calls, so
    fine-tuning through it updates the module's variables.
  - `variables`, `trainable_variables`, `regularization_losses` (the reusable-SavedModel API).
  - signatures `tokens` (the inference call, as the TF1 module's) and `tokenization_info`
    ({vocab_file: path inside the module, do_lower_case}).

Loading with `hub.load(export_dir)` needs no file outside export_dir.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging

from bert_finetune import checkpoints, modeling, tokenization
from bert_finetune.errors import UserError
from bert_finetune.export import text_preprocessing as tp

PREPROCESSOR_DIR = "preprocessor"
INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")


def _input_specs() -> dict[str, tf.TensorSpec]:
    return {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES}


class BertModule(tf.Module):
    """The exported object (see the module docstring); `bert` is a `modeling.BertModel`."""

    # Plain attributes in the saved object (the reusable-SavedModel API), not tf.Module's
    # computed properties.
    variables = None
    trainable_variables = None
    regularization_losses = None

    def __init__(self, config: modeling.BertConfig, vocab_file: str, config_file: str,
                 do_lower_case: bool, all_layers: bool = False):
        super().__init__(name="bert_module")
        self.bert = modeling.BertModel(config)
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self.bert_config_file = tf.saved_model.Asset(config_file)
        self._do_lower_case = bool(do_lower_case)
        self._all_layers = bool(all_layers)
        ordered = list(self.bert.variables_by_name().values())
        self.variables = ordered
        self.trainable_variables = list(ordered)
        self.regularization_losses = []

    @tf.function(autograph=False)
    def __call__(self, inputs: dict, training: bool = False) -> dict[str, tf.Tensor]:
        return self._forward(inputs, training)

    def _forward(self, inputs: dict, training: bool) -> dict[str, tf.Tensor]:
        out = self.bert(inputs["input_ids"], inputs["input_mask"], inputs["segment_ids"],
                        training=training)
        result = {"pooled_output": out["pooled_output"],
                  "sequence_output": out["sequence_output"]}
        if self._all_layers:
            result["all_encoder_layers"] = tf.stack(out["all_encoder_layers"])  # [L, B, T, H]
        return result

    @tf.function(autograph=False, input_signature=[_input_specs()])
    def tokens(self, inputs: dict) -> dict[str, tf.Tensor]:
        # The ops themselves, not a call of __call__: one graph, the same numbers as __call__.
        return self._forward(inputs, training=False)

    @tf.function(autograph=False, input_signature=[])
    def tokenization_info(self) -> dict[str, tf.Tensor]:
        return {"vocab_file": self.vocab_file.asset_path,
                "do_lower_case": tf.constant(self._do_lower_case)}


class _Preprocessor(tf.Module):
    """The preprocessing SavedModel: `BertPreprocessor` behind string signatures."""

    def __init__(self, vocab_file: str, do_lower_case: bool, seq_len: int):
        super().__init__(name="bert_preprocessor")
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self.pre = tp.BertPreprocessor(vocab_file, do_lower_case, seq_len)
        self._do_lower_case = bool(do_lower_case)
        self.seq_len = tf.constant(seq_len)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def __call__(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        """Texts [B] ("a ||| b" for a pair) -> features [B, T] int32."""
        return self.pre(*tp.split_pairs(text))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="text_a"),
                                  tf.TensorSpec([None], tf.string, name="text_b")])
    def pair(self, text_a: tf.Tensor, text_b: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.pre(text_a, text_b)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
        return self.pre.tokenize(text)

    @tf.function(autograph=False, input_signature=[])
    def tokenization_info(self) -> dict[str, tf.Tensor]:
        return {"vocab_file": self.vocab_file.asset_path,
                "do_lower_case": tf.constant(self._do_lower_case)}


def resolve_do_lower_case(do_lower_case: bool | None, init_checkpoint: str,
                          vocab_file: str) -> bool:
    """The flag if given, else the `do_lower_case.txt` sidecar of the checkpoint or vocab, else
    True (the original's default); a flag contradicting the checkpoint is a UserError."""
    if do_lower_case is None:
        for source in (init_checkpoint, vocab_file):
            value = tokenization.read_do_lower_case_sidecar(source)
            if value is not None:
                return value
        return True
    tokenization.validate_case_matches_checkpoint(do_lower_case, init_checkpoint)
    return bool(do_lower_case)


def build_module(bert_config_file: str, vocab_file: str, init_checkpoint: str,
                 do_lower_case: bool, all_layers: bool = False) -> BertModule:
    """A `BertModule` with the checkpoint's encoder weights (every `bert/` variable required)."""
    config = modeling.BertConfig.from_json_file(bert_config_file)
    vocab = tokenization.load_vocab(vocab_file)
    if len(vocab) > config.vocab_size:
        raise UserError(f"{vocab_file} has {len(vocab)} tokens but {bert_config_file} says "
                        f"vocab_size={config.vocab_size}: vocab and config do not belong together")
    module = BertModule(config, vocab_file, bert_config_file, do_lower_case, all_layers)
    checkpoints.init_from_checkpoint(module.bert.variables_by_name(), init_checkpoint)
    return module


def _save_module(module: BertModule, path: str) -> None:
    specs = _input_specs()
    # Both behaviours, so that a loader can call either (hub.KerasLayer picks by `training`).
    module.__call__.get_concrete_function(specs, training=True)
    module.__call__.get_concrete_function(specs, training=False)
    signatures = {"tokens": module.tokens.get_concrete_function(),
                  "tokenization_info": module.tokenization_info.get_concrete_function()}
    tf.saved_model.save(module, path, signatures=signatures)


def _save_preprocessor(vocab_file: str, do_lower_case: bool, seq_len: int, path: str) -> None:
    pre = _Preprocessor(vocab_file, do_lower_case, seq_len)
    signatures = {"serving_default": pre.__call__.get_concrete_function(),
                  "pair": pre.pair.get_concrete_function(),
                  "tokenization_info": pre.tokenization_info.get_concrete_function()}
    tf.saved_model.save(pre, path, signatures=signatures)


def export_module(bert_config_file: str, vocab_file: str, init_checkpoint: str, export_dir: str,
                  do_lower_case: bool | None = None, all_layers: bool = False,
                  max_seq_length: int = 128, with_preprocessor: bool = True) -> dict:
    """Writes the self-contained module (see the module docstring) to `export_dir`.

    Everything is written to a temporary sibling directory first and renamed at the end, so an
    interrupted export never leaves a module that looks complete; an existing export_dir is
    replaced. Returns a summary (paths, casing, number of variables).
    """
    do_lower_case = resolve_do_lower_case(do_lower_case, init_checkpoint, vocab_file)
    module = build_module(bert_config_file, vocab_file, init_checkpoint, do_lower_case,
                          all_layers)
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise UserError(f"--export_dir={export_dir} is a file, not a directory")
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        # The config goes in as the module's own canonical copy.
        _save_module(module, tmp)
        if with_preprocessor:
            _save_preprocessor(vocab_file, do_lower_case, max_seq_length,
                               os.path.join(tmp, PREPROCESSOR_DIR))
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("Exported the module to %s", export_dir)
    return {"export_dir": export_dir, "do_lower_case": do_lower_case,
            "num_variables": len(module.variables), "preprocessor": with_preprocessor}


# -- loading ----------------------------------------------------------------------------------
def is_remote_handle(handle: str) -> bool:
    return "://" in handle


def _check_local(handle: str) -> None:
    if not is_remote_handle(handle):
        if not os.path.isdir(handle):
            raise UserError(f"{handle}: module directory not found")
        if not os.path.exists(os.path.join(handle, "saved_model.pb")):
            raise UserError(f"{handle} is not a module: no saved_model.pb in it (export one "
                            "with `bert-export`)")


def _no_tokenization_info(handle: str) -> UserError:
    return UserError(f"{handle}: the module has no `tokenization_info` signature (vocab file "
                     "and casing); export it with `bert-export`")


def read_module_config(handle: str) -> modeling.BertConfig:
    """The config bundled in the module at `handle`, checked without loading its variables.

    Cheap enough for validating flags: a SavedModel with a `tokenization_info` signature and an
    `assets/bert_config.json` (what `bert-export` writes); the same one-line errors as
    `load_module`. A URL handle is downloaded (to hub's cache) here.
    """
    import tensorflow_hub as hub
    from tensorflow.core.protobuf import saved_model_pb2

    _check_local(handle)
    try:
        path = hub.resolve(handle) if is_remote_handle(handle) else handle
        proto = saved_model_pb2.SavedModel()
        with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
    except Exception as e:  # hub, gfile and protobuf each raise their own kinds
        raise UserError(f"{handle}: cannot load the module: {_first_line(e)}") from None
    if not any("tokenization_info" in graph.signature_def for graph in proto.meta_graphs):
        raise _no_tokenization_info(handle)
    config_path = os.path.join(path, "assets", "bert_config.json")
    if not tf.io.gfile.exists(config_path):
        raise UserError(f"{handle}: the module has no bert_config.json asset (export it "
                        "with `bert-export`)")
    return modeling.BertConfig.from_json_file(config_path)


def load_module(handle: str):
    """`hub.load(handle)` with one-line errors: not a module, or no `tokenization_info`."""
    import tensorflow_hub as hub

    _check_local(handle)
    try:
        obj = hub.load(handle)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise UserError(f"{handle}: cannot load the module: {_first_line(e)}") from None
    if "tokenization_info" not in getattr(obj, "signatures", {}):
        raise _no_tokenization_info(handle)
    return obj


def tokenization_info(obj) -> tuple[str, bool]:
    """(vocab file path inside the module, do_lower_case) of a loaded module."""
    info = obj.signatures["tokenization_info"]()
    return info["vocab_file"].numpy().decode("utf-8"), bool(info["do_lower_case"].numpy())


def load_preprocessor(export_dir: str):
    """The module's preprocessing SavedModel; it needs tensorflow_text's ops registered."""
    path = os.path.join(export_dir, PREPROCESSOR_DIR)
    if not os.path.isdir(path):
        raise UserError(f"{export_dir}: the module has no {PREPROCESSOR_DIR}/ (exported with "
                        "--nowith_preprocessor?)")
    tp.import_tensorflow_text()
    return tf.saved_model.load(path)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    if "Op type not registered" in text:
        return (text.splitlines()[0] + " (a SavedModel with tensorflow_text ops loads only after "
                "`import tensorflow_text`)")
    return text.splitlines()[0] if text else type(e).__name__


class HubEncoder(tf.Module):
    """A loaded module behind `modeling.BertModel`'s interface (call + `variables_by_name`).

    Calls the module's own `__call__` (training=True: dropout on), so fine-tuning updates the
    module's variables; they keep their original names (`bert/encoder/layer_0/...`), so the
    run's checkpoints read like those of a checkpoint run.
    """

    def __init__(self, handle: str):
        super().__init__(name="hub_encoder")
        self.handle = handle
        self.module = load_module(handle)
        self.vocab_file, self.do_lower_case = tokenization_info(self.module)
        config_path = os.path.join(os.path.dirname(self.vocab_file), "bert_config.json")
        if not os.path.exists(config_path):
            raise UserError(f"{handle}: the module has no bert_config.json asset (export it "
                            "with `bert-export`)")
        self.config_file = config_path
        self.config = modeling.BertConfig.from_json_file(config_path)
        self._vars = {v.name.split(":")[0]: v for v in self.module.variables}
        expected = {name for name, _, _ in modeling.variable_specs(self.config)}
        if set(self._vars) != expected:
            missing = sorted(expected - set(self._vars)) or sorted(set(self._vars) - expected)
            raise UserError(f"{handle}: the module's variables do not match its "
                            f"bert_config.json (e.g. {missing[0]})")

    def variables_by_name(self) -> dict[str, tf.Variable]:
        return dict(self._vars)

    def __call__(self, input_ids, input_mask=None, token_type_ids=None,
                 training: bool = False) -> dict[str, tf.Tensor]:
        inputs = {"input_ids": tf.cast(input_ids, tf.int32),
                  "input_mask": tf.cast(input_mask, tf.int32),
                  "segment_ids": tf.cast(token_type_ids, tf.int32)}
        return self.module(inputs, training=bool(training))
