"""Task heads on top of the encoder, with the original's variable names.

The classification head of `run_classifier.create_model` owns `output_weights` [C, H] and
`output_bias` [C] at the top level of the checkpoint, exactly as the original wrote them; the
span head of `run_squad.create_model` owns `cls/squad/output_weights` [2, H] and
`cls/squad/output_bias` [2].
"""

from __future__ import annotations

import tensorflow as tf

from bert_finetune.modeling import dropout


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
