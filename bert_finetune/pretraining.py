"""Masked LM + next sentence pretraining: the library behind `bert-pretrain`.

`PretrainingOptions` holds run_pretraining.py's flags by their names and defaults (plus the
runner's additions and `optimizer`), `validate()` reports every problem at once (the records'
max_seq_length / max_predictions_per_seq included, read from the records before any work), and
`run()` trains with the runner's Trainer and evaluates, writing what the original wrote:
`model.ckpt-N` (with `bert/...` and `cls/...` names) and `eval_results.txt`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

from bert_finetune import fileio, modeling, outputs, task
from bert_finetune.create_pretraining_data import expand_globs
from bert_finetune.data import pretraining_records
from bert_finetune.errors import UserError
from bert_finetune.heads import MaskedLMHead, NextSentenceHead
from bert_finetune.runner import loops

TRAIN_SEED = 12345


@dataclasses.dataclass
class PretrainingOptions(task.TaskOptions):
    """The flags of run_pretraining.py (same names and defaults) plus the runner's additions.

    Of TaskOptions' fields, vocab_file and do_lower_case are unused (the records hold ids) and
    length_buckets must stay 0.
    """

    input_file: str | None = None  # comma-separated globs
    max_predictions_per_seq: int = 20
    do_train: bool = False
    do_eval: bool = False
    train_batch_size: int = 32
    eval_batch_size: int = 8
    learning_rate: float = 5e-5
    num_train_steps: int = 100000
    num_warmup_steps: int = 10000
    max_eval_steps: int = 100


class PretrainingModel(tf.Module):
    """BERT + the masked-LM and next-sentence heads; the runner's task (see runner/loops.py)."""

    def __init__(self, config: modeling.BertConfig, use_one_hot_embeddings: bool = False,
                 compute_dtype: str = "float32"):
        super().__init__(name="pretraining_model")
        self.bert = modeling.BertModel(config, use_one_hot_embeddings, compute_dtype)
        self.masked_lm = MaskedLMHead(config, self.bert.get_embedding_table())
        self.next_sentence = NextSentenceHead(config.hidden_size, config.initializer_range)

    def variables_by_name(self) -> dict[str, tf.Variable]:
        names = self.bert.variables_by_name()
        names.update(self.masked_lm.variables_by_name())
        names.update(self.next_sentence.variables_by_name())
        return names

    def forward(self, features: dict, training: bool) -> dict[str, tf.Tensor]:
        """The original's model_fn outputs (B = batch, P = max_predictions_per_seq)."""
        out = self.bert(features["input_ids"], features["input_mask"], features["segment_ids"],
                        training=training)
        positions = features["masked_lm_positions"]  # [B, P]
        mlm_log_probs = self.masked_lm.log_probs(out["sequence_output"], positions)  # [B*P, V]
        mlm_loss, mlm_example_loss = self.masked_lm.loss(
            mlm_log_probs, features["masked_lm_ids"], features["masked_lm_weights"])
        nsp_log_probs = self.next_sentence.log_probs(out["pooled_output"])  # [B, 2]
        nsp_loss, nsp_example_loss = self.next_sentence.loss(
            nsp_log_probs, features["next_sentence_labels"])
        return {"masked_lm_loss": mlm_loss, "masked_lm_example_loss": mlm_example_loss,
                "masked_lm_log_probs": mlm_log_probs, "next_sentence_loss": nsp_loss,
                "next_sentence_example_loss": nsp_example_loss,
                "next_sentence_log_probs": nsp_log_probs}

    def per_example_loss(self, features: dict, training: bool) -> tf.Tensor:
        """[B] whose mean is the original's total_loss (masked LM loss + next sentence loss).

        The masked LM loss is normalised over the batch's predictions (sum of weights), so
        every example carries it whole; the next sentence loss is per example.
        """
        out = self.forward(features, training)
        return out["masked_lm_loss"] + out["next_sentence_example_loss"]

    def predict(self, features: dict) -> dict[str, tf.Tensor]:
        out = self.forward(features, training=False)
        shape = tf.shape(features["masked_lm_ids"])  # [B, P]
        return {
            "masked_lm_example_loss": tf.reshape(out["masked_lm_example_loss"], shape),
            "masked_lm_predictions": tf.reshape(
                tf.argmax(out["masked_lm_log_probs"], axis=-1, output_type=tf.int32), shape),
            "masked_lm_ids": features["masked_lm_ids"],
            "masked_lm_weights": features["masked_lm_weights"],
            "next_sentence_example_loss": out["next_sentence_example_loss"],
            "next_sentence_predictions": tf.argmax(out["next_sentence_log_probs"], axis=-1,
                                                   output_type=tf.int32),
            "next_sentence_labels": tf.reshape(features["next_sentence_labels"], [-1]),
        }


