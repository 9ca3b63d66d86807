"""A fine-tuned bert-squad model as a SavedModel for TF Serving: question + context in, answer out.

`export_squad(run_dir, output_dir)` writes TF Serving's versioned layout

  EXPORT/<version>/saved_model.pb, variables/, assets/ (vocab.txt, do_lower_case.txt,
  export_info.json)

with two signatures (B = batch, T = the run's max_seq_length):

  serving_default  question [B], context [B] tf.string
                   -> answer [B] tf.string, score [B] float32, probability [B] float32,
                      answer_start [B], answer_end [B], num_windows [B] int64
                      (+ null_score_diff [B] float32 for a SQuAD 2.0 run)
  serve_ids        input_ids, input_mask, segment_ids [B, T'] int32
                   -> start_logits, end_logits [B, T'] float32

The run's max_seq_length, doc_stride, max_query_length, n_best_size, max_answer_length,
casing, version_2_with_negative and null_score_diff_threshold are built in: a long context is
cut into the same windows as bert-squad cuts it, and the answer is predictions.json's (see
export/squad_answers.py and the README).
"""

from __future__ import annotations

import os

import tensorflow as tf

from bert_finetune.export import publish
from bert_finetune.export.run_dir import SquadRunRecord, load_squad_run
from bert_finetune.export.serving import SERVE_IDS, SERVING_DEFAULT, ids_signature
from bert_finetune.export.squad_answers import ContextPieces, best_answers, pack_windows
from bert_finetune.export.text_preprocessing import BertPreprocessor

TASK = "squad"


class SquadServer(tf.Module):
    """The serving module: the restored SquadModel, the in-graph tokenizer and answer selection."""

    def __init__(self, record: SquadRunRecord, model: tf.Module):
        super().__init__(name="squad_server")
        self.model = model
        self.preprocessor = BertPreprocessor(record.vocab_file, record.do_lower_case,
                                             record.max_seq_length)
        self.record = record

    def answer(self, question: tf.Tensor, context: tf.Tensor) -> dict[str, tf.Tensor]:
        """Strings [B], [B] -> the outputs of serving_default (see the module doc)."""
        r = self.record
        # Invalid UTF-8 is dropped (as the tokenizer drops it); offsets count the characters of
        # what remains, which is the context itself for any valid input.
        question = tf.strings.unicode_transcode(question, "UTF-8", "UTF-8", errors="ignore")
        context = tf.strings.unicode_transcode(context, "UTF-8", "UTF-8", errors="ignore")
        ctx = ContextPieces(self.preprocessor, context)
        windows = pack_windows(self.preprocessor, question, ctx, r.max_query_length,
                               r.doc_stride)
        start_logits, end_logits = self.model.logits(windows.features, training=False)
        out = best_answers(ctx, context, windows, start_logits, end_logits, r.n_best_size,
                           r.max_answer_length, r.version_2_with_negative,
                           r.null_score_diff_threshold)
        out["num_windows"] = windows.num_windows
        return out

    def _logits(self, input_ids, input_mask, segment_ids) -> dict[str, tf.Tensor]:
        start, end = self.model.logits({"input_ids": input_ids, "input_mask": input_mask,
                                        "segment_ids": segment_ids}, training=False)
        return {"start_logits": start, "end_logits": end}

    def signatures(self) -> dict:
        text = [tf.TensorSpec([None], tf.string, name="question"),
                tf.TensorSpec([None], tf.string, name="context")]
        serve = tf.function(self.answer, input_signature=text, autograph=False)
        ids = tf.function(self._logits, input_signature=ids_signature())
        return {SERVING_DEFAULT: serve.get_concrete_function(),
                SERVE_IDS: ids.get_concrete_function()}


def export_info(record: SquadRunRecord) -> dict:
    """What a runtime needs to know beside the SavedModel (assets/export_info.json)."""
    names = ("max_seq_length", "doc_stride", "max_query_length", "n_best_size",
             "max_answer_length", "version_2_with_negative", "null_score_diff_threshold",
             "do_lower_case")
    info = {name: getattr(record, name) for name in names}
    info.update(format="saved_model", task=TASK,
                checkpoint=os.path.basename(record.checkpoint))
    return info


def export_squad(run_directory: str, output_dir: str, overwrite: bool = False,
                 model_version: int | None = None) -> str:
    """Exports the latest checkpoint of a bert-squad run; returns the version directory.

    Loading it needs `import tensorflow_text` first (its tokenizer ops); TF Serving ships them.
    """
    record = load_squad_run(run_directory)

    def build():
        server = SquadServer(record, record.build_model())
        return server, server.signatures()

    return publish.export_saved_model(
        output_dir, model_version, overwrite, build,
        lambda assets: publish.write_assets(assets, record.vocab_file, record.do_lower_case,
                                            export_info(record)),
        f"{record.run_dir} ({os.path.basename(record.checkpoint)})")
