"""SQuAD post-processing: the original's loop as reference, and the oracle on the real dev sets.

The oracle feeds logits that peak exactly at each gold answer's token span (the training labels of
every window: the answer, or [CLS] where the window lacks it / the question is unanswerable)
through the real reading, features, post-processing and official metrics.
"""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import pytest

from bert_finetune import squad_postprocess as pp
from bert_finetune import tokenization
from bert_finetune.data import squad
from bert_finetune.data import squad_features as sf
from bert_finetune.runner import squad_metrics as sm

V1_DEV = "data/squad/v1.1/dev-v1.1.json"
V2_DEV = "data/squad/v2.0/dev-v2.0-cs224n-half.json"


@pytest.fixture(scope="module")
def tokenizer(minilm_hf) -> tokenization.FullTokenizer:
    return tokenization.FullTokenizer(str(minilm_hf / "vocab.txt"), do_lower_case=True)


# -- the reference: run_squad.py's write_predictions loop, as it was ---------------------------
def reference_get_final_text(pred_text, orig_text, do_lower_case):
    def _strip_spaces(text):
        ns_chars = []
        ns_to_s_map = collections.OrderedDict()
        for i, c in enumerate(text):
            if c == " ":
                continue
            ns_to_s_map[len(ns_chars)] = i
            ns_chars.append(c)
        return "".join(ns_chars), ns_to_s_map

    tokenizer = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
    tok_text = " ".join(tokenizer.tokenize(orig_text))
    start_position = tok_text.find(pred_text)
    if start_position == -1:
        return orig_text
    end_position = start_position + len(pred_text) - 1
    orig_ns_text, orig_ns_to_s_map = _strip_spaces(orig_text)
    tok_ns_text, tok_ns_to_s_map = _strip_spaces(tok_text)
    if len(orig_ns_text) != len(tok_ns_text):
        return orig_text
    tok_s_to_ns_map = {tok_index: i for i, tok_index in tok_ns_to_s_map.items()}
    orig_start_position = None
    if start_position in tok_s_to_ns_map:
        ns_start_position = tok_s_to_ns_map[start_position]
        if ns_start_position in orig_ns_to_s_map:
            orig_start_position = orig_ns_to_s_map[ns_start_position]
    if orig_start_position is None:
        return orig_text
    orig_end_position = None
    if end_position in tok_s_to_ns_map:
        ns_end_position = tok_s_to_ns_map[end_position]
        if ns_end_position in orig_ns_to_s_map:
            orig_end_position = orig_ns_to_s_map[ns_end_position]
    if orig_end_position is None:
        return orig_text
    return orig_text[orig_start_position:(orig_end_position + 1)]


def _get_best_indexes(logits, n_best_size):
    index_and_score = sorted(enumerate(logits), key=lambda x: x[1], reverse=True)
    return [index_and_score[i][0] for i in range(min(n_best_size, len(index_and_score)))]


