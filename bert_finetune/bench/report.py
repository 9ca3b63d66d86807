"""The benchmark's outputs: records completed with MFU, GEMM-bound fraction and peer ratios; the
printed table; the markdown file; the README block between BEGIN and END. Pure Python.
"""

from __future__ import annotations

from bert_finetune.bench import peers, spec

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
COLUMNS = ["model", "mode", "prec", "XLA", "ex/s", "best ex/s", "MFU", "of GEMM bound",
           "peak RSS GiB", "× HF", "× keras-hub", "n"]
MODEL_ORDER = {name: i for i, name in enumerate(spec.FULL_SIZES)}


def best_peaks(records: list[dict]) -> dict[str, dict]:
    """{precision: the fastest of the `peak` records} (measured before and after our jobs)."""
    peaks: dict[str, dict] = {}
    for r in records:
        if r.get("kind") == "peak" and not r.get("error") and (
                r["flops"] > peaks.get(r["precision"], {}).get("flops", 0)):
            peaks[r["precision"]] = r
    return peaks


def complete(records: list[dict], peaks: dict[str, dict], bounds: list[dict],
             peer_records: list[dict]) -> list[dict]:
    """Adds to each of our model records: the peak of its precision and MFU (median step), the
    fraction of the GEMM-only bound and the ratio to each peer (best steps)."""
    out = []
    for r in records:
        r = dict(r)
        if r.get("kind") == "model" and not r.get("error"):
            peak = peaks.get(r["precision"], {}).get("flops")
            r["peak_flops"] = peak
            r["peak_flops_fp32"] = peaks.get("fp32", {}).get("flops")
            r["peak_flops_bf16"] = peaks.get("bf16", {}).get("flops")
            r["mfu"] = r["achieved_flops"] / peak if peak else None
            executed = r.get("executed_flops_per_step")
            r["mfu_executed"] = (executed / r["step_time_s_median"] / peak
                                 if peak and executed else None)
            bound = next((b for b in bounds if b["model"] == r["model"]
                          and b["mode"] == r["mode"] and b["precision"] == r["precision"]), None)
            r["gemm_bound_step_s_min"] = bound["step_time_s_min"] if bound else None
            r["gemm_bound_fraction"] = (bound["step_time_s_min"] / r["step_time_s_min"]
                                        if bound else None)
            for peer in (peers.HF, peers.KERAS_HUB):
                match = peers.best_peer_record(peer_records, peer, r["model"], r["mode"],
                                               r["precision"])
                # An accumulation row is our own memory comparison, not a peer configuration.
                r[f"ratio_{peer}"] = None if r.get("accumulation_row") else peers.ratio(r, match)
                r[f"peer_{peer}"] = ({k: match.get(k) for k in (
                    "examples_per_sec", "step_time_s_min", "jit_compile", "peak_rss_bytes")}
                    if match else None)
        out.append(r)
    return out


def _sort_key(r: dict):
    return (bool(r.get("accumulation_row")),
            MODEL_ORDER.get(r.get("model"), 9), r.get("precision") != "fp32",
            0 if r.get("mode") == "train" else 1, bool(r.get("jit_compile")),
            r.get("gradient_accumulation_steps", 1))


def _mode(r: dict) -> str:
    if r.get("accumulation_row"):
        a = r.get("gradient_accumulation_steps", 1)
        return f"train {a}×{r.get('batch', spec.BATCH) // a}"
    return r.get("mode", "?")


def _x(value: float | None, fmt: str = "{:.2f}×") -> str:
    return "-" if value is None else fmt.format(value)


def _xla(r: dict) -> str:
    if r.get("jit_compile") is None:
        return "-"
    if r["jit_compile"]:
        return "on"
    return "part" if r.get("xla_kernels") or r.get("xla_weight_gradients") else "off"


