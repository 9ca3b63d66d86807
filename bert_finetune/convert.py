"""Imports a Hugging Face BERT (config.json, model.safetensors, vocab.txt) as Google's checkpoint.

The output directory holds what Google's original BERT releases hold: `bert_config.json`,
`vocab.txt`, `bert_model.ckpt.{index,data-00000-of-00001}` (+ the `checkpoint` state file) with
the original variable names, and the `do_lower_case.txt` casing sidecar. Weights are read with
`safetensors.numpy`, never PyTorch.

`hf_to_google_names` is the project's one table translating Hugging Face names to Google's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging

from bert_finetune.errors import UserError

CHECKPOINT_NAME = "bert_model.ckpt"

# bert_config.json keys, as in google-research/bert modeling.BertConfig.
GOOGLE_CONFIG_KEYS = (
    "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
    "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
    "num_hidden_layers", "type_vocab_size", "vocab_size",
)

# Hugging Face BertConfig defaults: what transformers itself assumes for a key config.json omits.
_HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
    "initializer_range": 0.02,
}
_INT_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "max_position_embeddings", "type_vocab_size")
_PROB_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob")

# HF hidden_act -> Google hidden_act. HF's "gelu" is the exact erf GELU, Google's "gelu" is the
# tanh approximation, so the names cross over (see DECISIONS.md).
ACTIVATIONS = {
    "gelu": "gelu_exact",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "relu": "relu",
    "tanh": "tanh",
    "linear": "linear",
}

# Buffers HF may save that carry no weights.
_BUFFERS = frozenset({"embeddings.position_ids", "embeddings.token_type_ids"})
# The MLM decoder is tied to the word embeddings (weight) and to cls.predictions.bias (bias).
_DECODER_WEIGHT = "cls.predictions.decoder.weight"
_DECODER_BIAS = "cls.predictions.decoder.bias"

_HEADS: dict[str, list[tuple[str, str, bool]]] = {
    "cls/predictions": [
        ("cls/predictions/transform/dense/kernel", "cls.predictions.transform.dense.weight", True),
        ("cls/predictions/transform/dense/bias", "cls.predictions.transform.dense.bias", False),
        ("cls/predictions/transform/LayerNorm/gamma",
         "cls.predictions.transform.LayerNorm.weight", False),
        ("cls/predictions/transform/LayerNorm/beta",
         "cls.predictions.transform.LayerNorm.bias", False),
        ("cls/predictions/output_bias", "cls.predictions.bias", False),
    ],
    # Google stores output_weights as [2, H], the layout of torch's Linear weight: no transpose.
    "cls/seq_relationship": [
        ("cls/seq_relationship/output_weights", "cls.seq_relationship.weight", False),
        ("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", False),
    ],
    # Fine-tuned heads: BertForSequenceClassification -> run_classifier's [C, H] output layer,
    # BertForQuestionAnswering -> run_squad's cls/squad layer (both [out, H], as torch's Linear).
    "output": [
        ("output_weights", "classifier.weight", False),
        ("output_bias", "classifier.bias", False),
    ],
    "cls/squad": [
        ("cls/squad/output_weights", "qa_outputs.weight", False),
        ("cls/squad/output_bias", "qa_outputs.bias", False),
    ],
}


def hf_to_google_names(num_layers: int, heads: bool = False) -> list[tuple[str, str, bool]]:
    """Returns [(google name, HF name, transpose)] for every variable of Google's BertModel.

    HF names are those of an unprefixed `BertModel` state dict (`encoder.layer.0...`). `transpose`
    marks dense kernels: torch's Linear weight is [out, in], Google's kernel is [in, out].
    With `heads`, the pre-training heads (MLM `cls/predictions/*`, NSP `cls/seq_relationship/*`)
    follow.
    """
    names = [
        ("bert/embeddings/word_embeddings", "embeddings.word_embeddings.weight", False),
        ("bert/embeddings/token_type_embeddings", "embeddings.token_type_embeddings.weight", False),
        ("bert/embeddings/position_embeddings", "embeddings.position_embeddings.weight", False),
        ("bert/embeddings/LayerNorm/gamma", "embeddings.LayerNorm.weight", False),
        ("bert/embeddings/LayerNorm/beta", "embeddings.LayerNorm.bias", False),
    ]
    for i in range(num_layers):
        g, h = f"bert/encoder/layer_{i}/", f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            names.append((f"{g}attention/self/{part}/kernel", f"{h}attention.self.{part}.weight",
                          True))
            names.append((f"{g}attention/self/{part}/bias", f"{h}attention.self.{part}.bias",
                          False))
        for g_dense, h_dense in (("attention/output", "attention.output"),
                                 ("intermediate", "intermediate"), ("output", "output")):
            names.append((f"{g}{g_dense}/dense/kernel", f"{h}{h_dense}.dense.weight", True))
            names.append((f"{g}{g_dense}/dense/bias", f"{h}{h_dense}.dense.bias", False))
            if g_dense != "intermediate":
                names.append((f"{g}{g_dense}/LayerNorm/gamma", f"{h}{h_dense}.LayerNorm.weight",
                              False))
                names.append((f"{g}{g_dense}/LayerNorm/beta", f"{h}{h_dense}.LayerNorm.bias",
                              False))
    names += [
        ("bert/pooler/dense/kernel", "pooler.dense.weight", True),
        ("bert/pooler/dense/bias", "pooler.dense.bias", False),
    ]
    if heads:
        for entries in _HEADS.values():
            names += entries
    return names


def convert_hf_to_google(hf_model_dir: str, output_dir: str) -> dict:
    """Converts a Hugging Face BERT directory into Google's release layout in `output_dir`.

    Every input is checked before anything is written; the files are built in a temporary
    directory and moved into `output_dir` only at the end, so a failure leaves it unchanged
    (and not created if it did not exist).

    Returns a summary: output_dir, init_checkpoint (the checkpoint prefix), num_variables,
    hidden_act, hf_hidden_act, do_lower_case, vocab_size, heads (converted head scopes) and
    skipped (HF tensors deliberately not converted).
    """
    if not os.path.isdir(hf_model_dir):
        raise UserError(f"{hf_model_dir}: Hugging Face model directory not found")
    config_path = os.path.join(hf_model_dir, "config.json")
    hf_config = _read_json(config_path, required=True)
    _check_bert(hf_config, config_path)
    config = google_config(hf_config, config_path)
    do_lower_case = _read_do_lower_case(hf_model_dir)
    vocab_path = _check_vocab(hf_model_dir, config["vocab_size"], config_path)
    arrays, heads, skipped = _convert_weights(hf_model_dir, config)

    _write_output(output_dir, config, vocab_path, do_lower_case, arrays)
    summary = {
        "output_dir": output_dir,
        "init_checkpoint": os.path.join(output_dir, CHECKPOINT_NAME),
        "num_variables": len(arrays),
        "hidden_act": config["hidden_act"],
        "hf_hidden_act": hf_config.get("hidden_act", _HF_DEFAULTS["hidden_act"]),
        "do_lower_case": do_lower_case,
        "vocab_size": config["vocab_size"],
        "heads": heads,
        "skipped": skipped,
    }
    logging.info("Converted %s -> %s: %d variables (%d layers%s), hidden_act %r -> %r, "
                 "do_lower_case=%s%s", hf_model_dir, output_dir, len(arrays),
                 config["num_hidden_layers"], "".join(f", {h}" for h in heads),
                 summary["hf_hidden_act"], config["hidden_act"], do_lower_case,
                 f", skipped {', '.join(skipped)}" if skipped else "")
    return summary


def google_config(hf_config: Mapping[str, Any], path: str = "config.json") -> dict[str, Any]:
    """Returns bert_config.json (Google's 11 keys) for a HF BERT config; `path` names errors."""
    out: dict[str, Any] = {}
    for key in GOOGLE_CONFIG_KEYS:
        value = hf_config.get(key, _HF_DEFAULTS[key])
        if key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"{path}: {key} must be a positive integer, got {value!r}")
        elif key in _PROB_KEYS or key == "initializer_range":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 <= value <= 1 if key in _PROB_KEYS else value > 0):
                raise UserError(f"{path}: {key} must be a number "
                                f"{'in [0, 1]' if key in _PROB_KEYS else '> 0'}, got {value!r}")
        out[key] = value
    act = out["hidden_act"]
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise UserError(f"{path}: hidden_act {act!r} has no equivalent in Google's BERT "
                        f"(supported: {', '.join(ACTIVATIONS)})")
    out["hidden_act"] = ACTIVATIONS[act]
    if out["hidden_size"] % out["num_attention_heads"]:
        raise UserError(f"{path}: hidden_size {out['hidden_size']} is not a multiple of "
                        f"num_attention_heads {out['num_attention_heads']}")
    eps = hf_config.get("layer_norm_eps", 1e-12)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps != 1e-12:
        raise UserError(f"{path}: layer_norm_eps {eps!r} is not supported: Google's BERT "
                        "LayerNorm epsilon is fixed at 1e-12")
    pos = hf_config.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise UserError(f"{path}: position_embedding_type {pos!r} is not supported: Google's "
                        "BERT has absolute position embeddings only")
    return out


