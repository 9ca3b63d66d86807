"""Task heads on top of the encoder, with the original's variable names.

The classification head of `run_classifier.create_model` owns `output_weights` [C, H] and
`output_bias` [C] at the top level of the checkpoint, exactly as the original wrote them. The
pretraining heads of `run_pretraining.py` live under `cls/` (masked LM, next sentence).
"""

from __future__ import annotations

import tensorflow as tf

from bert_finetune.modeling import dropout, get_activation, layer_norm


class ClassifierHead(tf.Module):
    """Dropout(0.1) + dense on the pooled output: logits [B, C].

    With `is_regression`, C is 1 and the output is the predicted value (MSE loss, as GLUE's STS-B).
    """

    def __init__(self, num_labels: int, hidden_size: int, is_regression: bool = False,
                 initializer_range: float = 0.02, dropout_prob: float = 0.1):
        super().__init__(name="classifier")
        self.num_labels = 1 if is_regression else num_labels
        self.is_regression = is_regression
        self.dropout_prob = dropout_prob
        self.output_weights = tf.Variable(
            tf.random.truncated_normal([self.num_labels, hidden_size], stddev=initializer_range),
            name="output_weights")
        self.output_bias = tf.Variable(tf.zeros([self.num_labels]), name="output_bias")

    def variables_by_name(self) -> dict[str, tf.Variable]:
        return {"output_weights": self.output_weights, "output_bias": self.output_bias}

    def logits(self, pooled_output: tf.Tensor, training: bool) -> tf.Tensor:
        """pooled_output [B, H] (any float dtype) -> logits [B, C] float32."""
        x = dropout(tf.cast(pooled_output, tf.float32), self.dropout_prob, training)
        return tf.matmul(x, self.output_weights, transpose_b=True) + self.output_bias

    def loss_and_predictions(self, logits: tf.Tensor, labels: tf.Tensor
                             ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (per_example_loss [B], predictions).

        Predictions are probabilities [B, C] (softmax) or, for regression, values [B].
        """
        if self.is_regression:
            values = tf.squeeze(logits, axis=-1)  # [B]
            return tf.square(values - tf.cast(labels, tf.float32)), values
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        one_hot = tf.one_hot(tf.cast(labels, tf.int32), depth=self.num_labels, dtype=tf.float32)
        per_example_loss = -tf.reduce_sum(one_hot * log_probs, axis=-1)
        return per_example_loss, tf.nn.softmax(logits, axis=-1)


def gather_indexes(sequence_tensor: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Gathers the vectors at `positions` [B, P] of sequence_tensor [B, T, H] -> [B*P, H]."""
    shape = tf.shape(sequence_tensor)
    batch_size, seq_length, width = shape[0], shape[1], shape[2]
    flat_offsets = tf.reshape(tf.range(batch_size, dtype=tf.int32) * seq_length, [-1, 1])
    flat_positions = tf.reshape(tf.cast(positions, tf.int32) + flat_offsets, [-1])
    flat_sequence = tf.reshape(sequence_tensor, [-1, width])
    return tf.gather(flat_sequence, flat_positions)


class MaskedLMHead(tf.Module):
    """run_pretraining.py's `get_masked_lm_output`: transform + output layer tied to the embeddings.

    Owns `cls/predictions/transform/dense/{kernel,bias}`, `cls/predictions/transform/LayerNorm/
    {gamma,beta}` and `cls/predictions/output_bias` [V]; the output weights are the encoder's
    `bert/embeddings/word_embeddings` [V, H] (passed in, not owned).
    """

    def __init__(self, config, embedding_table: tf.Variable):
        super().__init__(name="masked_lm_head")
        h, init = config.hidden_size, config.initializer_range
        self.config = config
        self.embedding_table = embedding_table
        p = "cls/predictions/"
        self._vars = {
            p + "transform/dense/kernel": tf.Variable(
                tf.random.truncated_normal([h, h], stddev=init), name="transform_kernel"),
            p + "transform/dense/bias": tf.Variable(tf.zeros([h]), name="transform_bias"),
            p + "transform/LayerNorm/gamma": tf.Variable(tf.ones([h]), name="ln_gamma"),
            p + "transform/LayerNorm/beta": tf.Variable(tf.zeros([h]), name="ln_beta"),
            p + "output_bias": tf.Variable(tf.zeros([config.vocab_size]), name="output_bias"),
        }

    def variables_by_name(self) -> dict[str, tf.Variable]:
        return dict(self._vars)

    def log_probs(self, sequence_output: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        """sequence_output [B, T, H] (any float dtype), positions [B, P] -> log_probs [B*P, V]."""
        p = "cls/predictions/"
        x = gather_indexes(tf.cast(sequence_output, tf.float32), positions)  # [B*P, H]
        x = tf.matmul(x, self._vars[p + "transform/dense/kernel"]) + self._vars[
            p + "transform/dense/bias"]
        act = get_activation(self.config.hidden_act)
        if act is not None:
            x = act(x)
        x = layer_norm(x, self._vars[p + "transform/LayerNorm/gamma"],
                       self._vars[p + "transform/LayerNorm/beta"])
        logits = tf.matmul(x, self.embedding_table, transpose_b=True)  # [B*P, V]
        logits = tf.nn.bias_add(logits, self._vars[p + "output_bias"])
        return tf.nn.log_softmax(logits, axis=-1)

    def loss(self, log_probs: tf.Tensor, label_ids: tf.Tensor, label_weights: tf.Tensor
             ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (loss [], per_example_loss [B*P]); the loss is weighted by label_weights.

        `label_weights` has 1.0 for each real prediction and 0.0 for padding (fewer than
        max_predictions_per_seq masked tokens).
        """
        label_ids = tf.reshape(label_ids, [-1])
        label_weights = tf.reshape(tf.cast(label_weights, tf.float32), [-1])
        one_hot = tf.one_hot(label_ids, depth=self.config.vocab_size, dtype=tf.float32)
        per_example_loss = -tf.reduce_sum(log_probs * one_hot, axis=[-1])
        numerator = tf.reduce_sum(label_weights * per_example_loss)
        denominator = tf.reduce_sum(label_weights) + 1e-5
        return numerator / denominator, per_example_loss


class NextSentenceHead(tf.Module):
    """run_pretraining.py's `get_next_sentence_output` on the pooled output (0 = actual next).

    Owns `cls/seq_relationship/output_weights` [2, H] and `cls/seq_relationship/output_bias` [2].
    """

    def __init__(self, hidden_size: int, initializer_range: float = 0.02):
        super().__init__(name="next_sentence_head")
        self.output_weights = tf.Variable(
            tf.random.truncated_normal([2, hidden_size], stddev=initializer_range),
            name="output_weights")
        self.output_bias = tf.Variable(tf.zeros([2]), name="output_bias")

    def variables_by_name(self) -> dict[str, tf.Variable]:
        return {"cls/seq_relationship/output_weights": self.output_weights,
                "cls/seq_relationship/output_bias": self.output_bias}

    def log_probs(self, pooled_output: tf.Tensor) -> tf.Tensor:
        """pooled_output [B, H] -> log_probs [B, 2]."""
        logits = tf.matmul(tf.cast(pooled_output, tf.float32), self.output_weights,
                           transpose_b=True)
        return tf.nn.log_softmax(tf.nn.bias_add(logits, self.output_bias), axis=-1)

    def loss(self, log_probs: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (mean loss [], per_example_loss [B])."""
        one_hot = tf.one_hot(tf.reshape(labels, [-1]), depth=2, dtype=tf.float32)
        per_example_loss = -tf.reduce_sum(one_hot * log_probs, axis=-1)
        return tf.reduce_mean(per_example_loss), per_example_loss


class SpanHead(tf.Module):
    """run_squad.py's answer-span layer: one dense [H] -> 2 on every token, no dropout.

    Owns `cls/squad/output_weights` [2, H] and `cls/squad/output_bias` [2], the original's
    checkpoint names (bert-convert maps Hugging Face's `qa_outputs` onto them).
    """

    def __init__(self, hidden_size: int, initializer_range: float = 0.02):
        super().__init__(name="squad")
        self.output_weights = tf.Variable(
            tf.random.truncated_normal([2, hidden_size], stddev=initializer_range),
            name="output_weights")
        self.output_bias = tf.Variable(tf.zeros([2]), name="output_bias")

    def variables_by_name(self) -> dict[str, tf.Variable]:
        return {"cls/squad/output_weights": self.output_weights,
                "cls/squad/output_bias": self.output_bias}

    def logits(self, sequence_output: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """sequence_output [B, T, H] (any float dtype) -> (start_logits, end_logits) [B, T]."""
        x = tf.cast(sequence_output, tf.float32)
        logits = tf.einsum("bth,kh->btk", x, self.output_weights) + self.output_bias  # [B, T, 2]
        return logits[:, :, 0], logits[:, :, 1]

    @staticmethod
    def loss(start_logits: tf.Tensor, end_logits: tf.Tensor, start_positions: tf.Tensor,
             end_positions: tf.Tensor) -> tf.Tensor:
        """Per-example (CE(start) + CE(end)) / 2: [B] (the original's batch mean is its mean)."""
        def cross_entropy(logits, positions):
            seq_length = tf.shape(logits)[1]
            one_hot = tf.one_hot(tf.cast(positions, tf.int32), depth=seq_length, dtype=tf.float32)
            return -tf.reduce_sum(one_hot * tf.nn.log_softmax(logits, axis=-1), axis=-1)

        return (cross_entropy(start_logits, start_positions)
                + cross_entropy(end_logits, end_positions)) / 2.0