def xla_kernels_line(records: list[dict]) -> str | None:
    """What XLA "part" means, with the shapes whose weight gradient XLA's GEMM computed."""
    rows = [r for r in sorted(records, key=_sort_key) if _xla(r) == "part"]
    if not rows:
        return None
    fused = any(r.get("xla_kernels") for r in rows)
    bf16 = any(r.get("xla_kernels") and r.get("precision") == "bf16" for r in rows)
    shapes = {}
    for r in rows:
        if r.get("mode") != "train":  # inference has no weight gradients
            continue
        shapes.setdefault(r["model"], ", ".join(
            f"[{n}, {a}]ᵀ[{n}, {b}]" for n, a, b in r.get("xla_weight_gradients") or []) or "none")
    return ("XLA \"part\": as the product trains and predicts without --use_xla, the step runs "
            "uncompiled (oneDNN) except "
            + ("its element-wise chains, one XLA kernel each (GELU, softmax + dropout, dropout "
               "+ residual + LayerNorm: bert_finetune/fused.py; in inference the attention's "
               "scale and mask inside oneDNN's batched matmul and its softmax oneDNN's"
               + ("; in bf16 they also add the dense layers' biases, after bare oneDNN matmuls "
                  "(in inference on bf16 kernels cast and transposed once per run, which "
                  "oneDNN lays out once; the GELU layer's bias and GELU inside its matmul)"
                  if bf16 else "") + "), and in training " if fused else "")
            + ("the dense layers' bias gradients (XLA's column sum) and their weight "
               "gradients xᵀ·dy of the shapes where XLA's GEMM measured faster at the start "
               "(bert_finetune/weight_gradients.py): "
               + "; ".join(f"{m} {s}" for m, s in shapes.items()) if shapes
               else "no weight gradients (no training row)") + ".")


def branches_line(records: list[dict]) -> str | None:
    """How many independent slices of each batch the product's steps ran the encoder as."""
    counts = sorted({r["batch_branches"] for r in records
                     if r.get("kind") == "model" and (r.get("batch_branches") or 1) > 1})
    if not counts:
        return None
    return ("Batch slices: as the product runs on this CPU, our training and predict steps run "
            "the encoder on each batch as " + " or ".join(str(c) for c in counts)
            + " independent row slices side by side (bert_finetune/batch_branches.py; same "
            "values per example; each micro-batch of gradient accumulation too).")


def table_rows(records: list[dict]) -> list[list[str]]:
    rows = []
    for r in sorted(records, key=_sort_key):
        head = [r.get("model", "?"), _mode(r), r.get("precision", "?"), _xla(r)]
        if r.get("skipped") or r.get("error"):
            why = r.get("skipped") or f"error: {r['error']}"
            rows.append(head + [why[:100]] + [""] * (len(COLUMNS) - 5))
            continue
        rows.append(head + [
            f"{r['examples_per_sec']:.2f}", f"{peers.best_rate(r):.2f}",
            _x(r.get("mfu"), "{:.0%}"), _x(r.get("gemm_bound_fraction"), "{:.0%}"),
            f"{r['peak_rss_bytes'] / 2 ** 30:.2f}",
            _x(r.get(f"ratio_{peers.HF}")), _x(r.get(f"ratio_{peers.KERAS_HUB}")),
            str(r["iters_timed"])])
    return rows


def header_lines(meta: dict) -> list[str]:
    """What the figures were measured on, and how to read them."""
    host = meta["host"]
    flags = host.get("cpu_flags", {})
    shown = ", ".join(f"{k} {'yes' if flags.get(k) else 'no'}"
                      for k in ("avx512f", "avx512_bf16", "amx_bf16"))
    peaks = meta.get("peaks", {})
    peak_text = "; ".join(f"{p} {peaks[p]['flops'] / 1e9:.1f} GFLOP/s (n={peaks[p]['n']}, "
                          f"{peaks[p]['entry']})" for p in ("fp32", "bf16") if p in peaks
                          ) or "not measured"
    when = (" (the better of two measurements, before and after our configurations)"
            if meta.get("peak_measurements", 1) > 1 else "")
    lines = [
        f"`make bench{'-quick' if meta.get('quick') else ''}` on {meta['date']}: "
        f"{host['cpu_model']}, {host['cpu_count']} cores ({shown}); "
        f"TensorFlow {meta.get('tensorflow', '?')}{_onednn(meta)}, Python {host.get('python', '?')}; "
        f"wall time {meta.get('wall_s', 0) / 60:.1f} min{_load(meta)}.",
        f"GEMM peak measured by TF in this run{when}: {peak_text}.",
        f"Seq {spec.SEQ}, batch {spec.BATCH}, random weights. ex/s: median step; MFU: median "
        "against the peak of the row's precision (FLOPs as ../shared/bench/README.md); "
        "of GEMM bound, × HF and × keras-hub: best step against best step (keras-hub at the "
        "better of its jit off/on).",
        meta.get("peers_status", "peers: not run"),
    ]
    lines += meta.get("notes", [])
    return lines


