"""Length-aware batches: pad each batch to its longest example, rounded up to a bucket length.

The records keep the original layout (every sequence padded to max_seq_length T, mask 1 for
real tokens, then 0); these tf.data steps cut the padding off after parsing. Padding is masked
out of attention, so the outputs of the real positions do not change (within float noise).

Inference: `trim_to_bucket` on each batch, same batches, same order.

Training (`windowed_length_batches`): the original's shuffled stream is cut into windows of
`window` batches; inside a window examples are sorted by length and re-cut into `window`
batches, which are shuffled (seeded) before they are trained on. Every example keeps its place
in the stream to within one window, so the epoch's order and frequency statistics are the
original's; what changes is that a batch holds examples of similar length. window=1 keeps the
original batches exactly and only trims their padding. The batch order inside a window comes
from (seed, window index) alone, so a resumed run continues the same stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")
NUM_BUCKETS = 8


def bucket_lengths(max_seq_length: int, num_buckets: int = NUM_BUCKETS) -> list[int]:
    """A handful of lengths, multiples of 8 up to max_seq_length (which is always one).

    128 -> [16, 32, 48, 64, 80, 96, 112, 128]; few shapes, so XLA/TPU-style compilation per
    shape stays cheap.
    """
    per_bucket = -(-max_seq_length // num_buckets)
    step = max(8, -(-per_bucket // 8) * 8)
    return list(range(step, max_seq_length, step)) + [max_seq_length]


def _bucket_length(longest: tf.Tensor, buckets: Sequence[int]) -> tf.Tensor:
    """The smallest bucket >= longest (int32 [])."""
    table = tf.constant(list(buckets), tf.int32)
    index = tf.searchsorted(table, tf.reshape(longest, [1]), side="left")[0]
    return tf.gather(table, tf.minimum(index, len(buckets) - 1))


def lengths_of(features: dict, mask_key: str = "input_mask") -> tf.Tensor:
    """Real-token count of each example: [B] int32 (the mask is 1s then 0s)."""
    return tf.reduce_sum(tf.cast(features[mask_key], tf.int32), axis=-1)


def trim_to_bucket(features: dict, buckets: Sequence[int],
                   keys: Sequence[str] = SEQUENCE_FEATURES) -> dict:
    """Cuts the [B, T] `keys` of a batch to [B, L]: L the bucket of its longest example."""
    length = _bucket_length(tf.reduce_max(lengths_of(features)), buckets)
    out = dict(features)
    for key in keys:
        if key in out:
            out[key] = out[key][:, :length]
    return out


def windowed_length_batches(windows: tf.data.Dataset, batch_size: int, window: int,
                            buckets: Sequence[int], seed: int | None, first_window: int = 0,
                            keys: Sequence[str] = SEQUENCE_FEATURES) -> tf.data.Dataset:
    """Batches grouped by length, from `windows`: parsed batches of window * batch_size examples.

    Returns batches of exactly batch_size (dicts of [B, L] for `keys`, L in `buckets`); see the
    module docstring for the method. The order of the batches inside window k depends only on
    (seed, k), so a stream started at `first_window` (a resumed run) continues exactly.
    """
    def sort_and_cut(index: tf.Tensor, examples: dict) -> dict:
        order = tf.argsort(lengths_of(examples), stable=True)  # [window * B]
        noise = tf.random.stateless_uniform([window], seed=tf.stack(
            [tf.cast(seed or 0, tf.int64), tf.cast(index, tf.int64)]))
        batches = tf.gather(tf.reshape(order, [window, batch_size]), tf.argsort(noise))
        return {k: tf.gather(v, batches) for k, v in examples.items()}  # [window, B, ...]

    d = windows
    if window > 1:
        d = d.enumerate(start=first_window).map(sort_and_cut).unbatch()
    return d.map(lambda b: trim_to_bucket(b, buckets, keys))
