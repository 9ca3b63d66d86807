"""From start/end logits to answer texts: run_squad.py's `write_predictions`, vectorised.

For every feature (window) the `n_best_size` best start and end positions are paired; a pair
counts when both ends lie in the window's context, the start has its max context there, end >=
start and the span has at most `max_answer_length` pieces. Pairs are ranked by start + end logit
over all windows of a question; the best `n_best_size` distinct texts, mapped back onto the
original context by `get_final_text` (casing, accents, punctuation spacing), make the n-best list.
SQuAD 2.0 adds the null answer: its score is the smallest [CLS] start + end logit over the
windows, and a question is answered "" when null score - best non-null score > the threshold.

The ranking (ties included) is the original's: candidates keep the order the original built them
in (window, start rank, end rank), and ranking is a stable sort. What is new: the pairing and
ranking run as numpy over all windows at once, and the text of a window's words is tokenized
once per word; only the walk down each question's ranked list (until n-best distinct texts) is
per-question Python. The original's loop was a known bottleneck on the full dev set.

Files, in the original formats (indent 4): `predictions.json` {id: text},
`nbest_predictions.json` {id: [{text, probability, start_logit, end_logit}]}, and for v2.0
`null_odds.json` {id: null score - best non-null score}.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from bert_finetune import fileio, tokenization
from bert_finetune.data.squad import SquadExample
from bert_finetune.data.squad_features import InputFeatures

_CHUNK = 2048  # windows paired at once: [chunk, n_best, n_best] booleans stay small


@dataclasses.dataclass
class SquadPredictions:
    """What post-processing gives, keyed by question id (in example order)."""

    predictions: dict[str, str]
    nbest: dict[str, list[dict]]
    null_odds: dict[str, float] | None  # v2.0 only: null score - best non-null score
    best_non_null: dict[str, str]  # the best non-null text, whatever the threshold

    def with_threshold(self, null_score_diff_threshold: float) -> dict[str, str]:
        """predictions.json as it would be with another null threshold (v2.0)."""
        if self.null_odds is None:
            return dict(self.predictions)
        return {qid: "" if self.null_odds[qid] > null_score_diff_threshold else text
                for qid, text in self.best_non_null.items()}


def _compute_softmax(scores: Sequence[float]) -> list[float]:
    """Compute softmax probability over raw logits."""
    if not scores:
        return []
    max_score = max(scores)
    exp_scores = [math.exp(score - max_score) for score in scores]
    total_sum = 0.0
    for x in exp_scores:
        total_sum += x
    return [x / total_sum for x in exp_scores]


def _strip_spaces(text: str) -> tuple[str, list[int]]:
    """(text without spaces, for each of its chars the index in `text`)."""
    ns_to_s_map = [i for i, c in enumerate(text) if c != " "]
    return text.replace(" ", ""), ns_to_s_map


def _project(pred_text: str, orig_text: str, tok_text: str, verbose_logging: bool) -> str:
    """`get_final_text` given the BasicTokenizer text of orig_text (`tok_text`)."""
    if pred_text == tok_text:
        # The whole span: the character alignment below maps it onto all of orig_text (which
        # is words joined by single spaces), and so does its failure.
        return orig_text
    start_position = tok_text.find(pred_text)
    if start_position == -1:
        if verbose_logging:
            logging.info("Unable to find text: '%s' in '%s'", pred_text, orig_text)
        return orig_text
    end_position = start_position + len(pred_text) - 1

    orig_ns_text, orig_ns_to_s_map = _strip_spaces(orig_text)
    tok_ns_text, tok_ns_to_s_map = _strip_spaces(tok_text)
    if len(orig_ns_text) != len(tok_ns_text):
        if verbose_logging:
            logging.info("Length not equal after stripping spaces: '%s' vs '%s'", orig_ns_text,
                         tok_ns_text)
        return orig_text

    # We then project the characters in `pred_text` back to `orig_text` using the
    # character-to-character alignment.
    tok_s_to_ns_map = {tok_index: i for i, tok_index in enumerate(tok_ns_to_s_map)}
    ns_start = tok_s_to_ns_map.get(start_position)
    ns_end = tok_s_to_ns_map.get(end_position)
    if ns_start is None or ns_start >= len(orig_ns_to_s_map):
        if verbose_logging:
            logging.info("Couldn't map start position")
        return orig_text
    if ns_end is None or ns_end >= len(orig_ns_to_s_map):
        if verbose_logging:
            logging.info("Couldn't map end position")
        return orig_text
    return orig_text[orig_ns_to_s_map[ns_start]:(orig_ns_to_s_map[ns_end] + 1)]


def get_final_text(pred_text: str, orig_text: str, do_lower_case: bool,
                   verbose_logging: bool = False) -> str:
    """Project the tokenized prediction back to the original text.

    When we created the data, we kept track of the alignment between original (whitespace
    tokenized) tokens and our WordPiece tokenized tokens. So now `orig_text` contains the span of
    our original text corresponding to the span that we predicted. However, `orig_text` may
    contain extra characters that we don't want in our prediction: for "Steve Smith's" with the
    prediction "steve smith", we want "Steve Smith". So we tokenize orig_text, find pred_text in
    it, and map the match back through a character alignment that ignores spaces. If that fails
    (the tokenizer changed the characters), orig_text is returned, a heuristic that is rarely
    wrong.
    """
    tokenizer = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
    tok_text = " ".join(tokenizer.tokenize(orig_text))
    return _project(pred_text, orig_text, tok_text, verbose_logging)


class _TextMapper:
    """The final text of a (window, start, end) span; BasicTokenizer runs once per word."""

    def __init__(self, do_lower_case: bool, verbose_logging: bool):
        self.basic = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
        self.verbose_logging = verbose_logging
        self.word_text: dict[str, str] = {}

    def _tok_text(self, words: Sequence[str]) -> str:
        # BasicTokenizer splits on whitespace first, so tokenizing word by word gives the same
        # tokens as tokenizing the joined text.
        parts = []
        for w in words:
            t = self.word_text.get(w)
            if t is None:
                t = self.word_text[w] = " ".join(self.basic.tokenize(w))
            if t:
                parts.append(t)
        return " ".join(parts)

    def __call__(self, example: SquadExample, feature: InputFeatures, start: int,
                 end: int) -> str:
        tok_tokens = feature.tokens[start:(end + 1)]
        orig_doc_start = feature.tok_to_orig_index[feature.doc_start + start - feature.doc_offset]
        orig_doc_end = feature.tok_to_orig_index[feature.doc_start + end - feature.doc_offset]
        orig_tokens = example.doc_tokens[orig_doc_start:(orig_doc_end + 1)]
        tok_text = " ".join(tok_tokens)
        # De-tokenize WordPieces that have been split off.
        tok_text = tok_text.replace(" ##", "").replace("##", "")
        # Clean whitespace.
        tok_text = " ".join(tok_text.strip().split())
        orig_text = " ".join(orig_tokens)
        return _project(tok_text, orig_text, self._tok_text(orig_tokens), self.verbose_logging)


def _window_arrays(features: Sequence[InputFeatures], seq_length: int):
    """Per window: first/last+1 context position [N] and the max-context flags [N, T]."""
    n = len(features)
    lo = np.fromiter((f.doc_offset for f in features), np.int64, n)
    hi = lo + np.fromiter((f.doc_length for f in features), np.int64, n)
    max_ctx = np.zeros([n, seq_length + 1], bool)  # +1: a context may end at the last position
    for i, f in enumerate(features):
        max_ctx[i, f.doc_offset:f.doc_offset + f.doc_length] = f.max_context
    return lo, hi, max_ctx[:, :seq_length]


def _candidates(start_logits: np.ndarray, end_logits: np.ndarray, lo: np.ndarray,
                hi: np.ndarray, max_ctx: np.ndarray, n_best_size: int, max_answer_length: int):
    """Every allowed (window, start, end) among each window's n-best starts and ends.

    Returns flat arrays (window, start, end, score) in the original's build order: window, then
    start rank, then end rank.
    """
    out = []
    n, t = start_logits.shape
    k = min(n_best_size, t)
    for c0 in range(0, n, _CHUNK):
        c1 = min(c0 + _CHUNK, n)
        sl = start_logits[c0:c1].astype(np.float64)  # [C, T]
        el = end_logits[c0:c1].astype(np.float64)
        # A stable sort of the negated logits: ties keep the lower position first, as the
        # original's sorted(..., reverse=True).
        s_idx = np.argsort(-sl, axis=1, kind="stable")[:, :k]  # [C, k]
        e_idx = np.argsort(-el, axis=1, kind="stable")[:, :k]
        rows = np.arange(c1 - c0)[:, None]
        l0, h0 = lo[c0:c1, None], hi[c0:c1, None]
        ok_s = (s_idx >= l0) & (s_idx < h0) & max_ctx[c0:c1][rows, s_idx]  # [C, k]
        ok_e = (e_idx >= l0) & (e_idx < h0)
        length = e_idx[:, None, :] - s_idx[:, :, None] + 1  # [C, k(start), k(end)]
        ok = ok_s[:, :, None] & ok_e[:, None, :] & (length >= 1) & (length <= max_answer_length)
        w, i, j = np.nonzero(ok)
        s, e = s_idx[w, i], e_idx[w, j]
        out.append((w + c0, s, e, sl[w, s] + el[w, e]))
    if not out:
        empty = np.zeros([0], np.int64)
        return empty, empty, empty, np.zeros([0])
    return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))


def compute_predictions(
    examples: Sequence[SquadExample],
    features: Sequence[InputFeatures],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int,
    max_answer_length: int,
    do_lower_case: bool,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
    verbose_logging: bool = False,
) -> SquadPredictions:
    """Final predictions and n-best lists; logits [N, T] are row i <-> features[i].

    Every example needs at least one feature; features of one example are consecutive.
    """
    num = len(features)
    if start_logits.shape[0] != num or end_logits.shape[0] != num:
        raise ValueError(f"{num} features but logits for {start_logits.shape[0]} / "
                         f"{end_logits.shape[0]}")
    ex_of = np.fromiter((f.example_index for f in features), np.int64, num)  # [N]
    if num and np.any(np.diff(ex_of) < 0):
        raise ValueError("features must be grouped by example, in order")
    lo, hi, max_ctx = _window_arrays(features, start_logits.shape[1])
    win, s, e, score = _candidates(start_logits, end_logits, lo, hi, max_ctx, n_best_size,
                                   max_answer_length)
    order = np.arange(len(win))
    example_of = ex_of[win]
    null_window: dict[int, int] = {}  # example index -> its null answer's window
    if version_2_with_negative and num:
        # The null answer of each example: its window with the smallest [CLS] score (the first
        # one on ties), added after the example's span candidates.
        feature_null = start_logits[:, 0].astype(np.float64) + end_logits[:, 0]
        by_null = np.lexsort((np.arange(num), feature_null, ex_of))
        first = np.ones(num, bool)
        first[1:] = ex_of[by_null][1:] != ex_of[by_null][:-1]
        null_win = by_null[first]  # one window per example that has features
        null_window = dict(zip(ex_of[null_win].tolist(), null_win.tolist(), strict=True))
        win = np.concatenate([win, null_win])
        s = np.concatenate([s, np.zeros_like(null_win)])
        e = np.concatenate([e, np.zeros_like(null_win)])
        score = np.concatenate([score, feature_null[null_win]])
        example_of = np.concatenate([example_of, ex_of[null_win]])
        order = np.arange(len(win))
    ranked = np.lexsort((order, -score, example_of))
    win, s, e, score, example_of = (a[ranked] for a in (win, s, e, score, example_of))
    bounds = np.searchsorted(example_of, np.arange(len(examples) + 1))

    text_of = _TextMapper(do_lower_case, verbose_logging)
    predictions: dict[str, str] = collections.OrderedDict()
    nbest_json: dict[str, list[dict]] = collections.OrderedDict()
    null_odds: dict[str, float] | None = collections.OrderedDict() if version_2_with_negative \
        else None
    best_non_null: dict[str, str] = collections.OrderedDict()
    win_l, s_l, e_l = win.tolist(), s.tolist(), e.tolist()
    for ex_index, example in enumerate(examples):
        seen: set[str] = set()
        nbest: list[tuple[str, float, float]] = []  # (text, start_logit, end_logit)
        for c in range(bounds[ex_index], bounds[ex_index + 1]):
            if len(nbest) >= n_best_size:
                break
            w, start, end = win_l[c], s_l[c], e_l[c]
            if start > 0:  # a non-null prediction
                final_text = text_of(example, features[w], start, end)
                if final_text in seen:
                    continue
            else:
                final_text = ""
            seen.add(final_text)
            nbest.append((final_text, float(start_logits[w, start]),
                          float(end_logits[w, end])))
        if version_2_with_negative and ex_index in null_window:
            # If we didn't include the empty option in the n-best, include it.
            if "" not in seen:
                w = null_window[ex_index]
                nbest.append(("", float(start_logits[w, 0]), float(end_logits[w, 0])))
        # In very rare edge cases we could have no valid predictions. So we just create a
        # nonce prediction in this case to avoid failure.
        if not nbest:
            nbest.append(("empty", 0.0, 0.0))

        probs = _compute_softmax([sl + el for _, sl, el in nbest])
        best_entry = next((entry for entry in nbest if entry[0]), None)
        nbest_json[example.qas_id] = [
            collections.OrderedDict(text=text, probability=p, start_logit=sl, end_logit=el)
            for (text, sl, el), p in zip(nbest, probs, strict=True)]
        if not version_2_with_negative:
            predictions[example.qas_id] = nbest[0][0]
            best_non_null[example.qas_id] = nbest[0][0]
            continue
        w = null_window.get(ex_index)
        score_null = (float(start_logits[w, 0]) + float(end_logits[w, 0])) if w is not None \
            else 0.0
        # Where no span qualifies (the original crashed), the null answer wins.
        best_sl, best_el = (best_entry[1], best_entry[2]) if best_entry else (0.0, 0.0)
        score_diff = score_null - best_sl - best_el
        null_odds[example.qas_id] = score_diff
        best_non_null[example.qas_id] = best_entry[0] if best_entry else ""
        predictions[example.qas_id] = "" if (score_diff > null_score_diff_threshold
                                             or best_entry is None) else best_entry[0]
    return SquadPredictions(predictions, nbest_json, null_odds, best_non_null)


def write_json(path: str, obj: Mapping) -> None:
    """As the original: json.dumps(obj, indent=4) + newline (atomically)."""
    fileio.atomic_write(path, json.dumps(obj, indent=4) + "\n")


def write_predictions(output_dir: str, result: SquadPredictions) -> None:
    """predictions.json, nbest_predictions.json and (v2.0) null_odds.json in output_dir."""
    logging.info("Writing predictions to: %s", os.path.join(output_dir, "predictions.json"))
    write_json(os.path.join(output_dir, "predictions.json"), result.predictions)
    write_json(os.path.join(output_dir, "nbest_predictions.json"), result.nbest)
    if result.null_odds is not None:
        write_json(os.path.join(output_dir, "null_odds.json"), result.null_odds)
