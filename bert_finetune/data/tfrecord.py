"""The classifier's TFRecord feature spec and its tf.data input pipeline (run_classifier.py's).

Records hold `input_ids`, `input_mask`, `segment_ids` (int64 [T]), `label_ids` (int64 [], or
float32 [] for regression) and `is_real_example` (int64 []); see `features.py` for the writer.
Batches are dicts of int32 tensors [B, T] / [B] (`label_ids` float32 [B] for regression).

Beyond the original: `seed` makes the training shuffle repeatable, `skip_batches` resumes the
stream exactly where a run stopped, `input_context` shards the records across input pipelines
(tf.distribute workers), and records are parsed a batch at a time (same values, less overhead).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf
from absl import logging

from bert_finetune.data import length_buckets as length_buckets_lib
from bert_finetune.errors import UserError

SHUFFLE_BUFFER_SIZE = 100


def name_to_features(seq_length: int, is_regression: bool = False) -> dict:
    """The feature spec of a classifier record (T = seq_length)."""
    return {
        "input_ids": tf.io.FixedLenFeature([seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([seq_length], tf.int64),
        "label_ids": tf.io.FixedLenFeature([], tf.float32 if is_regression else tf.int64),
        "is_real_example": tf.io.FixedLenFeature([], tf.int64),
    }


def decode_record(record: tf.Tensor, name_to_features: Mapping) -> dict:
    """Decodes a record (string []) or a batch of them (string [B]) to a dict of tensors.

    int64 features become int32: TPUs (and the model's embedding lookups) want int32.
    """
    if record.shape.rank == 0:
        example = tf.io.parse_single_example(record, name_to_features)
    else:
        example = tf.io.parse_example(record, name_to_features)
    for name in list(example.keys()):
        t = example[name]
        if t.dtype == tf.int64:
            t = tf.cast(t, tf.int32)
        example[name] = t
    return example


def file_based_input_fn_builder(
    input_file: str | Sequence[str],
    seq_length: int,
    is_training: bool,
    drop_remainder: bool,
    is_regression: bool = False,
    *,
    seed: int | None = None,
    skip_batches: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    features_spec: Mapping | None = None,
    length_buckets: Sequence[int] | None = None,
    length_window: int = 1,
) -> Callable[[Mapping], tf.data.Dataset]:
    """Creates an `input_fn(params)` returning the tf.data.Dataset of `input_file`'s records.

    params["batch_size"] is the batch size B of the returned dataset (under tf.distribute, the
    per-replica size, e.g. `input_context.get_per_replica_batch_size(global_batch_size)`).
    Training repeats the records forever and shuffles them (buffer 100, as the original); with a
    `seed` the order is the same on every run (given the same global seed, if one is set).
    `skip_batches` drops the first batches of that stream, e.g. those a resumed run already
    trained on. With an `input_context` of more than one pipeline, each pipeline reads every
    num_input_pipelines-th record from its input_pipeline_id. `features_spec` replaces the
    classifier's feature spec (another task's records, e.g. SQuAD's).

    With `length_buckets` (sorted lengths ending at seq_length, see length_buckets.py) each
    batch is cut to the smallest of them that holds its longest example (`input_ids`,
    `input_mask`, `segment_ids` become [B, L]); in training, examples are also grouped by
    length within windows of `length_window` batches of the shuffled stream.
    """
    files = [input_file] if isinstance(input_file, str) else list(input_file)
    spec = features_spec if features_spec is not None else name_to_features(seq_length,
                                                                             is_regression)
    if skip_batches < 0:
        raise ValueError(f"skip_batches must be >= 0, not {skip_batches}")
    if skip_batches and is_training and seed is None:
        logging.warning(
            "skip_batches=%d without a shuffle seed: the skipped batches are not the ones "
            "already trained on",
            skip_batches,
        )

    def input_fn(params: Mapping) -> tf.data.Dataset:
        batch_size = params["batch_size"]
        for f in files:
            if not tf.io.gfile.exists(f):
                raise UserError(f"{f}: TFRecord file not found")
        d = tf.data.TFRecordDataset(files)
        # Shard before repeat/shuffle so that the pipelines split the records, not the stream.
        if input_context is not None and input_context.num_input_pipelines > 1:
            d = d.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        if is_training:
            d = d.repeat()
            d = d.shuffle(buffer_size=SHUFFLE_BUFFER_SIZE, seed=seed)
        window = length_window if (length_buckets and is_training) else 1
        skip_windows, skip_rest = divmod(skip_batches, window)
        if skip_windows:
            # Batches (windows) are consecutive runs of records, so skipping records before
            # parsing gives the same stream as skipping parsed batches, without the parsing.
            d = d.skip(skip_windows * window * batch_size)
        d = d.batch(batch_size * window, drop_remainder=drop_remainder or window > 1)
        d = d.map(
            lambda records: decode_record(records, spec), num_parallel_calls=tf.data.AUTOTUNE
        )
        if length_buckets:
            d = length_buckets_lib.windowed_length_batches(
                d, batch_size, window, length_buckets, seed, first_window=skip_windows)
            d = d.skip(skip_rest)
        return d.prefetch(tf.data.AUTOTUNE)

    return input_fn
