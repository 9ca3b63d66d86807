"""The in-graph tokenizer gives exactly FullTokenizer's ids and convert_single_example's packing."""

from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bert_finetune import tokenization
from bert_finetune.data import features
from bert_finetune.data.examples import InputExample
from bert_finetune.errors import UserError
from bert_finetune.export import text_preprocessing as tp

BATCH = 4096


def shared_texts(shared: Path) -> list[str]:
    """Every distinct text in ../shared/data: all GLUE TSV cells, SQuAD titles, contexts,
    questions and answers, and the text files' lines."""
    texts: set[str] = set()
    for path in sorted((shared / "data" / "glue").glob("*/*.tsv")):
        with open(path, encoding="utf-8-sig", newline="") as f:
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts.update(row)
    for path in sorted((shared / "data" / "squad").glob("*/*.json")):
        for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
            texts.add(article["title"])
            for para in article["paragraphs"]:
                texts.add(para["context"])
                for qa in para["qas"]:
                    texts.add(qa["question"])
                    for ans in qa.get("answers", []) + qa.get("plausible_answers", []):
                        texts.add(ans["text"])
    for path in sorted((shared / "data").rglob("*")):
        if path.suffix in (".md", ".txt") and "weights" not in path.parts:
            texts.update(path.read_text(encoding="utf-8").split("\n"))
    return sorted(texts)


@pytest.fixture(scope="module")
def texts(shared_dir) -> list[str]:
    out = shared_texts(shared_dir)
    assert len(out) > 100_000  # GLUE + SQuAD: ~113k distinct texts, ~9 M characters
    return out


@pytest.fixture(scope="module")
def uncased_vocab(minilm_google) -> Path:
    return minilm_google / "vocab.txt"


@pytest.fixture(scope="module")
def cased_vocab(uncased_vocab, tmp_path_factory) -> Path:
    """A cased vocab: the uncased one plus Capitalised and UPPER forms of its whole words
    (and of their accented letters), so that cased text meets real word pieces."""
    lines = uncased_vocab.read_text(encoding="utf-8").split("\n")[:-1]
    seen = set(lines)
    extra = []
    for token in lines:
        if token.startswith("[") or not token.isalpha():
            continue
        body = token[2:] if token.startswith("##") else token
        prefix = token[: len(token) - len(body)]
        for form in (prefix + body.capitalize(), prefix + body.upper()):
            if form not in seen:
                seen.add(form)
                extra.append(form)
    path = tmp_path_factory.mktemp("cased") / "vocab.txt"
    path.write_text("\n".join(lines + extra) + "\n", encoding="utf-8")
    return path


def _tokenize_all(pre: tp.BertPreprocessor, texts: list[str]) -> list[list[int]]:
    fn = tf.function(pre.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
    out: list[list[int]] = []
    for i in range(0, len(texts), BATCH):
        out.extend(fn(tf.constant(texts[i:i + BATCH])).to_list())
    return out


def _first_mismatch(texts, tokenizer, want, got) -> str | None:
    for text, w, g in zip(texts, want, got, strict=True):
        if w != g:
            return (f"{text[:120]!r}: want {tokenizer.convert_ids_to_tokens(w)[:30]} "
                    f"got {tokenizer.convert_ids_to_tokens(g)[:30]}")
    return None


def _check_ids(texts, vocab, lower):
    tokenizer = tokenization.FullTokenizer(str(vocab), do_lower_case=lower)
    want = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t)) for t in texts]
    got = _tokenize_all(tp.BertPreprocessor(str(vocab), lower), texts)
    mismatches = sum(w != g for w, g in zip(want, got, strict=True))
    assert mismatches == 0, (f"{mismatches}/{len(texts)} texts differ; first: "
                             f"{_first_mismatch(texts, tokenizer, want, got)}")


@pytest.mark.slow
@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_ids_equal_full_tokenizer_on_all_shared_text(texts, uncased_vocab, cased_vocab, lower):
    """All ~113k distinct texts (~9 M characters): ~20 s per casing on 2 cores."""
    _check_ids(texts, uncased_vocab if lower else cased_vocab, lower)


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_ids_equal_full_tokenizer_on_shared_text_sample(texts, uncased_vocab, cased_vocab,
                                                        lower):
    """The default suite's share of the above: every non-ASCII text and 1 in 20 of the rest."""
    sample = [t for i, t in enumerate(texts) if not t.isascii() or i % 20 == 0]
    _check_ids(sample, uncased_vocab if lower else cased_vocab, lower)


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_basic_tokens_equal_on_every_code_point(lower):
    """Every Unicode scalar value, in 512-character runs between ASCII letters: the generated
    character classes are the tokenizer's predicates, and lower/NFD/mark stripping agree.

    Left out: code points this Python's Unicode database does not know (category Cn), which a
    newer ICU may normalise (e.g. Unicode 15's combining marks get reordered).
    """
    cps = [cp for cp in range(1, tp._MAX_UNICODE)
           if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) != "Cn"]
    texts = ["x" + "".join(chr(c) for c in cps[i:i + 512]) + "x" for i in range(0, len(cps), 512)]
    basic = tokenization.BasicTokenizer(do_lower_case=lower)
    want = [basic.tokenize(t) for t in texts]
    fn = tf.function(lambda t: tp.basic_tokenize(t, lower))
    got = [[w.decode("utf-8") for w in row] for row in fn(tf.constant(texts)).to_list()]
    bad = [(t[:40], w[:8], g[:8]) for t, w, g in zip(texts, want, got, strict=True) if w != g]
    assert not bad, f"{len(bad)} runs differ, first: {bad[0]}"


