"""A fine-tuned classifier read back from a `bert-classify` output directory (its run record).

`bert-classify` leaves in `--output_dir` what a later export or prediction needs, so none of it
has to be repeated on the command line:
  run_flags.json     the run's flags (task_name, max_seq_length, do_lower_case, task_flags ...)
  bert_config.json   the encoder's config
  vocab.txt          the vocabulary the examples were tokenized with
  do_lower_case.txt  `true` / `false`
  label_list.txt     one label per line, in id order (`None` for a regression task)
  model.ckpt-N       the fine-tuned weights (the latest one, by the `checkpoint` state file)

`load_run` reads and checks all of it (one UserError naming the file), `RunRecord.build_model`
restores the `ClassifierModel` from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from bert_finetune import classify, fileio, modeling, tokenization
from bert_finetune.data import glue
from bert_finetune.data.examples import REGRESSION_PLACEHOLDER
from bert_finetune.errors import UserError
from bert_finetune.runner import loops


@dataclasses.dataclass
class RunRecord:
    """What a fine-tuned classifier was made from (see the module doc)."""

    run_dir: str
    config: modeling.BertConfig
    vocab_file: str
    do_lower_case: bool
    max_seq_length: int
    label_list: list[str]
    is_regression: bool
    sentence_pair: bool  # the task's examples have a text_b
    task_name: str
    checkpoint: str  # prefix of the latest model.ckpt-N

    @property
    def placeholder_label(self) -> str:
        """The label given to unlabelled inputs on the way to features (never predicted)."""
        return REGRESSION_PLACEHOLDER if self.is_regression else self.label_list[0]

    def build_model(self) -> classify.ClassifierModel:
        """The ClassifierModel with the run's latest fine-tuned weights (every variable)."""
        model = classify.ClassifierModel(self.config, len(self.label_list), self.is_regression)
        loops.restore_for_inference(model.variables_by_name(), self.run_dir, None)
        return model


def _read(run_dir: str, name: str) -> str:
    path = os.path.join(run_dir, name)
    if not fileio.is_file(path):
        raise UserError(f"--run_dir={run_dir}: {name} is missing; is this the output_dir of a "
                        "bert-classify run?")
    try:
        return fileio.read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it ({e})") from None


def task_shape(task_name: str, task_flags: dict) -> tuple[bool | None, bool | None]:
    """(is_regression, sentence_pair) of a task, None where the task is not one we know."""
    name = task_name.lower()
    if name == "generic":
        pair = task_flags.get("text_b_column") not in (None, "")
        return bool(task_flags.get("regression")), pair
    cls = glue.PROCESSORS.get(name)
    if cls is None:
        return None, None
    processor = cls(language=task_flags.get("xnli_language") or "zh") if name == "xnli" else cls()
    layout = processor.test.layout
    return bool(getattr(processor, "is_regression", False)), layout.text_b is not None


def load_run(run_dir: str, sentence_pair: bool | None = None) -> RunRecord:
    """Reads and checks the run record in `run_dir` (see the module doc).

    `sentence_pair` overrides what the task says (needed for a task of your own, whose processor
    this library does not know).
    """
    if not fileio.is_dir(run_dir):
        raise UserError(f"--run_dir={run_dir}: directory not found")
    try:
        flags = json.loads(_read(run_dir, classify.RUN_FLAGS_FILE))
    except ValueError as e:
        raise UserError(f"{os.path.join(run_dir, classify.RUN_FLAGS_FILE)}: not JSON ({e})") \
            from None
    checkpoint = tf.train.latest_checkpoint(run_dir)
    if checkpoint is None:
        raise UserError(f"--run_dir={run_dir}: no fine-tuned checkpoint (model.ckpt-N and its "
                        "`checkpoint` state file); run bert-classify --do_train=true first")
    config = modeling.config_from_dir(run_dir)
    vocab_file = os.path.join(run_dir, "vocab.txt")
    _read(run_dir, "vocab.txt")
    casing = tokenization.read_do_lower_case_sidecar(run_dir)
    do_lower_case = bool(flags.get("do_lower_case", True)) if casing is None else casing
    lines = _read(run_dir, classify.LABELS_FILE).split("\n")  # labels are kept whole
    label_list = lines[:-1] if lines[-1] == "" else lines
    task_name = str(flags.get("task_name") or "")
    is_regression, pair = task_shape(task_name, flags.get("task_flags") or {})
    if is_regression is None:
        is_regression = label_list == [str(None)]  # what a regression run records
    if sentence_pair is not None:
        pair = sentence_pair
    if pair is None:
        raise UserError(f"--run_dir={run_dir}: task {task_name!r} is not a built-in task, so "
                        "whether it classifies sentence pairs is unknown: pass "
                        "--sentence_pair=true or --sentence_pair=false")
    max_seq_length = int(flags.get("max_seq_length", 128))
    if not label_list or (is_regression and len(label_list) != 1):
        raise UserError(f"{os.path.join(run_dir, classify.LABELS_FILE)}: {len(label_list)} "
                        "labels do not fit a " + ("regression" if is_regression else
                                                   "classification") + " task")
    head = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map().get("output_weights")
    want = 1 if is_regression else len(label_list)
    if head is None or head[0] != want:
        raise UserError(f"{checkpoint}: the classifier head has shape {head}, but "
                        f"{classify.LABELS_FILE} implies {want} outputs")
    return RunRecord(run_dir=run_dir, config=config, vocab_file=vocab_file,
                     do_lower_case=do_lower_case, max_seq_length=max_seq_length,
                     label_list=label_list, is_regression=is_regression, sentence_pair=pair,
                     task_name=task_name, checkpoint=checkpoint)
