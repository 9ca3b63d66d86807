"""SQuAD metrics: the official evaluate-v1.1 / evaluate-v2.0 definitions on hand-worked cases."""

from __future__ import annotations

import pytest

from bert_finetune.runner import squad_metrics as sm
from bert_finetune.squad_postprocess import SquadPredictions


@pytest.mark.parametrize("text, normalized", [
    ("The  Eiffel Tower!", "eiffel tower"),     # article, punctuation, double space
    ("an apple, a pear", "apple pear"),
    ("theater", "theater"),                     # articles only as whole words
    ("U.S.", "us"),
    ("  New\tYork \n", "new york"),             # any whitespace
    ("Anne's", "annes"),
    ("the", ""),
])
def test_normalize_answer(text, normalized):
    assert sm.normalize_answer(text) == normalized


def test_v1_hand_worked():
    gold = {
        "q1": ["Denver Broncos", "Broncos"],             # article + several golds
        "q2": ["Denver Broncos"],                        # partial: P=1, R=1/2 -> F1 2/3
        "q3": ["Denver Broncos", "the Broncos"],         # max over golds: 0.8 vs 0.5
        "q4": ["U.S."],                                  # punctuation
        "q5": ["New York"],                              # whitespace
        "q6": ["anything"],                              # no prediction: scores 0
    }
    preds = {"q1": "the Denver Broncos", "q2": "Denver", "q3": "Broncos of Denver",
             "q4": "US", "q5": " New  York\t"}
    assert sm.f1_score("Denver", "Denver Broncos") == pytest.approx(2 / 3)
    assert sm.f1_score("Broncos of Denver", "Denver Broncos") == pytest.approx(0.8)
    assert sm.f1_score("Broncos of Denver", "the Broncos") == pytest.approx(0.5)
    assert sm.f1_score("", "Denver") == 0
    results = sm.evaluate_v1(gold, preds)
    assert results["exact_match"] == pytest.approx(100 * 3 / 6)
    assert results["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0.8 + 1 + 1 + 0) / 6)


def test_v2_hand_worked_empty_predictions():
    gold = {
        "a1": ["Paris"],      # answerable, answered right
        "a2": ["Paris"],      # answerable, predicted no answer: 0 / 0
        "n1": [],             # unanswerable, predicted "": 1 / 1
        "n2": [],             # unanswerable, answered: 0 / 0
        "a3": ["the", "Lyon"],  # gold "the" normalizes to "" and is dropped
    }
    preds = {"a1": "paris", "a2": "", "n1": "", "n2": "Rome", "a3": "Lyon"}
    assert sm.compute_f1("", "") == 1 and sm.compute_f1("Paris", "") == 0
    results = sm.evaluate_v2(gold, preds)
    assert results["exact"] == pytest.approx(100 * 3 / 5)
    assert results["f1"] == pytest.approx(100 * 3 / 5)
    assert results["total"] == 5
    assert results["HasAns_exact"] == pytest.approx(100 * 2 / 3)
    assert results["HasAns_total"] == 3
    assert results["NoAns_exact"] == pytest.approx(50.0)
    assert results["NoAns_total"] == 2
    assert "best_f1" not in results
    # --na-prob-file with the default --na-prob-thresh 1.0: a1's odds 1.5 make it "no answer".
    with_probs = sm.evaluate_v2(gold, preds, {"a1": 1.5, "a2": 0, "n1": 0, "n2": 0, "a3": 0})
    assert with_probs["HasAns_exact"] == pytest.approx(100 * 1 / 3)


def _threshold_case():
    # Sorted by null odds: q1 (-3), q4 (-1), q3 (1), q2 (2). Everything null scores 2 of 4 (q2,
    # q4). Lowering the threshold below -3 answers q1 (+1: 3 of 4); q4 answered costs 1; q3's
    # answer is half right (F1 0.5, EM 0); q2 costs 1.
    gold = {"q1": ["Paris"], "q2": [], "q3": ["big red car"], "q4": []}
    best_non_null = {"q1": "Paris", "q2": "x", "q3": "red car", "q4": "y"}
    null_odds = {"q1": -3.0, "q2": 2.0, "q3": 1.0, "q4": -1.0}
    return gold, best_non_null, null_odds


def test_v2_best_threshold_search():
    gold, best_non_null, null_odds = _threshold_case()
    exact_raw, f1_raw = sm.get_raw_scores(gold, best_non_null)
    assert f1_raw["q3"] == pytest.approx(0.8)  # P 2/2, R 2/3
    qid_to_has_ans = {k: bool(v) for k, v in gold.items()}
    assert sm.find_best_thresh(best_non_null, exact_raw, null_odds, qid_to_has_ans) == (
        75.0, -3.0)
    # F1: after q1 3, after q4 2, after q3 2.8, after q2 1.8: still 75 at -3.
    assert sm.find_best_thresh(best_non_null, f1_raw, null_odds, qid_to_has_ans) == (75.0, -3.0)
    # Make q3 fully right: after q3 the score is 3 again (not better than 3): stays at -3; make
    # q4 answerable-right instead and the best moves to q3's odds.
    gold2 = dict(gold, q3=["red car"], q4=["y"])
    exact2, _ = sm.get_raw_scores(gold2, best_non_null)
    has2 = {k: bool(v) for k, v in gold2.items()}
    # Start 1 (q2 null); q1 +1 -> 2 @-3; q4 +1 -> 3 @-1; q3 +1 -> 4 @1; q2 -1 -> 3.
    assert sm.find_best_thresh(best_non_null, exact2, null_odds, has2) == (100.0, 1.0)


def test_v2_results_from_one_pass_match_the_rewritten_predictions():
    gold, best_non_null, null_odds = _threshold_case()
    # predictions.json at threshold 0.0: q2, q3 null.
    result = SquadPredictions(predictions={}, nbest={}, null_odds=null_odds,
                              best_non_null=best_non_null)
    preds = result.with_threshold(0.0)
    assert preds == {"q1": "Paris", "q2": "", "q3": "", "q4": "y"}
    results = sm.squad_v2_results(gold, preds, best_non_null, null_odds)
    assert results["exact_match"] == pytest.approx(50.0)  # q1, q2 right; q3, q4 wrong
    assert results["best_exact"] == 75.0 and results["best_exact_thresh"] == -3.0
    assert results["best_f1"] == 75.0 and results["best_f1_thresh"] == -3.0
    # predictions_best_thresh.json scores best_f1 when evaluated on its own.
    best_preds = result.with_threshold(results["best_f1_thresh"])
    assert best_preds == {"q1": "Paris", "q2": "", "q3": "", "q4": ""}
    assert sm.evaluate_v2(gold, best_preds)["f1"] == pytest.approx(results["best_f1"])


def test_v2_threshold_when_answering_nothing_is_best():
    gold = {"q1": ["Paris"], "n1": [], "n2": []}
    best_non_null = {"q1": "Rome", "n1": "x", "n2": "y"}
    null_odds = {"q1": -2.0, "n1": -1.0, "n2": 3.0}
    results = sm.squad_v2_results(gold, {"q1": "Rome", "n1": "x", "n2": ""}, best_non_null,
                                  null_odds)
    assert results["best_exact"] == pytest.approx(200 / 3)
    assert results["best_exact_thresh"] == -3.0  # below every odds: all null
    # The official search on the same inputs reports 0.0, which would answer q1 and n1.
    has = {k: bool(v) for k, v in gold.items()}
    raw, _ = sm.get_raw_scores(gold, best_non_null)
    assert sm.find_best_thresh(best_non_null, raw, null_odds, has) == (pytest.approx(200 / 3),
                                                                       0.0)
    preds = SquadPredictions({}, {}, null_odds, best_non_null).with_threshold(-3.0)
    assert sm.evaluate_v2(gold, preds)["exact"] == pytest.approx(results["best_exact"])
