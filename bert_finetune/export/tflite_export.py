"""The classifier as TensorFlow Lite (encoder + head on ids): float32 or dynamic-range int8.

`export_tflite(record, output_dir, quantize)` writes

  EXPORT/model.tflite      signature `serving_default`: input_ids, input_mask, segment_ids
                           [B, T] int32 (resizable) -> probabilities [B, C] float32, label_ids [B]
                           int64 (regression: predictions [B] float32)
  EXPORT/vocab.txt, label_list.txt, do_lower_case.txt, export_info.json

`quantize="int8"` is post-training dynamic-range quantization: weights stored as int8 (about 4x
smaller), activations float32, no calibration data. Tokenization stays in Python
(`bert-predict --backend=tflite`).
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from bert_finetune import fileio
from bert_finetune.errors import UserError
from bert_finetune.export import publish, serving
from bert_finetune.export.run_dir import RunRecord

TFLITE_FILE = "model.tflite"
QUANTIZE = ("none", "int8")


def export_tflite(record: RunRecord, output_dir: str, quantize: str = "none",
                  overwrite: bool = False) -> str:
    """Converts the run's classifier to `output_dir/model.tflite` (see the module doc)."""
    if quantize not in QUANTIZE:
        raise UserError(f"--quantize={quantize}: use one of {', '.join(QUANTIZE)}")
    publish.check_target(output_dir, overwrite)
    model = record.build_model()

    @tf.function(input_signature=serving.ids_signature())
    def classify_ids(input_ids, input_mask, segment_ids):
        return serving.classifier_outputs(model, input_ids, input_mask, segment_ids)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [classify_ids.get_concrete_function()], model)
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no dataset: dynamic range
    flatbuffer = converter.convert()
    with publish.staged(output_dir) as tmp:
        fileio.atomic_write(os.path.join(tmp, TFLITE_FILE), flatbuffer)
        serving.write_assets(record, tmp, serving.export_info(
            record, "tflite", quantize=quantize, model_file=TFLITE_FILE))
    logging.info("Exported %s to %s (TFLite, quantize=%s, %d bytes)", record.checkpoint,
                 output_dir, quantize, len(flatbuffer))
    return os.path.join(output_dir, TFLITE_FILE)
