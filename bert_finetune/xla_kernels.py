"""The switch for XLA kernels inside an uncompiled training or inference step.

bert_finetune.fused (the element-wise chains) and bert_finetune.weight_gradients (the dense
layers' weight gradients, where measured faster) take effect only in a model traced inside
`enabled(True)`: the Trainer traces its training step so when runner.xla allows it
(TrainOptions.xla_kernels), and the runner's inference step with the element-wise chains alone
(`weight_gradients=False`: nothing to differentiate, nothing to measure). The exported models
and the Keras layer run the plain ops.

The inference step also says it is `forward_only`: nothing will take its gradients, so the
kernels keep nothing for a backward pass (LayerNorm's normalized values, the softmax's float32
probabilities) and the encoder casts each weight to the compute dtype once for all its batch
slices. What is traced so stays differentiable (by autodiff), only not tuned for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# A module global rather than a thread-local: MirroredStrategy traces each replica's step in a
# thread of its own, which must see the Trainer's choice.
_ENABLED = False
_WEIGHT_GRADIENTS = False
_FORWARD_ONLY = False


@contextlib.contextmanager
def enabled(on: bool, weight_gradients: bool = True, forward_only: bool = False
            ) -> Iterator[None]:
    """Within this block, models traced use the XLA kernels if `on` (the weight gradients'
    choice too unless `weight_gradients` is False), tuned for a step without gradients if
    `forward_only` (with or without the kernels)."""
    global _ENABLED, _WEIGHT_GRADIENTS, _FORWARD_ONLY
    previous = _ENABLED, _WEIGHT_GRADIENTS, _FORWARD_ONLY
    _ENABLED, _WEIGHT_GRADIENTS = bool(on), bool(on and weight_gradients)
    _FORWARD_ONLY = bool(forward_only)
    try:
        yield
    finally:
        _ENABLED, _WEIGHT_GRADIENTS, _FORWARD_ONLY = previous


def is_on() -> bool:
    """Whether a model traced now should use the fused element-wise kernels."""
    return _ENABLED


def weight_gradients_on() -> bool:
    """Whether a model traced now should choose its weight gradients' kernel by shape."""
    return _WEIGHT_GRADIENTS


def forward_only() -> bool:
    """Whether the step traced now takes no gradients (the runner's inference step)."""
    return _FORWARD_ONLY
