"""SQuAD v1.1 / v2.0 end to end: JSON -> features -> runner -> predictions and EM/F1.

The library behind `bert-squad`; it never reads flags. `SquadOptions` holds the original
`run_squad.py` flags by their names, `validate()` reports every problem at once, and `run()` does
the work with the files the original wrote (`train.tf_record`, `eval.tf_record`, `model.ckpt-N`,
`predictions.json`, `nbest_predictions.json`, `null_odds.json`).

Beyond the original: when the predict file has answers, `eval_results.json` / `eval_results.txt`
hold the official EM/F1 (v2.0: HasAns/NoAns and the best null threshold, from the same pass, with
`predictions_best_thresh.json` written at it); every input file is read (and so checked) before
anything is written; progress is logged with an ETA.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time

import numpy as np
import tensorflow as tf
from absl import logging

from bert_finetune import fileio, modeling, outputs, task
from bert_finetune import squad_postprocess as postprocess
from bert_finetune.data import length_buckets, squad_features, tfrecord
from bert_finetune.data import squad as squad_data
from bert_finetune.errors import UserError
from bert_finetune.heads import SpanHead
from bert_finetune.runner import loops, squad_metrics

TRAIN_SEED = 12345  # the original shuffled the train examples with random.Random(12345)
PADDING_LOGIT = -1e4  # the logits of positions a length bucket cut off


@dataclasses.dataclass
class SquadOptions(task.TaskOptions):
    """The flags of run_squad.py (same names and defaults) plus the runner's additions."""

    train_file: str | None = None
    predict_file: str | None = None
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    do_train: bool = False
    do_predict: bool = False
    train_batch_size: int = 32
    predict_batch_size: int = 8
    learning_rate: float = 5e-5
    num_train_epochs: float = 3.0
    warmup_proportion: float = 0.1
    n_best_size: int = 20
    max_answer_length: int = 30
    verbose_logging: bool = False
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0


