"""A fine-tuned model read back from a `bert-classify` or `bert-squad` output directory.

Both tasks leave in `--output_dir` what a later export or prediction needs, so none of it has to
be repeated on the command line:
  run_flags.json     the run's flags (max_seq_length, do_lower_case, task_name / doc_stride ...)
  bert_config.json   the encoder's config
  vocab.txt          the vocabulary the examples were tokenized with
  do_lower_case.txt  `true` / `false`
  label_list.txt     bert-classify: one label per line, in id order (`None` for regression)
  model.ckpt-N       the fine-tuned weights (the latest one, by the `checkpoint` state file)

`load_run` (a classifier) and `load_squad_run` read and check all of it (one UserError naming
the file); `build_model` restores the task's model from the latest checkpoint. `run_kind` tells
the two apart by the head in the checkpoint (`output_weights` / `cls/squad/output_weights`).
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
    pooling: str = "cls"  # what the classifier reads (bert-classify --pooling)

    @property
    def placeholder_label(self) -> str:
        """The label given to unlabelled inputs on the way to features (never predicted)."""
        return REGRESSION_PLACEHOLDER if self.is_regression else self.label_list[0]

    def build_model(self) -> classify.ClassifierModel:
        """The ClassifierModel with the run's latest fine-tuned weights (every variable)."""
        model = classify.ClassifierModel(self.config, len(self.label_list), self.is_regression,
                                         pooling=self.pooling)
        loops.restore_for_inference(model.variables_by_name(), self.run_dir, None)
        return model


def _read(run_dir: str, name: str, program: str = "bert-classify") -> str:
    path = os.path.join(run_dir, name)
    if not fileio.is_file(path):
        raise UserError(f"--run_dir={run_dir}: {name} is missing; is this the output_dir of a "
                        f"{program} run?")
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


SQUAD_HEAD = "cls/squad/output_weights"


@dataclasses.dataclass
class _Common:
    flags: dict
    checkpoint: str
    config: modeling.BertConfig
    vocab_file: str
    do_lower_case: bool
    head_shapes: dict  # checkpoint variable -> shape


def _load_common(run_dir: str, program: str) -> _Common:
    """run_flags.json, the latest checkpoint, bert_config.json, vocab.txt and the casing."""
    if not fileio.is_dir(run_dir):
        raise UserError(f"--run_dir={run_dir}: directory not found")
    try:
        flags = json.loads(_read(run_dir, classify.RUN_FLAGS_FILE, program))
    except ValueError as e:
        raise UserError(f"{os.path.join(run_dir, classify.RUN_FLAGS_FILE)}: not JSON ({e})") \
            from None
    checkpoint = tf.train.latest_checkpoint(run_dir)
    if checkpoint is None:
        raise UserError(f"--run_dir={run_dir}: no fine-tuned checkpoint (model.ckpt-N and its "
                        f"`checkpoint` state file); run {program} --do_train=true first")
    config = modeling.config_from_dir(run_dir)
    vocab_file = os.path.join(run_dir, "vocab.txt")
    _read(run_dir, "vocab.txt", program)
    casing = tokenization.read_do_lower_case_sidecar(run_dir)
    do_lower_case = bool(flags.get("do_lower_case", True)) if casing is None else casing
    shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    return _Common(flags, checkpoint, config, vocab_file, do_lower_case, shapes)


def run_kind(run_dir: str) -> str | None:
    """"squad" or "classify" by the head in the latest checkpoint; None without one."""
    checkpoint = tf.train.latest_checkpoint(run_dir) if fileio.is_dir(run_dir) else None
    if checkpoint is None:
        return None
    shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    return "squad" if SQUAD_HEAD in shapes else "classify"


