"""The in-graph SQuAD answer selection (export/squad_answers.py) against bert-squad's Python.

No model here: contexts chosen to hit every branch of `get_final_text` (word-internal starts,
punctuation, accents, case, whitespace runs, CJK, Hangul that NFD lengthens, words over 200
characters, control characters, [UNK]s, a text that occurs twice in its words) plus real SQuAD
paragraphs, packed by the graph and by `convert_examples_to_features`, then:
- the packed features (every window, at one window per context and at many) and the
  max-context flags are identical;
- the text of EVERY span (start <= end < start + 30) equals `_TextMapper` (the original's
  get_final_text on the span), and context[answer_start:answer_end] is that text;
- on random logits (rounded, so that ties occur), over all windows, the answer, its
  probability and SQuAD 2.0's null score diff equal `compute_predictions`' predictions.json /
  nbest / null_odds.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from bert_finetune import squad_postprocess as post
from bert_finetune.data import squad as squad_data
from bert_finetune.data import squad_features
from bert_finetune.export import squad_answers
from bert_finetune.export.text_preprocessing import BertPreprocessor
from bert_finetune.tokenization import FullTokenizer

SEQ, QUERY = 256, 16
CONTEXTS = [
    "The leader was John Smith (1895-1943). He wasn't there; his son's café was.",
    "Café MÜLLER in Zürich: naïve résumé, ÉCOLE, İstanbul and the ﬁnance ﬁrm.",
    "Line one.\n\nLine\ttwo  with   spaces\u202fand\u00a0nbsp\u2028here.\r\nEnd",
    "北京是中国的首都。Beijing is the capital; 北京大学 (Peking University) too.",
    "서울은 한국의 수도입니다. Seoul is big, 서울특별시.",
    "x" * 210 + " end. A " + "verylongword" * 18 + "! done",
    "ab\u200bcd e\u0000f g\u00adh i\x07j ok.",
    "the the-the thethe The THE. aaa aa a. 1,000,000 and 1.5x.",
    "I \u2764\ufe0f NY \U0001F600. [UNK] token, [CLS] too. ##ing ## # done.",
    "  leading and trailing whitespace  ",
]
QUESTIONS = ["Who was the leader?", "Where is the café?", "What is on line two?",
             "What is the capital?", "What is Seoul?", "What is long?", "What is ok?",
             "What repeats?", "What is loved?", "Whitespace?"]


def squad_paragraphs(shared_dir, n: int) -> tuple[list[str], list[str]]:
    data = json.loads((shared_dir / "data" / "squad" / "v1.1" / "dev-v1.1-articles-16-47.json")
                      .read_text(encoding="utf-8"))
    contexts, questions = [], []
    for article in data["data"]:
        for p in article["paragraphs"]:
            if len(p["context"].split()) < 120:
                contexts.append(p["context"])
                questions.append(p["qas"][0]["question"])
            if len(contexts) == n:
                return contexts, questions
    return contexts, questions


class Windows:
    """The same examples packed by bert-squad (Python) and by the graph."""

    def __init__(self, vocab: str, lower: bool, contexts: list[str], questions: list[str],
                 seq: int, stride: int):
        self.contexts, self.lower, self.seq = contexts, lower, seq
        tokenizer = FullTokenizer(vocab, lower)
        self.examples = [squad_data.SquadExample(str(i), q, squad_data.split_context(c)[0])
                         for i, (q, c) in enumerate(zip(questions, contexts, strict=True))]
        self.features: list = []
        squad_features.convert_examples_to_features(
            self.examples, tokenizer, seq, stride, QUERY, False, self.features.append)
        self.pre = BertPreprocessor(vocab, lower, seq)
        self.context = tf.constant(contexts)
        self.ctx = squad_answers.ContextPieces(self.pre, self.context)
        self.windows = squad_answers.pack_windows(self.pre, tf.constant(questions), self.ctx,
                                                  QUERY, stride)


# (casing, max_seq_length, doc_stride): one window per example, or many (a long context
# at 40 is cut every 8 pieces).
LAYOUTS = {"uncased": (True, SEQ, 128), "cased": (False, SEQ, 128),
           "uncased-windows": (True, 40, 8)}


_BUILT: dict[str, Windows] = {}


def _layout(name: str, minilm_hf, shared_dir) -> Windows:
    if name not in _BUILT:
        contexts, questions = squad_paragraphs(shared_dir, 6)
        lower, seq, stride = LAYOUTS[name]
        _BUILT[name] = Windows(str(minilm_hf / "vocab.txt"), lower, CONTEXTS + contexts,
                               QUESTIONS + questions, seq, stride)
    return _BUILT[name]


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def windows(request, minilm_hf, shared_dir) -> Windows:
    return _layout(request.param, minilm_hf, shared_dir)


@pytest.fixture(scope="module", params=["cased", "uncased"])
def one_window(request, minilm_hf, shared_dir) -> Windows:
    """Span texts do not depend on the windows: checked on one window per context."""
    return _layout(request.param, minilm_hf, shared_dir)


def test_features_equal_bert_squad(windows):
    w, features = windows.windows, windows.features
    for name in ("input_ids", "input_mask", "segment_ids"):
        want = np.array([getattr(f, name) for f in features])
        np.testing.assert_array_equal(w.features[name].numpy(), want, err_msg=name)
    assert list(w.row.numpy()) == [f.example_index for f in features]
    assert list(w.index.numpy()) == [f.doc_span_index for f in features]
    assert list(w.doc_start.numpy()) == [f.doc_start for f in features]
    assert list(w.doc_offset.numpy()) == [f.doc_offset for f in features]
    assert list(w.doc_length.numpy()) == [f.doc_length for f in features]
    max_context = w.max_context.numpy()
    for i, f in enumerate(features):
        want = np.zeros([windows.seq], bool)
        want[f.doc_offset:f.doc_offset + f.doc_length] = f.max_context
        np.testing.assert_array_equal(max_context[i], want, err_msg=str(i))
    if windows.seq < SEQ:
        assert max(w.num_windows.numpy()) > 10


def _normalised(text: str) -> str:
    return re.sub("[ \t\r\n\u202f]+", " ", text)


def test_every_span_text_equals_get_final_text(one_window):
    windows = one_window
    assert len(windows.features) == len(windows.examples)
    mapper = post._TextMapper(windows.lower, False)
    spans = [[(s, e) for s in range(f.doc_length) for e in range(s, min(s + 30, f.doc_length))]
             for f in windows.features]
    width = max(map(len, spans))
    start = np.zeros([len(spans), width], np.int64)
    end = np.zeros([len(spans), width], np.int64)
    for i, row in enumerate(spans):
        start[i, :len(row)] = [s for s, _ in row]
        end[i, :len(row)] = [e for _, e in row]
    text, begin, stop = squad_answers.span_texts(windows.ctx, windows.context,
                                                 tf.constant(start), tf.constant(end))
    text, begin, stop = text.numpy(), begin.numpy(), stop.numpy()
    checked = unk_or_fallback = 0
    for i, row in enumerate(spans):
        ex, f = windows.examples[i], windows.features[i]
        for j, (s, e) in enumerate(row):
            want = mapper(ex, f, f.doc_offset + s, f.doc_offset + e)
            got = text[i, j].decode("utf-8")
            assert got == want, (i, s, e, f.tokens[f.doc_offset + s:f.doc_offset + e + 1])
            assert _normalised(windows.contexts[i][begin[i, j]:stop[i, j]]) == want
            checked += 1
            unk_or_fallback += "[UNK]" in f.tokens[f.doc_offset + s:f.doc_offset + e + 1]
    assert checked > 5000 and unk_or_fallback > 50


@pytest.mark.parametrize("v2", [False, True], ids=["v1.1", "v2.0"])
@pytest.mark.parametrize("n_best, max_len", [(20, 30), (3, 4)])
def test_answers_equal_compute_predictions(windows, v2, n_best, max_len):
    rng = np.random.default_rng(7)
    shape = [len(windows.features), windows.seq]
    # Rounded to 0.5: many equal scores, so the tie order is tested too.
    start = np.round(rng.normal(0, 2, shape) * 2).astype(np.float32) / 2
    end = np.round(rng.normal(0, 2, shape) * 2).astype(np.float32) / 2
    threshold = 0.0
    if v2:  # the median null score diff: both outcomes occur
        odds = post.compute_predictions(windows.examples, windows.features, start, end, n_best,
                                        max_len, windows.lower, v2).null_odds
        threshold = float(np.median(list(odds.values())))
    out = squad_answers.best_answers(
        windows.ctx, windows.context, windows.windows, tf.constant(start), tf.constant(end),
        n_best, max_len, v2, threshold)
    out = {k: v.numpy() for k, v in out.items()}
    want = post.compute_predictions(windows.examples, windows.features, start, end, n_best,
                                    max_len, windows.lower, v2, threshold)
    empty = 0
    for i, ex in enumerate(windows.examples):
        answer = out["answer"][i].decode("utf-8")
        assert answer == want.predictions[ex.qas_id], i
        entry = next(e for e in want.nbest[ex.qas_id] if e["text"] == answer)
        assert out["probability"][i] == pytest.approx(entry["probability"], abs=1e-6)
        assert out["score"][i] == pytest.approx(entry["start_logit"] + entry["end_logit"],
                                                abs=1e-5)
        if answer in ("", squad_answers.EMPTY_ANSWER):
            empty += 1
            assert out["answer_start"][i] == out["answer_end"][i] == -1
        else:
            a, z = out["answer_start"][i], out["answer_end"][i]
            assert _normalised(windows.contexts[i][a:z]) == answer
        if v2:
            assert out["null_score_diff"][i] == pytest.approx(want.null_odds[ex.qas_id],
                                                              abs=1e-5)
    assert empty < len(windows.examples)
    if v2:
        assert empty > 0  # both outcomes occur at this threshold


def test_empty_and_whitespace_contexts(minilm_hf):
    """No context pieces: no span qualifies -> the original's nonce answers."""
    w = BertPreprocessor(str(minilm_hf / "vocab.txt"), True, 32)
    context = tf.constant(["", "  \n ", "\u200b"])
    ctx = squad_answers.ContextPieces(w, context)
    windows = squad_answers.pack_windows(w, tf.constant(["q?", "", "why"]), ctx, 8, 4)
    assert list(windows.num_windows.numpy()) == [1, 1, 1]
    logits = tf.zeros([3, 32])
    for v2, answer in ((False, b"empty"), (True, b"")):
        out = squad_answers.best_answers(ctx, context, windows, logits, logits, 20, 30, v2, 0.0)
        assert list(out["answer"].numpy()) == [answer] * 3
        assert list(out["answer_start"].numpy()) == [-1] * 3
