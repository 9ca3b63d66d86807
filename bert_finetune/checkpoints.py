"""Checkpoint I/O by the original variable names (`bert/encoder/layer_3/...`, `output_weights`).

Google's checkpoints are TF1 name-keyed bundles. `tf.train.Checkpoint` writes object-graph keys
instead, so reading uses a checkpoint reader by name and writing uses a name-keyed saver.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf
from absl import logging

from bert_finetune import fileio
from bert_finetune.errors import UserError

# Variables a checkpoint may hold that a model being initialised does not need.
_SKIPPABLE = re.compile(r"(/adam_m$|/adam_v$|^global_step$)")


def resolve_checkpoint(init_checkpoint: str) -> str:
    """Returns the checkpoint prefix for a prefix or a directory (its latest checkpoint)."""
    path = init_checkpoint
    # A prefix first: on some filesystems (ram://) a prefix with files also looks like a dir.
    if tf.io.gfile.exists(path + ".index"):
        return path
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise UserError(f"--init_checkpoint={path}: directory holds no checkpoint")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise UserError(f"--init_checkpoint={path}: no checkpoint found ({path}.index is missing)")
    return path


def reader(prefix: str) -> tf.train.CheckpointReader:
    """A reader of the checkpoint at `prefix`; an unreadable file is a UserError naming it."""
    try:
        # NewCheckpointReader, not load_checkpoint: the latter probes for a directory first.
        return tf.compat.v1.train.NewCheckpointReader(prefix)
    except (tf.errors.OpError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{prefix}: not a readable TensorFlow checkpoint ({first})") from None


def list_variables(init_checkpoint: str) -> dict[str, list[int]]:
    """Returns {name: shape} of the checkpoint at a prefix or directory."""
    return {k: list(v) for k, v in reader(resolve_checkpoint(init_checkpoint))
            .get_variable_to_shape_map().items()}


def check_compatible(init_checkpoint: str, expected: Mapping[str, list[int]]) -> str | None:
    """Why the checkpoint cannot initialise variables of these shapes, or None if it can.

    Reads only the checkpoint's index: a cheap check before any heavy work.
    """
    prefix = resolve_checkpoint(init_checkpoint)
    shapes = reader(prefix).get_variable_to_shape_map()
    for name, want in expected.items():
        if name not in shapes:
            return (f"{prefix}: variable {name} is missing from the checkpoint; is "
                    "--bert_config_file the config of this checkpoint?")
        if list(shapes[name]) != list(want):
            return (f"{prefix}: variable {name} has shape {list(shapes[name])} in the checkpoint "
                    f"but {list(want)} from the config; does --bert_config_file match the "
                    "checkpoint?")
    return None


def init_from_checkpoint(
    variables: Mapping[str, tf.Variable],
    init_checkpoint: str,
    required: Iterable[str] | None = None,
    assignment_map: Mapping[str, str] | None = None,
) -> list[str]:
    """Assigns model variables from a checkpoint, matching by original name.

    Args:
      variables: {original name: variable} of the model (e.g. `bert/pooler/dense/kernel`).
      init_checkpoint: a checkpoint prefix (`.../bert_model.ckpt`) or a directory (latest checkpoint).
      required: names that must be in the checkpoint; default: every `bert/` variable. A missing
        required variable or any shape mismatch is a UserError naming it, both shapes and the file.
      assignment_map: optional {model name: checkpoint name} renames.

    Returns: the names restored. Each one is logged with `*INIT_FROM_CKPT*` as the original did;
    the model's variables not restored (e.g. `cls/` heads missing from the checkpoint) keep their
    fresh initial values, and one log line lists them. Checkpoint variables the model does not
    have (optimizer slots, global_step, other heads) are ignored.
    """
    prefix = resolve_checkpoint(init_checkpoint)
    ckpt = reader(prefix)
    shapes = ckpt.get_variable_to_shape_map()
    if required is None:
        required = [n for n in variables if n.startswith("bert/")]
    required = set(required)
    assignment_map = dict(assignment_map or {})
    missing = sorted(n for n in required if assignment_map.get(n, n) not in shapes)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{prefix}: variable {missing[0]} is missing from the checkpoint{more}; "
                        "is --bert_config_file the config of this checkpoint?")
    restored = []
    for name, var in variables.items():
        ckpt_name = assignment_map.get(name, name)
        if ckpt_name not in shapes:
            continue
        want = var.shape.as_list()
        have = list(shapes[ckpt_name])
        if want != have and name not in required:
            # A head of another task (e.g. 3 labels vs 2): start it fresh, as a new head.
            logging.warning("Not restoring %s: shape %s in %s, %s in the model", name, have,
                            prefix, want)
            continue
        if want != have:
            raise UserError(f"{prefix}: variable {ckpt_name} has shape {have} in the checkpoint but "
                            f"{want} in the model; does --bert_config_file match the checkpoint?")
        var.assign(tf.cast(ckpt.get_tensor(ckpt_name), var.dtype))
        restored.append(name)
    restored_set = set(restored)
    fresh = [n for n in variables if n not in restored_set]
    if fresh:
        # E.g. the cls/ heads of a checkpoint released without them, or a new task's head.
        logging.info("Initialised fresh (not restored from %s): %s", prefix, ", ".join(fresh))
    logging.info("**** Trainable Variables ****")
    for name, var in variables.items():
        init_string = ", *INIT_FROM_CKPT*" if name in restored_set else ""
        logging.info("  name = %s, shape = %s%s", name, var.shape, init_string)
    return restored


def write_checkpoint(prefix: str, arrays: Mapping[str, np.ndarray]) -> str:
    """Writes {name: array} as a name-keyed checkpoint at `prefix` plus its `checkpoint` state file.

    Used for converted weights (`bert_model.ckpt`). Returns the prefix.
    """
    names = sorted(arrays)
    directory = os.path.dirname(prefix) or "."
    tf.io.gfile.makedirs(directory)
    with tf.device("/cpu:0"):
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(arrays[n]) for n in names])
    _write_state_file(directory, [os.path.basename(prefix)])
    return prefix


def _write_state_file(directory: str, kept: list[str]) -> None:
    """The `checkpoint` file (relative paths, newest last) that latest_checkpoint reads."""
    lines = [f'model_checkpoint_path: "{kept[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{p}"' for p in kept]
    fileio.atomic_write(os.path.join(directory, "checkpoint"), "\n".join(lines) + "\n")


class CheckpointSaver:
    """Saves variables under their original names as `model.ckpt-N`, keeping the last K.

    Writes name-keyed bundles (what `tf.compat.v1.train.Saver` writes, without its graph-mode
    machinery, which mishandles distributed variables) and keeps the `checkpoint` state file
    current, so `tf.train.latest_checkpoint(output_dir)` finds the newest.
    """

    def __init__(self, variables: Mapping[str, tf.Variable], max_to_keep: int = 5):
        self._variables = dict(variables)
        self._max_to_keep = max_to_keep

    def save(self, output_dir: str, global_step: int) -> str:
        prefix = os.path.join(output_dir, f"model.ckpt-{int(global_step)}")
        names = sorted(self._variables)
        with tf.device("/cpu:0"):
            tensors = [tf.convert_to_tensor(self._variables[n].read_value()) for n in names]
            tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                              shape_and_slices=[""] * len(names), tensors=tensors)
        state = tf.train.get_checkpoint_state(output_dir)
        kept = [os.path.basename(p) for p in (state.all_model_checkpoint_paths if state else [])]
        kept = [p for p in kept if p != os.path.basename(prefix)] + [os.path.basename(prefix)]
        if self._max_to_keep and len(kept) > self._max_to_keep:
            for old in kept[:-self._max_to_keep]:
                for f in tf.io.gfile.glob(os.path.join(output_dir, old) + ".*"):
                    tf.io.gfile.remove(f)
            kept = kept[-self._max_to_keep:]
        _write_state_file(output_dir, kept)
        logging.info("Saved checkpoint %s", prefix)
        return prefix

    def restore(self, prefix: str) -> None:
        """Restores every saved variable (a resume): all of them must be in the checkpoint."""
        ckpt = reader(prefix)
        shapes = ckpt.get_variable_to_shape_map()
        for name, var in self._variables.items():
            if name not in shapes:
                raise UserError(f"{prefix}: cannot resume, variable {name} is missing")
            if list(shapes[name]) != var.shape.as_list():
                raise UserError(f"{prefix}: cannot resume, variable {name} has shape "
                                f"{list(shapes[name])}, the model has {var.shape.as_list()}")
            var.assign(ckpt.get_tensor(name))


def is_skippable(name: str) -> bool:
    """True for checkpoint entries a fresh model never needs (optimizer slots, global_step)."""
    return bool(_SKIPPABLE.search(name))
