"""The classifier as ONNX (encoder + head on ids), converted with tf2onnx.

`export_onnx(record, output_dir)` writes

  EXPORT/model.onnx        inputs input_ids, input_mask, segment_ids [B, T] int32 (B, T dynamic);
                           outputs probabilities [B, C] float32 and label_ids [B] int64
                           (regression: predictions [B] float32); opset `OPSET`
  EXPORT/vocab.txt, label_list.txt, do_lower_case.txt, export_info.json

Tokenization stays in Python for ONNX (`bert-predict --backend=onnxruntime` packs features as
bert-classify does). tf2onnx and onnxruntime are optional: `pip install 'bert_finetune[onnx]'`.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from bert_finetune import fileio
from bert_finetune.errors import UserError
from bert_finetune.export import publish, serving
from bert_finetune.export.run_dir import RunRecord

ONNX_FILE = "model.onnx"
# 17: LayerNormalization-era opset that onnxruntime >= 1.13 runs and tf2onnx 1.16+ emits.
OPSET = 17
INSTALL_HINT = "pip install 'bert_finetune[onnx]'"


def _tf2onnx():
    try:
        import tf2onnx
    except ImportError:
        raise UserError(f"--format=onnx needs tf2onnx, which is not installed: {INSTALL_HINT}") \
            from None
    return tf2onnx


def export_onnx(record: RunRecord, output_dir: str, overwrite: bool = False,
                opset: int = OPSET) -> str:
    """Converts the run's classifier to `output_dir/model.onnx` (see the module doc)."""
    tf2onnx = _tf2onnx()
    publish.check_target(output_dir, overwrite)
    model = record.build_model()
    spec = serving.ids_signature()

    @tf.function(input_signature=spec)
    def classify_ids(input_ids, input_mask, segment_ids):
        return serving.classifier_outputs(model, input_ids, input_mask, segment_ids)

    # tf2onnx names the graph's inputs and outputs after the signature's (input_ids, ...,
    # probabilities, label_ids), as the TF function has them.
    proto, _ = tf2onnx.convert.from_function(classify_ids, input_signature=spec, opset=opset)
    with publish.staged(output_dir) as tmp:
        fileio.atomic_write(os.path.join(tmp, ONNX_FILE), proto.SerializeToString())
        serving.write_assets(record, tmp, serving.export_info(
            record, "onnx", opset=opset, tf2onnx=tf2onnx.__version__, model_file=ONNX_FILE))
    logging.info("Exported %s to %s (ONNX opset %d)", record.checkpoint, output_dir, opset)
    return os.path.join(output_dir, ONNX_FILE)
