"""SQuAD reading and features: run_squad.py's rules on hand-made cases, and bad files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bert_finetune import tokenization
from bert_finetune.data import squad
from bert_finetune.data import squad_features as sf
from bert_finetune.errors import UserError

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "leader", "was", "john", "smith", "(",
         ")", "-", ".", "1895", "1943", "who", "born", "when", "a", "b", "c", "d", "e", "f", "g",
         "h", "i", "j", "##s", "year"]


@pytest.fixture
def tokenizer(tmp_path: Path) -> tokenization.FullTokenizer:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(w + "\n" for w in WORDS))
    return tokenization.FullTokenizer(str(vocab), do_lower_case=True)


def squad_file(tmp_path: Path, data, name: str = "s.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data if not isinstance(data, list) else {"data": data}))
    return str(path)


def one_question(context: str, answers: list, qid: str = "q1", **qa) -> list:
    return [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": qid, "question": "who was the leader?", "answers": answers, **qa}]}]}]


# -- reading -----------------------------------------------------------------------------------
def test_split_context_whitespace_and_char_map():
    tokens, offsets = squad.split_context(" The\u202fleader  was\n(1895-1943).")
    assert tokens == ["The", "leader", "was", "(1895-1943)."]
    assert offsets[:6] == [-1, 0, 0, 0, 0, 1]
    assert offsets[-1] == 3 and len(offsets) == len(" The\u202fleader  was\n(1895-1943).")


def test_read_training_example_word_positions(tmp_path):
    context = "The leader was John Smith (1895-1943)."
    path = squad_file(tmp_path, one_question(context, [
        {"text": "1895", "answer_start": context.index("1895")},
        {"text": "John Smith", "answer_start": context.index("John")}]))
    (ex,) = squad.read_squad_examples(path, is_training=True)
    assert ex.doc_tokens == ["The", "leader", "was", "John", "Smith", "(1895-1943)."]
    # The first of several answers; the word containing it.
    assert (ex.orig_answer_text, ex.start_position, ex.end_position) == ("1895", 5, 5)
    (pred,) = squad.read_squad_examples(path, is_training=False)
    assert pred.start_position is None and not pred.is_impossible
    assert squad.read_gold(path) == {"q1": ["1895", "John Smith"]}


def test_unrecoverable_answer_is_skipped_with_a_warning(tmp_path, caplog):
    data = one_question("Hello world", [{"text": "earth", "answer_start": 6}])
    data[0]["paragraphs"][0]["qas"].append(
        {"id": "q2", "question": "?", "answers": [{"text": "Hello", "answer_start": 0}]})
    path = squad_file(tmp_path, data)
    with caplog.at_level("WARNING"):
        examples = squad.read_squad_examples(path, is_training=True)
    assert [e.qas_id for e in examples] == ["q2"]
    assert "Could not find answer: 'world' vs. 'earth'" in caplog.text
    # Predicting keeps every question.
    assert len(squad.read_squad_examples(path, is_training=False)) == 2


def test_v2_impossible(tmp_path):
    data = one_question("Hello world", [], is_impossible=True,
                        plausible_answers=[{"text": "world", "answer_start": 6}])
    path = squad_file(tmp_path, data)
    (ex,) = squad.read_squad_examples(path, True, version_2_with_negative=True)
    assert ex.is_impossible and (ex.start_position, ex.end_position) == (-1, -1)
    assert ex.orig_answer_text == ""
    assert squad.read_gold(path) == {"q1": []}


@pytest.mark.parametrize("content, message", [
    ("{not json", r"s\.json: not valid JSON: line 1 column 2"),
    ({"version": "1.1"}, r"s\.json: no 'data' list"),
    ([{"title": "t"}], r"s\.json: data\[0\] has no 'paragraphs'"),
    ([{"paragraphs": [{"context": "x"}]}], r"data\[0\]\.paragraphs\[0\] has no 'qas'"),
    ([{"paragraphs": [{"qas": []}]}], r"data\[0\]\.paragraphs\[0\] has no 'context'"),
    (one_question("Hello world", [{"text": "world", "answer_start": 9}]),
     r"question q1: answer_start=9 .* outside its 11-char context"),
    (one_question("Hello world", [{"text": "x", "answer_start": -1}]), r"answer_start=-1"),
    (one_question("Hello world", [], is_impossible=True),
     r"question q1 has is_impossible=true: this is a SQuAD 2\.0 file; pass "
     r"--version_2_with_negative=true"),
    ({"data": []}, r"s\.json: no questions in the file"),
    ([{"paragraphs": [{"context": "x", "qas": []}]}], r"no questions in the file"),
    ([{"paragraphs": [{"context": "x", "qas": [{"question": "a?"}, {"question": "b?"}]}]}],
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'id'"),
    ([{"paragraphs": [{"context": "x", "qas": [{"id": "a", "question": "?"},
                                                {"id": "a", "question": "?"}]}]}],
     r"question id a appears twice"),
])
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "s.json"
    path.write_text(content if isinstance(content, str) else json.dumps(
        content if isinstance(content, dict) else {"data": content}))
    for is_training in (False, True):
        with pytest.raises(UserError, match=message) as e:
            squad.read_squad_examples(str(path), is_training)
        assert "\n" not in str(e.value) and str(path) in str(e.value)


# -- features ----------------------------------------------------------------------------------
def test_improve_answer_span(tokenizer):
    # The original's docstring example: the word is "(1895-1943)." but the answer is "1895".
    doc = tokenizer.tokenize("The leader was John Smith (1895-1943).")
    start = doc.index("(")
    assert sf._improve_answer_span(doc, start, len(doc) - 1, tokenizer, "1895") == (
        doc.index("1895"),) * 2
    # Nothing better: the input span.
    assert sf._improve_answer_span(doc, 0, 1, tokenizer, "leader was") == (0, 1)


@pytest.mark.parametrize("num_tokens, max_doc, stride", [
    (1, 5, 2), (17, 5, 2), (17, 5, 5), (30, 7, 3), (30, 7, 10), (100, 20, 7), (12, 12, 4)])
def test_max_context_vectorised_equals_the_original(num_tokens, max_doc, stride):
    spans = sf.doc_spans_for(num_tokens, max_doc, stride)
    assert spans[0].start == 0 and spans[-1].start + spans[-1].length == num_tokens
    assert all(s.length <= max_doc for s in spans)
    best = sf.best_span_per_token(spans, num_tokens)
    for s in range(len(spans)):
        for p in range(num_tokens):
            assert (best[p] == s) == sf._check_is_max_context(spans, s, p), (s, p)


def test_windows_positions_and_records(tokenizer, tmp_path):
    words = "a b c d e f g h i j".split()
    context = " ".join(words) + " the leader was john smith (1895-1943)."
    examples = [squad.SquadExample(
        qas_id="q", question_text="when born ?", doc_tokens=context.split(),
        orig_answer_text="1895", start_position=15, end_position=15)]
    feats = []
    # 3 query pieces: 16 - 3 - 3 = 10 doc pieces per window, stride 4.
    n = sf.convert_examples_to_features(examples, tokenizer, 16, 4, 64, True, feats.append)
    doc = tokenizer.tokenize(context)  # 21 pieces: the year word is ( 1895 - 1943 ) .
    assert len(doc) == 21
    assert [(f.doc_start, f.doc_length) for f in feats] == [(0, 10), (4, 10), (8, 10),
                                                             (12, 9)]
    assert n == 4 and [f.unique_id for f in feats] == [1000000000 + i for i in range(4)]
    answer = doc.index("1895")  # 16
    word_of = [w for w, word in enumerate(context.split()) for _ in tokenizer.tokenize(word)]
    for f in feats:
        assert f.tokens[:5] == ["[CLS]", "when", "born", "[UNK]", "[SEP]"]  # no "?" in vocab
        assert len(f.input_ids) == len(f.input_mask) == len(f.segment_ids) == 16
        assert f.segment_ids[:f.doc_offset] == [0] * f.doc_offset
        assert sum(f.input_mask) == f.doc_offset + f.doc_length + 1
        inside = f.doc_start <= answer < f.doc_start + f.doc_length
        if inside:
            assert f.tokens[f.start_position] == "1895" == f.tokens[f.end_position]
        else:
            assert (f.start_position, f.end_position) == (0, 0)
        assert f.token_to_orig_map == {f.doc_offset + i: word_of[f.doc_start + i]
                                       for i in range(f.doc_length)}
    # The original's dict view of max context agrees with the per-token function.
    spans = sf.doc_spans_for(21, 10, 4)
    for i, f in enumerate(feats):
        for pos, flag in f.token_is_max_context.items():
            assert flag == sf._check_is_max_context(spans, i, f.doc_start + pos - f.doc_offset)

    out = tmp_path / "train.tf_record"
    kept, count = sf.write_features(examples, tokenizer, 16, 4, 64, True, str(out),
                                    pad_to_multiple=3)
    assert count == 6 and len(kept) == 4
    spec = sf.name_to_features(16, is_training=True)
    assert set(spec) == {"unique_ids", "input_ids", "input_mask", "segment_ids",
                         "start_positions", "end_positions", "is_impossible"}
    records = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(str(out))]
    assert [int(r["unique_ids"]) for r in records] == [f.unique_id for f in kept] + [
        kept[-1].unique_id] * 2
    for r, f in zip(records, kept, strict=False):
        assert r["input_ids"].numpy().tolist() == f.input_ids
        assert int(r["start_positions"]) == f.start_position
    assert set(sf.name_to_features(16, is_training=False)) == {
        "unique_ids", "input_ids", "input_mask", "segment_ids"}


def test_query_is_cut_and_impossible_points_at_cls(tokenizer):
    ex = squad.SquadExample(qas_id="q", question_text=" ".join(["a"] * 9),
                            doc_tokens=["b", "c"], start_position=-1, end_position=-1,
                            orig_answer_text="", is_impossible=True)
    feats = []
    sf.convert_examples_to_features([ex], tokenizer, 12, 4, 5, True, feats.append)
    (f,) = feats
    assert f.tokens == ["[CLS]"] + ["a"] * 5 + ["[SEP]", "b", "c", "[SEP]"]
    assert (f.start_position, f.end_position, f.is_impossible) == (0, 0, True)
    with pytest.raises(UserError, match=r"max_seq_length \(8\) must be greater than "
                                        r"max_query_length \(5\) \+ 3"):
        sf.convert_examples_to_features([ex], tokenizer, 8, 4, 5, True, feats.append)


def test_random_examples_answers_round_trip(tokenizer):
    """Every kept training window's positions spell the tokenized answer."""
    rng = random.Random(0)
    vocab_words = [w for w in WORDS[4:] if not w.startswith("##")]
    examples = []
    for i in range(30):
        words = [rng.choice(vocab_words) + rng.choice(["", "s", "."]) for _ in range(40)]
        s = rng.randrange(40)
        e = min(39, s + rng.randrange(3))
        examples.append(squad.SquadExample(f"q{i}", "who ?", words, " ".join(words[s:e + 1]),
                                           s, e))
    feats = []
    sf.convert_examples_to_features(examples, tokenizer, 24, 5, 8, True, feats.append)
    hits = np.zeros(len(examples), int)
    for f in feats:
        ex = examples[f.example_index]
        if f.start_position:
            got = " ".join(f.tokens[f.start_position:f.end_position + 1]).replace(" ##", "")
            assert got == " ".join(tokenizer.tokenize(ex.orig_answer_text)).replace(" ##", "")
            hits[f.example_index] += 1
    assert hits.min() >= 1  # every answer is inside at least one window
