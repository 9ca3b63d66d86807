"""Sentence (pair) classification end to end: processor -> TFRecords -> runner -> result files.

The library behind `bert-classify`; it never reads flags. `ClassifyOptions` holds the original
`run_classifier.py` flags by their names, `validate()` reports every problem at once, and `run()`
does the work with the same files the original wrote (`train.tf_record`, `eval_results.txt`,
`test_results.tsv`, `model.ckpt-N`).

With `bert_hub_module_handle` it is `run_classifier_with_tfhub.py`: a module exported by
`bert-export` supplies the encoder (its own variables, fine-tuned in place), the config, the vocab
and the casing; the run's output_dir then holds the same files as a checkpoint run's, so later
eval/predict/export runs need neither the module nor any model flag.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

from bert_finetune import fileio, modeling, outputs, task
from bert_finetune.data import features as feature_lib
from bert_finetune.data import length_buckets, tfrecord
from bert_finetune.data.examples import DataProcessor, PaddingInputExample
from bert_finetune.errors import UserError
from bert_finetune.heads import ClassifierHead
from bert_finetune.runner import loops, metrics

RUN_FLAGS_FILE = task.RUN_FLAGS_FILE
LABELS_FILE = "label_list.txt"
TRAIN_SEED = 12345
POOLINGS = ("cls", "mean")


@dataclasses.dataclass
class ClassifyOptions(task.TaskOptions):
    """The flags of run_classifier.py (same names and defaults) plus our additions."""

    data_dir: str | None = None
    task_name: str | None = None
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    train_batch_size: int = 32
    eval_batch_size: int = 8
    predict_batch_size: int = 8
    learning_rate: float = 5e-5
    num_train_epochs: float = 3.0
    warmup_proportion: float = 0.1
    # run_classifier_with_tfhub.py: path or URL of a bert-export module. It replaces
    # bert_config_file, vocab_file and init_checkpoint (which must be empty) and do_lower_case
    # (the module's tokenization_info decides).
    bert_hub_module_handle: str | None = None
    # Beyond the original: what the classifier reads. "cls" = the pooler on [CLS] (the original);
    # "mean" = the mean of the last layer over the real tokens (sentence encoders such as
    # all-MiniLM-L6-v2 were trained that way; their pooler was not).
    pooling: str = "cls"


class ClassifierModel(tf.Module):
    """BERT + the classification head; the runner's task (see runner/loops.py)."""

    def __init__(self, bert_config: modeling.BertConfig, num_labels: int, is_regression: bool,
                 use_one_hot_embeddings: bool = False, compute_dtype: str = "float32",
                 encoder: tf.Module | None = None, pooling: str = "cls"):
        super().__init__(name="classifier_model")
        if pooling not in POOLINGS:
            raise UserError(f"--pooling={pooling}: use one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        # `encoder`: a loaded module's HubEncoder (same interface) instead of a new BertModel.
        self.bert = encoder if encoder is not None else modeling.BertModel(
            bert_config, use_one_hot_embeddings, compute_dtype)
        self.head = ClassifierHead(num_labels, bert_config.hidden_size, is_regression,
                                   bert_config.initializer_range)
        self.is_regression = is_regression

    def variables_by_name(self) -> dict[str, tf.Variable]:
        names = self.bert.variables_by_name()
        names.update(self.head.variables_by_name())
        return names

    def logits(self, features: dict, training: bool) -> tf.Tensor:
        """input_ids/input_mask/segment_ids [B, T] -> logits [B, C] float32."""
        if self.pooling == "cls" and isinstance(self.bert, modeling.BertModel):
            # The head reads only the pooler: skip the last layer's other rows.
            out = self.bert(features["input_ids"], features["input_mask"],
                            features["segment_ids"], training=training, pooled_only=True)
            return self.head.logits(out["pooled_output"], training)
        out = self.bert(features["input_ids"], features["input_mask"], features["segment_ids"],
                        training=training)
        if self.pooling == "mean":
            # float32: a bf16/fp16 sum over up to max_seq_length tokens would lose precision.
            pooled = modeling.masked_mean(tf.cast(out["sequence_output"], tf.float32),
                                          features["input_mask"])
        else:
            pooled = out["pooled_output"]
        return self.head.logits(pooled, training)

    def forward(self, features: dict, training: bool):
        """Returns (per_example_loss [B], logits [B, C], predictions)."""
        logits = self.logits(features, training)
        per_example_loss, predictions = self.head.loss_and_predictions(logits,
                                                                       features["label_ids"])
        return per_example_loss, logits, predictions

    def per_example_loss(self, features: dict, training: bool) -> tf.Tensor:
        return self.forward(features, training)[0]

    def predict(self, features: dict) -> dict[str, tf.Tensor]:
        per_example_loss, _, predictions = self.forward(features, training=False)
        return {"per_example_loss": per_example_loss, "predictions": predictions,
                "label_ids": features["label_ids"],
                "is_real_example": features["is_real_example"]}


def create_model(model: ClassifierModel, is_training: bool, input_ids, input_mask, segment_ids,
                 labels):
    """The original's `create_model`: returns (loss, per_example_loss, logits, probabilities).

    TF2 keeps variables in objects, so it takes the `ClassifierModel` holding them.
    """
    features = {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
                "label_ids": labels}
    per_example_loss, logits, predictions = model.forward(features, is_training)
    return tf.reduce_mean(per_example_loss), per_example_loss, logits, predictions


# -- validation --------------------------------------------------------------------------------
def validate(opts: ClassifyOptions, processors: dict) -> list[str]:
    """Every problem with the options, checked before any heavy work (empty list when fine)."""
    problems = []
    if not (opts.do_train or opts.do_eval or opts.do_predict):
        problems.append("At least one of `do_train`, `do_eval` or `do_predict' must be True.")
    hub = opts.bert_hub_module_handle
    problems += task.require(opts, ("data_dir", "task_name", "output_dir") + (
        () if hub else ("bert_config_file", "vocab_file")))
    if opts.task_name and opts.task_name.lower() not in processors:
        problems.append(f"--task_name={opts.task_name}: task not found; valid tasks: "
                        f"{', '.join(sorted(processors))}")
    problems += task.require_positive(opts, ("train_batch_size", "eval_batch_size",
                                             "predict_batch_size"))
    if opts.max_seq_length < 3 and opts.max_seq_length > 0:
        problems.append(f"--max_seq_length={opts.max_seq_length} leaves no room for text "
                        "([CLS] and [SEP] take 2)")
    if opts.do_train and opts.num_train_epochs <= 0:
        problems.append(f"--num_train_epochs={opts.num_train_epochs} must be positive")
    if opts.do_train and opts.learning_rate <= 0:
        problems.append(f"--learning_rate={opts.learning_rate} must be positive")
    if not 0.0 <= opts.warmup_proportion <= 1.0:
        problems.append(f"--warmup_proportion={opts.warmup_proportion} must be in [0, 1]")
    if opts.pooling not in POOLINGS:
        problems.append(f"--pooling={opts.pooling}: use one of {', '.join(POOLINGS)}")
    if opts.data_dir and not tf.io.gfile.isdir(opts.data_dir):
        problems.append(f"--data_dir={opts.data_dir}: directory not found")
    if hub:
        problems += _hub_problems(opts)
        # The runner checks; the model files are the module's (checked above).
        opts = dataclasses.replace(opts, bert_config_file=None, vocab_file=None,
                                   init_checkpoint=None)
    problems += task.validate_common(opts)[0]
    return problems


def _hub_problems(opts: ClassifyOptions) -> list[str]:
    """--bert_hub_module_handle: the module replaces the config, vocab and checkpoint flags."""
    from bert_finetune.export import module

    problems = [f"--{name}={getattr(opts, name)} is not used with --bert_hub_module_handle "
                "(the module has the config, vocab and weights)"
                for name in ("bert_config_file", "vocab_file", "init_checkpoint")
                if getattr(opts, name)]
    if opts.compute_dtype != "float32":
        problems.append(f"--compute_dtype={opts.compute_dtype}: --bert_hub_module_handle runs "
                        "the module as exported, in float32")
    try:
        config = module.read_module_config(opts.bert_hub_module_handle)
    except UserError as e:
        return problems + [f"--bert_hub_module_handle: {e}"]
    if opts.max_seq_length > config.max_position_embeddings:
        problems.append(f"Cannot use sequence length {opts.max_seq_length} because the BERT model "
                        "was only trained up to sequence length "
                        f"{config.max_position_embeddings} (--max_seq_length, "
                        f"--bert_hub_module_handle={opts.bert_hub_module_handle})")
    return problems


# -- the run -----------------------------------------------------------------------------------
class _Context(task.TaskContext):
    """What every phase of one classification run shares."""

    def __init__(self, opts: ClassifyOptions, processor: DataProcessor):
        strategy = task.make_strategy(opts)
        self.hub_encoder = None
        if opts.bert_hub_module_handle:
            from bert_finetune.export.module import HubEncoder

            # Loading creates the module's variables, which the model trains: under the
            # strategy (mirrored / on the TPU), so it must exist first.
            with strategy.scope():
                self.hub_encoder = HubEncoder(opts.bert_hub_module_handle)
            # The module's config, vocab and casing; the run record copies them into output_dir
            # as for a checkpoint run.
            opts = dataclasses.replace(opts, bert_config_file=self.hub_encoder.config_file,
                                       vocab_file=self.hub_encoder.vocab_file,
                                       do_lower_case=self.hub_encoder.do_lower_case)
        super().__init__(opts, strategy=strategy)
        self.processor = processor
        self.is_regression = bool(getattr(processor, "is_regression", False))

    def build_model(self, num_labels: int) -> ClassifierModel:
        with self.strategy.scope():
            return ClassifierModel(self.config, num_labels, self.is_regression,
                                   self.use_one_hot, self.opts.compute_dtype, self.hub_encoder,
                                   self.opts.pooling)

    def write_records(self, examples: list, label_list: list, name: str) -> tuple[str, int]:
        path = os.path.join(self.record_dir, name)
        fingerprint = {"vocab_file": self.opts.vocab_file, "do_lower_case": self.opts.do_lower_case}
        count = feature_lib.cached_convert_examples_to_features(
            examples, label_list, self.opts.max_seq_length, self.tokenizer, path, fingerprint,
            is_regression=self.is_regression)
        return path, count

    def dataset(self, path: str, batch_size: int) -> tf.data.Dataset:
        input_fn = tfrecord.file_based_input_fn_builder(
            path, self.opts.max_seq_length, is_training=False, drop_remainder=self.static_shapes,
            is_regression=self.is_regression, length_buckets=None if self.static_shapes else
            length_buckets.bucket_lengths(self.opts.max_seq_length))
        return input_fn({"batch_size": batch_size})


@dataclasses.dataclass
class _Data:
    """The examples one run needs, read (and so checked) before anything is written."""

    label_list: list
    train: list | None = None
    dev: list | None = None
    test: list | None = None
    num_train_steps: int = 0


def _read_data(opts: ClassifyOptions, processor: DataProcessor) -> _Data:
    """Reads every file the do_* flags need: a bad row fails the run before output_dir is touched.

    The original read the dev and test files only after training, so a typo in dev.tsv
    surfaced hours into a run.
    """
    # Train first: a generic task infers its labels from the train file.
    train = processor.get_train_examples(opts.data_dir) if opts.do_train else None
    data = _Data(label_list=processor.get_labels(), train=train)
    if opts.do_eval:
        data.dev = processor.get_dev_examples(opts.data_dir)
    if opts.do_predict:
        data.test = processor.get_test_examples(opts.data_dir)
    for split in ("train", "dev", "test"):
        if getattr(data, split) is not None and not getattr(data, split):
            raise UserError(f"--data_dir={opts.data_dir}: the task's {split} file has no examples")
    if train is not None:
        data.num_train_steps = int(len(train) / opts.train_batch_size * opts.num_train_epochs)
        if data.num_train_steps <= 0:
            raise UserError(f"{len(train)} train examples, --train_batch_size="
                            f"{opts.train_batch_size} and --num_train_epochs="
                            f"{opts.num_train_epochs} make zero training steps")
    return data


def run(opts: ClassifyOptions, processor: DataProcessor, task_flags: dict | None = None) -> dict:
    """Trains / evaluates / predicts as the flags say. Returns the eval results (if any)."""
    data = _read_data(opts, processor)
    ctx = _Context(opts, processor)
    opts = ctx.opts  # with a hub module: its config, vocab and casing
    fileio.ensure_output_dir(opts.output_dir)
    # An eval/predict-only run keeps the record of the run that trained the model (the one a
    # later run without repeated flags must follow).
    if ctx.chief and (opts.do_train or not task.has_record(opts.output_dir)):
        labels = "".join(f"{x}\n" for x in data.label_list)
        task.record_run(opts, ctx.config, {LABELS_FILE: labels}, task_flags)
    model = ctx.build_model(len(data.label_list))
    results: dict = {}
    try:
        if opts.do_train:
            _train(ctx, model, data)
        if opts.do_eval and ctx.chief:
            results = _evaluate(ctx, model, data)
        if opts.do_predict and ctx.chief:
            _predict(ctx, model, data)
    finally:
        ctx.close()
    return results


def _train(ctx: _Context, model: ClassifierModel, data: _Data) -> None:
    opts = ctx.opts
    examples, num_train_steps = data.train, data.num_train_steps
    num_warmup_steps = int(num_train_steps * opts.warmup_proportion)
    path, _ = ctx.write_records(examples, data.label_list, "train.tf_record")
    logging.info("***** Running training *****")
    logging.info("  Num examples = %d", len(examples))
    logging.info("  Batch size = %d", opts.train_batch_size)
    logging.info("  Num steps = %d", num_train_steps)
    train_opts = ctx.train_options(num_train_steps, num_warmup_steps, opts.train_batch_size,
                                   opts.learning_rate)
    trainer = loops.Trainer(ctx.strategy, model, train_opts)

    def dataset_fn(input_context: tf.distribute.InputContext, skip_batches: int):
        input_fn = tfrecord.file_based_input_fn_builder(
            path, opts.max_seq_length, is_training=True, drop_remainder=True,
            is_regression=ctx.is_regression, seed=ctx.train_seed(TRAIN_SEED),
            skip_batches=skip_batches, input_context=input_context, length_window=opts.length_buckets,
            length_buckets=length_buckets.bucket_lengths(opts.max_seq_length)
            if opts.length_buckets else None)
        return input_fn({"batch_size": input_context.get_per_replica_batch_size(
            opts.train_batch_size)})

    trainer.train(dataset_fn)


def _inference(ctx: _Context, model: ClassifierModel, examples: list, label_list: list,
               name: str, batch_size: int) -> tuple[dict, int, int]:
    """Writes `name` records and runs the model on them; returns (outputs, step, num_real)."""
    num_real = len(examples)
    if ctx.static_shapes:
        examples = task.pad_to_multiple(examples, batch_size, PaddingInputExample)
    path, _ = ctx.write_records(examples, label_list, name)
    logging.info("  Num examples = %d (%d actual, %d padding)", len(examples), num_real,
                 len(examples) - num_real)
    logging.info("  Batch size = %d", batch_size)
    step = loops.restore_for_inference(model.variables_by_name(), ctx.opts.output_dir,
                                       ctx.opts.init_checkpoint, ctx.opts.bert_hub_module_handle)
    out = loops.run_inference(ctx.strategy, model, ctx.dataset(path, batch_size),
                              num_examples=len(examples), what=f"Running on {name}",
                              **ctx.inference_options(-(-len(examples) // batch_size)))
    return out, step, num_real


def _evaluate(ctx: _Context, model: ClassifierModel, data: _Data) -> dict:
    opts = ctx.opts
    logging.info("***** Running evaluation *****")
    out, step, _ = _inference(ctx, model, data.dev, data.label_list, "eval.tf_record",
                              opts.eval_batch_size)
    weights = out["is_real_example"].astype(np.float32)
    per_example_loss = out["per_example_loss"]
    # "loss" is what TPUEstimator reported: the mean over batches of each batch's mean loss
    # (padding included); "eval_loss" is the mean over real examples.
    batch_means = [per_example_loss[i:i + opts.eval_batch_size].mean()
                   for i in range(0, len(per_example_loss), opts.eval_batch_size)]
    results: dict = {
        "eval_loss": np.float32(np.sum(per_example_loss * weights) / max(weights.sum(), 1.0)),
        "loss": np.float32(np.mean(batch_means)),
        "global_step": np.int64(step),
    }
    if ctx.is_regression:
        results.update(metrics.regression_metrics(out["label_ids"], out["predictions"], weights))
    else:
        results.update(metrics.classification_metrics(
            opts.task_name, out["label_ids"], out["predictions"], weights))
    task.write_eval_results(opts.output_dir, step, results)
    return results


def _predict(ctx: _Context, model: ClassifierModel, data: _Data) -> None:
    opts = ctx.opts
    examples, label_list = data.test, data.label_list
    logging.info("***** Running prediction*****")
    out, _, num_real = _inference(ctx, model, examples, label_list, "predict.tf_record",
                                  opts.predict_batch_size)
    predictions = out["predictions"]
    outputs.write_test_results(os.path.join(opts.output_dir, "test_results.tsv"), predictions,
                               num_real)
    outputs.write_predictions_jsonl(
        os.path.join(opts.output_dir, "predictions.jsonl"), [e.guid for e in examples],
        label_list, predictions, num_real, is_regression=ctx.is_regression)
