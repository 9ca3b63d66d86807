"""Golden values for the GLUE metrics; expected numbers worked out by hand in the comments."""

import math

import numpy as np
import pytest

from bert_finetune.runner import metrics


def test_accuracy():
    assert metrics.accuracy([0, 1, 1, 0, 1], [0, 1, 0, 0, 1]) == pytest.approx(4 / 5)
    assert metrics.accuracy([], []) == 0.0


def test_f1_positive_class():
    labels = [1, 1, 0, 0, 1, 0]
    preds = [1, 0, 1, 0, 1, 1]
    # TP = 2 (idx 0, 4), FP = 2 (idx 2, 5), FN = 1 (idx 1): F1 = 2*2 / (2*2 + 2 + 1).
    assert metrics.f1(labels, preds) == pytest.approx(4 / 7)
    # Class 0 as positive: TP = 1 (idx 3), FP = 1 (idx 1), FN = 2 (idx 2, 5).
    assert metrics.f1(labels, preds, positive=0) == pytest.approx(2 / 5)
    # No positive anywhere: undefined, reported as 0 (scikit-learn's zero_division result).
    assert metrics.f1([0, 0], [0, 0]) == 0.0


def test_mcc_binary():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 1, 0, 0, 0, 1, 1, 0]
    # TP = 3, FN = 1, TN = 3, FP = 1: (3*3 - 1*1) / sqrt(4*4*4*4) = 8 / 16.
    assert metrics.matthews_corrcoef(labels, preds) == pytest.approx(0.5)
    assert metrics.matthews_corrcoef(labels, labels) == pytest.approx(1.0)
    assert metrics.matthews_corrcoef(labels, 1 - np.array(labels)) == pytest.approx(-1.0)


def test_mcc_multiclass_hand_computed():
    labels = [0, 1, 2, 0, 1, 2]
    preds = [0, 2, 1, 0, 0, 2]
    # Confusion [true, pred] = [[2,0,0],[1,0,1],[0,1,1]]; t = [2,2,2], p = [3,1,2], correct 3, n 6.
    # cov(yt,yp) = 3*6 - (6+2+4) = 6; cov(yp,yp) = 36 - 14 = 22; cov(yt,yt) = 36 - 12 = 24.
    assert metrics.matthews_corrcoef(labels, preds) == pytest.approx(6 / math.sqrt(24 * 22))


def _mcc_brute_force(labels, preds, k):
    """Multiclass MCC as the correlation of the centred one-hot matrices (Gorodkin's R_K)."""
    x = np.eye(k)[labels]
    y = np.eye(k)[preds]
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.sum(x * y) / math.sqrt(np.sum(x * x) * np.sum(y * y)))


def test_mcc_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 3, size=17)
        preds = rng.integers(0, 3, size=17)
        assert metrics.matthews_corrcoef(labels, preds) == pytest.approx(
            _mcc_brute_force(labels, preds, 3)
        )


def test_mcc_undefined_is_zero():
    # A model that always predicts one class (common early on CoLA) has no predicted variance.
    assert metrics.matthews_corrcoef([0, 1, 1, 0], [1, 1, 1, 1]) == 0.0
    assert metrics.matthews_corrcoef([], []) == 0.0


def test_pearson():
    x = [1, 2, 3, 4, 5]
    y = [2, 4, 5, 4, 5]
    # dx = [-2,-1,0,1,2], dy = [-2,0,1,0,1]: sum dx*dy = 6, sum dx^2 = 10, sum dy^2 = 6.
    assert metrics.pearson(x, y) == pytest.approx(6 / math.sqrt(60))
    assert metrics.pearson(x, x) == pytest.approx(1.0)
    assert math.isnan(metrics.pearson(x, [3, 3, 3, 3, 3]))  # Undefined: constant input.


def test_rankdata_average_ties():
    ranks = metrics.rankdata([10, 20, 10, 30, 20, 10])
    # 10s take ranks 1,2,3 -> 2; 20s take 4,5 -> 4.5; 30 -> 6.
    np.testing.assert_array_equal(ranks, [2, 4.5, 2, 6, 4.5, 2])


