"""What the benchmark measures: sizes, the FLOP formula, iteration counts, the bf16 decision, the
plan of child jobs. Pure Python (no TensorFlow), so the parent process stays light.

The definitions are those of `../shared/bench/README.md` (and its `bench_common.py`), so that our
records compare with the peers' records of the same run.
"""

from __future__ import annotations

import dataclasses
import os
import platform

from bert_finetune import hardware

SCHEMA = "bert-peer-bench/1"  # the peers' record schema; our records use peer = PEER
PEER = "bert_finetune"
VOCAB = 30522
NUM_LABELS = 2
SEQ = 128
BATCH = 32
MAX_SECONDS = 60.0  # timed work per configuration, as the peers (never fewer than MIN_TIMED)
MIN_TIMED = 3
ACCUMULATION = 4  # BERT-Base train at batch 32: 1x32 vs ACCUMULATION x (32 / ACCUMULATION)


@dataclasses.dataclass(frozen=True)
class Size:
    name: str
    layers: int
    hidden: int
    heads: int
    intermediate: int


SIZES = {s.name: s for s in (Size("bert-base", 12, 768, 12, 3072),
                             Size("minilm-l6", 6, 384, 12, 1536),
                             Size("bert-mini", 4, 256, 4, 1024))}
FULL_SIZES = ("bert-base", "minilm-l6", "bert-mini")
QUICK_SIZES = ("minilm-l6", "bert-mini")

# (warm-up, timed) per (size, mode): the peers' defaults; --quick uses QUICK_ITERS for all.
DEFAULT_ITERS = {("bert-base", "train"): (2, 3), ("bert-base", "infer"): (1, 3)}
SMALL_ITERS = (2, 6)
QUICK_ITERS = (2, 4)
ACCUMULATION_ITERS = (1, 2)  # the peak RSS comes with the first step; ex/s there is indicative


def forward_flops_per_sequence(size: Size, seq: int) -> int:
    """F_fwd(T) = L * (2*T*(4*d^2 + 2*d*f) + 4*T^2*d): the encoder's matmuls for one sequence.

    2*T*(4d^2 + 2df): Q, K, V, O and the two FFN weights, 2 FLOPs per weight per token;
    4*T^2*d: attention scores Q K^T plus probs V over all heads. Embeddings, softmax, LayerNorm,
    GELU, biases, the pooler and the head are left out (all well under 1%).
    """
    d, f, t = size.hidden, size.intermediate, seq
    return size.layers * (2 * t * (4 * d * d + 2 * d * f) + 4 * t * t * d)


def step_flops(size: Size, seq: int, batch: int, mode: str, executed: bool = False) -> int:
    """One step: infer = forward; train = 3 x forward (backward counted as 2 x forward).

    `executed`: the FLOPs our classifier runs (`executed_forward_flops_per_sequence`) instead of
    the shared formula's."""
    per_sequence = (executed_forward_flops_per_sequence if executed
                    else forward_flops_per_sequence)
    flops = batch * per_sequence(size, seq)
    return 3 * flops if mode == "train" else flops


def executed_forward_flops_per_sequence(size: Size, seq: int) -> int:
    """The FLOPs (as `forward_flops_per_sequence` counts them) our classifier really runs: its
    head reads only the pooler, so the last layer computes K and V on every token but Q, the
    attention, the output projection and the FFN on [CLS] alone (`BertModel(pooled_only=True)`).
    """
    d, f, t = size.hidden, size.intermediate, seq
    full_layer = 2 * t * (4 * d * d + 2 * d * f) + 4 * t * t * d
    last_layer = 2 * t * (2 * d * d) + 2 * (2 * d * d + 2 * d * f) + 4 * t * d
    return (size.layers - 1) * full_layer + last_layer


def encoder_matmul_params(size: Size) -> int:
    return size.layers * (4 * size.hidden ** 2 + 2 * size.hidden * size.intermediate)


# -- the host ----------------------------------------------------------------------------------
def host_info() -> dict:
    """CPU model, core count and the flags that decide the fast paths."""
    model, flags = hardware.cpu_model_and_flags()
    shown = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
    return {"cpu_model": model, "cpu_count": os.cpu_count(),
            "cpu_flags": {f: f in flags for f in shown},
            "machine": platform.machine(), "python": platform.python_version()}


def bf16_skip_reason(cpu_flags: dict[str, bool]) -> str | None:
    """None when bf16 runs natively (avx512_bf16 or amx_bf16), else why the bf16 rows are skipped."""
    if cpu_flags.get("avx512_bf16") or cpu_flags.get("amx_bf16"):
        return None
    return "skipped: CPU has no native bf16 (no avx512_bf16/amx_bf16 in lscpu flags)"


