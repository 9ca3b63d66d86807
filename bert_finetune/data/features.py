"""Classifier features, as run_classifier.py packs them: `[CLS] a [SEP] b [SEP]`, zero padded.

`convert_single_example` turns one `InputExample` into `InputFeatures` (T = max_seq_length):
input_ids [T], input_mask [T] (1 = real token), segment_ids [T] (0 for `[CLS] a [SEP]`, 1 for
`b [SEP]`), label_id (index in label_list, or the float score for regression) and is_real_example.
`file_based_convert_examples_to_features` writes them as tf.train.Example records with the
original's feature names; `cached_convert_examples_to_features` does the same but reuses the file
when a sidecar `<file>.meta.json` shows the inputs (examples, labels, vocab, casing, length) are
unchanged.

Differences from the original, none of which changes a feature:
- A label not in label_list (or a regression score that is not a number) is a UserError naming
  the example's guid, where the original raised KeyError.
- Record files are written to a temporary name and renamed, so an interrupted or failed run never
  leaves a file that looks complete. Paths may be remote (`gs://...`), as with the original's
  tf.gfile; local ones keep the plain `os` route.
- Regression (STS-B) writes `label_ids` as a float list; the original had no regression task.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import tensorflow as tf
from absl import logging

from bert_finetune import fileio, tokenization
from bert_finetune.data.examples import InputExample, PaddingInputExample
from bert_finetune.errors import UserError
from bert_finetune.progress import Progress

# Bump when the record layout or the packing changes, so older cached files are rewritten.
FORMAT_VERSION = 1
META_SUFFIX = ".meta.json"
_LOG_EVERY = 10000


@dataclass
class InputFeatures:
    """A single set of features of data (lists of length T = max_seq_length)."""

    input_ids: list[int]
    input_mask: list[int]
    segment_ids: list[int]
    label_id: int | float
    is_real_example: bool = True


def _truncate_seq_pair(tokens_a: list, tokens_b: list, max_length: int) -> None:
    """Truncates a sequence pair in place to at most `max_length` tokens in total.

    Pops one token at a time from the longer sequence (from b on ties): a short sequence keeps
    more of its tokens, each of which likely carries more information than one of a long one.
    """
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


truncate_seq_pair = _truncate_seq_pair


def _label_id(example: InputExample, label_map: Mapping, is_regression: bool) -> int | float:
    """The example's label as a class index (or a float score); a bad label is a UserError."""
    if is_regression:
        try:
            return float(example.label)
        except (TypeError, ValueError):
            raise UserError(
                f"example {example.guid}: regression label {example.label!r} is not a number"
            ) from None
    try:
        return label_map[example.label]
    except (KeyError, TypeError):
        labels = ", ".join(repr(x) for x in list(label_map)[:20])
        more = f" (and {len(label_map) - 20} more)" if len(label_map) > 20 else ""
        raise UserError(
            f"example {example.guid}: label {example.label!r} is not one of the labels "
            f"{labels}{more}"
        ) from None


def convert_single_example(
    ex_index: int,
    example: InputExample | PaddingInputExample,
    label_list: Sequence,
    max_seq_length: int,
    tokenizer: tokenization.FullTokenizer,
    is_regression: bool = False,
) -> InputFeatures:
    """Converts a single `InputExample` into a single `InputFeatures` (lists of length T)."""
    if isinstance(example, PaddingInputExample):
        # Fake example padding the last eval/predict batch; the model masks it out of metrics
        # through is_real_example.
        return InputFeatures(
            input_ids=[0] * max_seq_length,
            input_mask=[0] * max_seq_length,
            segment_ids=[0] * max_seq_length,
            label_id=0,
            is_real_example=False,
        )

    label_map = {label: i for i, label in enumerate(label_list)}
    # Checked before tokenizing so that a bad label fails fast.
    label_id = _label_id(example, label_map, is_regression)

    tokens_a = tokenizer.tokenize(example.text_a)
    tokens_b = None
    if example.text_b:
        tokens_b = tokenizer.tokenize(example.text_b)

    # An empty tokens_b counts as a single sequence, as in the original.
    reserved = 3 if tokens_b else 2  # [CLS], [SEP] (, [SEP])
    if max_seq_length < reserved:
        raise UserError(
            f"--max_seq_length={max_seq_length} is too short: example {example.guid} needs "
            f"at least {reserved} positions for [CLS] and [SEP]"
        )
    if tokens_b:
        _truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3)
    elif len(tokens_a) > max_seq_length - 2:
        tokens_a = tokens_a[0 : (max_seq_length - 2)]

    # Segment 0 is "[CLS] a [SEP]", segment 1 is "b [SEP]"; the model reads the [CLS] vector
    # (after pre-training's NSP) as the whole sequence's summary.
    tokens = ["[CLS]", *tokens_a, "[SEP]"]
    segment_ids = [0] * len(tokens)
    if tokens_b:
        tokens += [*tokens_b, "[SEP]"]
        segment_ids += [1] * (len(tokens_b) + 1)

    input_ids = tokenizer.convert_tokens_to_ids(tokens)
    # The mask has 1 for real tokens and 0 for padding: only real tokens are attended to.
    input_mask = [1] * len(input_ids)
    padding = max_seq_length - len(input_ids)
    input_ids += [0] * padding
    input_mask += [0] * padding
    segment_ids += [0] * padding

    if ex_index < 5:
        logging.info("*** Example ***")
        logging.info("guid: %s", example.guid)
        logging.info("tokens: %s", " ".join(tokenization.printable_text(x) for x in tokens))
        logging.info("input_ids: %s", " ".join(str(x) for x in input_ids))
        logging.info("input_mask: %s", " ".join(str(x) for x in input_mask))
        logging.info("segment_ids: %s", " ".join(str(x) for x in segment_ids))
        if is_regression:
            logging.info("label: %s (id = %s)", example.label, label_id)
        else:
            logging.info("label: %s (id = %d)", example.label, label_id)

    return InputFeatures(
        input_ids=input_ids,
        input_mask=input_mask,
        segment_ids=segment_ids,
        label_id=label_id,
        is_real_example=True,
    )


