"""The encoder on slices of the batch, as independent branches of one graph (CPU).

BERT's encoder treats every example on its own, so a batch can run as a few slices whose ops
do not depend on each other. On a CPU, TensorFlow's executor then runs two ops at once: while
one slice is in an op that does not use every core (LayerNorm, softmax, transposes, the
attention's small matmuls, dispatch between ops) the other slice's GEMM fills them. Same values
per example (each row's arithmetic is unchanged; the weight gradients are summed over the
slices). Measured on 2 cores (README, "The batch as two slices side by side").

Takes effect only in a model traced inside `enabled(n)`: the Trainer and the runner's inference
step do so with the per-device default (runner.branches). Exported models and the Keras layer
run the whole batch as one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import tensorflow as tf

# Only for models at least this wide (hidden_size * intermediate_size; BERT-Mini's 256 * 1024,
# the narrowest measured faster): in narrower ones every op is short, and running twice as many
# of them costs more than the overlap gains (a test config of width 32 * 37 trained and
# predicted a SQuAD run 35% slower with slices).
MIN_WIDTH = 256 * 1024

# A module global rather than a thread-local: MirroredStrategy traces each replica's step in a
# thread of its own, which must see the caller's choice.
_COUNT = 1


@contextlib.contextmanager
def enabled(count: int) -> Iterator[None]:
    """Within this block, models traced run their batch as `count` branches (1: whole)."""
    global _COUNT
    previous, _COUNT = _COUNT, max(1, int(count))
    try:
        yield
    finally:
        _COUNT = previous


def count(hidden_size: int, intermediate_size: int) -> int:
    """Branches a model of this width traced now should run its batch as."""
    return _COUNT if hidden_size * intermediate_size >= MIN_WIDTH else 1


def slices(tensors: Sequence[tf.Tensor], n: int) -> list[list[tf.Tensor]]:
    """Cuts tensors [B, ...] (same B) into n consecutive row slices: [[t[0:b1] ...], ...].

    Slice i holds rows [i*B//n, (i+1)*B//n): sizes differ by at most one. With a static B,
    n is lowered to B (no empty slice); a dynamic B may give empty slices, which compute
    nothing.
    """
    batch = tensors[0].shape[0]
    if batch is not None:
        n = min(n, batch)
        bounds = [i * batch // n for i in range(n + 1)]
    else:
        dynamic = tf.shape(tensors[0])[0]
        bounds = [0] + [i * dynamic // n for i in range(1, n)] + [dynamic]
    return [[t[bounds[i]:bounds[i + 1]] for t in tensors] for i in range(n)]


def concat(outputs: Sequence, keep: Sequence[str] = ()) -> dict:
    """The branches' output dicts joined along the batch: {name: concat of its per-slice
    values} (a list value is joined element by element); names in `keep` are taken from the
    first branch (not per example)."""
    first = outputs[0]
    joined = {}
    for name, value in first.items():
        if name in keep:
            joined[name] = value
        elif isinstance(value, list):
            joined[name] = [tf.concat([o[name][i] for o in outputs], axis=0)
                            for i in range(len(value))]
        else:
            joined[name] = tf.concat([o[name] for o in outputs], axis=0)
    return joined
