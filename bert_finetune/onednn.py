"""oneDNN kernels for our programs on every x86 CPU, not only those TensorFlow picks.

TensorFlow's x86 builds run their CPU matmuls, batched matmuls and fused ops on oneDNN only
where the CPU has AVX512_VNNI, AVX512_BF16 or AMX; on AVX2-only CPUs they fall back to Eigen
unless TF_ENABLE_ONEDNN_OPTS=1. On the AVX2-only AMD EPYC these machines have (README,
"oneDNN on AVX2-only CPUs"), oneDNN ran the attention's batched matmuls 2.5x faster (forward
and backward, [32, 12, 128, 32]) and whole steps 7-11% faster: BERT-Base training 2.07-2.09 vs
1.88-1.92 ex/s, inference 6.58-6.80 vs 5.90-6.11; MiniLM-L6 training 12.8-13.0 vs 11.7-12.3,
inference 42-45 vs 41. CPUs where TensorFlow already turns it on are unchanged.

The variable is read when TensorFlow loads, so `use_onednn()` runs before our commands import
it. A value the user set is kept. Libraries importing bert_finetune are not affected.
"""

from __future__ import annotations

import os

ONEDNN_OPTS = "TF_ENABLE_ONEDNN_OPTS"


def use_onednn(environ: dict | None = None) -> None:
    """Turns TensorFlow's oneDNN kernels on unless the user set TF_ENABLE_ONEDNN_OPTS."""
    env = os.environ if environ is None else environ
    env.setdefault(ONEDNN_OPTS, "1")


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its CPU kernels on oneDNN."""
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own answer

    return bool(_pywrap_util_port.IsMklEnabled())
