"""`bert-export --classifier`: a bert-classify output directory -> a servable model.

One entry point over the three formats (see each module for its layout):
  saved_model  TF Serving's versioned SavedModel, raw strings in (export/serving.py)
  onnx         model.onnx on ids, via tf2onnx (export/onnx_export.py)
  tflite       model.tflite on ids, float32 or dynamic-range int8 (export/tflite_export.py)
"""

from __future__ import annotations

from bert_finetune.errors import UserError
from bert_finetune.export import run_dir

FORMATS = ("saved_model", "onnx", "tflite")


def export_classifier(run_directory: str, output_dir: str, fmt: str = "saved_model",
                      quantize: str = "none", overwrite: bool = False,
                      model_version: int | None = None,
                      sentence_pair: bool | None = None) -> str:
    """Exports the latest checkpoint of a bert-classify run; returns the path written.

    Args:
      run_directory: the run's output_dir (run_flags.json, bert_config.json, vocab.txt,
        label_list.txt, do_lower_case.txt, model.ckpt-N).
      output_dir: the export directory (for saved_model: the model base path holding versions).
      fmt: one of FORMATS. quantize: "none" or "int8" (tflite only).
      overwrite: replace a non-empty output_dir (saved_model: the version written).
      model_version: saved_model only; default 1 in a new directory.
      sentence_pair: overrides whether the task has a text_b (needed for a task of your own).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format={fmt}: use one of {', '.join(FORMATS)}")
    if quantize != "none" and fmt != "tflite":
        raise UserError(f"--quantize={quantize} applies to --format=tflite only")
    if model_version is not None and fmt != "saved_model":
        raise UserError("--model_version applies to --format=saved_model only")
    record = run_dir.load_run(run_directory, sentence_pair)
    if fmt == "saved_model":
        from bert_finetune.export import serving

        return serving.export_saved_model(record, output_dir, model_version, overwrite)
    if fmt == "onnx":
        from bert_finetune.export import onnx_export

        return onnx_export.export_onnx(record, output_dir, overwrite)
    from bert_finetune.export import tflite_export

    return tflite_export.export_tflite(record, output_dir, quantize, overwrite)
