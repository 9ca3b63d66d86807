"""TensorFlow's host-memory allocator for our programs: BFC (pooled) instead of plain malloc.

TensorFlow allocates CPU tensors with malloc unless TF_CPU_ALLOCATOR_USE_BFC is true. With
malloc, the many short-lived [B*T, I]-sized activations and gradients of a training step leave
the heap fragmented, and the process peak grows well past what is alive at once. The BFC
allocator pools and reuses those buffers. Measured 2026-12-06 (README, "Training memory"):
BERT-Base training at batch 32 peaked at 6.55 GiB with BFC vs 8.15 GiB with malloc, at the
same or better speed.

The variables are read when TensorFlow creates its CPU allocator (the first tensor), so
`use_bfc_allocator()` runs before our commands import TensorFlow. A value the user set is kept.
Libraries importing bert_finetune are not affected: only our programs call it. With oneDNN on
(bert_finetune.onednn) TensorFlow allocates through oneDNN's CPU allocator, itself pooled;
measured the same peak (BERT-Base training 6.48-6.52 GiB).
"""

from __future__ import annotations

import os

USE_BFC = "TF_CPU_ALLOCATOR_USE_BFC"
LIMIT_MB = "TF_CPU_BFC_MEM_LIMIT_IN_MB"  # TensorFlow's own default: 64 GiB


def physical_memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 20
    except (ValueError, OSError, AttributeError):  # not on this platform
        return None


def use_bfc_allocator(environ: dict | None = None) -> None:
    """Turns the BFC CPU allocator on unless the user set it; its limit is TensorFlow's 64 GiB
    default or, on a machine with more, the machine's memory."""
    env = os.environ if environ is None else environ
    env.setdefault(USE_BFC, "true")
    limit = physical_memory_mb()
    if limit and env[USE_BFC].strip().lower() in ("true", "1"):
        env.setdefault(LIMIT_MB, str(max(limit, 1 << 16)))