def load_run(run_dir: str, sentence_pair: bool | None = None) -> RunRecord:
    """Reads and checks the run record in `run_dir` (see the module doc).

    `sentence_pair` overrides what the task says (needed for a task of your own, whose processor
    this library does not know).
    """
    common = _load_common(run_dir, "bert-classify")
    if SQUAD_HEAD in common.head_shapes:
        raise UserError(f"--run_dir={run_dir} is a bert-squad run (its checkpoint has "
                        f"{SQUAD_HEAD}): export it with --squad instead of --classifier")
    flags, checkpoint, config = common.flags, common.checkpoint, common.config
    vocab_file, do_lower_case = common.vocab_file, common.do_lower_case
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
    head = common.head_shapes.get("output_weights")
    want = 1 if is_regression else len(label_list)
    if head is None or head[0] != want:
        raise UserError(f"{checkpoint}: the classifier head has shape {head}, but "
                        f"{classify.LABELS_FILE} implies {want} outputs")
    pooling = flags.get("pooling") or "cls"
    if pooling not in classify.POOLINGS:
        raise UserError(f"{os.path.join(run_dir, classify.RUN_FLAGS_FILE)}: unknown pooling "
                        f"{pooling!r} (bert-classify writes one of {', '.join(classify.POOLINGS)})")
    return RunRecord(run_dir=run_dir, config=config, vocab_file=vocab_file,
                     do_lower_case=do_lower_case, max_seq_length=max_seq_length,
                     label_list=label_list, is_regression=is_regression, sentence_pair=pair,
                     task_name=task_name, checkpoint=checkpoint, pooling=pooling)


@dataclasses.dataclass
class SquadRunRecord:
    """What a fine-tuned bert-squad model was made from (run_squad.py's flags, by name)."""

    run_dir: str
    config: modeling.BertConfig
    vocab_file: str
    do_lower_case: bool
    max_seq_length: int
    doc_stride: int
    max_query_length: int
    n_best_size: int
    max_answer_length: int
    version_2_with_negative: bool
    null_score_diff_threshold: float
    checkpoint: str

    def build_model(self):
        """The SquadModel with the run's latest fine-tuned weights (every variable)."""
        from bert_finetune import squad

        model = squad.SquadModel(self.config)
        loops.restore_for_inference(model.variables_by_name(), self.run_dir, None)
        return model


def load_squad_run(run_dir: str) -> SquadRunRecord:
    """Reads and checks the record of a bert-squad run in `run_dir` (see the module doc)."""
    from bert_finetune import squad

    common = _load_common(run_dir, "bert-squad")
    if SQUAD_HEAD not in common.head_shapes:
        raise UserError(f"--run_dir={run_dir}: its checkpoint {common.checkpoint} has no "
                        f"{SQUAD_HEAD}: not a bert-squad run (a bert-classify run exports with "
                        "--classifier)")
    defaults = squad.SquadOptions()
    values = {}
    for name in ("max_seq_length", "doc_stride", "max_query_length", "n_best_size",
                 "max_answer_length", "version_2_with_negative", "null_score_diff_threshold"):
        default = getattr(defaults, name)
        value = common.flags.get(name, default)
        try:
            values[name] = type(default)(value)
        except (TypeError, ValueError):
            raise UserError(f"{os.path.join(run_dir, classify.RUN_FLAGS_FILE)}: {name}={value!r} "
                            f"is not a {type(default).__name__}") from None
    for name in ("max_seq_length", "max_query_length", "n_best_size", "max_answer_length"):
        if values[name] <= 0:
            raise UserError(f"{os.path.join(run_dir, classify.RUN_FLAGS_FILE)}: {name}="
                            f"{values[name]} must be positive")
    if values["max_seq_length"] <= values["max_query_length"] + 3:
        raise UserError(f"{os.path.join(run_dir, classify.RUN_FLAGS_FILE)}: max_seq_length "
                        f"{values['max_seq_length']} leaves no room for a context after "
                        f"max_query_length {values['max_query_length']} + 3")
    return SquadRunRecord(run_dir=run_dir, config=common.config, vocab_file=common.vocab_file,
                          do_lower_case=common.do_lower_case, checkpoint=common.checkpoint,
                          **values)
