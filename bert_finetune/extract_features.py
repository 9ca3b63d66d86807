"""Contextual vectors from BERT's hidden layers: the library behind `bert-extract-features`.

The input has one sentence, or `text_a ||| text_b`, per line. The output is extract_features.py's
JSONL, one line per input line, keys and rounding included (the original's key really is
"linex_index"):

    {"linex_index": 0, "features": [{"token": "[CLS]", "layers": [{"index": -1,
      "values": [0.123456, ...]}, ...]}, ...]}

over the real tokens, `[CLS]`/`[SEP]` included. Beyond the original, `pooling="cls"|"mean"`
writes one vector per layer and line instead (`{"linex_index": i, "pooling": "mean", "layers":
[{"index": -1, "values": [...]}]}`; mean over the real tokens, padding excluded), and
`output_format="npy"` writes those vectors as one float32 array [N, num_layers, H].
Lines are read, run and written a batch at a time, so memory stays flat on large inputs.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from bert_finetune import checkpoints, fileio, modeling, task, tokenization
from bert_finetune.data.features import truncate_seq_pair
from bert_finetune.data.readers import iter_lines
from bert_finetune.errors import UserError
from bert_finetune.runner import distribute, loops

POOLINGS = ("none", "cls", "mean")
OUTPUT_FORMATS = ("jsonl", "npy")


@dataclasses.dataclass
class ExtractFeaturesOptions:
    """The flags of extract_features.py (same names and defaults) plus our additions."""

    input_file: str | None = None
    output_file: str | None = None
    layers: str = "-1,-2,-3,-4"
    bert_config_file: str | None = None
    max_seq_length: int = 128
    init_checkpoint: str | None = None
    vocab_file: str | None = None
    do_lower_case: bool = True
    batch_size: int = 32
    use_tpu: bool = False
    master: str | None = None
    num_tpu_cores: int = 8
    use_one_hot_embeddings: bool = False
    # Additions.
    pooling: str = "none"
    output_format: str = "jsonl"
    tpu_name: str | None = None
    distribution_strategy: str = "auto"


@dataclasses.dataclass
class InputFeatures:
    """One packed line: tokens (real ones) and the model inputs (lists of length T)."""

    unique_id: int
    tokens: list[str]
    input_ids: list[int]
    input_mask: list[int]
    input_type_ids: list[int]


def parse_layers(layers: str) -> list[int]:
    try:
        indexes = [int(x) for x in layers.split(",")]
    except ValueError:
        raise UserError(f"--layers={layers}: expected comma-separated integers such as "
                        "-1,-2,-3,-4") from None
    return indexes


def validate(opts: ExtractFeaturesOptions) -> list[str]:
    """Every problem with the options (empty list when fine)."""
    problems = []
    for name in ("input_file", "output_file", "bert_config_file", "init_checkpoint",
                 "vocab_file"):
        if not getattr(opts, name):
            problems.append(f"--{name} is required")
    for name in ("max_seq_length", "batch_size"):
        if getattr(opts, name) <= 0:
            problems.append(f"--{name}={getattr(opts, name)} must be positive")
    if opts.pooling not in POOLINGS:
        problems.append(f"--pooling={opts.pooling}: use one of {', '.join(POOLINGS)}")
    if opts.output_format not in OUTPUT_FORMATS:
        problems.append(f"--output_format={opts.output_format}: use jsonl or npy")
    elif opts.output_format == "npy" and opts.pooling == "none":
        problems.append("--output_format=npy writes one vector per line and layer: use "
                        "--pooling=cls or --pooling=mean (token vectors: --output_format=jsonl)")
    elif opts.output_format == "npy" and opts.output_file and fileio.is_remote(opts.output_file):
        problems.append(f"--output_file={opts.output_file}: npy output must be a local file")
    layers = None
    try:
        layers = parse_layers(opts.layers)
    except UserError as e:
        problems.append(str(e))
    if opts.input_file and not fileio.is_file(opts.input_file):
        problems.append(f"--input_file={opts.input_file}: no such file")
    model_problems, config = task.check_model_files(
        opts.bert_config_file, opts.max_seq_length, opts.vocab_file, opts.init_checkpoint)
    problems += model_problems
    if config is not None:
        n = config.num_hidden_layers
        bad = [i for i in layers or [] if not -n <= i < n]
        if bad:
            problems.append(f"--layers={opts.layers}: layer {bad[0]} is out of range for a "
                            f"{n}-layer model (use -{n}..{n - 1}; -1 is the last)")
    problems += task.check_casing(opts.do_lower_case, opts.init_checkpoint)
    return problems


# -- input ---------------------------------------------------------------------------------------
def _split(line: str, path: str, number: int) -> tuple[str, str | None]:
    """`a ||| b` -> (a, b); one sentence -> (line, None). More than one `|||` is a UserError."""
    if line.count("|||") > 1:
        raise UserError(f"{path}, line {number}: more than one '|||'; a line is one sentence "
                        "or 'text_a ||| text_b'")
    a, sep, b = line.partition(" ||| ")  # the original's regex: "^(.*) \|\|\| (.*)$"
    return (a, b) if sep else (line, None)


def check_input(path: str) -> int:
    """Reads the input once, cheaply: returns its number of lines; bad lines are UserErrors."""
    count = 0
    for number, raw in iter_lines(path):
        _split(raw.strip(), path, number)
        count = number
    if not count:
        raise UserError(f"--input_file={path} is empty: expected one sentence (or "
                        "'text_a ||| text_b') per line")
    return count


def iter_features(path: str, tokenizer: tokenization.FullTokenizer, seq_length: int
                  ) -> Iterator[InputFeatures]:
    """Packs each line as extract_features.py did (`[CLS] a [SEP] (b [SEP])`, zero padded)."""
    for number, raw in iter_lines(path):
        text_a, text_b = _split(raw.strip(), path, number)
        tokens_a = tokenizer.tokenize(text_a)
        tokens_b = tokenizer.tokenize(text_b) if text_b else None
        if tokens_b:
            truncate_seq_pair(tokens_a, tokens_b, seq_length - 3)
        elif len(tokens_a) > seq_length - 2:
            tokens_a = tokens_a[:seq_length - 2]
        tokens = ["[CLS]", *tokens_a, "[SEP]"]
        type_ids = [0] * len(tokens)
        if tokens_b:
            tokens += [*tokens_b, "[SEP]"]
            type_ids += [1] * (len(tokens_b) + 1)
        ids = tokenizer.convert_tokens_to_ids(tokens)
        pad = seq_length - len(ids)
        unique_id = number - 1
        if unique_id < 5:
            logging.info("*** Example ***")
            logging.info("unique_id: %s", unique_id)
            logging.info("tokens: %s", " ".join(tokenization.printable_text(x) for x in tokens))
        yield InputFeatures(unique_id, tokens, ids + [0] * pad, [1] * len(ids) + [0] * pad,
                            type_ids + [0] * pad)


# -- model ---------------------------------------------------------------------------------------
class FeatureExtractor(tf.Module):
    """The encoder, returning the chosen layers (or their pooled vectors) per example."""

    def __init__(self, config: modeling.BertConfig, layer_indexes: list[int], pooling: str,
                 use_one_hot_embeddings: bool = False):
        super().__init__(name="feature_extractor")
        self.bert = modeling.BertModel(config, use_one_hot_embeddings)
        self.layer_indexes = list(layer_indexes)
        self.pooling = pooling

    def variables_by_name(self) -> dict[str, tf.Variable]:
        return self.bert.variables_by_name()

    def predict(self, features: dict) -> dict[str, tf.Tensor]:
        """{"unique_ids": [B], "layer_output_j": [B, T, H] (pooling "none") or [B, H]}."""
        out = self.bert(features["input_ids"], features["input_mask"],
                        features["input_type_ids"], training=False)
        result = {"unique_ids": features["unique_ids"]}
        for j, index in enumerate(self.layer_indexes):
            layer = tf.cast(out["all_encoder_layers"][index], tf.float32)  # [B, T, H]
            if self.pooling == "cls":
                layer = layer[:, 0]
            elif self.pooling == "mean":  # real tokens only, [CLS]/[SEP] included
                layer = modeling.masked_mean(layer, features["input_mask"])
            result[f"layer_output_{j}"] = layer
        return result


def _dataset(features: Iterator[InputFeatures], pending: collections.deque, batch_size: int,
             seq_length: int) -> tf.data.Dataset:
    """Batches of `features`; each batch's InputFeatures are queued on `pending` when read."""

    def batches():
        batch: list[InputFeatures] = []
        for f in features:
            batch.append(f)
            if len(batch) == batch_size:
                pending.append(batch)
                yield _arrays(batch)
                batch = []
        if batch:
            pending.append(batch)
            yield _arrays(batch)

    ids = tf.TensorSpec([None, seq_length], tf.int32)
    signature = {"unique_ids": tf.TensorSpec([None], tf.int32), "input_ids": ids,
                 "input_mask": ids, "input_type_ids": ids}
    return tf.data.Dataset.from_generator(batches, output_signature=signature)


