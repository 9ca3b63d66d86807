"""The pure parts of `make bench`: FLOP formula, plan and bf16 decision, ratios, rendering,
README block. No timings (the benchmark itself is `make bench`, not a test)."""

from __future__ import annotations

import json

import pytest

from bert_finetune.bench import __main__ as bench_main
from bert_finetune.bench import peers, report, spec

NATIVE = {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": False}
AVX2_ONLY = {"avx2": True, "avx512f": False, "avx512_bf16": False, "amx_bf16": False}


@pytest.mark.parametrize("name, per_sequence_g, infer_g, train_t", [
    ("bert-base", 22.35, 715, 2.15),  # ../shared/bench/README.md, "FLOPs, peak and MFU"
    ("minilm-l6", 2.87, 92, None),
    ("bert-mini", 0.87, 27.9, None),
])
def test_flops_match_the_peer_readme(name, per_sequence_g, infer_g, train_t):
    size = spec.SIZES[name]
    assert spec.forward_flops_per_sequence(size, 128) / 1e9 == pytest.approx(per_sequence_g,
                                                                               abs=0.005)
    infer = spec.step_flops(size, 128, 32, "infer")
    assert infer / 1e9 == pytest.approx(infer_g, rel=0.003)  # 91.8 printed as 92
    assert spec.step_flops(size, 128, 32, "train") == 3 * infer
    if train_t:
        assert spec.step_flops(size, 128, 32, "train") / 1e12 == pytest.approx(train_t, abs=0.005)
    # The peers' encoder_matmul_params: L * (4 d^2 + 2 d f).
    assert spec.encoder_matmul_params(spec.SIZES["bert-base"]) == 12 * (4 * 768 ** 2
                                                                         + 2 * 768 * 3072)


def test_bf16_runs_only_on_native_bf16_cpus():
    assert spec.bf16_skip_reason(NATIVE) is None
    assert spec.bf16_skip_reason(dict(AVX2_ONLY, amx_bf16=True)) is None
    reason = spec.bf16_skip_reason(AVX2_ONLY)
    assert reason.startswith("skipped: CPU has no native bf16")

    jobs, skipped = spec.plan(spec.QUICK_SIZES, ("fp32", "bf16"), (False, True), True, AVX2_ONLY)
    assert [(r["model"], r["precision"], r["skipped"]) for r in skipped] == [
        (s, "bf16", reason) for s in spec.QUICK_SIZES]
    assert {j.precision for j in jobs if j.kind == "model"} == {"fp32"}
    assert jobs[0].kind == "gemm" and jobs[0].precisions == ("fp32",)

    jobs, skipped = spec.plan(spec.QUICK_SIZES, ("fp32", "bf16"), (False, True), True, NATIVE)
    assert not skipped
    grid = [(j.size, j.precision, j.xla) for j in jobs if j.kind == "model" and not j.role]
    assert len(grid) == 8 and len(set(grid)) == 8  # 2 sizes x 2 precisions x XLA off/on


def test_plan_iterations_and_accumulation_pair():
    jobs, _ = spec.plan(spec.FULL_SIZES, ("fp32",), (False,), False, NATIVE)
    base = next(j for j in jobs if j.size == "bert-base" and not j.role)
    assert base.iters_for("train") == (2, 3) and base.iters_for("infer") == (1, 3)
    mini = next(j for j in jobs if j.size == "bert-mini")
    assert mini.iters_for("train") == spec.SMALL_ITERS
    acc = [j for j in jobs if j.role == "accumulation"]
    assert [(j.size, j.accumulation, j.modes, j.xla) for j in acc] == [
        ("bert-base", 1, ("train",), False), ("bert-base", 4, ("train",), False)]
    quick, _ = spec.plan(spec.QUICK_SIZES, ("fp32",), (False,), True, NATIVE, iters=2)
    assert all(j.iters_for("train") == (spec.QUICK_ITERS[0], 2)
               for j in quick if j.kind == "model")
    # The accumulation pair uses the run's largest size; the peaks are measured again last.
    assert [j.size for j in quick if j.role == "accumulation"] == ["minilm-l6"] * 2
    assert quick[-1].kind == "gemm" and quick[-1].role == "peak" and not quick[-1].sizes
    # A job crosses the process boundary as JSON.
    for job in jobs:
        assert spec.Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job


def test_executed_flops_are_what_the_classifier_graph_multiplies():
    """The executed-FLOP formula against the matmuls of the real classifier's forward graph."""
    import tensorflow as tf

    from bert_finetune import classify, modeling
    size = spec.Size("tiny", 3, 32, 4, 37)
    config = modeling.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3,
                                 num_attention_heads=4, intermediate_size=37)
    model = classify.ClassifierModel(config, 2, False)
    batch, seq = 3, 11
    features = {k: tf.ones([batch, seq], tf.int32) for k in ("input_ids", "input_mask",
                                                              "segment_ids")}
    graph = tf.function(lambda f: model.logits(f, False)).get_concrete_function(features).graph
    counted = 0
    for op in graph.get_operations():
        if op.type in ("MatMul", "BatchMatMulV2"):
            a = op.inputs[0].shape
            transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
            inner = a[-2] if transposed else a[-1]
            counted += 2 * op.outputs[0].shape.num_elements() * inner
    # Not in the formula: the one-hot token types, the pooler and the classifier's weights.
    extra = 2 * batch * seq * config.type_vocab_size * 32 + 2 * batch * 32 * 32 + 2 * batch * 32 * 2
    assert counted - extra == batch * spec.executed_forward_flops_per_sequence(size, seq)
    assert spec.executed_forward_flops_per_sequence(size, seq) < spec.forward_flops_per_sequence(
        size, seq)


