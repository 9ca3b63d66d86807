"""Result files in the original run_classifier.py formats, written atomically.

- `eval_results.txt`: `key = value` lines sorted by key; values as the original's `str()` of numpy
  float32 metrics and the int64 global_step (`eval_accuracy = 0.84313726`, `global_step = 343`).
- `test_results.tsv`: one line per real predict example, the class probabilities (float32 `str()`)
  joined by tabs; the padding examples of the last batch are dropped.
- `predictions.jsonl` (new): one JSON object per example with its guid and label names.

Paths may be local or remote (`gs://...`, through tf.io.gfile; see `fileio`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from bert_finetune.errors import UserError
from bert_finetune.fileio import atomic_open, json_line, read_text

logger = logging.getLogger(__name__)


def format_value(v: object) -> str:
    """A result value as the original wrote it: floats via float32 `str()`, integers via `int`."""
    if hasattr(v, "numpy"):  # A scalar tf.Tensor / Variable.
        v = v.numpy()
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        # str(), not repr(): numpy 2's repr is "np.float32(0.84313726)".
        return str(np.float32(v))
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return format_value(v[()])
    return str(v)


def write_eval_results(path: str | os.PathLike, results: Mapping[str, object]) -> None:
    """Writes `key = value` lines sorted by key to `path` (eval_results.txt) and logs them."""
    logger.info("***** Eval results *****")
    lines = []
    for key in sorted(results.keys()):
        value = format_value(results[key])
        logger.info("  %s = %s", key, value)
        lines.append(f"{key} = {value}\n")
    with atomic_open(path) as f:
        f.writelines(lines)


def read_eval_results(path: str | os.PathLike) -> dict[str, str]:
    """Parses an eval_results.txt back into {key: value string}."""
    path = os.fspath(path)
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read eval results: {e.strerror or e}") from e
    results = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(" = ")
        if not sep or not key:
            raise UserError(f"{path}:{line_number}: expected 'key = value', got {line!r}")
        results[key] = value
    return results


def write_test_results(path: str | os.PathLike, probabilities: np.ndarray, num_real: int) -> None:
    """Writes the first `num_real` rows of probabilities to `path` (test_results.tsv).

    Args:
      probabilities: [B, C] class probabilities, or [B] / [B, 1] regression predictions; B >= num_real
        (rows past num_real are the padding of the last batch).
      num_real: the number of real predict examples.
    """
    rows = _real_rows(probabilities, num_real)
    with atomic_open(path) as f:
        for row in rows:
            f.write("\t".join(str(p) for p in row) + "\n")


def write_predictions_jsonl(
    path: str | os.PathLike,
    guids: Sequence[str],
    label_list: Sequence[str],
    probabilities: np.ndarray,
    num_real: int,
    is_regression: bool = False,
) -> None:
    """Writes one JSON object per real example to `path` (predictions.jsonl).

    Classification: {"guid": ..., "label": <argmax label>, "probabilities": {label: p, ...}};
    regression: {"guid": ..., "prediction": float}. Values are the float32 outputs as Python floats.

    Args:
      guids: the guid of each example, at least `num_real` of them.
      label_list: the processor's labels, index = class id (unused for regression).
      probabilities: [B, C] class probabilities, or [B] / [B, 1] regression predictions.
      num_real: the number of real predict examples.
    """
    rows = _real_rows(probabilities, num_real)
    if len(guids) < num_real:
        raise ValueError(f"{len(guids)} guids for {num_real} predictions")
    if not is_regression and rows.shape[1] != len(label_list):
        raise ValueError(f"{rows.shape[1]} probabilities per example but {len(label_list)} labels")
    with atomic_open(path) as f:
        for guid, row in zip(guids[:num_real], rows, strict=True):
            if is_regression:
                record = {"guid": guid, "prediction": float(row[0])}
            else:
                record = {
                    "guid": guid,
                    "label": label_list[int(np.argmax(row))],
                    "probabilities": {
                        str(lab): float(p) for lab, p in zip(label_list, row, strict=True)
                    },
                }
            f.write(json_line(record))


def _real_rows(probabilities: np.ndarray, num_real: int) -> np.ndarray:
    """The first `num_real` rows as a float32 [num_real, C] array ([B] becomes [B, 1])."""
    rows = np.asarray(probabilities, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows[:, None]
    if rows.ndim != 2:
        raise ValueError(f"predictions must be [B, C] or [B], got shape {rows.shape}")
    # The original asserted it wrote exactly num_actual_predict_examples lines.
    if rows.shape[0] < num_real:
        raise ValueError(f"{rows.shape[0]} predictions for {num_real} real examples")
    return rows[:num_real]
