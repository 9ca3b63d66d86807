"""`make bench` / `make bench-quick`: our training and inference speed, MFU, fraction of the
GEMM-only bound, peak RSS and the ratio to each peer, all measured in one run.

    python -m bert_finetune.bench                  # BERT-Base, MiniLM-L6, BERT-Mini (~40 min)
    python -m bert_finetune.bench --quick          # MiniLM-L6 and BERT-Mini, fewer steps
    python -m bert_finetune.bench --update_readme  # also rewrite README.md's bench block

Every configuration runs in its own child process (peak RSS per configuration); the peers
(../shared/bench/run-peers) run once per size, right after our configurations of that size. Writes
OUT_DIR/bench.json (every record, ours and the peers'), OUT_DIR/bench.md (the table the README
carries between `<!-- bench:begin -->` and `<!-- bench:end -->`), OUT_DIR/peers.json and the
logs of every child in OUT_DIR/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bert_finetune import fileio
from bert_finetune.bench import peers, report, spec

PROGRAM = "python -m bert_finetune.bench"
REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"only {', '.join(spec.QUICK_SIZES)}; (warm-up, timed) = "
                        f"{spec.QUICK_ITERS}; peers with run-peers --quick")
    p.add_argument("--sizes", help=f"comma list of {', '.join(spec.FULL_SIZES)}")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="fp32,bf16 (bf16 only on CPUs with avx512_bf16/amx_bf16)")
    p.add_argument("--xla", default="off,on", help="off,on: use_xla / jit_compile settings")
    p.add_argument("--warmup", type=int, help="warm-up steps of every configuration (smoke runs)")
    p.add_argument("--iters", type=int, help="timed steps of every configuration (smoke runs)")
    p.add_argument("--no_accumulation", action="store_true",
                   help=f"skip the 1x{spec.BATCH} vs {spec.ACCUMULATION}x"
                        f"{spec.BATCH // spec.ACCUMULATION} memory pair")
    p.add_argument("--out_dir", default="bench_results", help="where the results go")
    p.add_argument("--peers_dir", help=f"folder with run-peers (default ${peers.ENV_DIR}, "
                                       "else ../shared/bench beside the repository)")
    p.add_argument("--peers_venvs", default=".cache/peers",
                   help="where run-peers' setup makes its two virtual environments")
    p.add_argument("--peers_json", help="use this run-peers output instead of running the peers "
                                        "(then the ratios are not from one run; the table says so)")
    p.add_argument("--no_peers", action="store_true", help="do not run the peers")
    p.add_argument("--update_readme", action="store_true",
                   help="rewrite the bench block of --readme with the new table")
    p.add_argument("--readme", default=str(REPO_ROOT / "README.md"))
    p.add_argument("--from_json", help="measure nothing: render this bench.json again (table, "
                                       "bench.md, --update_readme)")
    args = p.parse_args(argv)
    args.sizes = tuple(_split(args.sizes) if args.sizes else
                       (spec.QUICK_SIZES if args.quick else spec.FULL_SIZES))
    args.precisions = tuple(_split(args.precisions))
    problems = [f"--sizes: unknown size {s}" for s in args.sizes if s not in spec.SIZES]
    problems += [f"--precisions: unknown {x}" for x in args.precisions if x not in ("fp32", "bf16")]
    problems += [f"--xla: use off,on, got {x}" for x in _split(args.xla) if x not in ("off", "on")]
    args.xla = tuple(x == "on" for x in _split(args.xla))
    problems += [f"--{k} must be positive" for k in ("warmup", "iters")
                 if getattr(args, k) is not None and getattr(args, k) < (k == "iters")]
    if args.update_readme and not Path(args.readme).is_file():
        problems.append(f"--readme={args.readme}: not found")
    if args.from_json and not Path(args.from_json).is_file():
        problems.append(f"--from_json={args.from_json}: not found")
    if args.peers_json and not Path(args.peers_json).is_file():
        problems.append(f"--peers_json={args.peers_json}: not found")
    if problems:
        p.error(" | ".join(problems))
    return args


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def run_job(job: spec.Job, index: int, total: int, log_dir: Path) -> list[dict]:
    """Runs one job in a child process; its records, or one error record."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", job.describe()).strip("_")
    log = log_dir / f"{index:02d}-{slug}.log"
    sys.stderr.write(f"[bench] {index}/{total} {job.describe()} ...\n")
    sys.stderr.flush()
    fd, out = tempfile.mkstemp(suffix=".jsonl", prefix="bench_")
    os.close(fd)
    t0 = time.time()
    try:
        with open(log, "w") as fh:
            code = subprocess.run(
                [sys.executable, "-m", "bert_finetune.bench.measure", json.dumps(job.to_dict()),
                 out], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1"),
                check=False).returncode
        records = [json.loads(x) for x in Path(out).read_text().splitlines() if x.strip()]
    finally:
        os.unlink(out)
    expected = len(job.modes) if job.kind == "model" else 1
    if code or len(records) < expected:
        lines = [x for x in log.read_text().splitlines() if x.strip()]
        records.append({"kind": job.kind, "schema": spec.SCHEMA, "peer": spec.PEER,
                        "model": job.size, "mode": ",".join(job.modes),
                        "precision": job.precision, "jit_compile": job.xla,
                        "error": f"child exited {code}: {lines[-1][-200:] if lines else ''}"})
    for r in records:
        if job.role:
            r["accumulation_row"] = job.role == "accumulation"
    sys.stderr.write(f"[bench] {index}/{total} {job.describe()}: {_summary(records)} "
                     f"({time.time() - t0:.0f} s)\n")
    return records