def convert_examples_to_features(
    examples: Sequence[InputExample | PaddingInputExample],
    label_list: Sequence,
    max_seq_length: int,
    tokenizer: tokenization.FullTokenizer,
    is_regression: bool = False,
) -> list[InputFeatures]:
    """Converts a set of `InputExample`s to a list of `InputFeatures`."""
    features = []
    for ex_index, example in enumerate(examples):
        if ex_index % _LOG_EVERY == 0:
            logging.info("Writing example %d of %d", ex_index, len(examples))
        features.append(
            convert_single_example(
                ex_index, example, label_list, max_seq_length, tokenizer, is_regression
            )
        )
    return features


def _int_feature(values: Iterable[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _float_feature(values: Iterable[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


int_feature = _int_feature  # for the other tasks' record writers


def features_to_tf_example(feature: InputFeatures, is_regression: bool = False) -> tf.train.Example:
    """The tf.train.Example of one `InputFeatures`, with the original's feature names."""
    features = collections.OrderedDict()
    features["input_ids"] = _int_feature(feature.input_ids)
    features["input_mask"] = _int_feature(feature.input_mask)
    features["segment_ids"] = _int_feature(feature.segment_ids)
    if is_regression:
        features["label_ids"] = _float_feature([feature.label_id])
    else:
        features["label_ids"] = _int_feature([feature.label_id])
    features["is_real_example"] = _int_feature([int(feature.is_real_example)])
    return tf.train.Example(features=tf.train.Features(feature=features))


@contextlib.contextmanager
def _atomic_record_writer(output_file: str) -> Iterator[tf.io.TFRecordWriter]:
    """A TFRecordWriter on a temporary name beside `output_file`, renamed into place on success.

    Works for local and remote (`gs://`) paths alike: TFRecordWriter writes through TF's file
    systems, and `fileio` renames / deletes through tf.io.gfile when the path has a scheme.
    """
    tmp = fileio.temp_path(output_file)
    try:
        writer = tf.io.TFRecordWriter(tmp)
    except (tf.errors.OpError, OSError) as e:
        raise UserError(f"{output_file}: cannot write the record file: {e}") from e
    try:
        with writer:
            yield writer
        fileio.replace(tmp, output_file)
    except BaseException:
        with contextlib.suppress(OSError):
            fileio.remove_if_exists(tmp)
        raise


# Public name for the other record writers (squad_features.py, pretraining_records.py).
atomic_record_writer = _atomic_record_writer


def file_based_convert_examples_to_features(
    examples: Sequence[InputExample | PaddingInputExample],
    label_list: Sequence,
    max_seq_length: int,
    tokenizer: tokenization.FullTokenizer,
    output_file: str,
    is_regression: bool = False,
) -> int:
    """Converts a set of `InputExample`s to a TFRecord file; returns the number of records.

    The file appears only once every example is written (temporary name, then rename).
    """
    output_file = os.fspath(output_file)
    progress = Progress(f"Writing {os.path.basename(output_file)}", len(examples))
    with _atomic_record_writer(output_file) as writer:
        for ex_index, example in enumerate(examples):
            if ex_index % _LOG_EVERY == 0:
                logging.info("Writing example %d of %d", ex_index, len(examples))
            feature = convert_single_example(
                ex_index, example, label_list, max_seq_length, tokenizer, is_regression
            )
            writer.write(features_to_tf_example(feature, is_regression).SerializeToString())
            progress.advance()
    progress.finish()
    return len(examples)


# --------------------------------------------------------------------------- reuse


def _hash_field(h, value) -> None:
    """Feeds one value to `h` unambiguously: a type tag and a length prefix."""
    if value is None:
        h.update(b"N")
        return
    data = value.encode("utf-8") if isinstance(value, str) else repr(value).encode("utf-8")
    tag = b"S" if isinstance(value, str) else b"R"
    h.update(tag + len(data).to_bytes(8, "little") + data)


def _hash_file(h, path: str) -> None:
    """Feeds the content of `path` into `h` (local files 1 MiB at a time)."""
    try:
        if fileio.is_remote(path):
            h.update(fileio.read_bytes(path))  # a vocab file: small enough to read at once
            return
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as e:
        raise UserError(f"vocab file {path}: cannot read it: {e.strerror or e}") from e


def inputs_fingerprint(
    examples: Iterable[InputExample | PaddingInputExample],
    label_list: Sequence,
    max_seq_length: int,
    tokenizer: tokenization.FullTokenizer,
    fingerprint_inputs: Mapping | None = None,
    is_regression: bool = False,
) -> str:
    """sha256 (hex) of everything the records depend on.

    That is: every example's guid, texts and label (padding examples included), label_list,
    max_seq_length, is_regression, FORMAT_VERSION, the vocab file's *content* and do_lower_case.
    `fingerprint_inputs` may give "vocab_file" and "do_lower_case" (else they are read from the
    tokenizer: `tokenizer.vocab_file`, `tokenizer.basic_tokenizer.do_lower_case`); any other
    JSON-serializable entries are hashed as well.
    """
    extra = dict(fingerprint_inputs or {})
    vocab_file = extra.pop("vocab_file", None) or getattr(tokenizer, "vocab_file", None)
    do_lower_case = extra.pop("do_lower_case", None)
    if do_lower_case is None:
        basic = getattr(tokenizer, "basic_tokenizer", None)
        do_lower_case = getattr(basic, "do_lower_case", None)
    if vocab_file is None:
        raise ValueError("fingerprint needs a vocab file: pass fingerprint_inputs['vocab_file']")

    h = hashlib.sha256()
    header = {
        "format_version": FORMAT_VERSION,
        "max_seq_length": max_seq_length,
        "is_regression": bool(is_regression),
        "do_lower_case": do_lower_case,
        "extra": extra,
    }
    _hash_field(h, json.dumps(header, sort_keys=True, default=repr))
    h.update(b"labels")
    h.update(len(label_list).to_bytes(8, "little"))
    for label in label_list:
        _hash_field(h, label)
    h.update(b"vocab")
    vocab_hash = hashlib.sha256()
    _hash_file(vocab_hash, os.fspath(vocab_file))
    h.update(vocab_hash.digest())
    h.update(b"examples")
    for example in examples:
        if isinstance(example, PaddingInputExample):
            h.update(b"P")
            continue
        h.update(b"E")
        for value in (example.guid, example.text_a, example.text_b, example.label):
            _hash_field(h, value)
    return h.hexdigest()


def _read_meta(meta_file: str) -> dict | None:
    """The sidecar's content, or None if it is missing or unreadable (then the file is rebuilt)."""
    try:
        if not fileio.is_file(meta_file):
            return None
        meta = json.loads(fileio.read_text(meta_file))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def cached_convert_examples_to_features(
    examples: Sequence[InputExample | PaddingInputExample],
    label_list: Sequence,
    max_seq_length: int,
    tokenizer: tokenization.FullTokenizer,
    output_file: str,
    fingerprint_inputs: Mapping | None = None,
    is_regression: bool = False,
) -> int:
    """`file_based_convert_examples_to_features`, skipped when `output_file` is up to date.

    Beside `output_file` sits `output_file + ".meta.json"` with the inputs' fingerprint (see
    `inputs_fingerprint`), the record count and the file's size; when they all match, the file is
    reused as is. Returns the number of records (real and padding examples).
    """
    output_file = os.fspath(output_file)
    meta_file = output_file + META_SUFFIX
    fingerprint = inputs_fingerprint(
        examples, label_list, max_seq_length, tokenizer, fingerprint_inputs, is_regression
    )
    meta = _read_meta(meta_file)
    if (
        meta is not None
        and meta.get("fingerprint") == fingerprint
        and meta.get("num_examples") == len(examples)
        and fileio.is_file(output_file)
        and fileio.file_size(output_file) == meta.get("record_file_bytes")
    ):
        logging.info("Reusing %s (inputs unchanged)", output_file)
        return int(meta["num_examples"])

    # Drop a stale sidecar first: should this run die after the record file is replaced but
    # before the new sidecar is written, no sidecar may vouch for the new file.
    fileio.remove_if_exists(meta_file)
    count = file_based_convert_examples_to_features(
        examples, label_list, max_seq_length, tokenizer, output_file, is_regression
    )
    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "num_examples": count,
        "num_real_examples": sum(
            1 for e in examples if not isinstance(e, PaddingInputExample)
        ),
        "max_seq_length": max_seq_length,
        "is_regression": bool(is_regression),
        "record_file_bytes": fileio.file_size(output_file),
    }
    fileio.atomic_write(meta_file, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return count