def _onednn(meta: dict) -> str:
    """Whether TensorFlow ran its CPU kernels on oneDNN (bert_finetune.onednn)."""
    on = meta.get("onednn")
    return "" if on is None else f" (oneDNN {'on' if on else 'off'})"


def _load(meta: dict) -> str:
    """The 1-minute load average at the start and end: how much else shared the CPU."""
    load = meta.get("load_average")
    if not load:
        return ""
    return (f"; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end "
            f"({meta['host']['cpu_count']} cores)")


def accumulation_line(records: list[dict]) -> str | None:
    """Peak RSS of the 1xB and NxB/N training runs, and the ratio (ours vs HF too)."""
    acc = sorted((r for r in records if r.get("accumulation_row") and not r.get("error")),
                 key=lambda r: r["gradient_accumulation_steps"])
    if len(acc) < 2:
        return None
    one, many = acc[0], acc[-1]
    text = (f"{one['model']} train fp32, batch {spec.BATCH}, peak RSS: {_mode(one)[6:]} "
            f"{one['peak_rss_bytes'] / 2 ** 30:.2f} GiB, {_mode(many)[6:]} "
            f"{many['peak_rss_bytes'] / 2 ** 30:.2f} GiB "
            f"({many['peak_rss_bytes'] / one['peak_rss_bytes']:.2f}×)")
    hf = (one.get(f"peer_{peers.HF}") or {}).get("peak_rss_bytes")
    if hf:
        text += (f"; HF {hf / 2 ** 30:.2f} GiB (ours 1×{spec.BATCH} / HF = "
                 f"{one['peak_rss_bytes'] / hf:.2f}×)")
    return text + "."


def executed_line(records: list[dict]) -> str | None:
    """How many of the formula's FLOPs ours executes, and the MFU on those (fp32, XLA not
    on: off or part)."""
    rows = [r for r in records if r.get("kind") == "model" and not r.get("error")
            and r.get("executed_flops_per_step") and not r.get("accumulation_row")]
    if not rows:
        return None
    shares = {}
    for r in rows:
        shares.setdefault(r["model"], r["executed_flops_per_step"] / r["flops_per_step"])
    text = ("Our classifier computes only [CLS] in the last layer (its head reads nothing else; "
            "the same logits): it executes " + ", ".join(
                f"{share:.0%} ({model})" for model, share in sorted(
                    shares.items(), key=lambda kv: MODEL_ORDER.get(kv[0], 9)))
            + " of the formula's FLOPs. MFU and the GEMM bound count the formula's FLOPs, as "
            "for the peers")
    mfus = [f"{r['model']} {r['mode']} {r['mfu_executed']:.0%}" for r in sorted(rows, key=_sort_key)
            if r.get("mfu_executed") and r["precision"] == "fp32" and not r.get("jit_compile")]
    return text + (f"; on the executed FLOPs, MFU (fp32, XLA off/part): {', '.join(mfus)}." if mfus
                   else ".")


def extra_lines(records: list[dict]) -> list[str]:
    """The generated lines under the table."""
    return [x for x in (accumulation_line(records), executed_line(records),
                        xla_kernels_line(records), branches_line(records)) if x]


def format_text(meta: dict, records: list[dict]) -> str:
    rows = [COLUMNS] + table_rows(records)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = list(header_lines(meta)) + [""]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + [f"\n{x}" for x in extra_lines(records)]) + "\n"


def format_markdown(meta: dict, records: list[dict]) -> str:
    first, *rest = header_lines(meta)
    lines = [first, ""] + [f"- {line}" for line in rest] + [""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |"
              for row in table_rows(records)]
    for extra in extra_lines(records):
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with everything between BEGIN and END replaced by `block` (markers kept)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} block")
    return text[:start + len(BEGIN)] + "\n" + block.strip("\n") + "\n" + text[end:]