def _arrays(batch: list[InputFeatures]) -> dict[str, np.ndarray]:
    return {"unique_ids": np.array([f.unique_id for f in batch], np.int32),
            "input_ids": np.array([f.input_ids for f in batch], np.int32),
            "input_mask": np.array([f.input_mask for f in batch], np.int32),
            "input_type_ids": np.array([f.input_type_ids for f in batch], np.int32)}


def _values(vector: np.ndarray) -> list[float]:
    return [round(float(x), 6) for x in vector.flat]


def token_json(feature: InputFeatures, outputs: dict, row: int, layer_indexes: list[int]) -> str:
    """One JSONL line in the original's format (key order and rounding included)."""
    output_json = collections.OrderedDict()
    output_json["linex_index"] = feature.unique_id
    all_features = []
    for i, token in enumerate(feature.tokens):
        all_layers = []
        for j, layer_index in enumerate(layer_indexes):
            layers = collections.OrderedDict()
            layers["index"] = layer_index
            layers["values"] = _values(outputs[f"layer_output_{j}"][row, i])
            all_layers.append(layers)
        features = collections.OrderedDict()
        features["token"] = token
        features["layers"] = all_layers
        all_features.append(features)
    output_json["features"] = all_features
    return json.dumps(output_json)


def pooled_json(feature: InputFeatures, outputs: dict, row: int, layer_indexes: list[int],
                pooling: str) -> str:
    layers = [collections.OrderedDict(index=index, values=_values(outputs[f"layer_output_{j}"][row]))
              for j, index in enumerate(layer_indexes)]
    return json.dumps(collections.OrderedDict(linex_index=feature.unique_id, pooling=pooling,
                                              layers=layers))


