#!/usr/bin/env python3
"""Benchmarks the serving formats of a fine-tuned MRPC classifier (the README's serving table).

    python scripts/bench_serving.py RUN_DIR GLUE_MRPC_DIR WORK_DIR [--batch_size=32]

Exports RUN_DIR (a bert-classify MRPC output_dir) as SavedModel, ONNX, TFLite float32 and TFLite
dynamic-range int8 into WORK_DIR, then for each backend: model size, MRPC dev accuracy,
latency of one pair (batch 1, median of 50 dev pairs), and throughput over MRPC test (1,725
pairs, `--batch_size` per call, tokenization included: in the graph for the SavedModel, in Python
for the others). Prints a Markdown table and writes WORK_DIR/bench_serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np

from bert_finetune import predict
from bert_finetune.export import classifier


def pairs(path: str, with_labels: bool):
    with open(path, encoding="utf-8-sig") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    rows = [r for r in rows if len(r) == 5]
    labels = [r[0] for r in rows] if with_labels else None
    return [r[3] for r in rows], [r[4] for r in rows], labels


def size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def run_batches(model, a, b, batch_size):
    out = [model.predict(a[i:i + batch_size], b[i:i + batch_size])
           for i in range(0, len(a), batch_size)]
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("mrpc_dir")
    parser.add_argument("work_dir")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    dev_a, dev_b, dev_labels = pairs(os.path.join(args.mrpc_dir, "dev.tsv"), True)
    test_a, test_b, _ = pairs(os.path.join(args.mrpc_dir, "test.tsv"), False)

    variants = {  # name: (format, quantize, backend, model file inside the export)
        "SavedModel (TF, fp32)": ("saved_model", "none", "tensorflow", "1"),
        "ONNX Runtime (fp32)": ("onnx", "none", "onnxruntime", "model.onnx"),
        "TFLite fp32": ("tflite", "none", "tflite", "model.tflite"),
        "TFLite int8 (dynamic range)": ("tflite", "int8", "tflite", "model.tflite"),
    }
    results = []
    for name, (fmt, quantize, backend, model_file) in variants.items():
        out = os.path.join(args.work_dir, f"{fmt}-{quantize}")
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.time()
        classifier.export_classifier(args.run_dir, out, fmt, quantize)
        export_s = time.time() - t0
        model = predict.load_model(out, backend)
        probs = run_batches(model, dev_a, dev_b, args.batch_size)
        predicted = [model.info.label_list[i] for i in probs.argmax(1)]
        accuracy = float(np.mean([p == y for p, y in zip(predicted, dev_labels, strict=True)]))
        model.predict(dev_a[:1], dev_b[:1])  # warm-up
        lat = []
        for i in range(50):
            t0 = time.perf_counter()
            model.predict(dev_a[i:i + 1], dev_b[i:i + 1])
            lat.append(time.perf_counter() - t0)
        run_batches(model, test_a[:args.batch_size], test_b[:args.batch_size], args.batch_size)
        t0 = time.perf_counter()
        run_batches(model, test_a, test_b, args.batch_size)
        throughput = len(test_a) / (time.perf_counter() - t0)
        results.append({"variant": name, "bytes": size(os.path.join(out, model_file)),
                        "dev_accuracy": accuracy, "latency_ms": 1000 * statistics.median(lat),
                        "test_pairs_per_s": throughput, "export_s": export_s,
                        "dev_probabilities": probs.tolist()})
        print(f"{name}: done", file=sys.stderr, flush=True)
    ref = np.array(results[0]["dev_probabilities"])
    print("| variant | model size | MRPC dev accuracy | max abs diff vs SavedModel "
          "| latency, 1 pair | MRPC test throughput |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        diff = float(np.abs(np.array(r["dev_probabilities"]) - ref).max())
        r["max_abs_diff_vs_saved_model"] = diff
        print(f"| {r['variant']} | {r['bytes'] / 2**20:.1f} MiB | {100 * r['dev_accuracy']:.2f} "
              f"| {diff:.1e} | {r['latency_ms']:.1f} ms | {r['test_pairs_per_s']:.1f} pairs/s |")
    with open(os.path.join(args.work_dir, "bench_serving.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "dev_probabilities"} for r in results],
                  f, indent=2)


if __name__ == "__main__":
    main()
