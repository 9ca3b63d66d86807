"""TEMPORARY stand-in for the shared task module (bert_finetune/task.py) until it lands on main."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import tensorflow as tf

from bert_finetune import checkpoints, fileio, modeling, tokenization
from bert_finetune.errors import UserError
from bert_finetune.runner import distribute

RUN_FLAGS_FILE = "run_flags.json"


def validate_common(opts) -> list[str]:
    problems = []
    for name in ("bert_config_file", "vocab_file", "output_dir"):
        if not getattr(opts, name):
            problems.append(f"--{name} is required")
    config = None
    if opts.bert_config_file:
        try:
            config = modeling.BertConfig.from_json_file(opts.bert_config_file)
        except UserError as e:
            problems.append(f"--bert_config_file: {e}")
    if config is not None and opts.max_seq_length > config.max_position_embeddings:
        problems.append(f"Cannot use sequence length {opts.max_seq_length} because the BERT model "
                        f"was only trained up to sequence length {config.max_position_embeddings}")
    if opts.vocab_file:
        try:
            tokenization.load_vocab(opts.vocab_file)
        except UserError as e:
            problems.append(f"--vocab_file: {e}")
    if opts.init_checkpoint:
        try:
            checkpoints.resolve_checkpoint(opts.init_checkpoint)
        except UserError as e:
            problems.append(str(e))
    try:
        tokenization.validate_case_matches_checkpoint(opts.do_lower_case, opts.init_checkpoint)
    except UserError as e:
        problems.append(str(e))
    return problems


def record_run(opts, config) -> None:
    out = opts.output_dir
    config.to_json_file(os.path.join(out, "bert_config.json"))
    fileio.atomic_write(os.path.join(out, tokenization.SIDECAR_NAME),
                        "true\n" if opts.do_lower_case else "false\n")
    vocab_copy = os.path.join(out, "vocab.txt")
    if os.path.abspath(opts.vocab_file) != os.path.abspath(vocab_copy):
        tf.io.gfile.copy(opts.vocab_file, vocab_copy, overwrite=True)
    fileio.atomic_write(os.path.join(out, RUN_FLAGS_FILE),
                        json.dumps(dataclasses.asdict(opts), indent=2, sort_keys=True) + "\n")


class Context:
    def __init__(self, opts):
        self.opts = opts
        self.config = modeling.BertConfig.from_json_file(opts.bert_config_file)
        self.tokenizer = tokenization.FullTokenizer(opts.vocab_file, opts.do_lower_case)
        self.strategy = distribute.get_strategy(opts.use_tpu, opts.tpu_name, opts.tpu_zone,
                                                opts.gcp_project, opts.master,
                                                opts.distribution_strategy)
        self.chief = distribute.is_chief(self.strategy)
        self.static_shapes = opts.use_tpu or opts.use_xla
        self.record_dir = opts.output_dir if self.chief else tempfile.mkdtemp(prefix="bert_w_")
        one_hot = opts.use_one_hot_embeddings
        self.use_one_hot = opts.use_tpu if one_hot is None else one_hot

    def close(self):
        if not self.chief:
            shutil.rmtree(self.record_dir, ignore_errors=True)