def _record(model="bert-mini", mode="train", precision="fp32", jit=False, times=(1.0, 0.8, 1.2),
            **extra):
    size = spec.SIZES[model]
    flops = spec.step_flops(size, 128, 32, mode)
    med = sorted(times)[len(times) // 2]
    r = {"kind": "model", "peer": spec.PEER, "model": model, "mode": mode,
         "precision": precision, "jit_compile": jit, "batch": 32, "step_time_s_min": min(times),
         "step_time_s_median": med, "examples_per_sec": 32 / med, "achieved_flops": flops / med,
         "peak_rss_bytes": 3 * 2 ** 30, "iters_timed": len(times), "error": None,
         "gradient_accumulation_steps": 1,
         "flops_per_step": flops,
         "executed_flops_per_step": spec.step_flops(size, 128, 32, mode, executed=True)}
    r.update(extra)
    return r


def _peer(peer, best_step, jit=None, **extra):
    return dict(_record(times=(best_step, best_step * 2, best_step * 3), jit=jit), peer=peer,
                kind=None, **extra)


def _completed() -> tuple[dict, list[dict]]:
    """Our records (train, infer, the 1x32 / 4x8 pair), a skipped bf16 row and peer records
    put through report.complete; with the run's meta."""
    ours = [_record(), _record(mode="infer", times=(0.2, 0.25, 0.3)),
            _record(accumulation_row=True),
            _record(accumulation_row=True, gradient_accumulation_steps=4,
                    peak_rss_bytes=2 ** 30)]
    skipped = {"model": "bert-base", "mode": "infer,train", "precision": "bf16",
               "jit_compile": None, "skipped": "skipped: CPU has no native bf16", "error": None}
    peer_records = [_peer(peers.HF, 1.6, peak_rss_bytes=2 * 2 ** 30),
                    _peer(peers.KERAS_HUB, 2.0, jit=False), _peer(peers.KERAS_HUB, 1.0, jit=True),
                    {"peer": peers.HF, "model": "bert-mini", "mode": "infer",
                     "precision": "fp32", "error": "boom"}]
    peaks = {"fp32": {"flops": 100e9, "n": 4096, "entry": "matmul"}}
    bounds = [{"model": "bert-mini", "mode": "train", "precision": "fp32",
               "step_time_s_min": 0.4}]
    meta = {"date": "2026-12-03 14:00 UTC", "tensorflow": "2.21.0", "quick": True,
            "host": {"cpu_model": "Test CPU", "cpu_count": 2, "cpu_flags": NATIVE,
                     "python": "3.11"},
            "peaks": peaks, "peers_status": "peers: 4 records", "wall_s": 60,
            "load_average": [0.5, 1.25], "peak_measurements": 2}
    return meta, report.complete(ours + [skipped], peaks, bounds, peer_records)


def test_complete_ratios_from_best_steps_and_rendering():
    meta, done = _completed()
    train = done[0]
    assert train["ratio_hf-torch"] == pytest.approx(2.0)  # 1.6 s / 0.8 s, best steps
    assert train["ratio_keras-hub-tf"] == pytest.approx(1.25)  # keras-hub's faster jit (1.0 s)
    assert train["peer_keras-hub-tf"]["jit_compile"] is True
    assert train["gemm_bound_fraction"] == pytest.approx(0.5)  # 0.4 s / 0.8 s
    assert train["mfu"] == pytest.approx(spec.step_flops(spec.SIZES["bert-mini"], 128, 32,
                                                         "train") / 1.0 / 100e9)
    executed = spec.step_flops(spec.SIZES["bert-mini"], 128, 32, "train", executed=True)
    assert train["mfu_executed"] == pytest.approx(executed / 1.0 / 100e9)
    infer = done[1]
    assert infer["ratio_hf-torch"] is None and infer["gemm_bound_fraction"] is None
    assert done[2]["ratio_hf-torch"] is None  # accumulation rows are not peer configurations

    md = report.format_markdown(meta, done)
    rows = [line for line in md.splitlines() if line.startswith("| bert-")]
    assert all(line.count("|") == len(report.COLUMNS) + 1 for line in rows)
    train_row = next(line for line in rows if line.startswith("| bert-mini | train |"))
    assert train_row.startswith("| bert-mini | train | fp32 | off | 32.00 | 40.00 | ")
    assert train_row.endswith("| 50% | 3.00 | 2.00× | 1.25× | 3 |")
    assert any("train 4×8" in line for line in rows)
    assert "| bert-base | infer,train | bf16 | - | skipped: CPU has no native bf16 |" in md
    assert "Test CPU, 2 cores (avx512f yes, avx512_bf16 yes, amx_bf16 no)" in md
    assert "1×32 3.00 GiB, 4×8 1.00 GiB (0.33×); HF 2.00 GiB (ours 1×32 / HF = 1.50×)" in md
    assert "load average 0.5 at the start, 1.2 at the end (2 cores)" in md
    assert ("it executes 79% (bert-mini) of the formula's FLOPs" in md
            and f"MFU (fp32, XLA off/part): bert-mini train {executed / 100e9:.0%}, bert-mini infer"
            in md)
    assert "in this run (the better of two measurements, before and after our" in md
    text = report.format_text(meta, done)
    assert "2026-12-03 14:00 UTC" in text and "GEMM peak measured by TF" in text


def test_xla_kernels_are_shown_with_the_weight_gradient_shapes():
    meta, done = _completed()
    assert "XLA \"part\"" not in report.format_markdown(meta, done)  # none used: no line
    done[0]["xla_kernels"] = True
    md = report.format_markdown(meta, done)
    assert any(line.startswith("| bert-mini | train | fp32 | part | 32.00 |")
               for line in md.splitlines())
    assert "its element-wise chains, one XLA kernel each" in md
    assert "the dense layers' bias gradients (XLA's column sum) and their weight gradients" in md
    assert "measured faster at the start (bert_finetune/weight_gradients.py): bert-mini none." in md
    done[0]["xla_weight_gradients"] = [[4096, 256, 1024], [4096, 1024, 256]]
    md = report.format_markdown(meta, done)
    assert "bert-mini [4096, 256]ᵀ[4096, 1024], [4096, 1024]ᵀ[4096, 256]." in md
    assert "bert-mini [4096" in report.format_text(meta, done)
    # Inference with the kernels: part too; its (absent) weight gradients do not hide training's.
    done[1]["xla_kernels"] = True
    md = report.format_markdown(meta, done)
    assert "| bert-mini | infer | fp32 | part |" in md
    assert "as the product trains and predicts without --use_xla" in md
    assert "bert-mini [4096, 256]ᵀ[4096, 1024], [4096, 1024]ᵀ[4096, 256]." in md
    only_infer = [r for r in done if r.get("mode") == "infer"]
    assert "dropout + residual + LayerNorm: bert_finetune/fused.py; in inference the " \
        "attention's scale and mask inside oneDNN's batched matmul and its softmax oneDNN's), " \
        "and in training no weight gradients (no training row)." in report.format_markdown(
            meta, only_infer)
    assert "biases" not in md  # float32 rows only
    bf16 = [dict(r, precision="bf16") for r in done]
    assert "softmax oneDNN's; in bf16 they also add the dense layers' biases, " \
        "after bare oneDNN matmuls (in inference on bf16 kernels cast and transposed once per " \
        "run, which oneDNN lays out once; the GELU layer's bias and GELU inside its matmul)), " \
        "and in training" in report.format_markdown(meta, done + bf16)
    del done[1]["xla_kernels"]
    del done[0]["xla_kernels"]  # a JSON from before the fused kernels: weight gradients only
    md = report.format_markdown(meta, done)
    assert "| bert-mini | train | fp32 | part |" in md and "element-wise" not in md


def test_batch_slices_are_said_under_the_table():
    meta, done = _completed()
    assert "Batch slices" not in report.format_markdown(meta, done)  # older JSON: no line
    for r in done[:2]:
        r["batch_branches"] = 2
    md = report.format_markdown(meta, done)
    assert "run the encoder on each batch as 2 independent row slices side by side" in md
    for r in done[:2]:
        r["batch_branches"] = 1
    assert "Batch slices" not in report.format_markdown(meta, done)


def test_render_again_from_json_into_the_readme(tmp_path, capsys):
    meta, done = _completed()
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps({"meta": meta, "records": done}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n{report.BEGIN}\nold\n{report.END}\nrest\n")
    assert bench_main.main(["--from_json", str(saved), "--out_dir", str(tmp_path / "out"),
                            "--update_readme", "--readme", str(readme)]) == 0
    md = (tmp_path / "out" / "bench.md").read_text()
    assert readme.read_text() == f"# R\n{report.BEGIN}\n{md}{report.END}\nrest\n"
    printed = capsys.readouterr().out
    assert "Test CPU" in printed and "train 4×8" in printed and "2.00×" in printed


def test_the_better_of_the_two_peak_measurements_counts():
    first = {"kind": "peak", "precision": "fp32", "flops": 150e9}
    again = {"kind": "peak", "precision": "fp32", "flops": 180e9}
    bf16 = {"kind": "peak", "precision": "bf16", "flops": 300e9}
    failed = {"kind": "gemm", "precision": "bf16", "error": "child exited 1"}
    assert report.best_peaks([first, bf16, failed, again]) == {"fp32": again, "bf16": bf16}


def test_readme_block_replacement():
    readme = f"# T\n\nintro\n{report.BEGIN}\nold table\n{report.END}\n\nafter\n"
    new = report.replace_block(readme, "| new |\n")
    assert new == f"# T\n\nintro\n{report.BEGIN}\n| new |\n{report.END}\n\nafter\n"
    assert report.replace_block(new, "| new |") == new
    with pytest.raises(ValueError, match="bench:begin"):
        report.replace_block("# no markers\n", "x")


def test_peers_dir_and_bad_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(peers.ENV_DIR, raising=False)
    assert peers.find_peers_dir(str(tmp_path), tmp_path / "repo") is None
    (tmp_path / "run-peers").write_text("#!/bin/sh\n")
    assert peers.find_peers_dir(str(tmp_path), tmp_path / "repo") == tmp_path.resolve()
    with pytest.raises(SystemExit):
        bench_main.parse_args(["--sizes", "bert-huge", "--xla", "maybe"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--sizes: unknown size bert-huge | --xla: use off,on, got maybe" in err


def test_run_peers_failed_setup_and_partial_run(tmp_path):
    def fake(body: str):
        script = tmp_path / "run-peers"
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(0o755)
        return peers.run_peers(tmp_path, tmp_path / "peers.json", tmp_path / "venvs",
                               tmp_path / "peers.log", quick=True)

    run = fake('echo "run-peers: setup-peers failed" >&2; exit 1\n')
    assert run.records == [] and not run.clean
    assert run.status.startswith("peers: not measured (run-peers exited 1: "
                                 "run-peers: setup-peers failed;")
    # Some configurations failed: keep what was measured, say how many failed.
    good = _peer(peers.HF, 1.0)
    body = json.dumps([good, {"peer": peers.KERAS_HUB, "error": "boom"}])
    run = fake(f"echo '{body}' > \"$2\"; exit 1\n")
    assert len(run.records) == 2 and "(1 failed configurations, exit 1;" in run.status
    assert not run.clean
    clean = fake(f"echo '{json.dumps([good])}' > \"$2\"\n")
    assert clean.clean and clean.status.startswith("peers: 1 records from ")
    # The line of a whole bench run: the total when every size was clean, else each size's line.
    assert bench_main._peers_status([clean, clean], tmp_path, True).startswith(
        "peers: 2 records from ")
    assert bench_main._peers_status([clean, run], tmp_path, True) == (
        f"{clean.status}; {run.status}")


def test_peers_run_for_each_size_right_after_ours(tmp_path, monkeypatch):
    """The order of a run: our jobs of a size, then run-peers for that size alone (its
    --sizes through PEERS_ARGS); the accumulation pair and the last peak after all sizes."""
    jobs, _ = spec.plan(("bert-mini", "minilm-l6"), ("fp32",), (False, True), True, AVX2_ONLY)
    order = spec.schedule(jobs, with_peers=True)
    assert [x if isinstance(x, str) else (x.kind, x.size, x.xla, x.role) for x in order] == [
        ("gemm", "", False, ""),
        ("model", "bert-mini", False, ""), ("model", "bert-mini", True, ""), "bert-mini",
        ("model", "minilm-l6", False, ""), ("model", "minilm-l6", True, ""), "minilm-l6",
        ("model", "minilm-l6", False, "accumulation"),
        ("model", "minilm-l6", False, "accumulation"), ("gemm", "", False, "peak")]
    assert spec.schedule(jobs, with_peers=False) == jobs

    events = []
    monkeypatch.setattr(bench_main, "run_job", lambda job, i, n, log_dir: events.append(
        (job.kind, job.size, job.role)) or [])
    script = tmp_path / "run-peers"
    # A fake run-peers: one record per call, for the size PEERS_ARGS names.
    script.write_text('#!/bin/sh\nsize=$(echo "$PEERS_ARGS" | sed "s/.*--sizes \\([^ ]*\\).*/\\1/")\n'
                      f'echo "$size" >> {tmp_path}/calls\n'
                      'echo "[{\\"peer\\": \\"hf-torch\\", \\"model\\": \\"$size\\"}]" > "$2"\n')
    script.chmod(0o755)
    # --quick: the sizes of spec.QUICK_SIZES, in their order.
    args = bench_main.parse_args(["--quick", "--xla", "off", "--peers_dir", str(tmp_path),
                                  "--peers_venvs", str(tmp_path / "venvs"),
                                  "--out_dir", str(tmp_path / "out")])
    real_run_peers = peers.run_peers

    def run_peers(*a, **k):
        events.append("peers")
        return real_run_peers(*a, **k)

    monkeypatch.setattr(peers, "run_peers", run_peers)
    real_host = spec.host_info  # the plan as on an AVX2-only CPU (no bf16 rows), on any CPU
    monkeypatch.setattr(spec, "host_info", lambda: {**real_host(), "cpu_flags": AVX2_ONLY})
    result = bench_main.measure(args, tmp_path / "out")
    assert (tmp_path / "calls").read_text().split() == ["minilm-l6", "bert-mini"]
    assert events == [("gemm", "", ""), ("model", "minilm-l6", ""), "peers",
                      ("model", "bert-mini", ""), "peers", ("model", "minilm-l6", "accumulation"),
                      ("model", "minilm-l6", "accumulation"), ("gemm", "", "peak")]
    assert [r["model"] for r in result["peers"]] == ["minilm-l6", "bert-mini"]
    assert result["meta"]["peers_status"].startswith("peers: 2 records from ")
    assert result["meta"]["peers_status"].endswith(
        " --quick, run for each size right after our rows of that size")
    saved = json.loads((tmp_path / "out" / "peers.json").read_text())
    assert [r["model"] for r in saved] == ["minilm-l6", "bert-mini"]
