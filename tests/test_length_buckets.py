"""Length-aware batches: the same outputs as full padding, the same examples per window, resume.

Tolerance (fp32): outputs of bucketed inference equal full padding's within rtol 1e-5 / atol 1e-6
(padding is masked; only the order of float sums changes).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from test_runner import CONFIG

from bert_finetune.classify import ClassifierModel
from bert_finetune.data import length_buckets, tfrecord
from bert_finetune.data.features import InputFeatures, features_to_tf_example
from bert_finetune.runner import loops

SEQ, NUM = 64, 45  # 45: the last inference batch is partial


def _write_records(path: str, seed: int = 3) -> np.ndarray:
    """NUM records of varied lengths (3..SEQ, mostly short); returns their lengths."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(SEQ, 3 + rng.geometric(1 / 12, NUM))
    with tf.io.TFRecordWriter(path) as writer:
        for i, n in enumerate(lengths):
            ids = list(rng.integers(1, CONFIG.vocab_size, n)) + [0] * (SEQ - n)
            mask = [1] * n + [0] * (SEQ - n)
            segments = [0] * (n // 2) + [1] * (n - n // 2) + [0] * (SEQ - n)
            feature = InputFeatures(ids, mask, segments, label_id=i % 2)
            writer.write(features_to_tf_example(feature).SerializeToString())
    return lengths


def test_bucket_lengths():
    assert length_buckets.bucket_lengths(128) == [16, 32, 48, 64, 80, 96, 112, 128]
    assert length_buckets.bucket_lengths(512) == [64, 128, 192, 256, 320, 384, 448, 512]
    assert length_buckets.bucket_lengths(30) == [8, 16, 24, 30]


def test_bucketed_inference_equals_full_padding(tmp_path):
    path = str(tmp_path / "eval.tf_record")
    lengths = _write_records(path)
    buckets = length_buckets.bucket_lengths(SEQ)
    tf.random.set_seed(5)
    model = ClassifierModel(CONFIG, num_labels=2, is_regression=False)
    strategy = tf.distribute.get_strategy()
    outs, widths = {}, []
    for name, bucket in (("full", None), ("bucketed", buckets)):
        dataset = tfrecord.file_based_input_fn_builder(
            path, SEQ, is_training=False, drop_remainder=False, length_buckets=bucket)(
                {"batch_size": 8})
        if bucket:
            widths = [int(b["input_ids"].shape[1]) for b in dataset]
        outs[name] = loops.run_inference(strategy, model, dataset, num_examples=NUM)
    # Each batch is cut to the bucket of its longest example, and some are much shorter.
    for i, width in enumerate(widths):
        longest = lengths[8 * i:8 * i + 8].max()
        assert width in buckets and width >= longest and (
            width == buckets[0] or buckets[buckets.index(width) - 1] < longest)
    assert min(widths) < SEQ
    assert len(outs["full"]["predictions"]) == NUM
    for key in ("per_example_loss", "predictions", "label_ids"):
        np.testing.assert_allclose(outs["bucketed"][key], outs["full"][key], rtol=1e-5,
                                   atol=1e-6, err_msg=key)


def _rows(batch: dict) -> list[tuple]:
    """Each example of a batch as a hashable row, padded back to SEQ."""
    ids = batch["input_ids"].numpy()
    ids = np.pad(ids, [(0, 0), (0, SEQ - ids.shape[1])])
    return [tuple(r) + (int(label),) for r, label in zip(ids, batch["label_ids"].numpy(),
                                                          strict=True)]


def test_training_windows_keep_the_streams_examples_and_resume_exactly(tmp_path):
    path = str(tmp_path / "train.tf_record")
    _write_records(path)
    buckets, batch, window, steps = length_buckets.bucket_lengths(SEQ), 4, 3, 12

    def stream(skip: int = 0, **kwargs) -> list[dict]:
        d = tfrecord.file_based_input_fn_builder(
            path, SEQ, is_training=True, drop_remainder=True, seed=11, skip_batches=skip,
            **kwargs)({"batch_size": batch})
        return list(d.take(steps - skip))

    original = stream()
    grouped = stream(length_buckets=buckets, length_window=window)
    for w in range(steps // window):
        part = slice(w * window, (w + 1) * window)
        # Within each window: the same examples as the original stream, in batches sorted by
        # length (each batch trimmed to its bucket), in a shuffled order.
        want = sorted(r for b in original[part] for r in _rows(b))
        assert sorted(r for b in grouped[part] for r in _rows(b)) == want
        for b in grouped[part]:
            longest = int(b["input_mask"].numpy().sum(axis=1).max())
            assert b["input_ids"].shape == (batch, length_buckets._bucket_length(
                tf.constant(longest), buckets).numpy())
    # window=1: the original batches themselves, only trimmed.
    trimmed = stream(length_buckets=buckets, length_window=1)
    assert [_rows(b) for b in trimmed] == [_rows(b) for b in original]
    # A resumed run (any skip, inside a window or at its edge) continues the same stream.
    for skip in (3, 5):
        resumed = stream(skip, length_buckets=buckets, length_window=window)
        assert [_rows(b) for b in resumed] == [_rows(b) for b in grouped[skip:]]
