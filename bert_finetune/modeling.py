"""The BERT encoder: numerically Google's original `modeling.py`, in plain TF2.

`BertModel` is a `tf.Module` of `tf.Variable`s whose names are the checkpoint's names
(`bert/encoder/layer_3/attention/self/query/kernel`, ...); `variables_by_name()` is the contract
used by checkpoint I/O, the optimizer (`<name>/adam_m`) and the heads.

Shape legend: B = batch size, T = sequence length, H = hidden size, N = attention heads,
D = size per head (H / N), I = intermediate size, V = vocab size.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import tensorflow as tf

from bert_finetune import (
    batch_branches,
    fileio,
    fused,
    fused_matmul,
    inference_weights,
    weight_gradients,
    xla_kernels,
)
from bert_finetune.errors import UserError

LAYER_NORM_EPSILON = 1e-12  # contrib.layers.layer_norm's default, which the original relied on
ATTENTION_MASK_ADDER = -10000.0  # the original's additive mask on padded positions

ACTIVATIONS = ("gelu", "gelu_exact", "relu", "tanh", "linear")


def gelu_reference(x: tf.Tensor) -> tf.Tensor:
    """The original's GELU (the tanh approximation), differentiated op by op by autodiff."""
    cdf = 0.5 * (1.0 + tf.tanh(fused.GELU_C * (x + fused.GELU_A * tf.pow(x, 3))))
    return x * cdf


@tf.custom_gradient
def gelu(x: tf.Tensor) -> tf.Tensor:
    """The original's GELU: the tanh approximation, with its derivative written out.

    The forward is `gelu_reference`'s, op for op. Autodiff would keep five [B*T, I] tensors of
    every layer (the model's largest activations) for the backward pass; this keeps two (x and
    the tanh), which saves memory in training.
    """
    t = tf.tanh(fused.GELU_C * (x + fused.GELU_A * tf.pow(x, 3)))

    def grad(dy: tf.Tensor) -> tf.Tensor:
        return dy * fused.gelu_derivative(x, t)

    return x * (0.5 * (1.0 + t)), grad


def gelu_exact(x: tf.Tensor) -> tf.Tensor:
    """Exact GELU, x * Phi(x) with erf (Hugging Face's "gelu")."""
    return 0.5 * x * (1.0 + tf.math.erf(x / tf.cast(math.sqrt(2.0), x.dtype)))


def get_activation(activation_string: str | None):
    """Maps an activation name of `bert_config.json` to a function (None for linear)."""
    if not activation_string:
        return None
    act = activation_string.lower()
    table = {"linear": None, "relu": tf.nn.relu, "gelu": gelu, "gelu_exact": gelu_exact,
             "tanh": tf.tanh}
    if act not in table:
        raise UserError(f"Unsupported activation: {activation_string!r} "
                        f"(known: {', '.join(ACTIVATIONS)})")
    return table[act]


_GELU_NAMES = {gelu: "gelu", gelu_exact: "gelu_exact"}  # for bert_finetune.fused_matmul