def _ranks_brute_force(a):
    """Rank_i = #(a_j < a_i) + (#(a_j == a_i) + 1) / 2: the average of the tied positions."""
    a = np.asarray(a, dtype=float)
    return np.array([np.sum(a < v) + (np.sum(a == v) + 1) / 2 for v in a])


def test_rankdata_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.integers(0, 5, size=13)  # Small range: many ties.
        np.testing.assert_array_equal(metrics.rankdata(a), _ranks_brute_force(a))


def test_spearman_with_ties():
    x = [1, 2, 3, 4, 5]
    y = [2, 4, 5, 4, 5]
    # Ranks of y = [1, 2.5, 4.5, 2.5, 4.5]; centred [-2,-.5,1.5,-.5,1.5] against x's [-2,-1,0,1,2]:
    # sum products = 7, sums of squares 9 and 10 -> 7 / sqrt(90) (scipy.stats.spearmanr: 0.73786...).
    assert metrics.spearman(x, y) == pytest.approx(7 / math.sqrt(90))
    assert metrics.spearman(x, y) == pytest.approx(0.7378647873726218)


def test_spearman_without_ties_matches_classic_formula():
    x = [0.3, 1.2, -0.5, 2.2, 0.9, 1.7]
    y = [10, 30, 20, 60, 50, 40]
    # Ranks: x -> [2,4,1,6,3,5], y -> [1,3,2,6,5,4]; d^2 sum = 1+1+1+0+4+1 = 8.
    n = 6
    assert metrics.spearman(x, y) == pytest.approx(1 - 6 * 8 / (n * (n * n - 1)))


def test_classification_metrics_excludes_padding():
    probabilities = np.array(
        [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1], [0.9, 0.1]]
    )  # argmax: 0, 1, 0, 1, 0, 0
    labels = np.array([0, 1, 1, 1, 1, 1])
    weights = np.array([1, 1, 1, 1, 0, 0])  # The last two are padding (would be wrong).
    # Real: labels [0,1,1,1], preds [0,1,0,1]: accuracy 3/4; TP 2, FP 0, FN 1 -> F1 4/5;
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2*1 - 0) / sqrt(2*3*1*2).
    mrpc = metrics.classification_metrics("MRPC", labels, probabilities, weights)
    assert mrpc.keys() == {"eval_accuracy", "eval_f1"}
    assert mrpc["eval_accuracy"] == pytest.approx(3 / 4)
    assert mrpc["eval_f1"] == pytest.approx(4 / 5)
    cola = metrics.classification_metrics("cola", labels, probabilities, weights)
    assert cola.keys() == {"eval_accuracy", "eval_mcc"}
    assert cola["eval_mcc"] == pytest.approx(2 / math.sqrt(12))
    assert metrics.classification_metrics("qqp", labels, probabilities, weights).keys() == {
        "eval_accuracy",
        "eval_f1",
    }
    mnli = metrics.classification_metrics("mnli", labels, probabilities)
    assert mnli == {"eval_accuracy": pytest.approx(3 / 6)}  # No weights: all count.


def test_regression_metrics_excludes_padding():
    labels = np.array([1, 2, 3, 4, 5, 0, 0], dtype=np.float32)
    preds = np.array([[2], [4], [5], [4], [5], [9], [9]], dtype=np.float32)  # [B, 1] like the head.
    weights = np.array([1, 1, 1, 1, 1, 0, 0])
    result = metrics.regression_metrics(labels, preds, weights)
    assert result["eval_pearson"] == pytest.approx(6 / math.sqrt(60))
    assert result["eval_spearman"] == pytest.approx(7 / math.sqrt(90))
    assert result["eval_pearson_spearman_corr"] == pytest.approx(
        (6 / math.sqrt(60) + 7 / math.sqrt(90)) / 2
    )
    assert result["eval_mse"] == pytest.approx((1 + 4 + 4 + 0 + 0) / 5)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="weights"):
        metrics.classification_metrics("mrpc", [0, 1], [[1, 0], [0, 1]], [1])
