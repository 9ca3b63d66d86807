"""MRPC end to end, full padding vs length-aware batches, in one process (same machine state).

    python scripts/bench_mrpc_e2e.py --model_dir=DIR --glue_dir=DIR --work_dir=DIR \
        [--seed=1] [--epochs=3] [--order=full,buckets] [--json=FILE]

DIR: a Google-layout checkpoint directory (bert_config.json, vocab.txt, bert_model.ckpt), e.g.
all-MiniLM-L6-v2 (../shared/tools/minilm-weights). Each side is a whole `bert-classify` run
(`classify.run`, the function the command calls) into a fresh output directory: feature writing,
training (the original recipe: lr 2e-5, batch 32, 3 epochs, seq 128), evaluation on dev and
prediction on test, timed from start to end.

- full: the original. Training without `--length_buckets`, and evaluation/prediction batches
  padded to --max_seq_length (the bucket list is reduced to max_seq_length alone).
- buckets: `--length_buckets=8` and the default per-batch padding of evaluation/prediction.

Both use the same seed, so they see the same examples in the same windows; the accuracies differ
only by the order inside each window of 8 batches and by fp32 rounding.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from unittest import mock

from absl import logging

from bert_finetune.bench.spec import host_info
from bert_finetune.cli import devices


def run_side(name: str, args: argparse.Namespace) -> dict:
    from bert_finetune import classify
    from bert_finetune.data import length_buckets
    from bert_finetune.data.glue import PROCESSORS

    out = os.path.join(args.work_dir, name)
    if os.path.exists(out):
        raise SystemExit(f"--work_dir: {out} exists; use a fresh --work_dir")
    opts = classify.ClassifyOptions(
        task_name="MRPC", data_dir=os.path.join(args.glue_dir, "MRPC"), output_dir=out,
        vocab_file=os.path.join(args.model_dir, "vocab.txt"),
        bert_config_file=os.path.join(args.model_dir, "bert_config.json"),
        init_checkpoint=os.path.join(args.model_dir, "bert_model.ckpt"),
        do_train=True, do_eval=True, do_predict=True, max_seq_length=128,
        train_batch_size=32, learning_rate=2e-5, num_train_epochs=args.epochs, seed=args.seed,
        length_buckets=8 if name == "buckets" else 0)
    problems = classify.validate(opts, PROCESSORS)
    if problems:
        raise SystemExit("; ".join(problems))
    padding = (mock.patch.object(length_buckets, "bucket_lengths", lambda max_len, *_, **__: [max_len])
               if name == "full" else contextlib.nullcontext())
    start = time.perf_counter()
    with padding:
        results = classify.run(opts, PROCESSORS["mrpc"]())
    seconds = time.perf_counter() - start
    return {"side": name, "seconds": round(seconds, 1),
            "eval_accuracy": float(results["eval_accuracy"]),
            "eval_f1": float(results.get("eval_f1", float("nan")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--glue_dir", required=True, help="GLUE_DIR (with MRPC/ inside)")
    parser.add_argument("--work_dir", required=True, help="fresh folder for both runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=3.0, help="3: the original recipe")
    parser.add_argument("--order", default="full,buckets")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    devices.probe_devices()  # as the commands do: no CUDA error line on a CPU-only machine
    logging.set_verbosity(logging.INFO)  # the runner's progress lines (step, loss, ex/s, ETA)
    rows = [run_side(name, args) for name in args.order.split(",")]
    by = {r["side"]: r for r in rows}
    ratio = by["buckets"]["seconds"] / by["full"]["seconds"]
    host = host_info()
    report = {"cpu": host["cpu_model"], "cores": host["cpu_count"], "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                           time.gmtime()),
              "seed": args.seed, "rows": rows, "time_ratio_buckets_to_full": round(ratio, 3)}
    print("| padding | wall time | dev accuracy | dev F1 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['side']} | {r['seconds'] / 60:.1f} min | {r['eval_accuracy']:.3f} | "
              f"{r['eval_f1']:.3f} |")
    print(f"length-aware / full time: {ratio:.2f}x ({report['cpu']}, {report['cores']} cores, "
          f"{report['date']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