def _summary(records: list[dict]) -> str:
    parts = []
    for r in records:
        if r.get("error"):
            parts.append(f"ERROR {r['error']}")
        elif r.get("kind") == "model":
            parts.append(f"{r['mode']} {r['examples_per_sec']:.2f} ex/s, "
                         f"{r['peak_rss_bytes'] / 2 ** 30:.2f} GiB")
        elif r.get("kind") == "peak":
            parts.append(f"peak {r['precision']} {r['flops'] / 1e9:.1f} GFLOP/s")
    return "; ".join(parts) or "-"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.from_json:  # render again, measure nothing
        result = json.loads(Path(args.from_json).read_text())
        errors = False
    else:
        result = measure(args, out_dir)
        errors = any(r.get("error") for r in result["records"] + result["gemm"])
        fileio.atomic_write(out_dir / "bench.json", json.dumps(result, indent=1, sort_keys=True))
    meta, completed = result["meta"], result["records"]
    markdown = report.format_markdown(meta, completed)
    fileio.atomic_write(out_dir / "bench.md", markdown)
    sys.stdout.write("\n" + report.format_text(meta, completed))
    sys.stdout.write(f"\nWrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'}\n")
    if args.update_readme:
        readme = Path(args.readme)
        try:
            updated = report.replace_block(readme.read_text(), markdown)
        except ValueError as e:
            sys.stderr.write(f"{PROGRAM}: error: {readme}: {e}\n")
            return 1
        fileio.atomic_write(readme, updated)
        sys.stdout.write(f"Updated the bench block of {readme}\n")
    return 1 if errors else 0


