"""One benchmark job in its own process, so that peak RSS and TensorFlow's global state
(threads, XLA caches) belong to one configuration.

    python -m bert_finetune.bench.measure JOB_JSON OUT_JSONL

`model` jobs time the product itself: the training step is `runner.loops.Trainer.train_steps`
(forward with dropout, loss, backward, all-reduce, global-norm clip 1.0, AdamWeightDecay), fed
one fixed batch through `Trainer.make_iterator`; inference is `ClassifierModel.predict` in a
`tf.function` (with `jit_compile` for the XLA rows). `gemm` jobs measure TensorFlow's GEMM peak
(best of plain, XLA and numpy matmuls, as the keras-hub peer) and the GEMM-only bound: every
encoder matmul of a size at the same shapes, forward (infer) or forward + backward (train), with
nothing else in between. Records are JSON lines, written as soon as each is done.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

from bert_finetune.allocator import use_bfc_allocator
from bert_finetune.onednn import onednn_enabled, use_onednn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
use_bfc_allocator()  # as our commands run (bert_finetune.allocator, bert_finetune.onednn)
use_onednn()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_finetune import fused_matmul, modeling, weight_gradients  # noqa: E402
from bert_finetune.bench import spec  # noqa: E402
from bert_finetune.classify import ClassifierModel  # noqa: E402
from bert_finetune.runner import branches, loops, xla  # noqa: E402

DTYPES = {"fp32": tf.float32, "bf16": tf.bfloat16}
COMPUTE_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
PEAK_N_MAX = 4096
PEAK_TARGET_S = 3.0  # largest n (doubling up to PEAK_N_MAX) whose one GEMM takes at most this


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_loop(step, warmup: int, iters: int, max_seconds: float = spec.MAX_SECONDS):
    """(seconds of each timed call of `step`, its last result); `step` must synchronise
    (e.g. `.numpy()`).

    `warmup` untimed calls first (tracing, XLA compilation); then up to `iters` timed ones,
    stopping once max_seconds of timed work is done but never before MIN_TIMED.
    """
    for _ in range(warmup):
        step()
    times: list[float] = []
    last = None
    for _ in range(iters):
        t0 = time.perf_counter()
        last = step()
        times.append(time.perf_counter() - t0)
        if sum(times) > max_seconds and len(times) >= min(spec.MIN_TIMED, iters):
            break
    return times, last


def summary(times: list[float]) -> dict:
    return {"step_time_s_median": statistics.median(times), "step_time_s_min": min(times),
            "step_time_s_max": max(times), "step_time_s_all": [round(t, 6) for t in times],
            "iters_timed": len(times)}


def versions() -> dict:
    return {"tensorflow": tf.__version__, "numpy": np.__version__}


# -- GEMM peak and GEMM-only bound -------------------------------------------------------------
def _first(t: tf.Tensor) -> tf.Tensor:
    """One element as float32: keeps a matmul alive in the graph at no cost."""
    return tf.cast(tf.reshape(t, [-1])[0], tf.float32)


def gemm_peak(precision: str) -> dict:
    """FLOP/s of a square n x n x n GEMM: best median of 3 over the entry points TF offers
    (with oneDNN also its op on a weight fixed for the step, which the inference step uses:
    bert_finetune.fused_matmul)."""
    dtype = DTYPES[precision]
    plain = tf.function(lambda a, b: _first(tf.linalg.matmul(a, b)[:1, :1]))
    xla = tf.function(lambda a, b: _first(tf.linalg.matmul(a, b)[:1, :1]), jit_compile=True)

    def entries(n: int) -> dict:
        a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
        b = tf.cast(tf.random.stateless_normal((n, n), seed=(3, 4)), dtype)
        fns = {"matmul": lambda: plain(a, b).numpy(), "matmul_xla": lambda: xla(a, b).numpy()}
        if fused_matmul.fixed_usable(None, dtype):
            fixed = tf.function(lambda a: _first(fused_matmul.fixed_matmul(a, b)[:1, :1]))
            fns["matmul_fixed_weight"] = lambda: fixed(a).numpy()  # (b^T: the same work)
        if precision == "fp32":
            an, bn = a.numpy(), b.numpy()
            fns["numpy"] = lambda: np.matmul(an, bn)
        return fns

    n = 1024
    while n * 2 <= PEAK_N_MAX:
        f = entries(n)["matmul"]
        f()
        t0 = time.perf_counter()
        f()
        if (time.perf_counter() - t0) * 8 > PEAK_TARGET_S:  # the next size is 8x the work
            break
        n *= 2
    by_entry = {}
    for name, f in entries(n).items():
        by_entry[name] = 2.0 * n ** 3 / statistics.median(time_loop(f, 1, 3)[0])
    best = max(by_entry, key=by_entry.get)
    return {"flops": by_entry[best], "n": n, "entry": best, "by_entry": by_entry}


def encoder_gemms(size: spec.Size, precision: str, mode: str, seq: int = spec.SEQ,
                  batch: int = spec.BATCH):
    """A function running only the encoder's matmuls of `size` at the model's shapes.

    Per layer: tokens [B*T, d] times Q, K, V, O [d, d], FFN [d, f] and [f, d]; attention
    Q K^T and probs V as [B, N, T, dh] batched matmuls. Train adds each matmul's two backward
    matmuls (dA = dC B^T, dB = A^T dC): exactly 3x the forward FLOPs, as spec.step_flops counts.
    Operands are fixed random tensors (no activations, norms or copies between them; per layer
    only the weight slices [d, d] / [d, f] are read out of the stacked weights). bf16 inference
    with oneDNN runs the dense layers as the inference step does, on oneDNN's op with each
    layer's weights fixed for the step (bert_finetune.fused_matmul), one op per weight.
    """
    dtype = DTYPES[precision]
    d, f, heads, bt = size.hidden, size.intermediate, size.heads, batch * seq
    dh = d // heads
    rng = tf.random.Generator.from_seed(0)

    def rand(*shape, scale=1.0):
        return tf.cast(rng.normal(shape) * scale, dtype)

    x, h = rand(bt, d), rand(bt, f)  # layer input [BT, d]; FFN activations [BT, f]
    q, k, v = rand(batch, heads, seq, dh), rand(batch, heads, seq, dh), rand(batch, heads, seq, dh)
    p = rand(batch, heads, seq, seq)  # attention probabilities [B, N, T, T]
    # One output gradient per matmul: with a shared one, A^T dC of Q, K, V and O would be the
    # same product, and TF would compute it once.
    d_qkvo = [rand(bt, d) for _ in range(4)]
    d_ffn_in, d_ffn_out = rand(bt, f), rand(bt, d)
    d_scores, d_context = rand(batch, heads, seq, seq), rand(batch, heads, seq, dh)
    qkvo = rand(size.layers, 4, d, d, scale=0.02)  # [L, 4, d, d]
    ffn_in, ffn_out = rand(size.layers, d, f, scale=0.02), rand(size.layers, f, d, scale=0.02)
    train = mode == "train"
    fixed = None  # inference: each layer's dense weights [out, in], fixed for the step
    if not train and dtype == tf.bfloat16 and fused_matmul.fixed_usable(None, dtype):
        fixed = [[tf.transpose(w) for w in (*tf.unstack(qkvo[i]), ffn_in[i], ffn_out[i])]
                 for i in range(size.layers)]

    def gemm(a, b, dc, transpose_b=False):
        """C = a @ b (b^T when transpose_b); train: also dA and dB from dC."""
        out = _first(tf.linalg.matmul(a, b, transpose_b=transpose_b))
        if train:
            if transpose_b:  # C = A B^T: dA = dC B, dB = dC^T A
                out += (_first(tf.linalg.matmul(dc, b))
                        + _first(tf.linalg.matmul(dc, a, transpose_a=True)))
            else:  # C = A B: dA = dC B^T, dB = A^T dC
                out += (_first(tf.linalg.matmul(dc, b, transpose_b=True))
                        + _first(tf.linalg.matmul(a, dc, transpose_a=True)))
        return out

    @tf.function
    def run():
        # A loop over the layers, not L unrolled copies: the attention operands are the same
        # for every layer, and unrolled identical products would be computed only once.
        total = tf.constant(0.0)
        for weights in fixed or []:  # unrolled: one op per weight (distinct weights, no CSE)
            for w, a in zip(weights, [x] * 5 + [h], strict=True):
                total += _first(fused_matmul.fixed_matmul(a, w))
        for i in tf.range(size.layers):
            if fixed is None:
                for j in range(4):
                    total += gemm(x, qkvo[i, j], d_qkvo[j])
                total += gemm(x, ffn_in[i], d_ffn_in) + gemm(h, ffn_out[i], d_ffn_out)
            total += gemm(q, k, d_scores, transpose_b=True)  # scores [B, N, T, T]
            total += gemm(p, v, d_context)  # context [B, N, T, dh]
        return total

    return lambda: run().numpy()


def gemm_job(job: spec.Job, emit) -> None:
    host = {**spec.host_info(), "onednn": onednn_enabled()}
    for precision in job.precisions:
        t0 = time.time()
        peak = gemm_peak(precision)
        emit({"kind": "peak", "precision": precision, **peak, "wall_s": time.time() - t0,
              "source": "max(tf.linalg.matmul, XLA matmul, numpy[fp32], oneDNN fixed-weight "
                        "matmul)"})
        for name in job.sizes:
            size = spec.SIZES[name]
            for mode in ("infer", "train"):
                warmup, iters = job.iters_for(f"{name}/{mode}")
                t0 = time.time()
                times, _ = time_loop(encoder_gemms(size, precision, mode), warmup, iters)
                emit({"kind": "gemm_bound", "model": name, "mode": mode,
                      "precision": precision, **summary(times),
                      "flops_per_step": spec.step_flops(size, spec.SEQ, spec.BATCH, mode),
                      "wall_s": time.time() - t0, "host": host})


# -- the product's steps ----------------------------------------------------------------------
def fixed_batch(seed: int = 0) -> dict[str, tf.Tensor]:
    """One batch of random ids (all-ones mask, segment 0, random labels), as the peers use."""
    rng = np.random.default_rng(seed)
    b, t = spec.BATCH, spec.SEQ
    return {"input_ids": tf.constant(rng.integers(0, spec.VOCAB, (b, t)), tf.int32),
            "input_mask": tf.ones((b, t), tf.int32),
            "segment_ids": tf.zeros((b, t), tf.int32),
            "label_ids": tf.constant(rng.integers(0, spec.NUM_LABELS, (b,)), tf.int32),
            "is_real_example": tf.ones((b,), tf.int32)}


def bert_config(size: spec.Size) -> modeling.BertConfig:
    """The size as a Google bert_config.json (gelu, dropout 0.1, 512 positions, 2 segments)."""
    return modeling.BertConfig(vocab_size=spec.VOCAB, hidden_size=size.hidden,
                               num_hidden_layers=size.layers, num_attention_heads=size.heads,
                               intermediate_size=size.intermediate, type_vocab_size=2)


def inference_kernels(strategy, job: spec.Job) -> bool:
    """As the product predicts: the element-wise chains as XLA kernels when not compiled."""
    return xla.inference_kernels_xla(None, job.xla, strategy, COMPUTE_DTYPES[job.precision])[0]


def infer_step(strategy, model: ClassifierModel, batch: dict, job: spec.Job):
    """The product's predict path on the fixed batch: (step, what it runs)."""
    slices = branches.batch_branches(strategy)[0]
    kernels = inference_kernels(strategy, job)
    predict = loops.inference_step(strategy, model, job.xla, slices, kernels)
    return (lambda: predict(batch)["predictions"].numpy(),
            f"runner.loops.inference_step(ClassifierModel.predict, use_xla={job.xla}, "
            f"num_branches={slices}, kernels={kernels})")


