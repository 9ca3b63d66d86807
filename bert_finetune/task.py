"""The skeleton every task shares (bert-classify, bert-squad, bert-pretrain, ...).

A task module holds an options dataclass with the original script's flag names (extending
`TaskOptions`, which carries the model, checkpointing, TPU and runner flags every script has),
a `validate()` that returns every problem at once (`validate_common` does the shared checks),
and a `run()` that drives the runner through a `TaskContext`. Each run writes its record
(`record_run`) so that a later predict/export needs only `--output_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging

from bert_finetune import (
    checkpoints,
    fileio,
    fused,
    fused_matmul,
    modeling,
    optimization,
    outputs,
    tokenization,
)
from bert_finetune.data import length_buckets
from bert_finetune.errors import UserError
from bert_finetune.runner import branches, distribute, loops, xla

RUN_FLAGS_FILE = "run_flags.json"
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass
class TaskOptions:
    """The flags every original script shares (same names and defaults) plus the runner's."""

    bert_config_file: str | None = None
    vocab_file: str | None = None
    output_dir: str | None = None
    init_checkpoint: str | None = None
    do_lower_case: bool = True
    max_seq_length: int = 128
    save_checkpoints_steps: int = 1000
    iterations_per_loop: int = 1000
    use_tpu: bool = False
    tpu_name: str | None = None
    tpu_zone: str | None = None
    gcp_project: str | None = None
    master: str | None = None
    num_tpu_cores: int = 8
    # Additions.
    keep_checkpoint_max: int = 5
    compute_dtype: str = "float32"
    use_xla: bool | None = None  # None: the default per device (runner.xla)
    distribution_strategy: str = "auto"
    log_every_n_steps: int = 100
    gradient_accumulation_steps: int = 1
    length_buckets: int = 0
    optimizer: str = "adamw"  # optimization.OPTIMIZERS
    seed: int | None = None  # None: the original's fixed shuffle, unseeded initialisation
    use_one_hot_embeddings: bool | None = None  # None: on TPU only, as the original


# -- validation --------------------------------------------------------------------------------
def require(opts, names: tuple[str, ...]) -> list[str]:
    """`--name is required` for each name whose option is empty."""
    return [f"--{name} is required" for name in names if not getattr(opts, name)]


def require_positive(opts, names: tuple[str, ...]) -> list[str]:
    return [f"--{name}={getattr(opts, name)} must be positive"
            for name in names if getattr(opts, name) <= 0]


def check_runner_flags(opts) -> list[str]:
    """compute_dtype, distribution_strategy, TPU and output_dir checks every training task makes."""
    problems = []
    if opts.compute_dtype not in COMPUTE_DTYPES:
        problems.append(f"--compute_dtype={opts.compute_dtype}: use float32, bfloat16 or float16")
    if opts.distribution_strategy not in distribute.STRATEGIES:
        problems.append(f"--distribution_strategy={opts.distribution_strategy}: use one of "
                        f"{', '.join(distribute.STRATEGIES)}")
    if opts.use_tpu and not (opts.tpu_name or opts.master):
        problems.append("--use_tpu=true needs --tpu_name (or --master)")
    optimizer = getattr(opts, "optimizer", "adamw")
    if optimizer not in optimization.OPTIMIZERS:
        problems.append(f"--optimizer={optimizer}: use one of "
                        f"{', '.join(optimization.OPTIMIZERS)}")
    buckets = getattr(opts, "length_buckets", 0)
    if buckets < 0:
        problems.append(f"--length_buckets={buckets} must be 0 (off) or positive")
    if buckets and opts.use_tpu:
        problems.append("--length_buckets needs varying batch shapes, which TPUs do not take")
    accumulate = getattr(opts, "gradient_accumulation_steps", 1)
    batch = getattr(opts, "train_batch_size", 0)
    if accumulate > 0 and batch > 0 and batch % accumulate:
        problems.append(f"--gradient_accumulation_steps={accumulate} "
                        f"must divide --train_batch_size={batch}")
    if opts.output_dir and tf.io.gfile.exists(opts.output_dir) and not tf.io.gfile.isdir(
            opts.output_dir):
        problems.append(f"--output_dir={opts.output_dir} is a file, not a directory")
    return problems


