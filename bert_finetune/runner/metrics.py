"""GLUE evaluation metrics in plain numpy (no scipy / scikit-learn dependency).

Formulas follow scikit-learn (`accuracy_score`, `f1_score`, `matthews_corrcoef`) and scipy
(`pearsonr`, `spearmanr` with average ranks for ties). `weights` is the `is_real_example` feature:
examples with weight 0 are the padding added to fill the last batch and are left out.
"""

from __future__ import annotations

import numpy as np

# Tasks whose headline metric is F1 of the positive class (id 1), as in the GLUE benchmark.
_F1_TASKS = frozenset({"mrpc", "qqp"})
# Tasks reported with the Matthews correlation coefficient.
_MCC_TASKS = frozenset({"cola"})


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Fraction of `preds` equal to `labels` (both [B]); 0.0 for no examples."""
    labels, preds = _pair(labels, preds)
    return float(np.mean(labels == preds)) if labels.size else 0.0


def f1(labels: np.ndarray, preds: np.ndarray, positive: int = 1) -> float:
    """F1 of class `positive`: 2·TP / (2·TP + FP + FN); 0.0 when undefined (no TP, FP or FN)."""
    labels, preds = _pair(labels, preds)
    tp = int(np.sum((preds == positive) & (labels == positive)))
    fp = int(np.sum((preds == positive) & (labels != positive)))
    fn = int(np.sum((preds != positive) & (labels == positive)))
    denominator = 2 * tp + fp + fn
    return 2.0 * tp / denominator if denominator else 0.0


def matthews_corrcoef(labels: np.ndarray, preds: np.ndarray) -> float:
    """Matthews correlation (binary and multiclass, scikit-learn's formula); 0.0 when undefined."""
    labels, preds = _pair(labels, preds)
    if not labels.size:
        return 0.0
    classes, encoded = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    k = len(classes)
    y_true, y_pred = encoded[: labels.size], encoded[labels.size :]
    confusion = np.zeros((k, k), dtype=np.float64)  # [true, predicted]
    np.add.at(confusion, (y_true, y_pred), 1.0)
    t_sum = confusion.sum(axis=1)
    p_sum = confusion.sum(axis=0)
    n_correct = np.trace(confusion)
    n = confusion.sum()
    # Float arithmetic: the integer products overflow int64 on large eval sets.
    cov_ytyp = n_correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n * n - np.dot(p_sum, p_sum)
    cov_ytyt = n * n - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of x and y (both [B]); NaN when either is constant (as scipy)."""
    x, y = _pair(x, y, dtype=np.float64)
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    if denominator == 0:
        return float("nan")
    # Clip: rounding can push |r| a hair above 1.
    return float(np.clip(np.dot(dx, dy) / denominator, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of the ranks, ties get their average rank (as scipy)."""
    x, y = _pair(x, y, dtype=np.float64)
    return pearson(rankdata(x), rankdata(y))


def rankdata(a: np.ndarray) -> np.ndarray:
    """1-based ranks of a [B] array, tied values sharing their average rank (scipy's 'average')."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    starts_group = np.concatenate([[True], sorted_a[1:] != sorted_a[:-1]])
    group = np.cumsum(starts_group) - 1  # [B] tie-group id of each sorted position
    bounds = np.flatnonzero(np.concatenate([starts_group, [True]]))  # group g spans bounds[g:g+2]
    # Positions bounds[g] .. bounds[g+1]-1 hold ranks bounds[g]+1 .. bounds[g+1]; take their mean.
    average_rank = (bounds[:-1] + bounds[1:] + 1) / 2.0
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = average_rank[group]
    return ranks


def classification_metrics(
    task_name: str,
    label_ids: np.ndarray,
    probabilities: np.ndarray,
    weights: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of a classifier: `eval_accuracy`, plus `eval_f1` (mrpc, qqp) or `eval_mcc` (cola).

    Args:
      task_name: the --task_name (case-insensitive).
      label_ids: [B] int gold class ids.
      probabilities: [B, C] class probabilities (or logits: only the argmax is used).
      weights: [B] is_real_example (0 for padding examples); None means all real.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be [B, C], got shape {probabilities.shape}")
    preds = np.argmax(probabilities, axis=-1)  # [B]
    labels, preds = _real(label_ids, preds, weights)
    result = {"eval_accuracy": accuracy(labels, preds)}
    task = task_name.lower()
    if task in _F1_TASKS:
        result["eval_f1"] = f1(labels, preds, positive=1)
    if task in _MCC_TASKS:
        result["eval_mcc"] = matthews_corrcoef(labels, preds)
    return result


def regression_metrics(
    labels: np.ndarray, preds: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """Metrics of a regressor (STS-B): Pearson, Spearman, their mean, and mean squared error.

    Args:
      labels: [B] gold scores.
      preds: [B] or [B, 1] predicted scores.
      weights: [B] is_real_example (0 for padding examples); None means all real.
    """
    labels, preds = _real(labels, np.reshape(preds, -1), weights)
    labels, preds = labels.astype(np.float64), preds.astype(np.float64)
    p, s = pearson(labels, preds), spearman(labels, preds)
    mse = float(np.mean((preds - labels) ** 2)) if labels.size else float("nan")
    return {
        "eval_pearson": p,
        "eval_spearman": s,
        "eval_pearson_spearman_corr": (p + s) / 2.0,
        "eval_mse": mse,
    }


def _pair(a: np.ndarray, b: np.ndarray, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Both arguments as flat arrays of the same length."""
    a = np.asarray(a, dtype=dtype).reshape(-1)
    b = np.asarray(b, dtype=dtype).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: {a.size} labels vs {b.size} predictions")
    return a, b


def _real(
    labels: np.ndarray, preds: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Drops the padding examples (weight 0) from flat labels and preds."""
    labels, preds = _pair(labels, preds)
    if weights is None:
        return labels, preds
    mask = np.asarray(weights).reshape(-1) != 0
    if mask.shape != labels.shape:
        raise ValueError(f"length mismatch: {labels.size} labels vs {mask.size} weights")
    return labels[mask], preds[mask]