def _read_json(path: str, required: bool) -> dict | None:
    if not os.path.isfile(path):
        if required:
            raise UserError(f"{path}: not found")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_bert(hf_config: Mapping[str, Any], path: str) -> None:
    """Rejects configs of other architectures (RoBERTa, GPT-2, ...), which can look similar."""
    model_type = hf_config.get("model_type")
    if model_type is not None and model_type != "bert":
        raise UserError(f"{path}: model_type is {model_type!r}, not 'bert'; "
                        "only BERT models can be converted")
    archs = hf_config.get("architectures")
    if archs is not None:
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise UserError(f"{path}: architectures must be a list of names, got {archs!r}")
        others = [a for a in archs if not a.startswith("Bert")]
        if others:
            raise UserError(f"{path}: architecture {others[0]!r} is not a BERT model; "
                            "only Bert* architectures can be converted")


def _read_do_lower_case(hf_model_dir: str) -> bool:
    path = os.path.join(hf_model_dir, "tokenizer_config.json")
    tokenizer_config = _read_json(path, required=False) or {}
    # BertTokenizer lower-cases unless told otherwise.
    value = tokenizer_config.get("do_lower_case", True)
    if not isinstance(value, bool):
        raise UserError(f"{path}: do_lower_case must be true or false, got {value!r}")
    return value