def check_model_files(config_file: str | None, max_seq_length: int, vocab_file: str | None,
                      init_checkpoint: str | None
                      ) -> tuple[list[str], modeling.BertConfig | None]:
    """Reads and cross-checks the config, vocab and checkpoint that are given.

    Returns (problems, the parsed config or None).
    """
    problems = []
    config = None
    if config_file:
        try:
            config = modeling.BertConfig.from_json_file(config_file)
        except UserError as e:
            problems.append(f"--bert_config_file: {e}")
    if config is not None and max_seq_length > config.max_position_embeddings:
        problems.append(f"Cannot use sequence length {max_seq_length} because the BERT model "
                        f"was only trained up to sequence length {config.max_position_embeddings} "
                        f"(--max_seq_length, {config_file})")
    if vocab_file:
        problems += _check_vocab(vocab_file, config, config_file)
    if init_checkpoint:
        try:
            checkpoints.resolve_checkpoint(init_checkpoint)
            if config is not None:
                expected = {n: shape for n, shape, _ in modeling.variable_specs(config)}
                problem = checkpoints.check_compatible(init_checkpoint, expected)
                if problem:
                    problems.append(problem)
        except UserError as e:
            problems.append(str(e))
    return problems, config


def check_casing(do_lower_case: bool, init_checkpoint: str | None) -> list[str]:
    try:
        tokenization.validate_case_matches_checkpoint(do_lower_case, init_checkpoint)
    except UserError as e:
        return [str(e)]
    return []


def validate_common(opts: TaskOptions, need_vocab: bool = True
                    ) -> tuple[list[str], modeling.BertConfig | None]:
    """The checks every task makes: runner flags, config, vocab, checkpoint and casing.

    Returns (problems, the parsed config or None). Required-ness of the files is the task's
    business (`require`); a file that is given is read and checked here.
    """
    problems = require_positive(opts, ("max_seq_length", "save_checkpoints_steps",
                                       "iterations_per_loop", "num_tpu_cores",
                                       "log_every_n_steps", "gradient_accumulation_steps"))
    problems += check_runner_flags(opts)
    model_problems, config = check_model_files(
        opts.bert_config_file, opts.max_seq_length, opts.vocab_file if need_vocab else None,
        opts.init_checkpoint)
    problems += model_problems
    problems += check_casing(opts.do_lower_case, opts.init_checkpoint)
    return problems, config


def _check_vocab(vocab_file: str, config: modeling.BertConfig | None,
                 config_file: str | None) -> list[str]:
    try:
        vocab = tokenization.load_vocab(vocab_file)
    except UserError as e:
        return [f"--vocab_file: {e}"]
    problems = []
    if config is not None and len(vocab) > config.vocab_size:
        problems.append(f"--vocab_file={vocab_file} has {len(vocab)} tokens but {config_file} "
                        f"says vocab_size={config.vocab_size}: vocab and config do not belong "
                        "together")
    for token in ("[CLS]", "[SEP]"):
        if token not in vocab:
            problems.append(f"--vocab_file={vocab_file} has no {token} token")
    return problems


# -- the run record ----------------------------------------------------------------------------
def _comparable(path: str) -> str:
    """`path` normalised for "is this the same file" (abspath would mangle `gs://b/x`)."""
    return path.rstrip("/") if fileio.is_remote(path) else os.path.abspath(path)


def record_run(opts, config: modeling.BertConfig, files: dict[str, str] | None = None,
               task_flags: dict | None = None) -> None:
    """Writes what the run was made from into output_dir, so predict/export need no flags.

    bert_config.json, vocab.txt, do_lower_case.txt, the task's own `files` ({name: text}, e.g.
    label_list.txt), then run_flags.json (the options, plus `task_flags`) last: its presence
    tells a later run that the record is complete.
    """
    out = opts.output_dir
    config.to_json_file(os.path.join(out, "bert_config.json"))
    for name, text in (files or {}).items():
        fileio.atomic_write(os.path.join(out, name), text)
    fileio.atomic_write(os.path.join(out, tokenization.SIDECAR_NAME),
                        "true\n" if opts.do_lower_case else "false\n")
    vocab_copy = os.path.join(out, "vocab.txt")
    if _comparable(opts.vocab_file) != _comparable(vocab_copy):
        # tf.io.gfile: either side may be remote (gs://).
        tmp = fileio.temp_path(vocab_copy)
        tf.io.gfile.copy(opts.vocab_file, tmp, overwrite=True)
        fileio.replace(tmp, vocab_copy)
    record = dataclasses.asdict(opts)
    record["task_flags"] = dict(task_flags or {})
    fileio.atomic_write(os.path.join(out, RUN_FLAGS_FILE),
                        json.dumps(record, indent=2, sort_keys=True) + "\n")


