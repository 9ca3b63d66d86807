"""Flags shared by the console scripts, with the original scripts' names and defaults."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

from absl import flags

from bert_finetune import task
from bert_finetune.cli import usage

FLAGS = flags.FLAGS


@contextlib.contextmanager
def flag_group(title: str) -> Iterator[None]:
    """Flags defined inside are listed under `title` by --help (among the additions).

        with flag_group("SQuAD additions"):
            flags.DEFINE_bool(...)
    """
    before = set(FLAGS)
    yield
    usage.set_group(sorted(set(FLAGS) - before), title)


def define_model_flags(max_seq_length: int = 128) -> None:
    """bert_config_file, vocab_file, init_checkpoint, do_lower_case, max_seq_length, output_dir.

    `max_seq_length` is the flag's default (run_classifier.py: 128, run_squad.py: 384).
    """
    flags.DEFINE_string(
        "bert_config_file", None,
        "The config json file corresponding to the pre-trained BERT model. "
        "This specifies the model architecture.")
    flags.DEFINE_string("vocab_file", None,
                        "The vocabulary file that the BERT model was trained on.")
    flags.DEFINE_string(
        "output_dir", None,
        "The output directory where the model checkpoints will be written.")
    flags.DEFINE_string(
        "init_checkpoint", None,
        "Initial checkpoint (usually from a pre-trained BERT model): a prefix such as "
        ".../bert_model.ckpt or a directory (its latest checkpoint).")
    flags.DEFINE_bool(
        "do_lower_case", True,
        "Whether to lower case the input text. Should be True for uncased "
        "models and False for cased models.")
    flags.DEFINE_integer(
        "max_seq_length", max_seq_length,
        "The maximum total input sequence length after WordPiece tokenization. "
        "Sequences longer than this will be truncated, and sequences shorter "
        "than this will be padded.")


def define_runner_flags() -> None:
    """Checkpointing, TPU and distribution flags."""
    flags.DEFINE_integer("save_checkpoints_steps", 1000,
                         "How often to save the model checkpoint.")
    flags.DEFINE_integer("iterations_per_loop", 1000,
                         "How many steps to make in each estimator call (here: in each "
                         "tf.function call of the training loop).")
    flags.DEFINE_bool("use_tpu", False, "Whether to use TPU or GPU/CPU.")
    flags.DEFINE_string(
        "tpu_name", None,
        "The Cloud TPU to use for training. This should be either the name "
        "used when creating the Cloud TPU, or a grpc://ip.address.of.tpu:8470 url.")
    flags.DEFINE_string(
        "tpu_zone", None,
        "[Optional] GCE zone where the Cloud TPU is located in. If not "
        "specified, we will attempt to automatically detect the GCE project from metadata.")
    flags.DEFINE_string(
        "gcp_project", None,
        "[Optional] Project name for the Cloud TPU-enabled project. If not "
        "specified, we will attempt to automatically detect the GCE project from metadata.")
    flags.DEFINE_string("master", None, "[Optional] TensorFlow master URL.")
    flags.DEFINE_integer(
        "num_tpu_cores", 8,
        "Only used if `use_tpu` is True. Total number of TPU cores to use "
        "(TPUStrategy uses every core of the TPU it connects to).")
    with flag_group("Runner additions (every training command)"):
        flags.DEFINE_integer("keep_checkpoint_max", 5,
                             "How many model.ckpt-N to keep (newest).")
        flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16", "float16"],
                          "Activation dtype (mixed precision); variables stay float32.")
        flags.DEFINE_bool("use_xla", None,
                          "Compile with XLA (jit_compile): true compiles the training step "
                          "(fixed batch shapes) and inference, false neither (no XLA kernels "
                          "at all). Default: the faster per device as measured: training off "
                          "(float32/bfloat16 on CPU: XLA kernels for the element-wise chains "
                          "and for the weight gradients of the shapes measured faster); "
                          "inference on for AVX2-only CPUs on runs of >= 128 batches, off "
                          "elsewhere (on CPU with XLA kernels for the element-wise chains).")
        flags.DEFINE_integer("log_every_n_steps", 100,
                             "Off TPU: a progress line (step, loss, learning rate, examples/s, "
                             "ETA) at least every this many steps and every ~30 s, whatever "
                             "--iterations_per_loop is (on TPU: one line per loop).")
        flags.DEFINE_integer("gradient_accumulation_steps", 1,
                             "Cut each step's batch into this many micro-batches and sum their "
                             "gradients before the clip and the update: the same training as "
                             "one step on the whole --train_batch_size, with the activation "
                             "memory of one micro-batch. Must divide each replica's batch.")
        flags.DEFINE_integer("length_buckets", 0,
                             "Training: 0 pads every example to --max_seq_length (the "
                             "original); N > 0 pads each batch only to its longest example "
                             "rounded up to one of 8 bucket lengths, after grouping examples "
                             "by length within windows of N batches of the shuffled stream "
                             "(1: the original batches, less padding; 8 is a good choice). "
                             "bert-classify's evaluation and prediction always pad per batch "
                             "(same outputs) unless shapes must be static (TPU, XLA); "
                             "bert-squad pads per batch at prediction only with N > 0.")
        flags.DEFINE_enum("optimizer", "adamw", ["adamw", "adamw_bc", "lamb"],
                          "adamw: the original's AdamWeightDecay (Adam without bias "
                          "correction); adamw_bc: the same with Adam's bias correction (as "
                          "PyTorch's/Keras' AdamW); lamb: LAMB, for large-batch pretraining.")
        flags.DEFINE_integer("seed", None,
                             "Seeds initialisation, dropout and the training shuffle (unset: "
                             "the original's fixed shuffle, unseeded initialisation).")
        flags.DEFINE_enum("distribution_strategy", "auto",
                          ["auto", "default", "mirrored", "multi_worker", "tpu"],
                          "auto: TPU if --use_tpu, MultiWorkerMirrored if TF_CONFIG names "
                          "several workers, Mirrored if several GPUs, else the default strategy.")


def explicitly_set(name: str) -> bool:
    """Whether the flag was given on the command line (or in a --flagfile)."""
    return FLAGS[name].present > 0


def options_from_flags(options_cls, recorded_names: tuple[str, ...] = ()):
    """`options_cls` (a task's options dataclass) filled from the flags of the same names.

    When `--output_dir` holds the record of an earlier run (run_flags.json), flags not given
    again are completed from it: bert_config_file and vocab_file point at the record's copies,
    and each of `recorded_names` takes the recorded value. Returns (options, record or None).
    """
    fields = {f.name for f in dataclasses.fields(options_cls)}
    values = {name: FLAGS[name].value for name in fields if name in FLAGS}
    recorded = task.recorded_run(FLAGS.output_dir)
    if recorded:
        out = FLAGS.output_dir
        if not explicitly_set("bert_config_file"):
            values["bert_config_file"] = os.path.join(out, "bert_config.json")
        if not explicitly_set("vocab_file"):
            values["vocab_file"] = os.path.join(out, "vocab.txt")
        for name in recorded_names:
            if name in values and name in recorded and not explicitly_set(name):
                values[name] = recorded[name]
    return options_cls(**values), recorded
