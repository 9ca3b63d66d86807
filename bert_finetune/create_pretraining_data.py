"""Pretraining records from raw text: the library behind `bert-create-pretraining-data`.

`CreatePretrainingDataOptions` holds create_pretraining_data.py's flags by their names and
defaults, `validate()` reports every problem at once, and `run()` writes the records
(see `data/pretraining.py` for the algorithm, `data/pretraining_records.py` for the format).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable, Iterator

import tensorflow as tf
from absl import logging

from bert_finetune import tokenization
from bert_finetune.data import pretraining, pretraining_records
from bert_finetune.errors import UserError


@dataclasses.dataclass
class CreatePretrainingDataOptions:
    """The flags of create_pretraining_data.py (same names and defaults) plus our addition."""

    input_file: str | None = None  # comma-separated globs
    output_file: str | None = None  # comma-separated; instances go round-robin
    vocab_file: str | None = None
    do_lower_case: bool = True
    do_whole_word_mask: bool = False
    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    random_seed: int = 12345
    dupe_factor: int = 10
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    # Addition: bounds memory (see data/pretraining.py); 0 holds the whole corpus at once.
    max_shard_tokens: int = pretraining.DEFAULT_MAX_SHARD_TOKENS


def expand_globs(patterns: str, flag: str = "input_file") -> list[str]:
    """The files of comma-separated globs, in order; a glob that matches nothing is a UserError.

    (The original skipped such a glob silently, and an empty corpus followed.)
    """
    files: list[str] = []
    for pattern in patterns.split(","):
        pattern = pattern.strip()
        if not pattern:
            continue
        matches = sorted(tf.io.gfile.glob(pattern))
        matches = [m for m in matches if not tf.io.gfile.isdir(m)]
        if not matches:
            raise UserError(f"--{flag}={pattern}: no file matches")
        files.extend(matches)
    if not files:
        raise UserError(f"--{flag} names no file")
    return files


def validate(opts: CreatePretrainingDataOptions) -> list[str]:
    """Every problem with the options (empty list when fine)."""
    problems = []
    for name in ("input_file", "output_file", "vocab_file"):
        if not getattr(opts, name):
            problems.append(f"--{name} is required")
    if opts.max_seq_length < 5:
        problems.append(f"--max_seq_length={opts.max_seq_length} must be at least 5 "
                        "([CLS], two [SEP] and at least one token of each segment)")
    if opts.max_predictions_per_seq < 1:
        problems.append(f"--max_predictions_per_seq={opts.max_predictions_per_seq} must be "
                        "positive")
    if opts.dupe_factor < 1:
        problems.append(f"--dupe_factor={opts.dupe_factor} must be positive")
    if not 0.0 < opts.masked_lm_prob <= 1.0:
        problems.append(f"--masked_lm_prob={opts.masked_lm_prob} must be in (0, 1]")
    if not 0.0 <= opts.short_seq_prob <= 1.0:
        problems.append(f"--short_seq_prob={opts.short_seq_prob} must be in [0, 1]")
    if opts.max_shard_tokens < 0:
        problems.append(f"--max_shard_tokens={opts.max_shard_tokens} must not be negative")
    if opts.input_file:
        try:
            expand_globs(opts.input_file)
        except UserError as e:
            problems.append(str(e))
    if opts.output_file:
        outputs = [f.strip() for f in opts.output_file.split(",")]
        if any(not f for f in outputs):
            problems.append(f"--output_file={opts.output_file}: an empty file name")
        if len(set(outputs)) != len(outputs):
            problems.append(f"--output_file={opts.output_file} names a file twice")
    if opts.vocab_file:
        try:
            vocab = tokenization.load_vocab(opts.vocab_file)
        except UserError as e:
            problems.append(f"--vocab_file: {e}")
        else:
            for token in ("[CLS]", "[SEP]", "[MASK]"):
                if token not in vocab:
                    problems.append(f"--vocab_file={opts.vocab_file} has no {token} token")
    return problems


def _nonempty(instances: Iterable, input_files: list[str]) -> Iterator:
    """Passes `instances` through; none at all is a UserError (so no output file appears)."""
    count = 0
    for instance in instances:
        count += 1
        yield instance
    if not count:
        raise UserError(f"--input_file: {', '.join(input_files)} holds no text (one sentence "
                        "per line, blank lines between documents)")


def run(opts: CreatePretrainingDataOptions) -> int:
    """Writes the records; returns the number of instances written."""
    tokenizer = tokenization.FullTokenizer(opts.vocab_file, opts.do_lower_case)
    input_files = expand_globs(opts.input_file)
    logging.info("*** Reading from input files ***")
    for input_file in input_files:
        logging.info("  %s", input_file)
    rng = random.Random(opts.random_seed)
    instances = pretraining.iter_instances(
        input_files, tokenizer, opts.max_seq_length, opts.dupe_factor, opts.short_seq_prob,
        opts.masked_lm_prob, opts.max_predictions_per_seq, rng, opts.do_whole_word_mask,
        opts.max_shard_tokens)
    output_files = [f.strip() for f in opts.output_file.split(",")]
    logging.info("*** Writing to output files ***")
    for output_file in output_files:
        logging.info("  %s", output_file)
        directory = os.path.dirname(output_file)
        if directory:
            tf.io.gfile.makedirs(directory)
    return pretraining_records.write_instance_to_example_files(
        _nonempty(instances, input_files), tokenizer, opts.max_seq_length,
        opts.max_predictions_per_seq, output_files)
