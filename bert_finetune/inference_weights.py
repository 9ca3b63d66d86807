"""bfloat16 copies of the encoder's dense kernels, cast and transposed once per inference run.

A bfloat16 model keeps float32 variables and casts each kernel to bfloat16 in every step: for
BERT-Base 85 M values read and written again per batch. With XLA kernels on CPU the encoder's
dense layers are bare oneDNN matmuls (bert_finetune.fused.bias_deferred), which also ran faster
on weights laid out [out, in] (`transpose_b`) than [in, out]. The runner's inference step
(runner.loops.inference_step) therefore makes each bfloat16 encoder kernel's transposed
bfloat16 copy once, before its first batch, and the step reads the copies while it is traced
inside `using(...)`. The copies are eager tensors captured by the step, made anew for each
inference run (weights trained since are not missed); nothing else (training, exported models,
the Keras layer) sees them. Where oneDNN runs, the step gives each copy to oneDNN's fixed-weight
op (bert_finetune.fused_matmul), which lays it out in its blocked format on the first batch and
keeps that for the op's life: it may, as a copy never changes while its step lives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf

Copies = dict  # {variable.ref(): bfloat16 tensor [out, in]}

_ACTIVE: Copies | None = None


def _encoders(task: tf.Module) -> list[tf.Module]:
    """The bfloat16 BertModels of `task` (itself or its submodules)."""
    from bert_finetune.modeling import BertModel  # (modeling imports this module)

    modules = [task, *task.submodules] if isinstance(task, tf.Module) else []
    return [m for m in modules
            if isinstance(m, BertModel) and m.compute_dtype == tf.bfloat16]


def prepare(task: tf.Module) -> Copies:
    """The transposed bfloat16 copies of the encoder kernels of `task`'s bfloat16 BertModels
    (empty when it has none)."""
    copies: Copies = {}
    for model in _encoders(task):
        for name, variable in model.variables_by_name().items():
            if "/encoder/" in name and name.endswith("/kernel") and variable.shape.rank == 2:
                copies[variable.ref()] = tf.transpose(tf.cast(variable, tf.bfloat16))
    return copies


@contextlib.contextmanager
def using(copies: Copies | None) -> Iterator[None]:
    """Within this block, models traced read `copies` (see `transposed`)."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, copies
    try:
        yield
    finally:
        _ACTIVE = previous


def transposed(variable: tf.Variable) -> tf.Tensor | None:
    """The prepared [out, in] bfloat16 copy of `variable` in a step traced inside `using`,
    else None."""
    if not _ACTIVE:
        return None
    return _ACTIVE.get(variable.ref())
