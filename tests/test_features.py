"""Classifier features (packing, labels) and the TFRecord round trip, reuse and atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bert_finetune import tokenization
from bert_finetune.data import features as F
from bert_finetune.data import tfrecord
from bert_finetune.data.examples import InputExample, PaddingInputExample
from bert_finetune.errors import UserError

# The original's tokenization_test vocab, with [PAD] at 0 as in the released vocabs.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn",
         "##ing", ","]
PAD, UNK, CLS, SEP, WANT, XWANT, XED, WA, UN, RUNN, XING, COMMA = range(len(VOCAB))
LABELS = ["0", "1"]


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in VOCAB), encoding="utf-8")
    return str(path)


@pytest.fixture
def tokenizer(vocab_file):
    return tokenization.FullTokenizer(vocab_file, do_lower_case=True)


def convert(example, max_seq_length, tokenizer, label_list=LABELS, **kw):
    return F.convert_single_example(10, example, label_list, max_seq_length, tokenizer, **kw)


def test_pair_packing(tokenizer):
    ex = InputExample("t-1", "UNwant\u00e9d,running", "want wa", label="1")
    f = convert(ex, 14, tokenizer)
    # [CLS] un ##want ##ed , runn ##ing [SEP] want wa [SEP] + 3 pads
    assert f.input_ids == [CLS, UN, XWANT, XED, COMMA, RUNN, XING, SEP, WANT, WA, SEP, 0, 0, 0]
    assert f.input_mask == [1] * 11 + [0] * 3
    assert f.segment_ids == [0] * 8 + [1] * 3 + [0] * 3
    assert f.label_id == 1
    assert f.is_real_example is True


def test_single_packing_and_truncation(tokenizer):
    ex = InputExample("t-2", "unwanted running", None, label="0")
    f = convert(ex, 8, tokenizer)
    assert f.input_ids == [CLS, UN, XWANT, XED, RUNN, XING, SEP, 0]
    assert f.input_mask == [1] * 7 + [0]
    assert f.segment_ids == [0] * 8
    assert f.label_id == 0
    # Truncated to T - 2 tokens of text_a.
    f = convert(ex, 5, tokenizer)
    assert f.input_ids == [CLS, UN, XWANT, XED, SEP]
    assert f.input_mask == [1] * 5
    # An empty text_b is a single sequence, as in the original.
    assert convert(InputExample("t-3", "want", "", "0"), 4, tokenizer).segment_ids == [0] * 4


def test_pair_truncation_longest_first(tokenizer):
    # a = un ##want ##ed (3), b = runn ##ing , want (4): T=8 leaves 5 for the texts.
    ex = InputExample("t-4", "unwanted", "running, want", label="0")
    f = convert(ex, 8, tokenizer)
    # b loses one (4 > 3), then tie 3 == 3 -> b again: a keeps 3, b keeps 2.
    assert f.input_ids == [CLS, UN, XWANT, XED, SEP, RUNN, XING, SEP]
    assert f.segment_ids == [0] * 5 + [1] * 3


def test_truncate_seq_pair():
    a, b = list("abcdef"), list("xy")
    F.truncate_seq_pair(a, b, 5)
    assert (a, b) == (list("abc"), list("xy"))
    a, b = list("abc"), list("xyz")
    F._truncate_seq_pair(a, b, 4)
    assert (a, b) == (list("ab"), list("xy"))
    a, b = list("ab"), list("x")
    F._truncate_seq_pair(a, b, 5)
    assert (a, b) == (list("ab"), list("x"))


def test_padding_example(tokenizer):
    f = convert(PaddingInputExample(), 6, tokenizer)
    assert f == F.InputFeatures([0] * 6, [0] * 6, [0] * 6, 0, is_real_example=False)


def test_regression_label(tokenizer):
    ex = InputExample("sts-1", "want", "wa", label="3.800")
    f = convert(ex, 6, tokenizer, label_list=[None], is_regression=True)
    assert isinstance(f.label_id, float) and f.label_id == 3.8
    with pytest.raises(UserError, match="sts-2.*'high'"):
        convert(InputExample("sts-2", "want", None, "high"), 6, tokenizer, [None],
                is_regression=True)


def test_unknown_label_is_user_error(tokenizer):
    with pytest.raises(UserError, match=r"dev-7: label 'maybe' .* '0', '1'"):
        convert(InputExample("dev-7", "want", None, "maybe"), 6, tokenizer)


def test_logs_first_examples(tokenizer, monkeypatch):
    lines = []
    monkeypatch.setattr(F.logging, "info", lambda msg, *args: lines.append(msg % args))
    ex = InputExample("t-9", "want", None, "1")
    F.convert_single_example(0, ex, LABELS, 4, tokenizer)
    assert lines == [
        "*** Example ***",
        "guid: t-9",
        "tokens: [CLS] want [SEP]",
        "input_ids: 2 4 3 0",
        "input_mask: 1 1 1 0",
        "segment_ids: 0 0 0 0",
        "label: 1 (id = 1)",
    ]
    lines.clear()
    F.convert_single_example(5, ex, LABELS, 4, tokenizer)
    assert lines == []


EXAMPLES = [
    InputExample("train-0", "UNwant\u00e9d,running", "want wa", "1"),
    InputExample("train-1", "running", None, "0"),
    InputExample("train-2", "unwanted running , want wa", "wa", "1"),
]


def read_all(path, seq_length, batch_size, is_regression=False, **kw):
    input_fn = tfrecord.file_based_input_fn_builder(
        path, seq_length, is_training=False, drop_remainder=False, is_regression=is_regression,
        **kw,
    )
    batches = list(input_fn({"batch_size": batch_size}).as_numpy_iterator())
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}, batches


def test_tfrecord_round_trip(tokenizer, tmp_path):
    examples = [*EXAMPLES, PaddingInputExample()]
    path = str(tmp_path / "train.tf_record")
    n = F.file_based_convert_examples_to_features(examples, LABELS, 12, tokenizer, path)
    assert n == 4
    expected = F.convert_examples_to_features(examples, LABELS, 12, tokenizer)
    got, batches = read_all(path, 12, batch_size=3)
    assert [len(b["input_ids"]) for b in batches] == [3, 1]
    assert got["input_ids"].dtype == np.int32 and got["label_ids"].dtype == np.int32
    np.testing.assert_array_equal(got["input_ids"], [f.input_ids for f in expected])
    np.testing.assert_array_equal(got["input_mask"], [f.input_mask for f in expected])
    np.testing.assert_array_equal(got["segment_ids"], [f.segment_ids for f in expected])
    np.testing.assert_array_equal(got["label_ids"], [1, 0, 1, 0])
    np.testing.assert_array_equal(got["is_real_example"], [1, 1, 1, 0])

    # The raw record has exactly the original's five features and types.
    raw = next(iter(tf.data.TFRecordDataset(path))).numpy()
    feats = tf.train.Example.FromString(raw).features.feature
    assert sorted(feats) == sorted(
        ["input_ids", "input_mask", "segment_ids", "label_ids", "is_real_example"]
    )
    assert all(feats[k].WhichOneof("kind") == "int64_list" for k in feats)
    assert list(feats["label_ids"].int64_list.value) == [1]


def test_tfrecord_regression(tokenizer, tmp_path):
    examples = [InputExample("s-0", "want", "wa", "3.8"), InputExample("s-1", "wa", None, "0.25")]
    path = str(tmp_path / "sts.tf_record")
    F.file_based_convert_examples_to_features(examples, [None], 6, tokenizer, path, True)
    raw = next(iter(tf.data.TFRecordDataset(path))).numpy()
    label = tf.train.Example.FromString(raw).features.feature["label_ids"]
    assert label.WhichOneof("kind") == "float_list"
    got, _ = read_all(path, 6, batch_size=2, is_regression=True)
    assert got["label_ids"].dtype == np.float32
    np.testing.assert_array_equal(got["label_ids"], np.array([3.8, 0.25], np.float32))
    assert tfrecord.name_to_features(6, True)["label_ids"].dtype == tf.float32
    assert tfrecord.name_to_features(6)["label_ids"].dtype == tf.int64


def test_training_pipeline_seed_skip_and_shard(tokenizer, tmp_path):
    examples = [InputExample(f"t-{i}", "want " * (i % 5 + 1), None, "0") for i in range(10)]
    path = str(tmp_path / "t.tf_record")
    F.file_based_convert_examples_to_features(examples, LABELS, 8, tokenizer, path)

    def stream(skip=0, n=6, **kw):
        input_fn = tfrecord.file_based_input_fn_builder(
            path, 8, is_training=True, drop_remainder=True, seed=7, skip_batches=skip, **kw
        )
        it = input_fn({"batch_size": 2}).take(n).as_numpy_iterator()
        return [b["input_mask"].sum(axis=1).tolist() for b in it]

    full = stream()
    assert all(len(b) == 2 for b in full)
    assert stream() == full  # same seed, same order
    assert stream(skip=2, n=4) == full[2:]  # resume exactly after two batches

    # Two pipelines read disjoint halves of the records.
    def shard(i):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i)
        input_fn = tfrecord.file_based_input_fn_builder(
            path, 8, is_training=False, drop_remainder=False, input_context=ctx
        )
        return [r for b in input_fn({"batch_size": 4}).as_numpy_iterator()
                for r in b["input_mask"].sum(axis=1).tolist()]

    lengths = [e.text_a.count("want") + 2 for e in examples]
    assert shard(0) == lengths[0::2] and shard(1) == lengths[1::2]


def test_missing_record_file(tmp_path):
    input_fn = tfrecord.file_based_input_fn_builder(str(tmp_path / "nope"), 8, False, False)
    with pytest.raises(UserError, match="nope"):
        input_fn({"batch_size": 2})


def test_atomic_write_on_failure(tokenizer, tmp_path):
    bad = [*EXAMPLES, InputExample("train-3", "want", None, "2"), *EXAMPLES]
    path = tmp_path / "train.tf_record"
    with pytest.raises(UserError, match="train-3"):
        F.file_based_convert_examples_to_features(bad, LABELS, 12, tokenizer, str(path))
    assert os.listdir(tmp_path) == ["vocab.txt"]  # no record file, no temporary left


class TestReuse:
    def write(self, path, tokenizer, examples=EXAMPLES, max_seq_length=12):
        return F.cached_convert_examples_to_features(
            examples, LABELS, max_seq_length, tokenizer, str(path), {"task": "mrpc"}
        )

    @pytest.fixture
    def calls(self, record_writes):
        return record_writes

    def test_reused_when_unchanged(self, tokenizer, tmp_path, calls):
        path = tmp_path / "train.tf_record"
        assert self.write(path, tokenizer, [*EXAMPLES, PaddingInputExample()]) == 4
        meta = json.loads((tmp_path / "train.tf_record.meta.json").read_text())
        assert meta["num_examples"] == 4 and meta["num_real_examples"] == 3
        assert meta["record_file_bytes"] == path.stat().st_size
        # A new tokenizer object on the same vocab: same fingerprint.
        same = tokenization.FullTokenizer(tokenizer.vocab_file, do_lower_case=True)
        assert self.write(path, same, [*EXAMPLES, PaddingInputExample()]) == 4
        assert len(calls) == 1

    @pytest.mark.parametrize("change", ["example", "label", "padding", "max_seq_length",
                                        "vocab", "lower_case", "record_file"])
    def test_rewritten_when_changed(self, tokenizer, tmp_path, calls, change):
        path = tmp_path / "train.tf_record"
        self.write(path, tokenizer)
        examples, max_seq_length = list(EXAMPLES), 12
        if change == "example":
            examples[1] = InputExample("train-1", "running wa", None, "0")
        elif change == "label":
            examples[1] = InputExample("train-1", "running", None, "1")
        elif change == "padding":
            examples.append(PaddingInputExample())
        elif change == "max_seq_length":
            max_seq_length = 10
        elif change == "vocab":
            with open(tokenizer.vocab_file, "a", encoding="utf-8") as f:
                f.write("extra\n")
        elif change == "lower_case":
            tokenizer = tokenization.FullTokenizer(tokenizer.vocab_file, do_lower_case=False)
        elif change == "record_file":
            path.write_bytes(b"truncated")
        n = self.write(path, tokenizer, examples, max_seq_length)
        assert len(calls) == 2
        assert n == len(examples)
        got, _ = read_all(str(path), max_seq_length, batch_size=8)
        assert len(got["input_ids"]) == len(examples)

    def test_sidecar_removed_before_rewrite(self, tokenizer, tmp_path, monkeypatch):
        path = tmp_path / "train.tf_record"
        self.write(path, tokenizer)
        bad = [InputExample("train-0", "want", None, "nope")]
        with pytest.raises(UserError):
            self.write(path, tokenizer, bad)
        # The old records stay, but nothing claims they match any inputs any more.
        assert path.exists() and not (tmp_path / "train.tf_record.meta.json").exists()
