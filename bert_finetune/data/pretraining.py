"""Masked-LM / next-sentence training instances: create_pretraining_data.py's algorithm.

Input text: one sentence per line, blank lines between documents. From each document,
`create_instances_from_document` packs segments A and B up to a target length (sometimes a
short one, `short_seq_prob`); half the time B is a random span of another document and the
segments A did not use are put back. `create_masked_lm_predictions` masks
`min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob)))` tokens, never
`[CLS]`/`[SEP]`: 80% become `[MASK]`, 10% stay, 10% become a random vocabulary word. With
`do_whole_word_mask` a word's `##` pieces are masked together.

Every function takes the `random.Random` it draws from and makes the original's calls in the
original's order, so a seed gives the original's instances (checked against the original's
output in tests/test_pretraining_data.py).

Bounded memory (the original held the whole corpus and every instance of every dupe in memory):
`iter_document_shards` yields the corpus in shards of about `max_shard_tokens` wordpieces,
ending at document boundaries, and `create_training_instances` runs the original algorithm on
one shard at a time with the one generator. A corpus that fits in one shard (the default
holds ~1M wordpieces, ~5 MB of text) gives exactly the original's output; a larger one
differs only in that random next segments and the final shuffle stay within a shard.
Tokens are the vocabulary's own (interned) strings, so a token costs a pointer.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Iterator, Sequence

from bert_finetune import tokenization
from bert_finetune.data.readers import iter_lines

DEFAULT_MAX_SHARD_TOKENS = 1_000_000


@dataclasses.dataclass(slots=True)
class TrainingInstance:
    """A single training instance (sentence pair)."""

    tokens: list[str]
    segment_ids: list[int]
    masked_lm_positions: list[int]
    masked_lm_labels: list[str]
    is_random_next: bool

    def __str__(self) -> str:
        p = tokenization.printable_text
        return (f"tokens: {' '.join(p(x) for x in self.tokens)}\n"
                f"segment_ids: {' '.join(str(x) for x in self.segment_ids)}\n"
                f"is_random_next: {self.is_random_next}\n"
                f"masked_lm_positions: {' '.join(str(x) for x in self.masked_lm_positions)}\n"
                f"masked_lm_labels: {' '.join(p(x) for x in self.masked_lm_labels)}\n\n")


Document = list[list[str]]  # sentences of wordpieces


def iter_document_shards(input_files: Sequence[str], tokenizer: tokenization.FullTokenizer,
                         max_shard_tokens: int = DEFAULT_MAX_SHARD_TOKENS
                         ) -> Iterator[list[Document]]:
    """Yields the documents of `input_files` (read in order) in shards of whole documents.

    A shard closes once it holds `max_shard_tokens` wordpieces (0: one shard, the original's
    behaviour). Empty documents are dropped, as the original did. A bad byte is a UserError
    naming the file and line.
    """
    canonical = {w: w for w in tokenizer.vocab}  # intern: one string object per vocab entry
    shard: list[Document] = []
    current: Document = []
    shard_tokens = 0
    for path in input_files:
        for _, raw in iter_lines(path):
            line = raw.strip()
            if not line:  # blank lines delimit documents
                if current:
                    shard.append(current)
                    current = []
                    if max_shard_tokens and shard_tokens >= max_shard_tokens:
                        yield shard
                        shard, shard_tokens = [], 0
                continue
            tokens = tokenizer.tokenize(line)
            if tokens:
                current.append([canonical.get(t, t) for t in tokens])
                shard_tokens += len(tokens)
    # The original's documents run on across files: only a blank line ends one.
    if current:
        shard.append(current)
    if shard:
        yield shard


def create_training_instances(shard: list[Document], vocab_words: Sequence[str],
                              max_seq_length: int, dupe_factor: int, short_seq_prob: float,
                              masked_lm_prob: float, max_predictions_per_seq: int,
                              rng: random.Random, do_whole_word_mask: bool = False
                              ) -> list[TrainingInstance]:
    """The instances of one shard of documents, shuffled (shuffles `shard` in place)."""
    rng.shuffle(shard)
    instances: list[TrainingInstance] = []
    for _ in range(dupe_factor):
        for document_index in range(len(shard)):
            instances.extend(create_instances_from_document(
                shard, document_index, max_seq_length, short_seq_prob, masked_lm_prob,
                max_predictions_per_seq, vocab_words, rng, do_whole_word_mask))
    rng.shuffle(instances)
    return instances


def create_instances_from_document(all_documents: list[Document], document_index: int,
                                   max_seq_length: int, short_seq_prob: float,
                                   masked_lm_prob: float, max_predictions_per_seq: int,
                                   vocab_words: Sequence[str], rng: random.Random,
                                   do_whole_word_mask: bool = False) -> list[TrainingInstance]:
    """Creates `TrainingInstance`s for a single document."""
    document = all_documents[document_index]
    # Account for [CLS], [SEP], [SEP].
    max_num_tokens = max_seq_length - 3
    # Usually fill the whole sequence; sometimes (short_seq_prob) aim shorter, to lessen the
    # mismatch with fine-tuning. The target is rough; max_seq_length is the hard limit.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    # Segments A and B follow the sentences given: an arbitrary split point would make the next
    # sentence task too easy.
    instances = []
    current_chunk: list[list[str]] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                # a_end: how many segments of current_chunk go into A.
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a: list[str] = []
                for j in range(a_end):
                    tokens_a.extend(current_chunk[j])
                tokens_b: list[str] = []
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    # Rarely more than one try on a large corpus; avoid the same document.
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # Put the segments A did not use back, so they are not wasted.
                    num_unused_segments = len(current_chunk) - a_end
                    i -= num_unused_segments
                else:
                    is_random_next = False
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                assert len(tokens_a) >= 1
                assert len(tokens_b) >= 1

                tokens = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                tokens, masked_lm_positions, masked_lm_labels = create_masked_lm_predictions(
                    tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng,
                    do_whole_word_mask)
                instances.append(TrainingInstance(
                    tokens=tokens, segment_ids=segment_ids,
                    masked_lm_positions=masked_lm_positions,
                    masked_lm_labels=masked_lm_labels, is_random_next=is_random_next))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def create_masked_lm_predictions(tokens: list[str], masked_lm_prob: float,
                                 max_predictions_per_seq: int, vocab_words: Sequence[str],
                                 rng: random.Random, do_whole_word_mask: bool = False
                                 ) -> tuple[list[str], list[int], list[str]]:
    """Returns (output_tokens, masked_lm_positions (ascending), masked_lm_labels)."""
    cand_indexes: list[list[int]] = []
    for i, token in enumerate(tokens):
        if token == "[CLS]" or token == "[SEP]":
            continue
        # Whole word masking: a `##` piece joins the word before it, so that the pieces of a
        # word are masked (or not) together. The 80/10/10 choice is still made per piece.
        if do_whole_word_mask and len(cand_indexes) >= 1 and token.startswith("##"):
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
    rng.shuffle(cand_indexes)

    output_tokens = list(tokens)
    num_to_predict = min(max_predictions_per_seq,
                         max(1, int(round(len(tokens) * masked_lm_prob))))
    masked: list[tuple[int, str]] = []
    covered_indexes: set[int] = set()
    for index_set in cand_indexes:
        if len(masked) >= num_to_predict:
            break
        # A whole word that would go over the budget is skipped (not cut).
        if len(masked) + len(index_set) > num_to_predict:
            continue
        if any(index in covered_indexes for index in index_set):
            continue
        for index in index_set:
            covered_indexes.add(index)
            if rng.random() < 0.8:  # 80%: [MASK]
                masked_token = "[MASK]"
            elif rng.random() < 0.5:  # 10%: keep the original
                masked_token = tokens[index]
            else:  # 10%: a random word
                masked_token = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output_tokens[index] = masked_token
            masked.append((index, tokens[index]))
    assert len(masked) <= num_to_predict
    masked.sort(key=lambda x: x[0])
    return output_tokens, [p for p, _ in masked], [label for _, label in masked]


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int,
                      rng: random.Random) -> None:
    """Truncates the longer of the pair (b on a tie), from the front or back at random."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        assert len(trunc_tokens) >= 1
        # Sometimes the front, sometimes the back: more randomness, fewer biases.
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


def iter_instances(input_files: Sequence[str], tokenizer: tokenization.FullTokenizer,
                   max_seq_length: int, dupe_factor: int, short_seq_prob: float,
                   masked_lm_prob: float, max_predictions_per_seq: int, rng: random.Random,
                   do_whole_word_mask: bool = False,
                   max_shard_tokens: int = DEFAULT_MAX_SHARD_TOKENS
                   ) -> Iterable[TrainingInstance]:
    """Every instance of the corpus, a shard at a time (see the module docstring)."""
    vocab_words = list(tokenizer.vocab.keys())
    for shard in iter_document_shards(input_files, tokenizer, max_shard_tokens):
        yield from create_training_instances(
            shard, vocab_words, max_seq_length, dupe_factor, short_seq_prob, masked_lm_prob,
            max_predictions_per_seq, rng, do_whole_word_mask)
