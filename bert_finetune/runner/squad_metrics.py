"""SQuAD metrics with the official definitions (evaluate-v1.1.py and evaluate-v2.0.py).

Both score a prediction against every gold answer after `normalize_answer` (lower case, no
punctuation, no articles a/an/the, single spaces) and keep the best: exact match (0/1) and the
bag-of-tokens F1, averaged over all questions (a question without a prediction scores 0) and
reported in percent. v2.0 counts an unanswerable question right when the prediction is "" (its
only gold answer), splits the scores into HasAns_* / NoAns_*, and, given the null odds of each
question, finds the null threshold that maximises exact match / F1 (`best_*`).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


# -- v1.1 --------------------------------------------------------------------------------------
def f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def metric_max_over_ground_truths(metric_fn, prediction: str, ground_truths: Sequence[str]):
    return max(metric_fn(prediction, gt) for gt in ground_truths)


def evaluate_v1(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict:
    """evaluate-v1.1.py's `evaluate`: {"exact_match", "f1"} in percent.

    `gold` maps every question id to its answer texts (as `data.squad.read_gold`).
    """
    f1 = exact_match = total = 0
    for qid, ground_truths in gold.items():
        total += 1
        if qid not in predictions:
            continue  # an unanswered question receives score 0
        prediction = predictions[qid]
        exact_match += metric_max_over_ground_truths(exact_match_score, prediction,
                                                     ground_truths)
        f1 += metric_max_over_ground_truths(f1_score, prediction, ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


# -- v2.0 --------------------------------------------------------------------------------------
def get_tokens(s: str) -> list[str]:
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # If either is no-answer, then F1 is 1 if they agree, 0 otherwise
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def get_raw_scores(gold: Mapping[str, Sequence[str]], preds: Mapping[str, str]
                   ) -> tuple[dict[str, int], dict[str, float]]:
    exact_scores, f1_scores = {}, {}
    for qid, answers in gold.items():
        gold_answers = [a for a in answers if normalize_answer(a)]
        if not gold_answers:
            # For unanswerable questions, only correct answer is empty string
            gold_answers = [""]
        if qid not in preds:
            continue
        a_pred = preds[qid]
        # Take max over all gold answers
        exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
        f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def apply_no_ans_threshold(scores: Mapping[str, float], na_probs: Mapping[str, float],
                           qid_to_has_ans: Mapping[str, bool], na_prob_thresh: float) -> dict:
    new_scores = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        new_scores[qid] = float(not qid_to_has_ans[qid]) if pred_na else s
    return new_scores


def make_eval_dict(exact_scores: Mapping, f1_scores: Mapping,
                   qid_list: Sequence[str] | None = None) -> dict:
    if not qid_list:
        total = len(exact_scores)
        return collections.OrderedDict([
            ("exact", 100.0 * sum(exact_scores.values()) / total),
            ("f1", 100.0 * sum(f1_scores.values()) / total),
            ("total", total),
        ])
    total = len(qid_list)
    return collections.OrderedDict([
        ("exact", 100.0 * sum(exact_scores[k] for k in qid_list) / total),
        ("f1", 100.0 * sum(f1_scores[k] for k in qid_list) / total),
        ("total", total),
    ])


def find_best_thresh(preds: Mapping[str, str], scores: Mapping[str, float],
                     na_probs: Mapping[str, float], qid_to_has_ans: Mapping[str, bool],
                     all_null_thresh: float = 0.0) -> tuple[float, float]:
    """(best score in percent, its threshold): predict "" where na_prob > threshold.

    When answering nothing is best, the threshold is `all_null_thresh`: the official 0.0 assumes
    probabilities in [0, 1]; null odds need one below all of them.
    """
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = all_null_thresh
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def evaluate_v2(gold: Mapping[str, Sequence[str]], preds: Mapping[str, str],
                na_probs: Mapping[str, float] | None = None,
                na_prob_thresh: float = 1.0) -> dict:
    """evaluate-v2.0.py's `main` (with `--na-prob-file` when `na_probs` is given).

    Returns exact, f1, total, HasAns_* / NoAns_* and, with na_probs, best_exact(_thresh) and
    best_f1(_thresh). An unanswerable question has an empty answer list in `gold`.
    """
    have_na_probs = na_probs is not None
    if na_probs is None:
        na_probs = {k: 0.0 for k in preds}
    qid_to_has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = get_raw_scores(gold, preds)
    exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        for k, v in make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids).items():
            out_eval[f"HasAns_{k}"] = v
    if no_ans_qids:
        for k, v in make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids).items():
            out_eval[f"NoAns_{k}"] = v
    if have_na_probs:
        out_eval["best_exact"], out_eval["best_exact_thresh"] = find_best_thresh(
            preds, exact_raw, na_probs, qid_to_has_ans)
        out_eval["best_f1"], out_eval["best_f1_thresh"] = find_best_thresh(
            preds, f1_raw, na_probs, qid_to_has_ans)
    return out_eval


def squad_v2_results(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                     best_non_null: Mapping[str, str], null_odds: Mapping[str, float]) -> dict:
    """What bert-squad reports for v2.0, from one predict pass.

    exact_match / f1 / HasAns_* / NoAns_* score predictions.json as written (evaluate-v2.0.py
    without a na-prob file). The threshold search runs on the best *non-null* answer of every
    question with its null odds, so that a lower threshold can bring back answers that
    predictions.json has replaced by "" (evaluate-v2.0.py with --na-prob-file null_odds.json on
    predictions.json cannot); `predictions_best_thresh.json` written with best_f1_thresh scores
    best_f1. Where answering nothing is best, the threshold is 1 below the smallest null odds
    (the official script says 0.0, which fits probabilities, not odds).
    """
    main = evaluate_v2(gold, predictions)
    results = {"exact_match": main.pop("exact"), "f1": main.pop("f1"), **main}
    qid_to_has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw, f1_raw = get_raw_scores(gold, best_non_null)
    all_null = min(null_odds.values(), default=0.0) - 1.0
    results["best_exact"], results["best_exact_thresh"] = find_best_thresh(
        best_non_null, exact_raw, null_odds, qid_to_has_ans, all_null)
    results["best_f1"], results["best_f1_thresh"] = find_best_thresh(
        best_non_null, f1_raw, null_odds, qid_to_has_ans, all_null)
    return results
