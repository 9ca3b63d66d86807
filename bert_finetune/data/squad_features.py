"""SQuAD features as run_squad.py built them: `[CLS] query [SEP] doc window [SEP]`, zero padded.

A context longer than the room left by the question is cut into windows (doc spans) of at most
`max_seq_length - len(query_tokens) - 3` word pieces, each starting `doc_stride` pieces after the
previous one. A piece seen by several windows is "max context" in the window where it has the
most context on its shorter side (`_check_is_max_context`); only there may an answer start.
Training positions index the window's tokens; a window without the whole answer (and every window
of an unanswerable question) points at [CLS] (0, 0). `unique_id` counts from 1000000000.

Records keep the original feature names: `unique_ids`, `input_ids`, `input_mask`, `segment_ids`
and, for training, `start_positions`, `end_positions`, `is_impossible`.

Beyond the original (same features): each whitespace word is WordPiece-tokenized once per call
(the original re-tokenized the context for every question), max-context flags are computed with
numpy for a whole window at once, and progress is logged with an ETA.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from bert_finetune import tokenization
from bert_finetune.data import features as feature_lib
from bert_finetune.data.squad import SquadExample
from bert_finetune.errors import UserError

FIRST_UNIQUE_ID = 1000000000
_LOG_EVERY_SECONDS = 10.0

DocSpan = collections.namedtuple("DocSpan", ["start", "length"])


@dataclasses.dataclass
class InputFeatures:
    """A single set of features of data (one window of one example; lists of length T).

    Window tokens `doc_offset .. doc_offset + doc_length - 1` are word pieces
    `doc_start ..` of the example's context; `tok_to_orig_index` (shared by the example's windows)
    maps every piece of the context to its whitespace word; `max_context[i]` says whether the
    window's i-th doc piece has its maximum context here.
    """

    unique_id: int
    example_index: int
    doc_span_index: int
    tokens: list[str]
    input_ids: list[int]
    input_mask: list[int]
    segment_ids: list[int]
    doc_offset: int
    doc_start: int
    doc_length: int
    tok_to_orig_index: list[int]
    max_context: np.ndarray  # bool [doc_length]
    start_position: int | None = None
    end_position: int | None = None
    is_impossible: bool = False

    @property
    def token_to_orig_map(self) -> dict[int, int]:
        """The original's map: window token index -> whitespace word index (doc tokens only)."""
        return {self.doc_offset + i: self.tok_to_orig_index[self.doc_start + i]
                for i in range(self.doc_length)}

    @property
    def token_is_max_context(self) -> dict[int, bool]:
        return {self.doc_offset + i: bool(m) for i, m in enumerate(self.max_context)}


def _improve_answer_span(doc_tokens: Sequence[str], input_start: int, input_end: int,
                         tokenizer: tokenization.FullTokenizer,
                         orig_answer_text: str) -> tuple[int, int]:
    """Returns tokenized answer spans that better match the annotated answer.

    The SQuAD annotations are character based. We first project them to whitespace-tokenized
    words. But then after WordPiece tokenization, we can often find a "better match". For
    example: Question: What year was John Smith born? Context: The leader was John Smith
    (1895-1943). Answer: 1895. The original whitespace-tokenized answer will be "(1895-1943).".
    However after tokenization, our tokens will be "( 1895 - 1943 ) .". So we can match the
    exact answer, 1895.
    """
    tok_answer_text = " ".join(tokenizer.tokenize(orig_answer_text))
    for new_start in range(input_start, input_end + 1):
        for new_end in range(input_end, new_start - 1, -1):
            text_span = " ".join(doc_tokens[new_start:(new_end + 1)])
            if text_span == tok_answer_text:
                return new_start, new_end
    return input_start, input_end


def _check_is_max_context(doc_spans: Sequence[DocSpan], cur_span_index: int,
                          position: int) -> bool:
    """Check if this is the 'max context' doc span for the token (the original, per token).

    A token in several spans counts in the one where min(left context, right context) plus a
    small bonus for the span's length is largest; the first such span wins ties.
    """
    best_score = None
    best_span_index = None
    for span_index, doc_span in enumerate(doc_spans):
        end = doc_span.start + doc_span.length - 1
        if position < doc_span.start:
            continue
        if position > end:
            continue
        num_left_context = position - doc_span.start
        num_right_context = end - position
        score = min(num_left_context, num_right_context) + 0.01 * doc_span.length
        if best_score is None or score > best_score:
            best_score = score
            best_span_index = span_index
    return cur_span_index == best_span_index