EDGE_CASES = [
    b"\xff abc", b"ab\xe2\x82", b"x\xed\xa0\x80y", b"\xc0\xafz", b"\xf4\x90\x80\x80q",  # bad UTF-8
    "ΟΔΟΣ ΣΑΣ Σ ΑΣ. ΑΣ.Β Α'Σ ΑΣΣ".encode(),  # final sigma
    "İstanbul ǅ ẞ Ǆ".encode(),  # full lower-case mappings
    "a\u2028b\u2029c\x85d\x1ce\u200bf\ufeffg\x00h\ufffdi\tj\r\nk".encode(),
    ("é" * 150).encode(), ("é" * 201).encode(),  # the 200-character rule counts characters
    ("a" * 200).encode(), ("a" * 201 + "!").encode(), ("e\u0301" * 120).encode(),
    b"", b"   ", "日本語のテキスト，中文 한국어".encode(), "\u1fef\u037e x Ａ\uff01 ﬁ ½".encode(),
    b"unaffable Unaffable UNAFFABLE don't $5.00 1,000.5 #tag @user <a href>",
]


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_edge_cases(uncased_vocab, cased_vocab, lower):
    vocab = str(uncased_vocab if lower else cased_vocab)
    tokenizer = tokenization.FullTokenizer(vocab, do_lower_case=lower)
    got = tp.BertPreprocessor(vocab, lower).tokenize(tf.constant(EDGE_CASES)).to_list()
    for text, ids in zip(EDGE_CASES, got, strict=True):
        assert ids == tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)), text


def test_vocab_with_repeated_and_blank_lines(tmp_path):
    """load_vocab keeps a repeated token's last line; a blank line is the token ""."""
    lines = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "", "##aff", "un", "##able", "x", "##aff"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = tokenization.FullTokenizer(str(vocab))
    text = ["unaffable x y", "un", ""]
    got = tp.BertPreprocessor(str(vocab)).tokenize(tf.constant(text)).to_list()
    assert got == [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t)) for t in text]
    assert got[0] == [7, 10, 8, 9, 1]


def test_truncated_lengths_equal_truncate_seq_pair():
    cases = [(a, b, m) for a in range(12) for b in range(12) for m in range(1, 14)]
    la, lb, ms = (tf.constant([c[i] for c in cases], tf.int64) for i in range(3))
    got_a, got_b = tp.truncated_lengths(la, lb, ms)
    for (a, b, m), ga, gb in zip(cases, got_a.numpy(), got_b.numpy(), strict=True):
        ta, tb = list(range(a)), list(range(b))
        features.truncate_seq_pair(ta, tb, m)
        assert (len(ta), len(tb)) == (ga, gb), (a, b, m)


@pytest.mark.parametrize("seq_len", [8, 24, 128])
def test_packing_equals_convert_single_example(texts, uncased_vocab, seq_len):
    """Singles and pairs (some with empty or whitespace-only b), truncated as the original."""
    sample = texts[::97][:600] + ["", "   ", "a", "b"]
    a = sample
    b = sample[1:] + sample[:1]
    b = [t if i % 5 else "" for i, t in enumerate(b)]  # every 5th is a single sequence
    tokenizer = tokenization.FullTokenizer(str(uncased_vocab))
    pre = tp.BertPreprocessor(str(uncased_vocab), True, seq_len)
    got = {k: v.numpy() for k, v in pre(tf.constant(a), tf.constant(b)).items()}
    for i, (ta, tb) in enumerate(zip(a, b, strict=True)):
        f = features.convert_single_example(
            i, InputExample(str(i), ta, tb or None, "0"), ["0"], seq_len, tokenizer)
        for key in ("input_ids", "input_mask", "segment_ids"):
            np.testing.assert_array_equal(got[key][i], getattr(f, key), err_msg=f"{key} {i}")
    assert {v.dtype for v in got.values()} == {np.dtype(np.int32)}


def test_pair_separator(uncased_vocab):
    """"a ||| b" packs like text_a/text_b; no separator is a single sequence."""
    pre = tp.BertPreprocessor(str(uncased_vocab), True, 16)
    a, b = tp.split_pairs(tf.constant(["Is it raining? ||| It is sunny.", "Just one text"]))
    assert [x.decode() for x in a.numpy()] == ["Is it raining? ", "Just one text"]
    assert [x.decode() for x in b.numpy()] == [" It is sunny.", ""]
    packed = pre(a, b)
    direct = pre(tf.constant(["Is it raining?", "Just one text"]),
                 tf.constant(["It is sunny.", ""]))
    for key in packed:
        np.testing.assert_array_equal(packed[key], direct[key])
    assert packed["segment_ids"].numpy()[0].sum() == 5  # "it is sunny . [SEP]"


def test_bad_vocab(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\nhello\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"vocab.txt has no \[SEP\] token"):
        tp.BertPreprocessor(str(vocab))
    with pytest.raises(UserError, match="seq_len=2"):
        tp.BertPreprocessor(str(vocab), seq_len=2)
