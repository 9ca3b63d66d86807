"""Where XLA (jit_compile) is used: `--use_xla` when given, else the default measured per device.

Measured with `make bench` and whole runs (README, "XLA by device"):
- training: XLA was slower than plain TensorFlow on every CPU measured (AVX2-only and AVX-512),
  so the default is off; `--use_xla=true` compiles the gradient step (fixed shapes). Without the
  flag, float32 and bfloat16 training on CPU runs XLA kernels inside the uncompiled step
  (`training_kernels_xla`): the element-wise chains fused (GELU, softmax + dropout, dropout +
  residual + LayerNorm; bert_finetune.fused) and the dense layers' weight gradients for the
  shapes where XLA's GEMM is measured faster (bert_finetune.weight_gradients).
- inference: on AVX2-only CPUs XLA ran the forward pass 1.2-1.7x faster; on AVX-512 CPUs
  oneDNN's kernels were faster. XLA compiles once per batch shape (about 1-3 s each on CPU,
  up to one per bucket length), which a short run does not earn back: whole `bert-classify
  --do_eval` runs (all-MiniLM-L6-v2, eval batch 8, AVX2-only AMD EPYC) took 27 vs 16 s with
  XLA on vs off for 51 batches (MRPC), 22.6 vs 21.5 s for 109 (SST-2), 32 vs 47 s for 188
  (STS-B) and 103-108 vs 148 s for 683 (QNLI). So the default turns it on only for AVX2-only
  CPUs and runs of at least MIN_INFERENCE_BATCHES batches. Re-measured with oneDNN on (as our
  commands now run, bert_finetune.onednn): QNLI 96.8 vs 110.5 s, STS-B 30.6 vs 49.0 s.
  Inference that is not compiled runs the element-wise chains as XLA kernels on CPU
  (`inference_kernels_xla`; GELU and LayerNorm, the softmax: +2-7% in float32, +6-11% in
  bfloat16 on AVX2, and their compilation is lost in the tracing time).
- GPU: not measured here, so off unless asked for. TPU compiles everything anyway.
"""

from __future__ import annotations

import tensorflow as tf

from bert_finetune import fused, hardware
from bert_finetune.runner.distribute import is_tpu

MIN_INFERENCE_BATCHES = 128
KERNEL_DTYPES = tuple(d.name for d in fused.DTYPES)  # float32, bfloat16


def inference_xla(use_xla: bool | None, strategy: tf.distribute.Strategy,
                  num_batches: int | None) -> tuple[bool, str]:
    """(compile the inference step with XLA?, why, for the log) for a run of num_batches batches.

    `use_xla` is the flag: True/False as given, None for the per-device default.
    """
    if is_tpu(strategy):
        return False, "TPU: the step is compiled by the TPU runtime"
    if use_xla is not None:
        return bool(use_xla), f"--use_xla={str(bool(use_xla)).lower()}"
    if tf.config.list_logical_devices("GPU"):
        return False, "default on GPU (not measured): off"
    if hardware.has_avx512():
        return False, "default on AVX-512 CPUs (oneDNN measured faster): off"
    if num_batches is None or num_batches < MIN_INFERENCE_BATCHES:
        what = "an unknown number of" if num_batches is None else str(num_batches)
        return False, (f"default on AVX2-only CPUs: off for {what} batches (on from "
                       f"{MIN_INFERENCE_BATCHES}: compiling each shape would cost more than "
                       "it saves)")
    return True, (f"default on AVX2-only CPUs for runs of >= {MIN_INFERENCE_BATCHES} batches "
                  f"({num_batches}): on, measured faster")


def _kernels_ruled_out(strategy: tf.distribute.Strategy, compute_dtype: str) -> str | None:
    """Why XLA kernels cannot run in an uncompiled step here (None: they can)."""
    if is_tpu(strategy):
        return "TPU: the step is compiled by the TPU runtime"
    if tf.config.list_logical_devices("GPU"):
        return "default on GPU (not measured): off"
    if compute_dtype not in KERNEL_DTYPES:
        return f"default for {compute_dtype} (measured for {' and '.join(KERNEL_DTYPES)}): off"
    return None


def training_kernels_xla(use_xla: bool | None, strategy: tf.distribute.Strategy,
                         compute_dtype: str = "float32") -> tuple[bool, str]:
    """(may the uncompiled training step use XLA kernels for its element-wise chains and for
    the weight gradients where measured faster?, why).

    bert_finetune.weight_gradients measures the GEMM choice per shape; this only rules out where
    neither applies: TPU, GPU (not measured), float16 (a GPU dtype), and an explicit
    `--use_xla` (true compiles the whole step, false means no XLA at all).
    """
    ruled_out = _kernels_ruled_out(strategy, compute_dtype)
    if ruled_out:
        return False, ruled_out
    if use_xla is not None:
        return False, ("--use_xla=true: the whole step is compiled" if use_xla
                       else "--use_xla=false")
    return True, ("default on CPU: element-wise chains as one XLA kernel each; each weight "
                  "gradient by XLA's GEMM where measured faster than oneDNN's at the start")


def inference_kernels_xla(use_xla: bool | None, compiled: bool,
                          strategy: tf.distribute.Strategy,
                          compute_dtype: str = "float32") -> tuple[bool, str]:
    """(may the uncompiled inference step use XLA kernels for its element-wise chains?, why).

    `use_xla` is the flag (None when not given); `compiled`, the decision of `inference_xla`
    (True: the whole forward pass is compiled). The same devices and dtypes as in training.
    """
    ruled_out = _kernels_ruled_out(strategy, compute_dtype)
    if ruled_out:
        return False, ruled_out
    if use_xla is False:
        return False, "--use_xla=false"
    if compiled:
        return False, "the whole forward pass is compiled"
    return True, "default on CPU: element-wise chains as one XLA kernel each"