def reference_predictions(examples, features, start_logits, end_logits, n_best_size,
                          max_answer_length, do_lower_case, v2, threshold=0.0):
    prelim_t = collections.namedtuple(
        "PrelimPrediction", ["feature_index", "start_index", "end_index", "start_logit",
                             "end_logit"])
    nbest_t = collections.namedtuple("NbestPrediction", ["text", "start_logit", "end_logit"])
    by_example = collections.defaultdict(list)
    for i, f in enumerate(features):
        by_example[f.example_index].append(i)
    all_predictions, all_nbest, scores_diff = {}, {}, {}
    for example_index, example in enumerate(examples):
        prelim = []
        score_null = 1000000
        min_null_feature_index = null_start_logit = null_end_logit = 0
        for feature_index in by_example[example_index]:
            feature = features[feature_index]
            sl = [float(x) for x in start_logits[feature_index]]
            el = [float(x) for x in end_logits[feature_index]]
            t2o, maxctx = feature.token_to_orig_map, feature.token_is_max_context
            if v2:
                feature_null_score = sl[0] + el[0]
                if feature_null_score < score_null:
                    score_null = feature_null_score
                    min_null_feature_index = feature_index
                    null_start_logit, null_end_logit = sl[0], el[0]
            for start_index in _get_best_indexes(sl, n_best_size):
                for end_index in _get_best_indexes(el, n_best_size):
                    if start_index >= len(feature.tokens) or end_index >= len(feature.tokens):
                        continue
                    if start_index not in t2o or end_index not in t2o:
                        continue
                    if not maxctx.get(start_index, False):
                        continue
                    if end_index < start_index:
                        continue
                    if end_index - start_index + 1 > max_answer_length:
                        continue
                    prelim.append(prelim_t(feature_index, start_index, end_index,
                                           sl[start_index], el[end_index]))
        if v2:
            prelim.append(prelim_t(min_null_feature_index, 0, 0, null_start_logit,
                                   null_end_logit))
        prelim = sorted(prelim, key=lambda x: (x.start_logit + x.end_logit), reverse=True)
        seen, nbest = {}, []
        for pred in prelim:
            if len(nbest) >= n_best_size:
                break
            feature = features[pred.feature_index]
            if pred.start_index > 0:
                tok_tokens = feature.tokens[pred.start_index:(pred.end_index + 1)]
                orig_doc_start = feature.token_to_orig_map[pred.start_index]
                orig_doc_end = feature.token_to_orig_map[pred.end_index]
                orig_tokens = example.doc_tokens[orig_doc_start:(orig_doc_end + 1)]
                tok_text = " ".join(tok_tokens).replace(" ##", "").replace("##", "")
                tok_text = " ".join(tok_text.strip().split())
                final_text = reference_get_final_text(tok_text, " ".join(orig_tokens),
                                                      do_lower_case)
                if final_text in seen:
                    continue
                seen[final_text] = True
            else:
                final_text = ""
                seen[final_text] = True
            nbest.append(nbest_t(final_text, pred.start_logit, pred.end_logit))
        if v2 and "" not in seen:
            nbest.append(nbest_t("", null_start_logit, null_end_logit))
        if not nbest:
            nbest.append(nbest_t("empty", 0.0, 0.0))
        total_scores = [e.start_logit + e.end_logit for e in nbest]
        best_non_null_entry = next((e for e in nbest if e.text), None)
        max_score = max(total_scores)
        exps = [math.exp(s - max_score) for s in total_scores]
        probs = [x / sum(exps) for x in exps]
        all_nbest[example.qas_id] = [
            {"text": e.text, "probability": p, "start_logit": e.start_logit,
             "end_logit": e.end_logit} for e, p in zip(nbest, probs, strict=True)]
        if not v2:
            all_predictions[example.qas_id] = nbest[0].text
        elif best_non_null_entry is None:  # the original crashed here; we answer ""
            scores_diff[example.qas_id] = score_null
            all_predictions[example.qas_id] = ""
        else:
            diff = score_null - best_non_null_entry.start_logit - best_non_null_entry.end_logit
            scores_diff[example.qas_id] = diff
            all_predictions[example.qas_id] = "" if diff > threshold else \
                best_non_null_entry.text
    return all_predictions, all_nbest, scores_diff


@pytest.mark.parametrize("v2", [False, True])
def test_vectorised_equals_the_original_loop(shared_dir, tokenizer, v2):
    """Random logits with many ties (a few distinct values), short windows: the same files."""
    path = shared_dir / (V2_DEV if v2 else V1_DEV)
    examples = squad.read_squad_examples(str(path), False, v2)[:120]
    features = []
    sf.convert_examples_to_features(examples, tokenizer, 64, 16, 12, False, features.append)
    assert len(features) > 3 * len(examples)  # many windows per question
    rng = np.random.default_rng(7)
    shape = (len(features), 64)
    # Quantised logits: plenty of equal scores, so ranking ties must break as the original's.
    start = (rng.integers(-6, 7, size=shape) * 0.5).astype(np.float32)
    end = (rng.integers(-6, 7, size=shape) * 0.5).astype(np.float32)
    if v2:  # [CLS] scores high enough for the null answer to win some questions
        start[:, 0] += 5.0
        end[:, 0] += 5.0
    got = pp.compute_predictions(examples, features, start, end, 7, 9, True, v2, 0.5)
    want_pred, want_nbest, want_diff = reference_predictions(
        examples, features, start, end, 7, 9, True, v2, 0.5)
    assert got.predictions == want_pred
    assert json.dumps(got.nbest) == json.dumps(want_nbest)  # same keys, order, floats
    if v2:
        assert got.null_odds == want_diff
        assert 0 < sum(t == "" for t in got.predictions.values()) < len(examples)
    else:
        assert got.null_odds is None


