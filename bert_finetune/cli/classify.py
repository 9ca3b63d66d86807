r"""bert-classify: the drop-in for Google's run_classifier.py (same flags, same output files).

    bert-classify --task_name=MRPC --do_train=true --do_eval=true --data_dir=$GLUE_DIR/MRPC \
      --vocab_file=$BERT/vocab.txt --bert_config_file=$BERT/bert_config.json \
      --init_checkpoint=$BERT/bert_model.ckpt --max_seq_length=128 --train_batch_size=32 \
      --learning_rate=2e-5 --num_train_epochs=3.0 --output_dir=/tmp/mrpc_output/

From a module exported by bert-export (run_classifier_with_tfhub.py; no --vocab_file,
--bert_config_file or --init_checkpoint):

    bert-classify --task_name=MRPC --do_train=true --do_eval=true --data_dir=$GLUE_DIR/MRPC \
      --bert_hub_module_handle=/tmp/bert_module --output_dir=/tmp/mrpc_output/

A task of your own: `run(processors={"mytask": MyProcessor})` from your script (see examples/).
"""

from __future__ import annotations

import os

from absl import flags

from bert_finetune import classify, fileio, task
from bert_finetune.cli import flags as common_flags
from bert_finetune.cli.common import fail, run_main
from bert_finetune.data.glue import PROCESSORS
from bert_finetune.errors import UserError

FLAGS = flags.FLAGS
PROGRAM = "bert-classify"

flags.DEFINE_string(
    "data_dir", None,
    "The input data dir. Should contain the .tsv files (or other data files) for the task.")
flags.DEFINE_string("task_name", None, "The name of the task to train.")
common_flags.define_model_flags()
flags.DEFINE_bool("do_train", False, "Whether to run training.")
flags.DEFINE_bool("do_eval", False, "Whether to run eval on the dev set.")
flags.DEFINE_bool("do_predict", False,
                  "Whether to run the model in inference mode on the test set.")
flags.DEFINE_integer("train_batch_size", 32, "Total batch size for training.")
flags.DEFINE_integer("eval_batch_size", 8, "Total batch size for eval.")
flags.DEFINE_integer("predict_batch_size", 8, "Total batch size for predict.")
flags.DEFINE_float("learning_rate", 5e-5, "The initial learning rate for Adam.")
flags.DEFINE_float("num_train_epochs", 3.0, "Total number of training epochs to perform.")
flags.DEFINE_float(
    "warmup_proportion", 0.1,
    "Proportion of training to perform linear learning rate warmup for. "
    "E.g., 0.1 = 10% of training.")
common_flags.define_runner_flags()
with common_flags.flag_group("Fine-tuning from a module (run_classifier_with_tfhub.py)"):
    flags.DEFINE_string(
        "bert_hub_module_handle", None,
        "Path or URL of a BERT module exported by bert-export, as run_classifier_with_tfhub.py: "
        "its encoder (fine-tuned), config, vocab and casing replace --bert_config_file, "
        "--vocab_file, --init_checkpoint and --do_lower_case.")
flags.DEFINE_enum(
    "pooling", "cls", list(classify.POOLINGS),
    "What the classifier reads: cls = the pooler on [CLS] (the original); mean = the mean of the "
    "last layer over the real tokens (for sentence encoders trained that way, e.g. "
    "all-MiniLM-L6-v2; compared in the README's MRPC sweep). Recorded: later runs on the same "
    "output_dir, bert-export and bert-predict use the trained one.")
# Task options beyond the original.
flags.DEFINE_string("xnli_language", "zh", "XNLI: the language to train and evaluate on.")
flags.DEFINE_enum("input_format", "tsv", ["tsv", "csv", "jsonl"],
                  "generic task: format of train/dev/test files.")
flags.DEFINE_string("text_a_column", None,
                    "generic task: column (header name or 0-based index; JSONL key) of text_a.")
flags.DEFINE_string("text_b_column", None, "generic task: column of text_b (pairs only).")
flags.DEFINE_string("label_column", None, "generic task: column of the label.")
flags.DEFINE_bool("has_header", True, "generic task: the first row of TSV/CSV names columns.")
flags.DEFINE_list("labels", None,
                  "generic task: comma-separated labels in id order (default: inferred from "
                  "the train file, sorted).")
