"""The switch for XLA kernels inside an uncompiled training step.

bert_finetune.fused (the element-wise chains) and bert_finetune.weight_gradients (the dense
layers' weight gradients, where measured faster) take effect only in a model traced inside
`enabled(True)`: the Trainer traces its training step so when runner.xla allows it
(TrainOptions.xla_kernels). Everything else (inference, exported models, Keras) runs the plain
ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# A module global rather than a thread-local: MirroredStrategy traces each replica's step in a
# thread of its own, which must see the Trainer's choice.
_ENABLED = False


@contextlib.contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Within this block, models traced use the XLA kernels if `on`."""
    global _ENABLED
    previous, _ENABLED = _ENABLED, bool(on)
    try:
        yield
    finally:
        _ENABLED = previous


def is_on() -> bool:
    """Whether a model traced now should use the XLA kernels."""
    return _ENABLED