def measure(args: argparse.Namespace, out_dir: Path) -> dict:
    """Runs every job, each size's peers after its jobs; returns what bench.json holds."""
    began = time.time()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()[0]
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    host = spec.host_info()
    jobs, skipped = spec.plan(args.sizes, args.precisions, args.xla, args.quick,
                              host["cpu_flags"], args.warmup, args.iters,
                              accumulation=not args.no_accumulation)
    for r in skipped:
        sys.stderr.write(f"[bench] {r['model']} bf16: {r['skipped']}\n")

    peers_dir, not_run = _peers_dir(args)
    ours: list[dict] = []
    peer_records: list[dict] = []
    runs: list[peers.PeersRun] = []
    index = 0
    for item in spec.schedule(jobs, with_peers=peers_dir is not None):
        if isinstance(item, str):  # the peers of this size, right after ours
            run = _run_peers(args, out_dir, peers_dir, item)
            peer_records += run.records
            runs.append(run)
        else:
            index += 1
            ours += run_job(item, index, len(jobs), log_dir)
    if peers_dir is not None:
        fileio.atomic_write(out_dir / "peers.json", json.dumps(peer_records, indent=1,
                                                               sort_keys=True))
        peers_status = _peers_status(runs, peers_dir, args.quick)
    elif args.peers_json:
        peer_records, peers_status = peers.load_records(Path(args.peers_json)), not_run
    else:
        peers_status = not_run

    notes = []
    if args.warmup is not None or args.iters is not None:
        given = [f"{k} {v}" for k, v in (("warm-up", args.warmup), ("timed", args.iters))
                 if v is not None]
        notes.append(f"Smoke run: {', '.join(given)} steps for every configuration (ours and "
                     "the peers'), not the defaults.")

    peaks = report.best_peaks(ours)
    bounds = [r for r in ours if r.get("kind") == "gemm_bound"]
    models = [r for r in ours if r.get("kind") == "model"] + skipped
    completed = report.complete(models, peaks, bounds, peer_records)
    tf_version = next((r["versions"]["tensorflow"] for r in completed if r.get("versions")), "?")
    onednn = next((r["host"].get("onednn") for r in ours if r.get("host")), None)
    meta = {"date": date, "host": host, "tensorflow": tf_version, "quick": args.quick,
            "onednn": onednn,
            "peaks": {p: {k: v[k] for k in ("flops", "n", "entry")} for p, v in peaks.items()},
            "peers_status": peers_status, "notes": notes, "wall_s": time.time() - began,
            "load_average": [load_start, os.getloadavg()[0]],
            "peak_measurements": max((sum(1 for r in ours if r.get("kind") == "peak"
                                          and r["precision"] == p) for p in peaks), default=0)}
    return {"schema": "bert-finetune-bench/1", "meta": meta, "records": completed,
            "gemm": [r for r in ours if r.get("kind") in ("peak", "gemm_bound")],
            "peers": peer_records}


def _peers_dir(args: argparse.Namespace) -> tuple[Path | None, str]:
    """The folder of run-peers to run, or None and the status line saying why not."""
    if args.no_peers:
        return None, "peers: not run (--no_peers)"
    if args.peers_json:
        return None, f"peers: from {args.peers_json}, NOT measured in this run"
    peers_dir = peers.find_peers_dir(args.peers_dir, REPO_ROOT)
    if peers_dir is None:
        return None, ("peers: skipped (no run-peers: pass --peers_dir or set "
                      f"${peers.ENV_DIR}; default ../shared/bench beside the repository)")
    return peers_dir, ""


def _run_peers(args: argparse.Namespace, out_dir: Path, peers_dir: Path,
               size: str) -> peers.PeersRun:
    """run-peers for one size (its --sizes passed through PEERS_ARGS)."""
    extra = ["--sizes", size]
    if args.warmup is not None:
        extra += ["--warmup", str(args.warmup)]
    if args.iters is not None:
        extra += ["--iters", str(args.iters)]
    if set(args.precisions) != {"fp32", "bf16"}:
        extra += ["--precisions", ",".join(args.precisions)]
    return peers.run_peers(peers_dir, out_dir / f"peers-{size}.json",
                           Path(args.peers_venvs).resolve(),
                           out_dir / "logs" / f"peers-{size}.log", args.quick, " ".join(extra))


def _peers_status(runs: list[peers.PeersRun], peers_dir: Path, quick: bool) -> str:
    """One line for the peers of every size: the record count, or each size's status."""
    if runs and all(run.clean for run in runs):
        total = sum(len(run.records) for run in runs)
        shown = os.path.relpath(peers_dir / "run-peers")  # no machine path in the README
        return (f"peers: {total} records from {shown}{' --quick' if quick else ''}, run for "
                "each size right after our rows of that size")
    return "; ".join(run.status for run in runs) or "peers: no size to run"


if __name__ == "__main__":
    sys.exit(main())