def training_kernels(strategy, job: spec.Job) -> bool:
    """XLA off: as the product trains without --use_xla (XLA kernels for the element-wise
    chains and for the weight gradients where measured faster)."""
    return xla.training_kernels_xla(True if job.xla else None, strategy,
                                    COMPUTE_DTYPES[job.precision])[0]


def train_step(strategy, model: ClassifierModel, batch: dict, job: spec.Job, out_dir: str):
    """One optimizer step of the product's Trainer on the fixed batch: (step, what it runs)."""
    kernels = training_kernels(strategy, job)
    trainer = loops.Trainer(strategy, model, loops.TrainOptions(
        output_dir=out_dir, train_batch_size=spec.BATCH, num_train_steps=10 ** 6,
        num_warmup_steps=10, learning_rate=2e-5, use_xla=job.xla,
        xla_kernels=kernels, batch_branches=branches.batch_branches(strategy)[0],
        gradient_accumulation_steps=job.accumulation))
    iterator = trainer.make_iterator(
        lambda ctx, skip: tf.data.Dataset.from_tensors(batch).repeat())
    one = tf.constant(1, tf.int32)
    return (lambda: trainer.train_steps(iterator, one).numpy(),
            "runner.loops.Trainer.train_steps (fixed batch via make_iterator; "
            f"use_xla={job.xla}, xla_kernels={kernels}, "
            f"batch_branches={trainer.options.batch_branches}, "
            f"gradient_accumulation_steps={job.accumulation})")


