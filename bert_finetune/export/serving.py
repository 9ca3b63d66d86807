"""A fine-tuned classifier as a SavedModel for TF Serving: raw strings in, labels out.

`export_saved_model(record, output_dir)` writes TF Serving's versioned layout

  EXPORT/<version>/saved_model.pb, variables/, assets/ (vocab.txt, label_list.txt, ...)

with two signatures (B = batch, T = the run's max_seq_length, C = number of labels):

  serving_default  text_a [B] tf.string (+ text_b [B] for a sentence-pair task)
                   -> labels [B] tf.string, probabilities [B, C] float32, label_ids [B] int64
                      (regression: predictions [B] float32)
  serve_ids        input_ids, input_mask, segment_ids [B, T'] int32 -> the same outputs
                   (features as bert-classify packs them; T' <= max_position_embeddings)

Tokenization, truncation (the original's `_truncate_seq_pair`) and padding to T happen in the
graph with the run's vocab and casing, so the model needs nothing but strings. For a pair task
both inputs are required (TF Serving rejects a request without one); an empty `text_b` makes
that example a single sentence, as an empty text_b did in `run_classifier.py`.
"""

from __future__ import annotations

import os

import tensorflow as tf

from bert_finetune import classify
from bert_finetune.export import publish
from bert_finetune.export.run_dir import RunRecord
from bert_finetune.export.text_preprocessing import BertPreprocessor

SERVING_DEFAULT = "serving_default"
SERVE_IDS = "serve_ids"
EXPORT_INFO = publish.EXPORT_INFO
_IDS = ("input_ids", "input_mask", "segment_ids")


def ids_signature() -> list[tf.TensorSpec]:
    """[B, T] int32 specs of input_ids, input_mask, segment_ids (B and T dynamic)."""
    return [tf.TensorSpec([None, None], tf.int32, name=n) for n in _IDS]


def classifier_outputs(model: classify.ClassifierModel, input_ids: tf.Tensor,
                       input_mask: tf.Tensor, segment_ids: tf.Tensor) -> dict[str, tf.Tensor]:
    """The model on features [B, T] int32: {probabilities [B, C], label_ids [B] int64} or, for
    regression, {predictions [B]}. The same forward pass bert-classify predicts with."""
    features = {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
                # Unused by the outputs (the loss is pruned from the graph).
                "label_ids": tf.zeros(tf.shape(input_ids)[:1], tf.int32)}
    _, _, predictions = model.forward(features, training=False)
    if model.is_regression:
        return {"predictions": predictions}
    return {"probabilities": predictions,
            "label_ids": tf.argmax(predictions, axis=-1, output_type=tf.int64)}


def export_info(record: RunRecord, fmt: str, **extra) -> dict:
    """What a runtime needs beside the model file: tokenization and the outputs' meaning."""
    info = {"format": fmt, "task_name": record.task_name, "max_seq_length": record.max_seq_length,
            "do_lower_case": record.do_lower_case, "sentence_pair": record.sentence_pair,
            "is_regression": record.is_regression, "label_list": record.label_list,
            "checkpoint": os.path.basename(record.checkpoint)}
    info.update(extra)
    return info


def write_assets(record: RunRecord, directory: str, info: dict) -> None:
    """vocab.txt, label_list.txt, do_lower_case.txt and export_info.json into `directory`."""
    publish.write_assets(directory, record.vocab_file, record.do_lower_case, info,
                         {classify.LABELS_FILE: "".join(f"{x}\n" for x in record.label_list)})


class ClassifierServer(tf.Module):
    """The serving module: the restored ClassifierModel, the in-graph tokenizer and the labels."""

    def __init__(self, record: RunRecord, model: classify.ClassifierModel):
        super().__init__(name="classifier_server")
        self.model = model
        # Texts [B] -> {input_ids, input_mask, segment_ids} [B, T]: FullTokenizer's ids, packed
        # (and truncated) as convert_single_example packs them.
        self.preprocessor = BertPreprocessor(record.vocab_file, record.do_lower_case,
                                             record.max_seq_length)
        self.sentence_pair = record.sentence_pair
        self.label_names = tf.constant(record.label_list, tf.string)

    def _serve_text(self, text_a, text_b=None) -> dict[str, tf.Tensor]:
        f = self.preprocessor(text_a, text_b)
        return self._outputs(f["input_ids"], f["input_mask"], f["segment_ids"])

    def _outputs(self, input_ids, input_mask, segment_ids) -> dict[str, tf.Tensor]:
        out = classifier_outputs(self.model, input_ids, input_mask, segment_ids)
        if "label_ids" in out:
            out["labels"] = tf.gather(self.label_names, out["label_ids"])
        return out

    def signatures(self) -> dict:
        ids = tf.function(self._outputs, input_signature=ids_signature())
        text = tf.TensorSpec([None], tf.string, name="text_a")
        if self.sentence_pair:
            pair = tf.TensorSpec([None], tf.string, name="text_b")

            @tf.function(input_signature=[text, pair])
            def serve(text_a, text_b):
                return self._serve_text(text_a, text_b)
        else:
            @tf.function(input_signature=[text])
            def serve(text_a):
                return self._serve_text(text_a)
        return {SERVING_DEFAULT: serve.get_concrete_function(),
                SERVE_IDS: ids.get_concrete_function()}


def export_saved_model(record: RunRecord, output_dir: str, version: int | None = None,
                       overwrite: bool = False) -> str:
    """Writes the SavedModel of the run (see the module doc); returns its version directory.

    Loading it needs `import tensorflow_text` first (its tokenizer ops); TF Serving ships them.
    """

    def build():
        server = ClassifierServer(record, record.build_model())
        return server, server.signatures()

    return publish.export_saved_model(
        output_dir, version, overwrite, build,
        lambda assets: write_assets(record, assets, export_info(record, "saved_model")),
        f"{record.run_dir} ({os.path.basename(record.checkpoint)})")