def _check_vocab(hf_model_dir: str, vocab_size: int, config_path: str) -> str:
    path = os.path.join(hf_model_dir, "vocab.txt")
    if not os.path.isfile(path):
        hint = (" (tokenizer.json alone is not supported: the WordPiece vocab.txt is needed)"
                if os.path.isfile(os.path.join(hf_model_dir, "tokenizer.json")) else "")
        raise UserError(f"{path}: not found{hint}")
    try:
        with open(path, encoding="utf-8") as f:
            # One token a line, as tokenization.load_vocab reads it (str.splitlines would also
            # split on the rare separators some vocabularies hold as tokens).
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    n = len(lines) - (lines[-1] == "")
    if n != vocab_size:
        raise UserError(f"{path}: holds {n} tokens but {config_path} has vocab_size {vocab_size}")
    return path


def _expected_shape(name: str, config: Mapping[str, Any]) -> tuple[int, ...]:
    """The [in, out] (Google) shape of a variable, from bert_config.json."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    rules = [
        (r"word_embeddings$", (v, h)),
        (r"token_type_embeddings$", (config["type_vocab_size"], h)),
        (r"position_embeddings$", (config["max_position_embeddings"], h)),
        (r"intermediate/dense/kernel$", (h, i)),
        (r"intermediate/dense/bias$", (i,)),
        (r"layer_\d+/output/dense/kernel$", (i, h)),
        (r"cls/predictions/output_bias$", (v,)),
        (r"cls/seq_relationship/output_weights$", (2, h)),
        (r"cls/seq_relationship/output_bias$", (2,)),
        (r"cls/squad/output_weights$", (2, h)),
        (r"cls/squad/output_bias$", (2,)),
        (r"^output_weights$", (-1, h)),  # -1: any number of labels
        (r"^output_bias$", (-1,)),
        (r"kernel$", (h, h)),
        (r"(bias|gamma|beta)$", (h,)),
    ]
    for pattern, shape in rules:
        if re.search(pattern, name):
            return shape
    raise AssertionError(f"no shape rule for {name}")


def _load_tensors(path: str) -> dict[str, np.ndarray]:
    """Loads model.safetensors as {unprefixed HF BertModel name: array}."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        raw = load_file(path)
    except (SafetensorError, OSError, TypeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = ("; numpy has no bfloat16: save the model as float32"
                if "bfloat16" in first else "")
        raise UserError(f"{path}: cannot read safetensors file ({first}){hint}") from None
    tensors: dict[str, np.ndarray] = {}
    for key, array in raw.items():
        # BertForPreTraining & co. save the encoder under "bert."; BertModel saves it bare.
        name = key[len("bert."):] if key.startswith("bert.") else key
        # Old checkpoints call LayerNorm's parameters gamma/beta; transformers renames them too.
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
        name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
        if name in tensors:
            raise UserError(f"{path}: tensor {key} appears twice (with and without a prefix)")
        tensors[name] = array
    return tensors


def _convert_weights(hf_model_dir: str, config: Mapping[str, Any]
                     ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Returns ({google name: float32 array}, converted head scopes, skipped HF names)."""
    path = os.path.join(hf_model_dir, "model.safetensors")
    if not os.path.isfile(path):
        hint = ""
        if os.path.isfile(os.path.join(hf_model_dir, "pytorch_model.bin")):
            hint = (" (pytorch_model.bin is not supported: reading it needs PyTorch; "
                    "save the model with safe_serialization=True)")
        raise UserError(f"{path}: not found{hint}")
    tensors = _load_tensors(path)

    if "cls.predictions.bias" not in tensors and _DECODER_BIAS in tensors:
        # Only the tied decoder copy of the MLM output bias was saved.
        tensors["cls.predictions.bias"] = tensors.pop(_DECODER_BIAS)
    entries = hf_to_google_names(config["num_hidden_layers"])
    heads = []
    for scope, head in _HEADS.items():
        hf_names = [h for _, h, _ in head]
        present = [h for h in hf_names if h in tensors]
        if present:
            missing = [h for h in hf_names if h not in tensors]
            if missing:
                raise UserError(f"{path}: head {scope} is incomplete: has {present[0]} but "
                                f"not {missing[0]}")
            entries += head
            heads.append(scope)

    arrays: dict[str, np.ndarray] = {}
    used = set()
    for google, hf, transpose in entries:
        if hf not in tensors:
            raise UserError(f"{path}: tensor {hf} (Google's {google}) is missing; Google's BERT "
                            "needs every BertModel weight, pooler included")
        array = tensors[hf]
        want = _expected_shape(google, config)
        if google == "output_bias" and "output_weights" in arrays:
            want = (arrays["output_weights"].shape[0],)
        want_hf = want[::-1] if transpose else want
        if len(array.shape) != len(want_hf) or any(
                w not in (-1, a) for w, a in zip(want_hf, array.shape, strict=True)):
            raise UserError(f"{path}: tensor {hf} has shape {list(array.shape)}, expected "
                            f"{list(want_hf)} from config.json")
        if not np.issubdtype(array.dtype, np.floating):
            raise UserError(f"{path}: tensor {hf} has dtype {array.dtype}, expected float32")
        # float16/float64 -> float32 is what Google's checkpoints hold (exact from float16).
        arrays[google] = np.ascontiguousarray(array.T if transpose else array, dtype=np.float32)
        used.add(hf)

    skipped = sorted(set(tensors) & _BUFFERS)
    for tied, target in ((_DECODER_WEIGHT, "bert/embeddings/word_embeddings"),
                         (_DECODER_BIAS, "cls/predictions/output_bias")):
        if tied in tensors and tied not in used:
            skipped.append(tied)
            if target not in arrays or not np.array_equal(tensors[tied], arrays[target]):
                # Google's MLM head always shares these; an untied copy cannot be represented.
                logging.warning("%s: %s differs from %s and is dropped (Google's BERT ties them)",
                                path, tied, target)
    leftover = sorted(set(tensors) - used - set(skipped))
    if leftover:
        more = f" (and {len(leftover) - 1} more)" if len(leftover) > 1 else ""
        raise UserError(f"{path}: tensor {leftover[0]}{more} has no name in Google's BERT; only "
                        "BertModel weights, the MLM/NSP pre-training heads and the classifier / "
                        "question-answering heads are converted")
    return arrays, heads, skipped


def _write_output(output_dir: str, config: Mapping[str, Any], vocab_path: str,
                  do_lower_case: bool, arrays: Mapping[str, np.ndarray]) -> None:
    """Builds every file in a temporary directory, verifies the checkpoint, then moves it in."""
    output_dir = os.path.abspath(output_dir)
    existed = os.path.isdir(output_dir)
    if os.path.exists(output_dir) and not existed:
        raise UserError(f"{output_dir}: exists and is not a directory")
    base = output_dir if existed else os.path.dirname(output_dir)
    created = _makedirs(base, output_dir)
    # A sibling (or child) on the same filesystem, so the final moves are atomic renames.
    tmp = os.path.join(base, f".{os.path.basename(output_dir)}.bert-convert-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(tmp)
        with open(os.path.join(tmp, "bert_config.json"), "w", encoding="utf-8") as f:
            json.dump({k: config[k] for k in GOOGLE_CONFIG_KEYS}, f, indent=2, sort_keys=True)
            f.write("\n")
        shutil.copyfile(vocab_path, os.path.join(tmp, "vocab.txt"))
        with open(os.path.join(tmp, "do_lower_case.txt"), "w", encoding="utf-8") as f:
            f.write("true\n" if do_lower_case else "false\n")
        _write_and_verify_checkpoint(os.path.join(tmp, CHECKPOINT_NAME), arrays)
        if existed:
            # The `checkpoint` state file goes last: latest_checkpoint sees only complete files.
            names = sorted(os.listdir(tmp), key=lambda n: n == "checkpoint")
            for name in names:
                os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
            os.rmdir(tmp)
        else:
            os.rename(tmp, output_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            try:
                os.rmdir(d)
            except OSError:
                break
        if isinstance(e, OSError):
            raise UserError(f"{output_dir}: cannot write ({e.strerror or e})") from None
        raise


def _makedirs(directory: str, output_dir: str) -> list[str]:
    """Creates `directory` and its missing parents; returns those created, outermost first."""
    missing = []
    d = directory
    while not os.path.isdir(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    created = []
    try:
        for d in reversed(missing):
            os.mkdir(d)
            created.append(d)
    except OSError as e:
        for d in reversed(created):
            os.rmdir(d)
        raise UserError(f"{output_dir}: cannot create directory {d} ({e.strerror or e})") from None
    return created


def _write_and_verify_checkpoint(prefix: str, arrays: Mapping[str, np.ndarray]) -> None:
    # TensorFlow is imported only here so that checking the inputs stays quick and quiet.
    import tensorflow as tf

    from bert_finetune.checkpoints import write_checkpoint

    try:
        write_checkpoint(prefix, arrays)
    except tf.errors.OpError as e:
        raise UserError(f"{prefix}: cannot write checkpoint ({e.message})") from None
    reader = tf.train.load_checkpoint(prefix)
    if set(reader.get_variable_to_shape_map()) != set(arrays):
        raise RuntimeError(f"{prefix}: checkpoint read back with different variables")
    for name, array in arrays.items():
        if reader.get_tensor(name).tobytes() != array.tobytes():
            raise RuntimeError(f"{prefix}: variable {name} read back with different values")