def run(opts: ExtractFeaturesOptions) -> int:
    """Writes the features of every input line; returns the number of lines."""
    num_lines = check_input(opts.input_file)  # before any work: a bad line fails at once
    layer_indexes = parse_layers(opts.layers)
    config = modeling.BertConfig.from_json_file(opts.bert_config_file)
    tokenizer = tokenization.FullTokenizer(opts.vocab_file, opts.do_lower_case)
    strategy = distribute.get_strategy(opts.use_tpu, opts.tpu_name, None, None, opts.master,
                                       opts.distribution_strategy)
    with strategy.scope():
        model = FeatureExtractor(config, layer_indexes, opts.pooling,
                                 opts.use_one_hot_embeddings)
    checkpoints.init_from_checkpoint(model.variables_by_name(), opts.init_checkpoint)
    pending: collections.deque = collections.deque()
    dataset = _dataset(iter_features(opts.input_file, tokenizer, opts.max_seq_length), pending,
                       opts.batch_size, opts.max_seq_length)
    directory = os.path.dirname(opts.output_file)
    if directory:
        tf.io.gfile.makedirs(directory)
    outputs = loops.iter_inference(strategy, model, dataset)
    written = 0
    if opts.output_format == "npy":
        tmp = fileio.temp_path(opts.output_file)
        try:
            array = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32,
                shape=(num_lines, len(layer_indexes), config.hidden_size))
            for out in outputs:
                batch = pending.popleft()
                for row in range(len(batch)):
                    for j in range(len(layer_indexes)):
                        array[written, j] = out[f"layer_output_{j}"][row]
                    written += 1
            array.flush()
            del array
            fileio.replace(tmp, opts.output_file)
        except BaseException:
            fileio.remove_if_exists(tmp)
            raise
    else:
        with fileio.atomic_open(opts.output_file) as writer:
            for out in outputs:
                batch = pending.popleft()
                for row, feature in enumerate(batch):
                    assert int(out["unique_ids"][row]) == feature.unique_id
                    if opts.pooling == "none":
                        line = token_json(feature, out, row, layer_indexes)
                    else:
                        line = pooled_json(feature, out, row, layer_indexes, opts.pooling)
                    writer.write(line + "\n")
                    written += 1
    logging.info("Wrote features of %d lines to %s", written, opts.output_file)
    return written