class SquadModel(tf.Module):
    """BERT + the span head; the runner's task (see runner/loops.py)."""

    def __init__(self, bert_config: modeling.BertConfig, use_one_hot_embeddings: bool = False,
                 compute_dtype: str = "float32", seq_length: int | None = None):
        super().__init__(name="squad_model")
        self.seq_length = seq_length  # predict() pads trimmed batches' logits back to it
        self.bert = modeling.BertModel(bert_config, use_one_hot_embeddings, compute_dtype)
        self.head = SpanHead(bert_config.hidden_size, bert_config.initializer_range)

    def variables_by_name(self) -> dict[str, tf.Variable]:
        names = self.bert.variables_by_name()
        names.update(self.head.variables_by_name())
        return names

    def logits(self, features: dict, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """(start_logits, end_logits), float32 [B, T]."""
        out = self.bert(features["input_ids"], features["input_mask"], features["segment_ids"],
                        training=training)
        return self.head.logits(out["sequence_output"])

    def per_example_loss(self, features: dict, training: bool) -> tf.Tensor:
        start_logits, end_logits = self.logits(features, training)
        return self.head.loss(start_logits, end_logits, features["start_positions"],
                              features["end_positions"])

    def predict(self, features: dict) -> dict[str, tf.Tensor]:
        start_logits, end_logits = self.logits(features, training=False)
        if self.seq_length is not None:
            # A length-bucketed batch [B, L]: positions past L are padding, below any real logit.
            pad = [[0, 0], [0, self.seq_length - tf.shape(start_logits)[1]]]
            start_logits = tf.pad(start_logits, pad, constant_values=PADDING_LOGIT)
            end_logits = tf.pad(end_logits, pad, constant_values=PADDING_LOGIT)
        return {"unique_ids": features["unique_ids"], "start_logits": start_logits,
                "end_logits": end_logits}


# -- validation --------------------------------------------------------------------------------
def validate(opts: SquadOptions) -> list[str]:
    """Every problem with the options, checked before any heavy work (empty list when fine).

    The original's validate_flags_or_throw plus the model files' checks shared with
    bert-classify.
    """
    problems = []
    if not opts.do_train and not opts.do_predict:
        problems.append("At least one of `do_train` or `do_predict` must be True.")
    if opts.do_train and not opts.train_file:
        problems.append("If `do_train` is True, then `train_file` must be specified.")
    if opts.do_predict and not opts.predict_file:
        problems.append("If `do_predict` is True, then `predict_file` must be specified.")
    for name in ("train_file", "predict_file"):
        path = getattr(opts, name)
        wanted = opts.do_train if name == "train_file" else opts.do_predict
        if path and wanted and not fileio.is_file(path):
            problems.append(f"--{name}={path}: no such file")
    for name in ("max_seq_length", "doc_stride", "max_query_length", "train_batch_size",
                 "predict_batch_size", "save_checkpoints_steps", "iterations_per_loop",
                 "n_best_size", "max_answer_length", "num_tpu_cores"):
        if getattr(opts, name) <= 0:
            problems.append(f"--{name}={getattr(opts, name)} must be positive")
    if opts.max_seq_length <= opts.max_query_length + 3:
        problems.append(f"The max_seq_length ({opts.max_seq_length}) must be greater than "
                        f"max_query_length ({opts.max_query_length}) + 3")
    problems += task.require(opts, ("bert_config_file", "vocab_file", "output_dir"))
    problems += task.validate_common(opts)[0]
    return problems


# -- the run -----------------------------------------------------------------------------------
@dataclasses.dataclass
class _Data:
    """The examples one run needs, read (and so checked) before anything is written."""

    train: list | None = None
    predict: list | None = None
    gold: dict | None = None  # the predict file's answers, if it has any
    num_train_steps: int = 0


def _read_data(opts: SquadOptions) -> _Data:
    data = _Data()
    v2 = opts.version_2_with_negative
    if opts.do_train:
        data.train = squad_data.read_squad_examples(opts.train_file, True, v2)
    if opts.do_predict:
        data.predict = squad_data.read_squad_examples(opts.predict_file, False, v2)
        data.gold = squad_data.read_gold(opts.predict_file)
    if data.train is not None:
        # Shuffled once, as the original, so that the windows of a question are spread out.
        random.Random(TRAIN_SEED if opts.seed is None else opts.seed).shuffle(data.train)
        # The step count comes from the questions, not from the (more numerous) windows.
        data.num_train_steps = int(len(data.train) / opts.train_batch_size
                                   * opts.num_train_epochs)
        if data.num_train_steps <= 0:
            raise UserError(f"{len(data.train)} train questions, --train_batch_size="
                            f"{opts.train_batch_size} and --num_train_epochs="
                            f"{opts.num_train_epochs} make zero training steps")
    return data


def run(opts: SquadOptions) -> dict:
    """Trains and/or predicts as the flags say. Returns the eval results (if any)."""
    data = _read_data(opts)
    ctx = task.TaskContext(opts)
    fileio.ensure_output_dir(opts.output_dir)
    recorded = task.has_record(opts.output_dir)
    if ctx.chief and (opts.do_train or not recorded):
        task.record_run(opts, ctx.config)
    with ctx.strategy.scope():
        trimmed = bool(opts.length_buckets) and not ctx.static_shapes
        model = SquadModel(ctx.config, ctx.use_one_hot, opts.compute_dtype,
                           seq_length=opts.max_seq_length if trimmed else None)
    results: dict = {}
    try:
        if opts.do_train:
            _train(ctx, model, data)
        if opts.do_predict and ctx.chief:
            results = _predict(ctx, model, data)
    finally:
        ctx.close()
    return results


def _train(ctx: task.TaskContext, model: SquadModel, data: _Data) -> None:
    opts = ctx.opts
    path = os.path.join(ctx.record_dir, "train.tf_record")
    _, num_features = squad_features.write_features(
        data.train, ctx.tokenizer, opts.max_seq_length, opts.doc_stride, opts.max_query_length,
        True, path, keep=False)
    num_train_steps = data.num_train_steps
    logging.info("***** Running training *****")
    logging.info("  Num orig examples = %d", len(data.train))
    logging.info("  Num split examples = %d", num_features)
    logging.info("  Batch size = %d", opts.train_batch_size)
    logging.info("  Num steps = %d", num_train_steps)
    train_opts = ctx.train_options(num_train_steps,
                                   int(num_train_steps * opts.warmup_proportion),
                                   opts.train_batch_size, opts.learning_rate)
    trainer = loops.Trainer(ctx.strategy, model, train_opts)
    spec = squad_features.name_to_features(opts.max_seq_length, is_training=True)
    buckets = length_buckets.bucket_lengths(opts.max_seq_length) if opts.length_buckets else None

    def dataset_fn(input_context: tf.distribute.InputContext, skip_batches: int):
        input_fn = tfrecord.file_based_input_fn_builder(
            path, opts.max_seq_length, is_training=True, drop_remainder=True,
            seed=ctx.train_seed(TRAIN_SEED), skip_batches=skip_batches,
            input_context=input_context, features_spec=spec, length_window=opts.length_buckets,
            length_buckets=buckets)
        return input_fn({"batch_size": input_context.get_per_replica_batch_size(
            opts.train_batch_size)})

    trainer.train(dataset_fn)


def _predict(ctx: task.TaskContext, model: SquadModel, data: _Data) -> dict:
    opts = ctx.opts
    path = os.path.join(ctx.record_dir, "eval.tf_record")
    pad_to = opts.predict_batch_size if ctx.static_shapes else 1
    features, num_records = squad_features.write_features(
        data.predict, ctx.tokenizer, opts.max_seq_length, opts.doc_stride,
        opts.max_query_length, False, path, pad_to_multiple=pad_to)
    logging.info("***** Running predictions *****")
    logging.info("  Num orig examples = %d", len(data.predict))
    logging.info("  Num split examples = %d", len(features))
    logging.info("  Batch size = %d", opts.predict_batch_size)
    step = loops.restore_for_inference(model.variables_by_name(), opts.output_dir,
                                       opts.init_checkpoint)
    input_fn = tfrecord.file_based_input_fn_builder(
        path, opts.max_seq_length, is_training=False, drop_remainder=ctx.static_shapes,
        features_spec=squad_features.name_to_features(opts.max_seq_length, False),
        length_buckets=length_buckets.bucket_lengths(opts.max_seq_length)
        if opts.length_buckets and not ctx.static_shapes else None)
    dataset = input_fn({"batch_size": opts.predict_batch_size})
    began = time.time()
    out = loops.run_inference(ctx.strategy, model, dataset, num_examples=num_records,
                              what="Predict", **ctx.inference_options(
                                  -(-num_records // opts.predict_batch_size)))
    predict_seconds = time.time() - began
    n = len(features)
    unique_ids = out["unique_ids"][:n]
    expected = np.array([f.unique_id for f in features])
    if not np.array_equal(unique_ids, expected):
        raise RuntimeError("predict outputs are not in feature order")
    began = time.time()
    result = postprocess.compute_predictions(
        data.predict, features, out["start_logits"][:n], out["end_logits"][:n],
        opts.n_best_size, opts.max_answer_length, opts.do_lower_case,
        opts.version_2_with_negative, opts.null_score_diff_threshold, opts.verbose_logging)
    postprocess_seconds = time.time() - began
    logging.info("Predicted %d windows in %.1f s; post-processing %d questions took %.1f s",
                 n, predict_seconds, len(data.predict), postprocess_seconds)
    postprocess.write_predictions(opts.output_dir, result)
    if data.gold is None:
        return {}
    return _evaluate(opts, data, result, step)


def _evaluate(opts: SquadOptions, data: _Data, result: postprocess.SquadPredictions,
              step: int) -> dict:
    if opts.version_2_with_negative:
        results = squad_metrics.squad_v2_results(data.gold, result.predictions,
                                                 result.best_non_null, result.null_odds)
        postprocess.write_json(
            os.path.join(opts.output_dir, "predictions_best_thresh.json"),
            result.with_threshold(results["best_f1_thresh"]))
    else:
        results = squad_metrics.evaluate_v1(data.gold, result.predictions)
    results["global_step"] = int(step)
    fileio.atomic_write(os.path.join(opts.output_dir, "eval_results.json"),
                        json.dumps(results, indent=2) + "\n")
    outputs.write_eval_results(
        os.path.join(opts.output_dir, "eval_results.txt"),
        {k: (np.int64(v) if isinstance(v, int) else np.float32(v)) for k, v in results.items()})
    return results