# -- validation --------------------------------------------------------------------------------
def _check_records(opts: PretrainingOptions, files: list[str]) -> list[str]:
    """The records must have been made with this max_seq_length / max_predictions_per_seq."""
    problems = []
    for path in files:
        try:
            lengths = pretraining_records.record_lengths(path)
        except UserError as e:
            return [str(e)]
        if lengths is None:
            problems.append(f"--input_file: {path} holds no records")
            continue
        seq, preds = lengths
        if seq != opts.max_seq_length:
            problems.append(f"--max_seq_length={opts.max_seq_length} but the records of {path} "
                            f"were made with max_seq_length={seq}")
        if preds != opts.max_predictions_per_seq:
            problems.append(f"--max_predictions_per_seq={opts.max_predictions_per_seq} but the "
                            f"records of {path} were made with max_predictions_per_seq={preds}")
        if problems:
            break  # one file tells it; the others were most likely made the same way
    return problems


def validate(opts: PretrainingOptions) -> list[str]:
    """Every problem with the options, checked before any heavy work (empty list when fine)."""
    problems = []
    if not (opts.do_train or opts.do_eval):
        problems.append("At least one of `do_train` or `do_eval` must be True.")
    for name in ("bert_config_file", "input_file", "output_dir"):
        if not getattr(opts, name):
            problems.append(f"--{name} is required")
    for name in ("max_seq_length", "max_predictions_per_seq", "train_batch_size",
                 "eval_batch_size", "save_checkpoints_steps", "iterations_per_loop",
                 "max_eval_steps", "num_tpu_cores", "keep_checkpoint_max"):
        if getattr(opts, name) <= 0:
            problems.append(f"--{name}={getattr(opts, name)} must be positive")
    if opts.do_train:
        if opts.num_train_steps <= 0:
            problems.append(f"--num_train_steps={opts.num_train_steps} must be positive")
        if opts.num_warmup_steps < 0:
            problems.append(f"--num_warmup_steps={opts.num_warmup_steps} must not be negative")
        if opts.learning_rate <= 0:
            problems.append(f"--learning_rate={opts.learning_rate} must be positive")
    problems += task.require_positive(opts, ("log_every_n_steps", "gradient_accumulation_steps"))
    if opts.length_buckets:
        problems.append(f"--length_buckets={opts.length_buckets}: bert-pretrain's records are "
                        "packed close to --max_seq_length; use 0")
    problems += task.check_runner_flags(opts)
    if opts.input_file:
        try:
            files = expand_globs(opts.input_file)
        except UserError as e:
            problems.append(str(e))
        else:
            if opts.max_seq_length > 0 and opts.max_predictions_per_seq > 0:
                problems += _check_records(opts, files)
    problems += task.check_model_files(opts.bert_config_file, opts.max_seq_length, None,
                                       opts.init_checkpoint)[0]
    return problems


# -- the run -----------------------------------------------------------------------------------
def run(opts: PretrainingOptions) -> dict:
    """Trains and/or evaluates as the flags say. Returns the eval results (if any)."""
    files = expand_globs(opts.input_file)
    ctx = task.TaskContext(opts)
    fileio.ensure_output_dir(opts.output_dir)
    if ctx.chief:
        # What the run was made from: lets the checkpoint directory serve as a model directory.
        ctx.config.to_json_file(os.path.join(opts.output_dir, "bert_config.json"))
    with ctx.strategy.scope():
        model = PretrainingModel(ctx.config, ctx.use_one_hot, opts.compute_dtype)
    logging.info("*** Input Files ***")
    for input_file in files:
        logging.info("  %s", input_file)
    results: dict = {}
    try:
        if opts.do_train:
            _train(ctx, model, files)
        if opts.do_eval and ctx.chief:
            results = evaluate(opts, ctx.strategy, model, files,
                               ctx.inference_options(opts.max_eval_steps))
    finally:
        ctx.close()
    return results


