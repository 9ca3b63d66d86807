"""Freeze for inference: one GraphDef `.pb`, variables as constants, raw text in, named tensors.

The article's last step, without guessing op names: the frozen graph takes `text:0` (string [B];
"a ||| b" for a pair) and returns `probabilities:0` ([B, C] for a fine-tuned run; the Keras
model's output for a Keras model), plus `logits:0` for a run. Tokenization is inside the graph
(FullTokenizer's exact ids), only the inference path is kept (no dropout, no optimizer), and
`<file>.json` beside the `.pb` lists the tensor names, the labels and the sequence length.

The graph holds tensorflow_text ops: `import tensorflow_text` before importing it
(`load_frozen` does).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
from absl import logging
from tensorflow.python.framework import convert_to_constants

from bert_finetune import fileio, modeling, tokenization
from bert_finetune.errors import UserError
from bert_finetune.export import text_preprocessing as tp

INPUT_NAME = "text"
TEXT_SPEC = tf.TensorSpec([None], tf.string, name=INPUT_NAME)


def keras_inference_function(model) -> tf.types.experimental.ConcreteFunction:
    """text [B] -> {"probabilities": model(text)} for a tf_keras model on strings."""

    @tf.function(autograph=False, input_signature=[TEXT_SPEC])
    def serve(text):
        return {"probabilities": model(text, training=False)}

    return serve.get_concrete_function()


def run_dir_inference_function(run_dir: str):
    """(text [B] -> {"probabilities" [B, C], "logits" [B, C]}, labels, seq_len, model) of a
    fine-tuned `bert-classify` output_dir (its latest checkpoint, config, vocab, casing, labels).

    The function refers to `model`'s variables weakly: keep `model` while using it.
    """
    from bert_finetune import classify
    from bert_finetune.runner import loops

    record_path = os.path.join(run_dir, classify.RUN_FLAGS_FILE)
    if not os.path.isfile(record_path):
        raise UserError(f"{run_dir} is not a bert-classify output_dir (no "
                        f"{classify.RUN_FLAGS_FILE})")
    if tf.train.latest_checkpoint(run_dir) is None:
        raise UserError(f"{run_dir}: no fine-tuned checkpoint (model.ckpt-N) to freeze")
    record = json.loads(fileio.read_text(record_path))
    config = modeling.config_from_dir(run_dir)
    labels = fileio.read_text(os.path.join(run_dir, classify.LABELS_FILE)).split("\n")[:-1]
    lower = tokenization.read_do_lower_case_sidecar(run_dir)
    lower = record.get("do_lower_case", True) if lower is None else lower
    seq_len = int(record.get("max_seq_length", 128))
    is_regression = bool(record.get("task_flags", {}).get("regression", False))
    model = classify.ClassifierModel(config, len(labels), is_regression,
                                     pooling=record.get("pooling", "cls"))
    loops.restore_for_inference(model.variables_by_name(), run_dir, None)
    pre = tp.BertPreprocessor(os.path.join(run_dir, "vocab.txt"), lower, seq_len)

    @tf.function(autograph=False, input_signature=[TEXT_SPEC])
    def serve(text):
        features = pre(*tp.split_pairs(text))
        logits = model.logits(features, training=False)
        probs = logits[:, 0] if is_regression else tf.nn.softmax(logits, axis=-1)
        return {"probabilities": probs, "logits": logits}

    return serve.get_concrete_function(), labels, seq_len, model


def freeze_function(fn, output_file: str, extra: dict | None = None) -> dict:
    """Writes the concrete function `fn` (one string input) as a frozen GraphDef + `.json`.

    Output tensors are renamed to their dict keys (`probabilities:0`, ...). Returns the
    description written to `<output_file>.json`.
    """
    frozen = convert_to_constants.convert_variables_to_constants_v2(fn)
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name for t in frozen.inputs]
    if len(inputs) != 1:
        raise ValueError(f"expected one input, got {inputs}")
    # Structured outputs come out as Identity nodes named by TF; give them the keys' names.
    flat_keys = sorted(fn.structured_outputs)
    renames = {}
    for key, tensor in zip(flat_keys, frozen.outputs, strict=True):
        renames[tensor.name.split(":")[0]] = key
    for node in graph_def.node:
        if node.name in renames:
            node.name = renames[node.name]
        for i, name in enumerate(node.input):
            base = name.lstrip("^").split(":")[0]
            if base in renames:
                node.input[i] = name.replace(base, renames[base], 1)
    description = {
        "inputs": {INPUT_NAME: inputs[0]},
        "outputs": {key: f"{key}:0" for key in flat_keys},
        "needs": "import tensorflow_text (its ops are in the graph)",
        **(extra or {}),
    }
    fileio.atomic_write(output_file, graph_def.SerializeToString())
    fileio.atomic_write(output_file + ".json", json.dumps(description, indent=2) + "\n")
    logging.info("Froze %d nodes into %s", len(graph_def.node), output_file)
    return description


def freeze_keras_model(model, output_file: str) -> dict:
    """Freezes a tf_keras model on strings (e.g. Input(string) -> BertLayer -> Dense)."""
    layers = [layer for layer in model.layers if hasattr(layer, "seq_len")]
    extra = {"seq_len": layers[0].seq_len} if layers else {}
    return freeze_function(keras_inference_function(model), output_file, extra)


def freeze_run_dir(run_dir: str, output_file: str) -> dict:
    """Freezes a fine-tuned `bert-classify` output_dir."""
    fn, labels, seq_len, _model = run_dir_inference_function(run_dir)
    return freeze_function(fn, output_file, {"labels": labels, "seq_len": seq_len})


def load_keras_model(path: str):
    """A saved tf_keras model (SavedModel directory, .keras or .h5) holding BertLayers."""
    import tf_keras

    from bert_finetune.export import keras_layer  # noqa: F401  (registers BertLayer)

    tp.import_tensorflow_text()
    if not os.path.exists(path):
        raise UserError(f"--keras_model={path}: not found")
    try:
        return tf_keras.models.load_model(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--keras_model={path}: cannot load a Keras model: {first}") from None


def load_frozen(pb_file: str):
    """The frozen graph as a function: text [B] -> {output name: tensor}."""
    tp.import_tensorflow_text()
    description = json.loads(fileio.read_text(pb_file + ".json"))
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(fileio.read_bytes(pb_file))

    def imports():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imports, [])
    names = sorted(description["outputs"])
    pruned = wrapped.prune(feeds=[description["inputs"][INPUT_NAME]],
                           fetches=[description["outputs"][k] for k in names])

    def call(text) -> dict[str, tf.Tensor]:
        return dict(zip(names, pruned(tf.convert_to_tensor(text, tf.string)), strict=True))

    return call
