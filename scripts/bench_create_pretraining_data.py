#!/usr/bin/env python3
"""Speed and peak memory of bert-create-pretraining-data on a corpus generated here.

    python scripts/bench_create_pretraining_data.py --vocab_file=VOCAB --mb=20 [--keep DIR]

Generates `--mb` MB of text (sentences of words drawn from the vocabulary's whole words with a
Zipf-like law, 3-30 sentences per document, seeded), then runs the command twice, as a
separate process each time: with the default `--max_shard_tokens` (bounded memory) and with
`--max_shard_tokens=0` (the original's whole corpus in memory). Prints wall time, instances per
second and the peak resident memory of each run (the child's ru_maxrss).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time


def generate(path: str, vocab_file: str, megabytes: float, seed: int = 0) -> None:
    with open(vocab_file, encoding="utf-8") as f:
        words = [w.strip() for w in f if re.fullmatch(r"[a-z]{2,}", w.strip())]
    rng = random.Random(seed)
    cum_weights = list(itertools.accumulate(1.0 / (rank + 10) for rank in range(len(words))))
    target = int(megabytes * 1e6)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            doc = []
            for _ in range(rng.randint(3, 30)):
                sentence = rng.choices(words, cum_weights=cum_weights, k=rng.randint(5, 35))
                doc.append(" ".join(sentence).capitalize() + ".")
            text = "\n".join(doc) + "\n\n"
            f.write(text)
            written += len(text)


def run(args: list[str]) -> tuple[float, int, int]:
    """(seconds, instances written, peak RSS in MB) of one run in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "bert_finetune.cli.create_pretraining_data",
                           *args], capture_output=True, text=True)
    seconds = time.time() - start
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KB on Linux
    m = re.search(r"Wrote (\d+) total instances", proc.stderr)
    # ru_maxrss of children is the max over all of them: runs go from small to large memory.
    return seconds, int(m.group(1)), max(peak, before) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab_file", required=True)
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--dupe_factor", type=int, default=5)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--keep", help="directory for the corpus and records (default: temp)")
    args = parser.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="bench_cpd_")
    os.makedirs(work, exist_ok=True)
    corpus = os.path.join(work, "corpus.txt")
    generate(corpus, args.vocab_file, args.mb)
    print(f"corpus: {os.path.getsize(corpus) / 1e6:.1f} MB in {corpus}")
    common = [f"--input_file={corpus}", f"--vocab_file={args.vocab_file}",
              f"--max_seq_length={args.max_seq_length}", f"--dupe_factor={args.dupe_factor}"]
    for label, extra in (("sharded (default)", []), ("whole corpus", ["--max_shard_tokens=0"])):
        seconds, count, peak = run([*common, *extra,
                                    f"--output_file={os.path.join(work, 'out.tfrecord')}"])
        print(f"{label}: {count} instances in {seconds:.0f} s = {count / seconds:.0f} "
              f"instances/s, peak RSS {peak} MB")


if __name__ == "__main__":
    main()