# -- the plan ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Job:
    """One child process: `gemm` (peak + GEMM-only bounds) or `model` (one configuration)."""

    kind: str
    size: str = ""
    precision: str = "fp32"
    xla: bool = False
    modes: tuple[str, ...] = ("infer", "train")
    accumulation: int = 1
    iters: tuple[tuple[str, int, int], ...] = ()  # (mode, or size/mode for gemm, warm-up, timed)
    sizes: tuple[str, ...] = ()  # gemm: the sizes whose GEMM-only bound to time
    precisions: tuple[str, ...] = ()  # gemm: the peaks and bounds to measure
    role: str = ""  # "accumulation": one of the 1xB / NxB/N memory pair

    def describe(self) -> str:
        if self.kind == "gemm":
            what = "GEMM peak again" if not self.sizes else "GEMM peak and GEMM-only bounds"
            return f"{what} ({', '.join(self.precisions)})"
        text = f"{self.size} {self.precision} XLA {'on' if self.xla else 'off'} {'+'.join(self.modes)}"
        if self.role == "accumulation":
            text += f" {self.accumulation}x{BATCH // self.accumulation}"
        return text

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        d = dict(d)
        d["modes"] = tuple(d["modes"])
        d["iters"] = tuple(tuple(x) for x in d["iters"])
        d["sizes"], d["precisions"] = tuple(d["sizes"]), tuple(d["precisions"])
        return cls(**d)

    def iters_for(self, mode: str) -> tuple[int, int]:
        for m, w, n in self.iters:
            if m == mode:
                return w, n
        raise KeyError(mode)


def iters_for(size: str, mode: str, quick: bool, warmup: int | None, iters: int | None
              ) -> tuple[int, int]:
    w, n = QUICK_ITERS if quick else DEFAULT_ITERS.get((size, mode), SMALL_ITERS)
    return (w if warmup is None else warmup), (n if iters is None else iters)


def schedule(jobs: list[Job], with_peers: bool) -> list[Job | str]:
    """The jobs in order, each size's name inserted after its last (size, precision, XLA) job:
    there the peers run that size, so that each ratio compares measurements minutes apart
    rather than half an hour (a shared machine's speed drifts)."""
    if not with_peers:
        return list(jobs)
    last = {j.size: k for k, j in enumerate(jobs) if j.kind == "model" and not j.role}
    order: list[Job | str] = []
    for k, job in enumerate(jobs):
        order.append(job)
        order += [size for size, at in last.items() if at == k]
    return order


def plan(sizes: tuple[str, ...], precisions: tuple[str, ...], xla: tuple[bool, ...],
         quick: bool, cpu_flags: dict[str, bool], warmup: int | None = None,
         iters: int | None = None, accumulation: bool = True
         ) -> tuple[list[Job], list[dict]]:
    """The child jobs to run, in order, and the skipped rows (bf16 without native support).

    First the GEMM job (peaks and bounds, before any model runs, as the peers), then one job per
    (size, precision, XLA) running infer then train, then the accumulation pair 1x32 / 4x8 on
    the largest size of the run (BERT-Base in the full run), then the peaks again.
    """
    skip = bf16_skip_reason(cpu_flags)
    run_precisions = tuple(p for p in precisions if p != "bf16" or skip is None)
    skipped = [{"schema": SCHEMA, "peer": PEER, "model": s, "mode": "infer,train",
                "precision": "bf16", "jit_compile": None, "skipped": skip, "error": None}
               for s in sizes if "bf16" in precisions and skip is not None]
    jobs = [Job("gemm", sizes=sizes, precisions=run_precisions,
                iters=tuple((f"{s}/{m}",) + iters_for(s, m, quick, warmup, iters)
                            for s in sizes for m in ("infer", "train")))]
    for s in sizes:
        for p in run_precisions:
            for x in xla:
                its = tuple((m,) + iters_for(s, m, quick, warmup, iters)
                            for m in ("infer", "train"))
                jobs.append(Job("model", size=s, precision=p, xla=x, iters=its))
    if accumulation and sizes:
        largest = max(sizes, key=lambda s: step_flops(SIZES[s], SEQ, BATCH, "train"))
        w, n = ACCUMULATION_ITERS if warmup is None and iters is None else iters_for(
            largest, "train", quick, warmup, iters)
        for a in (1, ACCUMULATION):
            jobs.append(Job("model", size=largest, precision="fp32", xla=False,
                            modes=("train",), accumulation=a, iters=(("train", w, n),),
                            role="accumulation"))
    # The peak once more at the end: on a shared machine one measurement can catch a busy
    # moment; the better of the two is what the CPU can do (MFU is against it).
    jobs.append(Job("gemm", precisions=run_precisions, role="peak"))
    return jobs, skipped
