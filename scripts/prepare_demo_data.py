"""Cuts the demo's QNLI train/dev/test files out of GLUE's QNLI dev.tsv (how data/demo/ was made).

    python scripts/prepare_demo_data.py [--source ../shared/data/glue/QNLI/dev.tsv] [--check]

Selection (deterministic, reproducible in any language): order the data rows of the source by the
hex sha256 of their `index` field (UTF-8), take the first 4000 for train, the next 400 for dev and
the next 200 for test, then write each split's rows in their original file order. Rows are copied
whole (header kept); test drops the label column, as in GLUE's QNLI test.tsv. `--check` compares
the files in data/demo/qnli with what the procedure gives instead of writing them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "glue" / "QNLI" / "dev.tsv"
OUT_DIR = REPO / "data" / "demo" / "qnli"
SIZES = {"train": 4000, "dev": 400, "test": 200}


def _key(line: str) -> str:
    return hashlib.sha256(line.split("\t", 1)[0].encode("utf-8")).hexdigest()


def build_splits(source: Path) -> dict[str, str]:
    """{"train"|"dev"|"test": file text}; raises ValueError when the source is not QNLI dev."""
    # Split on "\n" only: str.splitlines() would also break rows at U+2028 and the like.
    lines = source.read_text(encoding="utf-8").rstrip("\n").split("\n")
    header, rows = lines[0], lines[1:]
    if header.split("\t") != ["index", "question", "sentence", "label"]:
        raise ValueError(f"{source}: not a QNLI dev file (header {header!r})")
    need = sum(SIZES.values())
    if len(rows) < need:
        raise ValueError(f"{source}: {len(rows)} data rows, the demo needs {need}")
    position = {id(row): i for i, row in enumerate(rows)}
    ordered = sorted(rows, key=_key)
    out, start = {}, 0
    for name, size in SIZES.items():
        chosen = sorted(ordered[start:start + size], key=lambda r: position[id(r)])
        start += size
        if name == "test":  # GLUE test layout: index, question, sentence (no label)
            chosen = ["\t".join(r.split("\t")[:3]) for r in chosen]
            head = "index\tquestion\tsentence"
        else:
            head = header
        out[name] = "\n".join([head, *chosen]) + "\n"
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="GLUE QNLI dev.tsv (5463 rows)")
    parser.add_argument("--check", action="store_true",
                        help="verify data/demo/qnli instead of writing it")
    args = parser.parse_args()
    try:
        splits = build_splits(args.source)
    except (OSError, ValueError) as e:
        print(f"prepare_demo_data: error: {e}", file=sys.stderr)
        return 1
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    bad = []
    for name, text in splits.items():
        path = OUT_DIR / f"{name}.tsv"
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                bad.append(str(path.relative_to(REPO)))
        else:
            _write(path, text)
            print(f"wrote {path.relative_to(REPO)} ({SIZES[name]} rows)")
    if bad:
        print(f"prepare_demo_data: differs from the procedure: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