def model_job(job: spec.Job, emit) -> None:
    size = spec.SIZES[job.size]
    tf.random.set_seed(0)
    strategy = tf.distribute.get_strategy()
    model = ClassifierModel(bert_config(size), spec.NUM_LABELS, False,
                            compute_dtype=COMPUTE_DTYPES[job.precision])
    batch = fixed_batch()
    params = sum(int(np.prod(v.shape)) for v in model.variables_by_name().values())
    host = {**spec.host_info(), "onednn": onednn_enabled()}
    out_dir = tempfile.mkdtemp(prefix="bert_bench_")
    try:
        for mode in job.modes:
            warmup, iters = job.iters_for(mode)
            if mode == "infer":
                step, path = infer_step(strategy, model, batch, job)
            else:
                step, path = train_step(strategy, model, batch, job, out_dir)
            t0 = time.time()
            times, last = time_loop(step, warmup, iters)
            wall = time.time() - t0
            med = statistics.median(times)
            flops = spec.step_flops(size, spec.SEQ, spec.BATCH, mode)
            emit({"kind": "model", "schema": spec.SCHEMA, "peer": spec.PEER,
                  "framework": "tensorflow", "versions": versions(), "model": job.size,
                  "layers": size.layers, "hidden": size.hidden, "heads": size.heads,
                  "intermediate": size.intermediate, "vocab": spec.VOCAB,
                  "num_labels": spec.NUM_LABELS, "params": params,
                  "encoder_matmul_params": spec.encoder_matmul_params(size),
                  "seq_len": spec.SEQ, "batch": spec.BATCH, "mode": mode,
                  "precision": job.precision, "jit_compile": job.xla,
                  "gradient_accumulation_steps": job.accumulation, "path": path,
                  # XLA kernels in the uncompiled step (fused element-wise chains, and in
                  # training the weight gradients [rows, H_in, H_out] XLA's GEMM computed, as
                  # measured)
                  "xla_kernels": (training_kernels(strategy, job) if mode == "train"
                                  else inference_kernels(strategy, job)),
                  # the encoder's batch as independent slices side by side (batch_branches)
                  # (each micro-batch of gradient accumulation too: runner.loops.Trainer)
                  "batch_branches": branches.batch_branches(strategy)[0],
                  "xla_weight_gradients": ([list(k[:3]) for k, on in
                                            weight_gradients.choices().items() if on]
                                           if mode == "train" and not job.xla else None),
                  "optimizer": ("AdamWeightDecay (lr 2e-5, weight decay 0.01 except LayerNorm "
                                "and biases, eps 1e-6) after global-norm clip 1.0"
                                if mode == "train" else None),
                  "dropout": 0.1, "device": "cpu", "device_name": host["cpu_model"],
                  "threads": os.cpu_count(), "tf32": None, "warmup": warmup,
                  "iters_requested": iters, **summary(times),
                  "examples_per_sec": spec.BATCH / med,
                  "tokens_per_sec": spec.BATCH * spec.SEQ / med, "flops_per_step": flops,
                  "achieved_flops": flops / med,
                  "executed_flops_per_step": spec.step_flops(size, spec.SEQ, spec.BATCH, mode,
                                                             executed=True),
                  "last_output_finite": bool(np.isfinite(np.asarray(last, np.float32)).all()),
                  "peak_rss_bytes": peak_rss_bytes(), "peak_device_mem_bytes": None,
                  "host": host, "isolated": True, "wall_s": wall,
                  "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "error": None})
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: python -m bert_finetune.bench.measure JOB_JSON OUT_JSONL\n")
        return 2
    job = spec.Job.from_dict(json.loads(argv[1]))
    threads = os.cpu_count() or 1
    tf.config.threading.set_intra_op_parallelism_threads(threads)  # as the peers

    def emit(record: dict) -> None:
        with open(argv[2], "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    (gemm_job if job.kind == "gemm" else model_job)(job, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
