"""A tiny vocabulary and corpus for the pretraining tests (made up here, deterministic).

The vocabulary has < 99 entries (it fits TINY_CONFIG) and `##` suffixes, so that words such as
"jumping" become two wordpieces (`jump ##ing`) and whole-word masking has words to keep whole.
"""

from __future__ import annotations

import random
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
STEMS = ["run", "jump", "walk", "talk", "play", "read", "sing", "cook", "swim", "draw"]
SUFFIXES = ["##ing", "##ed", "##s", "##er"]
WORDS = ["the", "a", "cat", "dog", "bird", "fish", "man", "woman", "child", "tree", "house",
         "river", "city", "park", "sun", "moon", "big", "small", "red", "blue", "old", "new",
         "and", "but", "then", "on", "in", "near", "with", "to", "from", "is", "was", ".", ","]


def vocab_tokens() -> list[str]:
    return SPECIAL + WORDS + STEMS + SUFFIXES


def write_vocab(path: Path) -> Path:
    path.write_text("".join(t + "\n" for t in vocab_tokens()))
    return path


def sentence(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(4, 12)):
        if rng.random() < 0.3:
            words.append(rng.choice(STEMS) + rng.choice(SUFFIXES)[2:])  # e.g. "jumping"
        else:
            words.append(rng.choice(WORDS[:-2]))
    return " ".join(words) + " ."


def write_corpus(path: Path, num_documents: int = 40, seed: int = 0,
                 sentences: tuple[int, int] = (2, 9)) -> Path:
    """One sentence per line, a blank line between documents."""
    rng = random.Random(seed)
    docs = ["\n".join(sentence(rng) for _ in range(rng.randint(*sentences)))
            for _ in range(num_documents)]
    path.write_text("\n\n".join(docs) + "\n")
    return path
