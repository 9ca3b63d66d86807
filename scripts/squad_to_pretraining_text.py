#!/usr/bin/env python3
"""SQuAD JSON -> the text format of bert-create-pretraining-data.

    python scripts/squad_to_pretraining_text.py dev-v1.1.json [more.json ...] > contexts.txt

Writes one sentence per line and a blank line between documents; a document is one SQuAD
article (its paragraphs' contexts, in order). Questions and answers are not used.

Sentences are cut with a simple rule, good enough for NSP segments: after `.`, `!` or `?`
(optionally followed by a closing quote or bracket) and whitespace, when the next character
starts a sentence (an upper-case letter, a digit or an opening quote/bracket). Abbreviations
such as "U.S. Army" are sometimes cut; the pretraining algorithm does not need exact sentences.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]?\s+(?=[A-Z0-9\"'“‘(\[])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (whitespace collapsed; empty pieces dropped)."""
    text = " ".join(text.split())
    pieces = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        # Keep a closing quote/bracket with the sentence it ends.
        end = m.start() + len(m.group(0).rstrip()) if m.group(0).strip() else m.start()
        pieces.append(text[start:end].strip())
        start = m.end()
    pieces.append(text[start:].strip())
    return [p for p in pieces if p]


def articles_to_text(paths: list[str]) -> str:
    """The pretraining text of every article of the SQuAD files, in order."""
    documents = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)["data"]
        for article in data:
            sentences = [s for p in article["paragraphs"] for s in split_sentences(p["context"])]
            if sentences:
                documents.append("\n".join(sentences))
    return "\n\n".join(documents) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("squad_json", nargs="+", help="SQuAD v1.1/v2.0 JSON files")
    parser.add_argument("--output", "-o", help="output text file (default: stdout)")
    args = parser.parse_args(argv)
    try:
        text = articles_to_text(args.squad_json)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"squad_to_pretraining_text: error: {e}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