@dataclasses.dataclass
class BertConfig:
    """Configuration of a `BertModel`; field names are `bert_config.json`'s."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 16
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Returns why this config is impossible, or None."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                return f"{name} must be a positive integer, got {value!r}"
        if self.hidden_size % self.num_attention_heads != 0:
            return (f"The hidden size ({self.hidden_size}) is not a multiple of the number of "
                    f"attention heads ({self.num_attention_heads})")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                return f"{name} must be in [0, 1), got {value!r}"
        if not isinstance(self.hidden_act, str) or self.hidden_act.lower() not in ACTIVATIONS:
            return (f"hidden_act {self.hidden_act!r} is not supported "
                    f"(known: {', '.join(ACTIVATIONS)})")
        return None

    @classmethod
    def from_dict(cls, json_object: dict[str, Any], source: str = "config") -> BertConfig:
        """Builds a config from a dict; errors name `source`."""
        if not isinstance(json_object, dict):
            raise UserError(f"{source}: expected a JSON object")
        if "model_type" in json_object or "layer_norm_eps" in json_object:
            raise UserError(f"{source}: this is a Hugging Face config.json; convert the model "
                            "first with `bert-convert --hf_model_dir=... --output_dir=...`")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(json_object) - fields)
        if unknown:
            raise UserError(f"{source}: unknown key(s) {', '.join(unknown)} "
                            f"(a bert_config.json has {', '.join(sorted(fields))})")
        if "vocab_size" not in json_object:
            raise UserError(f"{source}: vocab_size is missing")
        try:
            return cls(**json_object)
        except ValueError as e:
            raise UserError(f"{source}: {e}") from None

    @classmethod
    def from_json_file(cls, json_file: str) -> BertConfig:
        """Reads `bert_config.json`; every error names the file."""
        if not tf.io.gfile.exists(json_file):
            raise UserError(f"{json_file}: config file not found")
        try:
            with tf.io.gfile.GFile(json_file, "r") as reader:
                text = reader.read()
            obj = json.loads(text)
        except UnicodeDecodeError:
            raise UserError(f"{json_file}: not a UTF-8 text file") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{json_file}: invalid JSON at line {e.lineno}: {e.msg}") from None
        return cls.from_dict(obj, source=json_file)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file: str) -> None:
        fileio.atomic_write(json_file, self.to_json_string())

    @property
    def size_per_head(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _dtype(compute_dtype: Any) -> tf.DType:
    dtype = tf.as_dtype(compute_dtype)
    if dtype not in (tf.float32, tf.bfloat16, tf.float16):
        raise UserError(f"compute dtype must be float32, bfloat16 or float16, got {dtype.name}")
    return dtype


def masked_mean(sequence: tf.Tensor, input_mask: tf.Tensor) -> tf.Tensor:
    """Mean of sequence [B, T, H] over the real tokens (input_mask 1; [CLS]/[SEP] included) -> [B, H].

    Computed in the sequence's dtype; an all-padding row gives zeros, not NaN.
    """
    mask = tf.cast(input_mask, sequence.dtype)[:, :, tf.newaxis]  # [B, T, 1]
    return tf.reduce_sum(sequence * mask, axis=1) / tf.maximum(
        tf.reduce_sum(mask, axis=1), tf.constant(1.0, sequence.dtype))


def layer_norm(x: tf.Tensor, gamma: tf.Variable, beta: tf.Variable) -> tf.Tensor:
    """LayerNorm over the last axis, computed in float32 whatever the input dtype."""
    x32 = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
    y = tf.nn.batch_normalization(x32, mean, variance, offset=beta, scale=gamma,
                                  variance_epsilon=LAYER_NORM_EPSILON)
    return tf.cast(y, x.dtype)


def dropout(x: tf.Tensor, rate: float, training: bool) -> tf.Tensor:
    if not training or rate <= 0.0:
        return x
    return tf.nn.dropout(x, rate=rate)


def variable_specs(config: BertConfig, scope: str = "bert") -> list[tuple[str, list[int], str]]:
    """(checkpoint name, shape, initializer) of every encoder variable, in creation order.

    Initializers: "normal" (truncated normal, stddev initializer_range), "zeros", "ones". Lets
    callers check a checkpoint against a config without building the model.
    """
    c, h = config, config.hidden_size
    specs: list[tuple[str, list[int], str]] = []

    def dense(name: str, shape: list[int]) -> None:
        specs.append((f"{scope}/{name}/kernel", shape, "normal"))
        specs.append((f"{scope}/{name}/bias", [shape[-1]], "zeros"))

    def layer_norm_vars(name: str) -> None:
        specs.append((f"{scope}/{name}/gamma", [h], "ones"))
        specs.append((f"{scope}/{name}/beta", [h], "zeros"))

    for name, rows in (("word_embeddings", c.vocab_size), ("token_type_embeddings",
                       c.type_vocab_size), ("position_embeddings", c.max_position_embeddings)):
        specs.append((f"{scope}/embeddings/{name}", [rows, h], "normal"))
    layer_norm_vars("embeddings/LayerNorm")
    for i in range(c.num_hidden_layers):
        p = f"encoder/layer_{i}/"
        for part in ("query", "key", "value"):
            dense(p + f"attention/self/{part}", [h, h])
        dense(p + "attention/output/dense", [h, h])
        layer_norm_vars(p + "attention/output/LayerNorm")
        dense(p + "intermediate/dense", [h, c.intermediate_size])
        dense(p + "output/dense", [c.intermediate_size, h])
        layer_norm_vars(p + "output/LayerNorm")
    dense("pooler/dense", [h, h])
    return specs


class BertModel(tf.Module):
    """BERT encoder ("Bidirectional Encoder Representations from Transformers").

    Example:
      model = BertModel(BertConfig.from_json_file("bert_config.json"))
      out = model(input_ids, input_mask, token_type_ids)     # [B, T] int32 each
      out["pooled_output"]                                     # [B, H]
    """

    def __init__(self, config: BertConfig, use_one_hot_embeddings: bool = False,
                 compute_dtype: Any = tf.float32, scope: str = "bert"):
        super().__init__(name=scope)
        self.config = config
        self.use_one_hot_embeddings = use_one_hot_embeddings
        self.compute_dtype = _dtype(compute_dtype)
        self.scope = scope
        self._vars: dict[str, tf.Variable] = {}
        self._casts: dict[str, tf.Tensor] | None = None  # see __call__
        for name, shape, kind in variable_specs(config, scope):
            if kind == "normal":
                initial = tf.random.truncated_normal(shape, stddev=config.initializer_range)
            elif kind == "ones":
                initial = tf.ones(shape)
            else:
                initial = tf.zeros(shape)
            self._vars[name] = tf.Variable(initial, name=name, trainable=True)

    def variables_by_name(self) -> dict[str, tf.Variable]:
        """{original checkpoint name: variable}, e.g. `bert/pooler/dense/kernel`."""
        return dict(self._vars)

    def _v(self, name: str) -> tf.Variable:
        return self._vars[f"{self.scope}/{name}"]

    def _w(self, name: str) -> tf.Tensor:
        """A variable cast to the compute dtype (once per trace while __call__ shares casts)."""
        if self._casts is None:
            return tf.cast(self._v(name), self.compute_dtype)
        if name not in self._casts:
            self._casts[name] = tf.cast(self._v(name), self.compute_dtype)
        return self._casts[name]

    def get_embedding_table(self) -> tf.Variable:
        """The word embedding table [V, H] (shared with the MLM output layer)."""
        return self._v("embeddings/word_embeddings")

    # -- forward -----------------------------------------------------------------------------
    def _matmul(self, x: tf.Tensor, name: str) -> tuple[tf.Tensor, tf.Tensor]:
        """Dense layer `name` without its bias: (x @ kernel, the bias in float32), for the
        next kernel to add (fused.bias_deferred). In the runner's inference step the kernel is
        the copy made once for the run (bert_finetune.inference_weights), read by oneDNN's
        fixed-weight op where it runs (bert_finetune.fused_matmul)."""
        copy = inference_weights.transposed(self._v(name + "/kernel"))
        if copy is None:
            y = tf.matmul(x, self._w(name + "/kernel"))
        elif fused_matmul.fixed_usable(None, x.dtype):
            y = fused_matmul.fixed_matmul(x, copy)
        else:
            y = tf.matmul(x, copy, transpose_b=True)
        return (y,
                tf.convert_to_tensor(self._v(name + "/bias"), tf.float32))

    def _dense(self, x: tf.Tensor, name: str, activation=None) -> tf.Tensor:
        gelu_name = _GELU_NAMES.get(activation)
        exact = gelu_name == "gelu_exact"  # (its training kernel is not written)
        copy = inference_weights.transposed(self._v(name + "/kernel"))
        if gelu_name and copy is not None and fused_matmul.fixed_usable(gelu_name, x.dtype):
            return fused_matmul.fixed_dense_gelu(x, copy, self._w(name + "/bias"), gelu_name)
        if gelu_name and fused.bias_deferred(x) and (xla_kernels.forward_only() or not exact):
            return fused.bias_gelu(*self._matmul(x, name), exact=exact)  # bias in the GELU
        if (gelu_name and fused.active(x) and xla_kernels.forward_only()
                and fused_matmul.usable(gelu_name, x.dtype)):  # one oneDNN op, for inference
            return fused_matmul.dense_gelu(x, self._w(name + "/kernel"), self._w(name + "/bias"),
                                           gelu_name)
        y = weight_gradients.dense(x, self._w(name + "/kernel"), self._w(name + "/bias"))
        if activation is gelu and fused.active(y):
            return fused.gelu(y)
        return activation(y) if activation is not None else y

    def _layer_norm(self, x: tf.Tensor, name: str) -> tf.Tensor:
        gamma, beta = self._v(name + "/gamma"), self._v(name + "/beta")
        if fused.active(x):
            return fused.layer_norm(x, gamma, beta, LAYER_NORM_EPSILON)
        return layer_norm(x, gamma, beta)

    def _dense_add_norm(self, x: tf.Tensor, dense: str, residual: tf.Tensor, norm: str,
                        training: bool) -> tf.Tensor:
        """LayerNorm `norm` of dropout(dense layer `dense` of x) + residual: a sublayer's
        output."""
        if fused.bias_deferred(x):  # the bias in the LayerNorm's kernel
            rate = self.config.hidden_dropout_prob if training else 0.0
            return fused.bias_add_layer_norm(*self._matmul(x, dense), residual,
                                             self._v(norm + "/gamma"), self._v(norm + "/beta"),
                                             rate, LAYER_NORM_EPSILON)
        return self._dropout_add_norm(self._dense(x, dense), residual, norm, training)

    def _dropout_add_norm(self, x: tf.Tensor, residual: tf.Tensor, name: str,
                          training: bool) -> tf.Tensor:
        """LayerNorm `name` of dropout(x) + residual."""
        rate = self.config.hidden_dropout_prob if training else 0.0
        if fused.active(x):
            return fused.dropout_add_layer_norm(x, residual, self._v(name + "/gamma"),
                                                self._v(name + "/beta"), rate,
                                                LAYER_NORM_EPSILON)
        return self._layer_norm(dropout(x, rate, training) + residual, name)

    def _embeddings(self, input_ids, token_type_ids, training):
        c = self.config
        batch, seq = _shape(input_ids)
        table = self._v("embeddings/word_embeddings")  # [V, H]
        flat_ids = tf.reshape(input_ids, [-1])
        if self.use_one_hot_embeddings:
            one_hot = tf.one_hot(flat_ids, depth=c.vocab_size, dtype=self.compute_dtype)
            words = tf.matmul(one_hot, tf.cast(table, self.compute_dtype))
        else:
            words = tf.cast(tf.gather(table, flat_ids), self.compute_dtype)
        # The original always used a one-hot matmul for token types (small vocab, TPU friendly).
        types = tf.matmul(tf.one_hot(tf.reshape(token_type_ids, [-1]), depth=c.type_vocab_size,
                                     dtype=self.compute_dtype),
                          self._w("embeddings/token_type_embeddings"))
        x = tf.reshape(words + types, [batch, seq, c.hidden_size])  # [B, T, H]
        positions = self._w("embeddings/position_embeddings")[:seq]  # [T, H]
        x = x + positions[tf.newaxis]
        x = self._layer_norm(x, "embeddings/LayerNorm")
        return dropout(x, c.hidden_dropout_prob, training)

    def _attention(self, x2d, mask_adder, batch, seq, prefix, training, query2d=None):
        """Self-attention on x2d [B*T, H]; mask_adder [B, 1, 1, T] float32. Returns [B*T, H].

        `query2d` [B, H]: attend from those rows only (one query per sequence; the keys and
        values are still every row of x2d). Returns [B, H] then.
        """
        c = self.config
        n, d = c.num_attention_heads, c.size_per_head
        rows = seq if query2d is None else 1

        def heads(t, length, name):  # projection `name` of [B*length, H] -> [B, N, length, D]
            if fused.bias_deferred(t):  # the bias in the transpose's kernel
                y, bias = self._matmul(t, prefix + name)
                return fused.bias_heads(tf.reshape(y, [batch, length, n, d]),
                                        tf.reshape(bias, [n, d]))
            y = self._dense(t, prefix + name)
            return tf.transpose(tf.reshape(y, [batch, length, n, d]), [0, 2, 1, 3])

        q = heads(x2d if query2d is None else query2d, rows, "attention/self/query")
        k = heads(x2d, seq, "attention/self/key")
        v = heads(x2d, seq, "attention/self/value")
        scale = 1.0 / math.sqrt(d)
        if (fused.active(q) and xla_kernels.forward_only()
                and fused_matmul.scores_usable(q.dtype)):
            # inference on oneDNN: the scale and mask inside the Q.K^T matmul, oneDNN's softmax
            probs = tf.nn.softmax(fused_matmul.attention_scores(q, k, scale, mask_adder), axis=-1)
        else:
            scores = tf.matmul(q, k, transpose_b=True)  # [B, N, rows, T]
            if fused.active(scores):
                rate = c.attention_probs_dropout_prob if training else 0.0
                probs = fused.attention_probs(scores, mask_adder, scale, rate)
            else:
                scores = scores * tf.cast(scale, q.dtype)
                # Softmax in float32: the -10000 adder and the exponentials need its range and
                # precision.
                scores = tf.cast(scores, tf.float32) + mask_adder
                probs = tf.nn.softmax(scores, axis=-1)
                probs = dropout(probs, c.attention_probs_dropout_prob, training)
        context = tf.matmul(tf.cast(probs, self.compute_dtype), v)  # [B, N, rows, D]
        return tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch * rows, n * d])

    def _layer(self, x2d, mask_adder, batch, seq, index, training, first_token_only=False):
        """Transformer layer `index` on x2d [B*T, H] -> [B*T, H] (or [B, H]: the first token's
        row only, with `first_token_only`; it still attends over every token)."""
        c = self.config
        p = f"encoder/layer_{index}/"
        residual = x2d
        query2d = None
        if first_token_only:
            residual = query2d = tf.reshape(x2d, [batch, seq, c.hidden_size])[:, 0, :]
        attn = self._attention(x2d, mask_adder, batch, seq, p, training, query2d)
        attn = self._dense_add_norm(attn, p + "attention/output/dense", residual,
                                    p + "attention/output/LayerNorm", training)
        inter = self._dense(attn, p + "intermediate/dense", get_activation(c.hidden_act))
        return self._dense_add_norm(inter, p + "output/dense", attn, p + "output/LayerNorm",
                                    training)

    def __call__(self, input_ids: tf.Tensor, input_mask: tf.Tensor | None = None,
                 token_type_ids: tf.Tensor | None = None,
                 training: bool = False, pooled_only: bool = False) -> dict[str, Any]:
        """Runs the encoder.

        Args:
          input_ids: int [B, T] word piece ids.
          input_mask: int [B, T], 1 for real tokens and 0 for padding (default all ones).
          token_type_ids: int [B, T] segment ids (default all zeros).
          training: applies dropout when True.
          pooled_only: return only `pooled_output`, computing just the [CLS] row of the last
            layer (the rest of it feeds nothing the pooler reads): same pooled output, the
            last layer's cost down to its key/value projections.

        Returns: a dict with `sequence_output` [B, T, H], `pooled_output` [B, H],
          `all_encoder_layers` (a list of L tensors [B, T, H]), `embedding_output` [B, T, H]
          and `embedding_table` [V, H] (only `pooled_output` with `pooled_only`). Activations are
          in the compute dtype. Traced inside `batch_branches.enabled(n)`, the batch of a model
          at least batch_branches.MIN_WIDTH wide runs as n independent row slices (same values
          per example).
        """
        c = self.config
        input_ids = tf.convert_to_tensor(input_ids)
        _, seq = _shape(input_ids)
        if isinstance(seq, int) and seq > c.max_position_embeddings:
            raise UserError(f"sequence length {seq} is longer than max_position_embeddings "
                            f"({c.max_position_embeddings}) of the config")
        if input_mask is None:
            input_mask = tf.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = tf.zeros_like(input_ids)
        inputs = [input_ids, tf.convert_to_tensor(input_mask),
                  tf.convert_to_tensor(token_type_ids)]
        branches = batch_branches.count(c.hidden_size, c.intermediate_size)
        if branches > 1:  # independent row slices, run side by side (bert_finetune.batch_branches)
            # Without gradients one cast of each weight feeds every slice (with them, each slice
            # keeps its own, so that the slices' weight gradients add in float32).
            self._casts = {} if xla_kernels.forward_only() else None
            try:
                outputs = [self._encode(*part, training, pooled_only)
                           for part in batch_branches.slices(inputs, branches)]
            finally:
                self._casts = None
            return batch_branches.concat(outputs, keep=("embedding_table",))
        return self._encode(*inputs, training, pooled_only)

    def _encode(self, input_ids, input_mask, token_type_ids, training, pooled_only):
        """`__call__` on one batch (or one slice of it)."""
        c = self.config
        batch, seq = _shape(input_ids)
        embedding_output = self._embeddings(input_ids, token_type_ids, training)  # [B, T, H]
        mask = tf.cast(tf.reshape(input_mask, [batch, 1, 1, seq]), tf.float32)
        mask_adder = (1.0 - mask) * ATTENTION_MASK_ADDER  # [B, 1, 1, T]

        x2d = tf.reshape(embedding_output, [batch * seq, c.hidden_size])  # [B*T, H]
        # With pooled_only, the last layer computes only [CLS], the row the pooler reads.
        full_layers = c.num_hidden_layers - 1 if pooled_only else c.num_hidden_layers
        all_layers = []
        for i in range(full_layers):
            x2d = self._layer(x2d, mask_adder, batch, seq, i, training)
            all_layers.append(tf.reshape(x2d, [batch, seq, c.hidden_size]))
        if pooled_only:
            first_token = self._layer(x2d, mask_adder, batch, seq, full_layers, training, True)
        else:
            first_token = all_layers[-1][:, 0, :]  # [B, H]
        pooled_output = self._dense(first_token, "pooler/dense", tf.tanh)
        if pooled_only:
            return {"pooled_output": pooled_output}
        return {
            "sequence_output": all_layers[-1],
            "pooled_output": pooled_output,
            "all_encoder_layers": all_layers,
            "embedding_output": embedding_output,
            "embedding_table": self.get_embedding_table(),
        }


def _shape(t: tf.Tensor) -> tuple:
    """(B, T) of an int tensor, static where known, dynamic otherwise."""
    static = t.shape.as_list()
    dynamic = tf.shape(t)
    return tuple(static[i] if static[i] is not None else dynamic[i] for i in range(2))


def config_from_dir(directory: str) -> BertConfig:
    """Reads `bert_config.json` from a model directory."""
    return BertConfig.from_json_file(os.path.join(directory, "bert_config.json"))