def _train(ctx: task.TaskContext, model: PretrainingModel, files: list[str]) -> None:
    opts = ctx.opts
    logging.info("***** Running training *****")
    logging.info("  Batch size = %d", opts.train_batch_size)
    train_opts = ctx.train_options(opts.num_train_steps, opts.num_warmup_steps,
                                   opts.train_batch_size, opts.learning_rate)
    trainer = loops.Trainer(ctx.strategy, model, train_opts)

    def dataset_fn(input_context: tf.distribute.InputContext, skip_batches: int):
        input_fn = pretraining_records.input_fn_builder(
            files, opts.max_seq_length, opts.max_predictions_per_seq, is_training=True,
            seed=ctx.train_seed(TRAIN_SEED), skip_batches=skip_batches,
            input_context=input_context)
        return input_fn({"batch_size": input_context.get_per_replica_batch_size(
            opts.train_batch_size)})

    trainer.train(dataset_fn)


def eval_metrics(out: dict[str, np.ndarray], batch_size: int) -> dict:
    """The original's metric_fn over inference outputs, plus TPUEstimator's mean batch loss."""
    w = out["masked_lm_weights"].astype(np.float64)  # [N, P]
    mlm_loss = out["masked_lm_example_loss"].astype(np.float64)
    mlm_correct = (out["masked_lm_predictions"] == out["masked_lm_ids"]).astype(np.float64)
    nsp_loss = out["next_sentence_example_loss"].astype(np.float64)  # [N]
    nsp_correct = out["next_sentence_predictions"] == out["next_sentence_labels"]
    batch_losses = []  # total_loss of each batch, as the training step computes it
    for i in range(0, len(nsp_loss), batch_size):
        bw = w[i:i + batch_size]
        batch_losses.append(np.sum(bw * mlm_loss[i:i + batch_size]) / (np.sum(bw) + 1e-5)
                            + np.mean(nsp_loss[i:i + batch_size]))
    return {
        "loss": np.float32(np.mean(batch_losses)),
        "masked_lm_accuracy": np.float32(np.sum(w * mlm_correct) / max(np.sum(w), 1e-12)),
        "masked_lm_loss": np.float32(np.sum(w * mlm_loss) / max(np.sum(w), 1e-12)),
        "next_sentence_accuracy": np.float32(np.mean(nsp_correct)),
        "next_sentence_loss": np.float32(np.mean(nsp_loss)),
    }


def evaluate(opts: PretrainingOptions, strategy, model: PretrainingModel, files: list[str],
             inference: dict | None = None) -> dict:
    """`max_eval_steps` batches of the records (repeated, as the original), into eval_results.txt."""
    logging.info("***** Running evaluation *****")
    logging.info("  Batch size = %d", opts.eval_batch_size)
    step = loops.restore_for_inference(model.variables_by_name(), opts.output_dir,
                                       opts.init_checkpoint)
    input_fn = pretraining_records.input_fn_builder(
        files, opts.max_seq_length, opts.max_predictions_per_seq, is_training=False)
    dataset = input_fn({"batch_size": opts.eval_batch_size}).take(opts.max_eval_steps)
    out = loops.run_inference(strategy, model, dataset, **(inference or {}))
    results = eval_metrics(out, opts.eval_batch_size)
    results["global_step"] = np.int64(step)
    outputs.write_eval_results(os.path.join(opts.output_dir, "eval_results.txt"), results)
    writer = tf.summary.create_file_writer(os.path.join(opts.output_dir, "eval"))
    with writer.as_default(step=int(step)):
        for key, value in results.items():
            if key != "global_step":
                tf.summary.scalar(key, float(value))
    writer.close()
    return results