flags.DEFINE_string("train_file", None, "generic task: train file name (default train.<fmt>).")
flags.DEFINE_string("dev_file", None, "generic task: dev file name (default dev.<fmt>).")
flags.DEFINE_string("test_file", None, "generic task: test file name (default test.<fmt>).")
flags.DEFINE_bool("regression", False, "generic task: the label is a real number (MSE loss).")

_GENERIC_FLAGS = ("input_format", "text_a_column", "text_b_column", "label_column", "has_header",
                  "labels", "train_file", "dev_file", "test_file", "regression")
# What a later predict/eval run takes from the recorded run when not given again.
_RECORDED = ("task_name", "max_seq_length", "do_lower_case", "xnli_language",
             "pooling") + _GENERIC_FLAGS


def _recorded_run(output_dir: str | None) -> dict | None:
    return task.recorded_run(output_dir)


def _recorded_labels(output_dir: str) -> list[str] | None:
    path = os.path.join(output_dir, classify.LABELS_FILE)
    try:
        if not fileio.is_file(path):
            return None
        lines = fileio.read_text(path).split("\n")  # not splitlines(): labels are kept whole
        return (lines[:-1] if lines[-1] == "" else lines) or None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the recorded labels ({e})") from None


def _options() -> tuple[classify.ClassifyOptions, dict]:
    """ClassifyOptions from the flags, completed from a recorded run in output_dir."""
    opts, recorded = common_flags.options_from_flags(classify.ClassifyOptions, _RECORDED)
    if opts.bert_hub_module_handle:
        # The module has the config and vocab: not the recorded copies, only what was given.
        opts.bert_config_file, opts.vocab_file = FLAGS.bert_config_file, FLAGS.vocab_file
    extra = {name: FLAGS[name].value for name in _GENERIC_FLAGS + ("xnli_language",)}
    if recorded:
        for name in _RECORDED:
            if not common_flags.explicitly_set(name) and name in recorded.get("task_flags", {}):
                extra[name] = recorded["task_flags"][name]
        if not opts.do_train and extra["labels"] is None and not extra["regression"]:
            # Labels inferred at training time: the trained head's, not the data_dir's (which
            # need not hold a train file at all).
            extra["labels"] = _recorded_labels(FLAGS.output_dir)
    return opts, extra


def _processor(opts: classify.ClassifyOptions, extra: dict, processors: dict):
    name = opts.task_name.lower()
    cls = processors[name]
    if name == "xnli":
        return cls(language=extra["xnli_language"])
    if name == "generic":
        return cls(extra["input_format"], extra["text_a_column"], extra["text_b_column"],
                   label_column=extra["label_column"], has_header=extra["has_header"],
                   labels=extra["labels"], train_file=extra["train_file"],
                   dev_file=extra["dev_file"], test_file=extra["test_file"],
                   is_regression=extra["regression"], data_dir=opts.data_dir)
    return cls()


def main(argv: list[str], processors: dict | None = None) -> None:
    processors = {k.lower(): v for k, v in (processors or PROCESSORS).items()}
    opts, extra = _options()
    problems = classify.validate(opts, processors)
    if opts.task_name and opts.task_name.lower() == "generic" and not (
            extra["text_a_column"] and extra["label_column"]):
        problems.append("--task_name=generic needs --text_a_column and --label_column")
    if opts.bert_hub_module_handle and common_flags.explicitly_set("do_lower_case"):
        problems.append("--do_lower_case is not used with --bert_hub_module_handle (the "
                        "module's tokenization_info has the casing)")
    if problems:
        fail(PROGRAM, " | ".join(problems) if len(problems) > 1 else problems[0])
    processor = _processor(opts, extra, processors)
    classify.run(opts, processor, task_flags=extra)


def run(processors: dict | None = None) -> None:
    """Console-script entry point; pass `processors` to add tasks of your own."""
    run_main(PROGRAM, lambda argv: main(argv, processors))


if __name__ == "__main__":
    run()