def has_record(output_dir: str) -> bool:
    return tf.io.gfile.exists(os.path.join(output_dir, RUN_FLAGS_FILE))


def recorded_run(output_dir: str | None) -> dict | None:
    """The run_flags.json of output_dir (local or remote), or None when there is none."""
    if not output_dir:
        return None
    path = os.path.join(output_dir, RUN_FLAGS_FILE)
    try:
        if not fileio.is_file(path):
            return None
        return json.loads(fileio.read_text(path))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the recorded run ({e})") from None


# -- the context of one run --------------------------------------------------------------------
def make_strategy(opts: TaskOptions) -> tf.distribute.Strategy:
    """The run's strategy, from the TPU and distribution flags (before any variable exists)."""
    return distribute.get_strategy(opts.use_tpu, opts.tpu_name, opts.tpu_zone, opts.gcp_project,
                                   opts.master, opts.distribution_strategy)


class TaskContext:
    """What every phase of one run shares: config, tokenizer, strategy, where records go.

    `strategy`: one made already (a task that creates variables before the context, e.g. by
    loading a module, needs the strategy first); by default `make_strategy(opts)`.
    """

    def __init__(self, opts: TaskOptions, tokenizer: tokenization.FullTokenizer | None = None,
                 strategy: tf.distribute.Strategy | None = None):
        self.opts = opts
        self.config = modeling.BertConfig.from_json_file(opts.bert_config_file)
        if tokenizer is None and opts.vocab_file:
            tokenizer = tokenization.FullTokenizer(opts.vocab_file, opts.do_lower_case)
        self.tokenizer = tokenizer  # None for tasks on token ids (bert-pretrain)
        self.strategy = strategy if strategy is not None else make_strategy(opts)
        self.chief = distribute.is_chief(self.strategy)
        # Fixed batch shapes (drop_remainder, padding examples) where XLA or a TPU needs them.
        self.static_shapes = bool(opts.use_tpu or opts.use_xla)
        # Non-chief workers keep their record files out of output_dir.
        self.record_dir = opts.output_dir if self.chief else tempfile.mkdtemp(prefix="bert_w_")
        one_hot = opts.use_one_hot_embeddings
        self.use_one_hot = opts.use_tpu if one_hot is None else one_hot
        if opts.seed is not None:  # initialisation, dropout and the training shuffle
            tf.random.set_seed(opts.seed)

    def train_seed(self, default: int) -> int:
        """The training shuffle's seed: --seed if given, else the task's fixed one."""
        return default if self.opts.seed is None else self.opts.seed

    def close(self) -> None:
        """Removes a non-chief worker's private record directory."""
        if not self.chief:
            shutil.rmtree(self.record_dir, ignore_errors=True)

    def inference_options(self, num_batches: int | None) -> dict[str, bool]:
        """How to run inference over num_batches batches: `use_xla` (compile it whole) and
        `kernels` (XLA kernels for its element-wise chains otherwise), the keyword arguments of
        loops.run_inference; logs the reasons."""
        use, why = xla.inference_xla(self.opts.use_xla, self.strategy, num_batches)
        logging.info("  XLA for inference: %s (%s)", "on" if use else "off", why)
        kernels, why = xla.inference_kernels_xla(self.opts.use_xla, use, self.strategy,
                                                 self.opts.compute_dtype)
        what = "off"
        if kernels:  # bfloat16: biases in those kernels; float32: where this TensorFlow has
            # the op, the GELU inside its dense layer
            dtype = tf.as_dtype(self.opts.compute_dtype)
            what = "fused element-wise chains"
            if fused_matmul.scores_usable(dtype):
                what += (" (the attention's scale and mask inside oneDNN's batched matmul, its "
                         "softmax oneDNN's)")
            if dtype == tf.bfloat16:
                what += ("; " + fused.BIAS_DEFERRED_LOG + "; their kernels cast and transposed "
                         "once per run (bert_finetune.inference_weights)")
                if fused_matmul.fixed_usable(None, dtype):
                    what += ", laid out for oneDNN once (bert_finetune.fused_matmul)"
                if fused_matmul.fixed_usable(self.config.hidden_act.lower(), dtype):
                    what += "; the GELU layer's bias and GELU inside its matmul"
            elif fused_matmul.usable(self.config.hidden_act.lower(), dtype):
                what += "; a GELU dense layer as one oneDNN op (bert_finetune.fused_matmul)"
        logging.info("  XLA kernels in inference: %s (%s)", what, why)
        logging.info("  Batch slices side by side: %d (%s)", *branches.batch_branches(self.strategy))
        return {"use_xla": use, "kernels": kernels}

    def train_options(self, num_train_steps: int, num_warmup_steps: int, train_batch_size: int,
                      learning_rate: float) -> loops.TrainOptions:
        opts = self.opts
        kernels, why = xla.training_kernels_xla(opts.use_xla, self.strategy, opts.compute_dtype)
        what = "off"
        if kernels:  # bfloat16: no XLA weight gradients (the bare matmuls' are oneDNN's)
            what = ("fused element-wise chains; " + fused.BIAS_DEFERRED_LOG
                    if tf.as_dtype(opts.compute_dtype) == tf.bfloat16
                    else "fused element-wise chains, weight gradients by shape, bias "
                    "gradients by XLA")
        logging.info("  XLA kernels in the training step: %s (%s)", what, why)
        slices, why = branches.batch_branches(self.strategy)
        logging.info("  Batch slices side by side in the training step: %d (%s)", slices, why)
        window = opts.length_buckets
        if window:
            logging.info("  Length-aware batches (--length_buckets=%d): each window of %d "
                         "batches of the shuffled stream re-cut by length, each batch padded "
                         "to the first of %s that fits", window, window,
                         length_buckets.bucket_lengths(opts.max_seq_length))
        accumulate = opts.gradient_accumulation_steps
        if accumulate > 1:
            replicas = self.strategy.num_replicas_in_sync
            logging.info("  Gradient accumulation: %d micro-batches of %d examples per replica "
                         "(%d replica(s)) for each optimizer step on %d examples", accumulate,
                         train_batch_size // (accumulate * replicas), replicas, train_batch_size)
        return loops.TrainOptions(
            output_dir=opts.output_dir, train_batch_size=train_batch_size,
            num_train_steps=num_train_steps, num_warmup_steps=num_warmup_steps,
            learning_rate=learning_rate, save_checkpoints_steps=opts.save_checkpoints_steps,
            iterations_per_loop=opts.iterations_per_loop,
            keep_checkpoint_max=opts.keep_checkpoint_max, init_checkpoint=opts.init_checkpoint,
            use_xla=bool(opts.use_xla), xla_kernels=kernels, batch_branches=slices,
            dynamic_loss_scale=opts.compute_dtype == "float16",
            log_every_n_steps=opts.log_every_n_steps,
            gradient_accumulation_steps=opts.gradient_accumulation_steps,
            optimizer=opts.optimizer)


def pad_to_multiple(items: list, batch_size: int, make_padding) -> list:
    """`items` padded with `make_padding()` to a multiple of batch_size (fixed shapes, as TPU)."""
    padded = list(items)
    while len(padded) % batch_size:
        padded.append(make_padding())
    return padded


def write_eval_results(output_dir: str, step: int, results: dict,
                       name: str = "eval_results.txt") -> None:
    """eval_results.txt (the original's format) and TensorBoard scalars in output_dir/eval.

    TPUEstimator put eval summaries there, at the checkpoint's step.
    """
    outputs.write_eval_results(os.path.join(output_dir, name), results)
    writer = tf.summary.create_file_writer(os.path.join(output_dir, "eval"))
    with writer.as_default(step=int(step)):
        for key, value in results.items():
            if key != "global_step":
                tf.summary.scalar(key, float(value))
    writer.close()
