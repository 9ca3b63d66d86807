"""The pretraining TFRecord spec (run_pretraining.py's), its writer and its tf.data pipeline.

A record holds `input_ids`, `input_mask`, `segment_ids` (int64 [T]), `masked_lm_positions`,
`masked_lm_ids` (int64 [P]), `masked_lm_weights` (float [P], 1.0 for a real prediction, 0.0 for
padding) and `next_sentence_labels` (int64 [1], 1 = B is a random next segment); T is
max_seq_length and P max_predictions_per_seq.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Mapping, Sequence

import tensorflow as tf
from absl import logging

from bert_finetune import tokenization
from bert_finetune.data.features import atomic_record_writer
from bert_finetune.data.pretraining import TrainingInstance
from bert_finetune.data.tfrecord import decode_record
from bert_finetune.errors import UserError

SHUFFLE_BUFFER_SIZE = 100
NUM_LOGGED = 20


def name_to_features(max_seq_length: int, max_predictions_per_seq: int) -> dict:
    """The feature spec of a pretraining record."""
    return {
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


def _int_feature(values: Iterable[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _float_feature(values: Iterable[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def instance_to_example(instance: TrainingInstance, tokenizer: tokenization.FullTokenizer,
                        max_seq_length: int, max_predictions_per_seq: int
                        ) -> tf.train.Example:
    """One instance as the original's tf.train.Example (zero padded to T and P)."""
    input_ids = tokenizer.convert_tokens_to_ids(instance.tokens)
    input_mask = [1] * len(input_ids)
    segment_ids = list(instance.segment_ids)
    assert len(input_ids) <= max_seq_length
    pad = max_seq_length - len(input_ids)
    input_ids += [0] * pad
    input_mask += [0] * pad
    segment_ids += [0] * pad
    masked_lm_positions = list(instance.masked_lm_positions)
    masked_lm_ids = tokenizer.convert_tokens_to_ids(instance.masked_lm_labels)
    masked_lm_weights = [1.0] * len(masked_lm_ids)
    pad = max_predictions_per_seq - len(masked_lm_positions)
    masked_lm_positions += [0] * pad
    masked_lm_ids += [0] * pad
    masked_lm_weights += [0.0] * pad
    features = collections.OrderedDict()
    features["input_ids"] = _int_feature(input_ids)
    features["input_mask"] = _int_feature(input_mask)
    features["segment_ids"] = _int_feature(segment_ids)
    features["masked_lm_positions"] = _int_feature(masked_lm_positions)
    features["masked_lm_ids"] = _int_feature(masked_lm_ids)
    features["masked_lm_weights"] = _float_feature(masked_lm_weights)
    features["next_sentence_labels"] = _int_feature([1 if instance.is_random_next else 0])
    return tf.train.Example(features=tf.train.Features(feature=features))


def _log_example(instance: TrainingInstance, example: tf.train.Example) -> None:
    logging.info("*** Example ***")
    logging.info("tokens: %s", " ".join(tokenization.printable_text(x) for x in instance.tokens))
    for name, feature in example.features.feature.items():
        values = feature.int64_list.value or feature.float_list.value
        logging.info("%s: %s", name, " ".join(str(x) for x in values))


def write_instance_to_example_files(instances: Iterable[TrainingInstance],
                                    tokenizer: tokenization.FullTokenizer, max_seq_length: int,
                                    max_predictions_per_seq: int,
                                    output_files: Sequence[str]) -> int:
    """Writes the instances round-robin over `output_files`; returns how many.

    The files appear only when every instance is written (temporary names, then renames).
    """
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(atomic_record_writer(f)) for f in output_files]
        total_written = 0
        for inst_index, instance in enumerate(instances):
            example = instance_to_example(instance, tokenizer, max_seq_length,
                                          max_predictions_per_seq)
            writers[inst_index % len(writers)].write(example.SerializeToString())
            total_written += 1
            if inst_index < NUM_LOGGED:
                _log_example(instance, example)
    logging.info("Wrote %d total instances", total_written)
    return total_written


def record_lengths(path: str) -> tuple[int, int] | None:
    """(max_seq_length, max_predictions_per_seq) of the first record of `path` (None if empty).

    A file that is not pretraining records is a UserError naming it.
    """
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise UserError(f"{path}: not a TFRecord file ({e.message.splitlines()[0]})") from None
    if first is None:
        return None
    example = tf.train.Example()
    try:
        example.ParseFromString(first.numpy())
    except Exception:  # protobuf's DecodeError
        raise UserError(f"{path}: the records are not tf.train.Example protos") from None
    feature = example.features.feature
    for name in ("input_ids", "masked_lm_positions", "masked_lm_weights",
                 "next_sentence_labels"):
        if name not in feature:
            raise UserError(f"{path}: the records have no {name} feature; are these "
                            "pretraining records (bert-create-pretraining-data)?")
    return len(feature["input_ids"].int64_list.value), len(
        feature["masked_lm_positions"].int64_list.value)


def input_fn_builder(input_files: Sequence[str], max_seq_length: int,
                     max_predictions_per_seq: int, is_training: bool, *,
                     seed: int | None = None, skip_batches: int = 0,
                     input_context: tf.distribute.InputContext | None = None):
    """`input_fn(params)` -> dataset of batches (int32 [B, T] / [B, P], float32 weights [B, P]).

    As the original: training reads the files in a shuffled, repeated order, interleaved, and
    shuffles records (buffer 100); evaluation reads them in order and repeats (it runs a fixed
    number of steps). Batches have a fixed size (drop_remainder), as on TPU. `seed`,
    `skip_batches` and `input_context` as in `tfrecord.file_based_input_fn_builder`.
    """
    spec = name_to_features(max_seq_length, max_predictions_per_seq)
    files = list(input_files)

    def input_fn(params: Mapping) -> tf.data.Dataset:
        batch_size = params["batch_size"]
        pipelines = input_context.num_input_pipelines if input_context is not None else 1
        # Pipelines split the files when there are enough of them, else the records.
        by_file = pipelines > 1 and len(files) >= pipelines
        by_record = pipelines > 1 and not by_file
        if is_training:
            d = tf.data.Dataset.from_tensor_slices(tf.constant(files))
            if by_file:
                d = d.shard(pipelines, input_context.input_pipeline_id)
            d = d.repeat()
            d = d.shuffle(buffer_size=len(files), seed=seed)
            # Deterministic interleave (the original's was sloppy) so that a resume with
            # skip_batches sees the same stream.
            d = d.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            if by_record:
                d = d.shard(pipelines, input_context.input_pipeline_id)
            d = d.shuffle(buffer_size=SHUFFLE_BUFFER_SIZE, seed=seed)
        else:
            d = tf.data.TFRecordDataset(files)
            d = d.repeat()
        if skip_batches:
            d = d.skip(skip_batches * batch_size)
        d = d.batch(batch_size, drop_remainder=True)
        d = d.map(lambda records: decode_record(records, spec),
                  num_parallel_calls=tf.data.AUTOTUNE)
        return d.prefetch(tf.data.AUTOTUNE)

    return input_fn
