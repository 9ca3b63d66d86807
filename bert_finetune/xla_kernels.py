"""The switch for XLA kernels inside an uncompiled training or inference step.

bert_finetune.fused (the element-wise chains) and bert_finetune.weight_gradients (the dense
layers' weight gradients, where measured faster) take effect only in a model traced inside
`enabled(True)`: the Trainer traces its training step so when runner.xla allows it
(TrainOptions.xla_kernels), and the runner's inference step with the element-wise chains alone
(`weight_gradients=False`: nothing to differentiate, nothing to measure). The exported models
and the Keras layer run the plain ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# A module global rather than a thread-local: MirroredStrategy traces each replica's step in a
# thread of its own, which must see the Trainer's choice.
_ENABLED = False
_WEIGHT_GRADIENTS = False


@contextlib.contextmanager
def enabled(on: bool, weight_gradients: bool = True) -> Iterator[None]:
    """Within this block, models traced use the XLA kernels if `on` (the weight gradients'
    choice too unless `weight_gradients` is False)."""
    global _ENABLED, _WEIGHT_GRADIENTS
    previous = _ENABLED, _WEIGHT_GRADIENTS
    _ENABLED, _WEIGHT_GRADIENTS = bool(on), bool(on and weight_gradients)
    try:
        yield
    finally:
        _ENABLED, _WEIGHT_GRADIENTS = previous


def is_on() -> bool:
    """Whether a model traced now should use the fused element-wise kernels."""
    return _ENABLED


def weight_gradients_on() -> bool:
    """Whether a model traced now should choose its weight gradients' kernel by shape."""
    return _WEIGHT_GRADIENTS