@pytest.mark.parametrize("pred, orig, lower, want", [
    ("steve smith", "Steve Smith's", True, "Steve Smith"),
    ("1895", "(1895-1943).", True, "1895"),
    ("cafe", "Café", True, "Café"),
    ("zurich", "Zürich,", True, "Zürich"),
    ("Denver", "Denver", False, "Denver"),
    ("missing", "Steve Smith", True, "Steve Smith"),  # not found: the whole original text
])
def test_get_final_text(pred, orig, lower, want):
    assert pp.get_final_text(pred, orig, lower) == want
    assert reference_get_final_text(pred, orig, lower) == want


def test_files_in_the_original_format(tmp_path):
    result = pp.SquadPredictions(
        predictions={"q1": "Paris"},
        nbest={"q1": [{"text": "Paris", "probability": 1.0, "start_logit": 1.5,
                       "end_logit": 2.0}]},
        null_odds={"q1": -3.5}, best_non_null={"q1": "Paris"})
    pp.write_predictions(str(tmp_path), result)
    assert (tmp_path / "predictions.json").read_text() == '{\n    "q1": "Paris"\n}\n'
    nbest = json.loads((tmp_path / "nbest_predictions.json").read_text())
    assert list(nbest["q1"][0]) == ["text", "probability", "start_logit", "end_logit"]
    assert json.loads((tmp_path / "null_odds.json").read_text()) == {"q1": -3.5}


# -- the oracle ----------------------------------------------------------------------------------
def oracle(path: str, tokenizer, v2: bool):
    """Training labels of every window as logits (10 at the label, 0 elsewhere)."""
    examples = squad.read_squad_examples(path, is_training=True, version_2_with_negative=v2)
    features = []
    sf.convert_examples_to_features(examples, tokenizer, 384, 128, 64, True, features.append)
    start = np.zeros([len(features), 384], np.float32)
    end = np.zeros_like(start)
    rows = np.arange(len(features))
    start[rows, [f.start_position for f in features]] = 10.0
    end[rows, [f.end_position for f in features]] = 10.0
    result = pp.compute_predictions(examples, features, start, end, 20, 30, True, v2)
    return result, squad.read_gold(path)


def test_oracle_v1_full_dev(shared_dir, tokenizer):
    result, gold = oracle(str(shared_dir / V1_DEV), tokenizer, v2=False)
    assert len(gold) == 10570
    scores = sm.evaluate_v1(gold, result.predictions)
    # Only answers the whitespace split / tokenizer cannot represent may miss (~0.3%).
    assert scores["exact_match"] >= 99.0 and scores["f1"] >= 99.0, scores
    assert len(result.predictions) >= 10570 - 50  # unrecoverable training answers skipped


def test_oracle_v2_cs224n_half(shared_dir, tokenizer):
    result, gold = oracle(str(shared_dir / V2_DEV), tokenizer, v2=True)
    assert len(gold) == 6078
    scores = sm.squad_v2_results(gold, result.predictions, result.best_non_null,
                                 result.null_odds)
    assert scores["exact_match"] >= 99.0 and scores["f1"] >= 99.0, scores
    # Every unanswerable question goes through the null score.
    assert scores["NoAns_exact"] == 100.0 and scores["NoAns_total"] == 3168
    assert scores["HasAns_exact"] >= 99.0
    assert scores["best_f1"] >= scores["f1"]


def test_span_head_names_shapes_and_loss():
    import tensorflow as tf

    from bert_finetune.heads import SpanHead

    head = SpanHead(hidden_size=5)
    assert {n: v.shape.as_list() for n, v in head.variables_by_name().items()} == {
        "cls/squad/output_weights": [2, 5], "cls/squad/output_bias": [2]}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 5)).astype(np.float32)  # [B, T, H]
    head.output_bias.assign([0.5, -0.25])
    start, end = head.logits(tf.constant(x))
    w = head.output_weights.numpy()
    np.testing.assert_allclose(start, x @ w[0] + 0.5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(end, x @ w[1] - 0.25, rtol=1e-5, atol=1e-6)
    sp, ep = np.array([0, 3, 6]), np.array([2, 3, 6])
    loss = head.loss(start, end, tf.constant(sp), tf.constant(ep)).numpy()  # [B]

    def ce(logits, pos):
        logits = np.asarray(logits, np.float64)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return -log_probs[np.arange(3), pos]

    np.testing.assert_allclose(loss, (ce(start, sp) + ce(end, ep)) / 2, rtol=1e-5)
