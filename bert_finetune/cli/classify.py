"""bert-classify: the drop-in for Google's run_classifier.py (same flags, same output files).

    bert-classify --task_name=MRPC --do_train=true --do_eval=true --data_dir=$GLUE_DIR/MRPC \
      --vocab_file=$BERT/vocab.txt --bert_config_file=$BERT/bert_config.json \
      --init_checkpoint=$BERT/bert_model.ckpt --max_seq_length=128 --train_batch_size=32 \
      --learning_rate=2e-5 --num_train_epochs=3.0 --output_dir=/tmp/mrpc_output/

A task of your own: `run(processors={"mytask": MyProcessor})` from your script (see examples/).
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

from bert_finetune import classify, fileio
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
flags.DEFINE_string(
    "bert_hub_module_handle", None,
    "Handle (path or URL) of a BERT module exported by bert-export, as run_classifier_with_tfhub: "
    "its encoder, vocab and casing replace --bert_config_file, --vocab_file, --init_checkpoint "
    "and --do_lower_case.")
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
_RECORDED = ("task_name", "max_seq_length", "do_lower_case", "xnli_language") + _GENERIC_FLAGS


def _recorded_run(output_dir: str | None) -> dict | None:
    path = os.path.join(output_dir, classify.RUN_FLAGS_FILE) if output_dir else None
    if not path:
        return None
    try:
        # Local or remote (gs://) output_dir alike.
        if not fileio.is_file(path):
            return None
        return json.loads(fileio.read_text(path))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the recorded run ({e})") from None


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
    fields = {f.name for f in dataclasses.fields(classify.ClassifyOptions)}
    values = {name: FLAGS[name].value for name in fields if name in FLAGS}
    extra = {name: FLAGS[name].value for name in _GENERIC_FLAGS + ("xnli_language",)}
    recorded = _recorded_run(FLAGS.output_dir)
    if recorded:
        out = FLAGS.output_dir
        if not common_flags.explicitly_set("bert_config_file") and not FLAGS.bert_hub_module_handle:
            values["bert_config_file"] = os.path.join(out, "bert_config.json")
        if not common_flags.explicitly_set("vocab_file") and not FLAGS.bert_hub_module_handle:
            values["vocab_file"] = os.path.join(out, "vocab.txt")
        for name in _RECORDED:
            if not common_flags.explicitly_set(name) and name in recorded.get("task_flags", {}):
                extra[name] = recorded["task_flags"][name]
            if not common_flags.explicitly_set(name) and name in recorded and name in values:
                values[name] = recorded[name]
        if not values["do_train"] and extra["labels"] is None and not extra["regression"]:
            # Labels inferred at training time: the trained head's, not the data_dir's (which
            # need not hold a train file at all).
            extra["labels"] = _recorded_labels(out)
    return classify.ClassifyOptions(**values), extra


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
    if problems:
        fail(PROGRAM, " | ".join(problems) if len(problems) > 1 else problems[0])
    processor = _processor(opts, extra, processors)
    classify.run(opts, processor, task_flags=extra)


def run(processors: dict | None = None) -> None:
    """Console-script entry point; pass `processors` to add tasks of your own."""
    run_main(PROGRAM, lambda argv: main(argv, processors))


if __name__ == "__main__":
    run()