def best_span_per_token(doc_spans: Sequence[DocSpan], num_tokens: int) -> np.ndarray:
    """For every doc piece, the index of its max-context span: int [num_tokens].

    `_check_is_max_context(spans, s, p)` is `best_span_per_token(spans, n)[p] == s`.
    """
    if len(doc_spans) == 1:
        return np.zeros([num_tokens], np.int64)
    positions = np.arange(num_tokens)[None, :]  # [1, L]
    starts = np.array([s.start for s in doc_spans])[:, None]  # [S, 1]
    lengths = np.array([s.length for s in doc_spans])[:, None]
    ends = starts + lengths - 1
    score = np.minimum(positions - starts, ends - positions) + 0.01 * lengths  # [S, L]
    score = np.where((positions >= starts) & (positions <= ends), score, -np.inf)
    return np.argmax(score, axis=0)  # first maximum, as the original's strict ">"


def doc_spans_for(num_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[DocSpan]:
    """The sliding windows over `num_tokens` doc pieces."""
    doc_spans = []
    start_offset = 0
    while start_offset < num_tokens:
        length = min(num_tokens - start_offset, max_tokens_for_doc)
        doc_spans.append(DocSpan(start=start_offset, length=length))
        if start_offset + length == num_tokens:
            break
        start_offset += min(length, doc_stride)
    return doc_spans


def convert_examples_to_features(
    examples: Sequence[SquadExample],
    tokenizer: tokenization.FullTokenizer,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    is_training: bool,
    output_fn: Callable[[InputFeatures], None],
) -> int:
    """Loads a data file into a list of `InputBatch`s: calls `output_fn` on every feature.

    Returns the number of features.
    """
    unique_id = FIRST_UNIQUE_ID
    word_pieces: dict[str, list[str]] = {}  # whitespace word -> its word pieces
    began = last_log = time.time()
    for example_index, example in enumerate(examples):
        query_tokens = tokenizer.tokenize(example.question_text)
        if len(query_tokens) > max_query_length:
            query_tokens = query_tokens[0:max_query_length]

        tok_to_orig_index = []
        orig_to_tok_index = []
        all_doc_tokens: list[str] = []
        for i, token in enumerate(example.doc_tokens):
            orig_to_tok_index.append(len(all_doc_tokens))
            sub_tokens = word_pieces.get(token)
            if sub_tokens is None:
                sub_tokens = word_pieces[token] = tokenizer.tokenize(token)
            tok_to_orig_index.extend([i] * len(sub_tokens))
            all_doc_tokens.extend(sub_tokens)

        tok_start_position = tok_end_position = None
        if is_training and example.is_impossible:
            tok_start_position = tok_end_position = -1
        if is_training and not example.is_impossible:
            tok_start_position = orig_to_tok_index[example.start_position]
            if example.end_position < len(example.doc_tokens) - 1:
                tok_end_position = orig_to_tok_index[example.end_position + 1] - 1
            else:
                tok_end_position = len(all_doc_tokens) - 1
            tok_start_position, tok_end_position = _improve_answer_span(
                all_doc_tokens, tok_start_position, tok_end_position, tokenizer,
                example.orig_answer_text)

        # The -3 accounts for [CLS], [SEP] and [SEP].
        max_tokens_for_doc = max_seq_length - len(query_tokens) - 3
        if max_tokens_for_doc < 1:  # the flags' check (max_seq_length > max_query_length + 3)
            raise UserError(f"The max_seq_length ({max_seq_length}) must be greater than "
                            f"max_query_length ({max_query_length}) + 3")
        doc_spans = doc_spans_for(len(all_doc_tokens), max_tokens_for_doc, doc_stride)
        best_span = best_span_per_token(doc_spans, len(all_doc_tokens))
        head = ["[CLS]", *query_tokens, "[SEP]"]
        head_ids = tokenizer.convert_tokens_to_ids(head)
        doc_ids = tokenizer.convert_tokens_to_ids(all_doc_tokens)
        doc_offset = len(head)

        for doc_span_index, doc_span in enumerate(doc_spans):
            span_end = doc_span.start + doc_span.length
            tokens = [*head, *all_doc_tokens[doc_span.start:span_end], "[SEP]"]
            segment_ids = [0] * len(head) + [1] * (doc_span.length + 1)
            input_ids = [*head_ids, *doc_ids[doc_span.start:span_end], head_ids[-1]]
            # The mask has 1 for real tokens and 0 for padding tokens. Only real tokens are
            # attended to.
            input_mask = [1] * len(input_ids)
            padding = max_seq_length - len(input_ids)
            input_ids += [0] * padding
            input_mask += [0] * padding
            segment_ids += [0] * padding

            start_position = end_position = None
            if is_training and not example.is_impossible:
                # For training, if our document chunk does not contain an annotation we point
                # at [CLS]: there is nothing to predict in it.
                doc_end = span_end - 1
                if tok_start_position >= doc_span.start and tok_end_position <= doc_end:
                    start_position = tok_start_position - doc_span.start + doc_offset
                    end_position = tok_end_position - doc_span.start + doc_offset
                else:
                    start_position = end_position = 0
            if is_training and example.is_impossible:
                start_position = end_position = 0

            feature = InputFeatures(
                unique_id=unique_id, example_index=example_index,
                doc_span_index=doc_span_index, tokens=tokens, input_ids=input_ids,
                input_mask=input_mask, segment_ids=segment_ids, doc_offset=doc_offset,
                doc_start=doc_span.start, doc_length=doc_span.length,
                tok_to_orig_index=tok_to_orig_index,
                max_context=best_span[doc_span.start:span_end] == doc_span_index,
                start_position=start_position, end_position=end_position,
                is_impossible=example.is_impossible)
            if example_index < 3 and doc_span_index == 0:
                _log_feature(feature, example, is_training)
            output_fn(feature)
            unique_id += 1
        now = time.time()
        done = example_index + 1
        if now - last_log >= _LOG_EVERY_SECONDS or done == len(examples):
            last_log = now
            eta = (now - began) / done * (len(examples) - done)
            logging.info("Features: %d/%d examples (%d features)  ETA %s", done, len(examples),
                         unique_id - FIRST_UNIQUE_ID, _hms(eta))
    return unique_id - FIRST_UNIQUE_ID


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _log_feature(feature: InputFeatures, example: SquadExample, is_training: bool) -> None:
    logging.info("*** Example ***")
    logging.info("unique_id: %s", feature.unique_id)
    logging.info("example_index: %s", feature.example_index)
    logging.info("doc_span_index: %s", feature.doc_span_index)
    logging.info("tokens: %s", " ".join(tokenization.printable_text(x) for x in feature.tokens))
    logging.info("input_ids: %s", " ".join(str(x) for x in feature.input_ids))
    if is_training and example.is_impossible:
        logging.info("impossible example")
    if is_training and not example.is_impossible:
        answer = " ".join(feature.tokens[feature.start_position:(feature.end_position + 1)])
        logging.info("start_position: %d", feature.start_position)
        logging.info("end_position: %d", feature.end_position)
        logging.info("answer: %s", tokenization.printable_text(answer))


def name_to_features(seq_length: int, is_training: bool) -> dict:
    """The feature spec of a SQuAD record (T = seq_length)."""
    spec = {
        "unique_ids": tf.io.FixedLenFeature([], tf.int64),
        "input_ids": tf.io.FixedLenFeature([seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([seq_length], tf.int64),
    }
    if is_training:
        spec["start_positions"] = tf.io.FixedLenFeature([], tf.int64)
        spec["end_positions"] = tf.io.FixedLenFeature([], tf.int64)
        spec["is_impossible"] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def feature_to_tf_example(feature: InputFeatures, is_training: bool) -> tf.train.Example:
    """The tf.train.Example of one feature, with the original's (FeatureWriter's) names."""
    int_feature = feature_lib.int_feature
    features = collections.OrderedDict()
    features["unique_ids"] = int_feature([feature.unique_id])
    features["input_ids"] = int_feature(feature.input_ids)
    features["input_mask"] = int_feature(feature.input_mask)
    features["segment_ids"] = int_feature(feature.segment_ids)
    if is_training:
        features["start_positions"] = int_feature([feature.start_position])
        features["end_positions"] = int_feature([feature.end_position])
        features["is_impossible"] = int_feature([int(feature.is_impossible)])
    return tf.train.Example(features=tf.train.Features(feature=features))


def write_features(
    examples: Sequence[SquadExample],
    tokenizer: tokenization.FullTokenizer,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    is_training: bool,
    output_file: str,
    keep: bool = True,
    pad_to_multiple: int = 1,
) -> tuple[list[InputFeatures], int]:
    """Converts `examples` and writes the records to `output_file` (atomically).

    Returns (the features if `keep`, else [], the number of records written). With
    `pad_to_multiple` > 1, copies of the last record pad the file to a multiple of it (fixed batch
    shapes for TPU/XLA); rows past the real features are dropped after inference.
    """
    kept: list[InputFeatures] = []
    with feature_lib.atomic_record_writer(output_file) as writer:
        last = None

        def output_fn(feature: InputFeatures) -> None:
            nonlocal last
            last = feature_to_tf_example(feature, is_training).SerializeToString()
            writer.write(last)
            if keep:
                kept.append(feature)

        count = convert_examples_to_features(examples, tokenizer, max_seq_length, doc_stride,
                                             max_query_length, is_training, output_fn)
        while last is not None and pad_to_multiple > 1 and count % pad_to_multiple:
            writer.write(last)
            count += 1
    return kept, count
