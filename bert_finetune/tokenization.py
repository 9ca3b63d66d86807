"""Tokenization classes: Google BERT's `tokenization.py`, token for token, on Python 3.

`FullTokenizer` = `BasicTokenizer` (clean, split CJK ideographs, lower-case + strip accents,
split punctuation) followed by `WordpieceTokenizer` (greedy longest-match-first with `##`).

Differences from the original, none of which changes a token:
- Bad input is a `UserError` naming the file or token (a missing, empty or non-UTF-8 vocab; a
  token or id that is not in the vocab) where the original raised `KeyError`/`NotFoundError`.
- Paths are local files (plain `open`), not `tf.io.gfile`, so importing this needs no TensorFlow.
- `BasicTokenizer.tokenize` runs the per-character steps through `str.translate` with cached
  tables instead of one Python call per character; `_reference_tokenize` keeps the original's
  step-by-step form and the tests check that the two agree.
- `validate_case_matches_checkpoint` knows the whole-word-masking and small BERT models and lets a
  `do_lower_case.txt` sidecar next to the checkpoint override the guess from its name.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping

from bert_finetune import fileio
from bert_finetune.errors import UserError

logger = logging.getLogger(__name__)

SIDECAR_NAME = "do_lower_case.txt"


# --------------------------------------------------------------------------- casing vs checkpoint

_LOWER_MODELS = frozenset(
    [
        "uncased_L-24_H-1024_A-16",
        "uncased_L-12_H-768_A-12",
        "multilingual_L-12_H-768_A-12",
        "chinese_L-12_H-768_A-12",
        "wwm_uncased_L-24_H-1024_A-16",
    ]
    # The 24 small BERTs (Turc et al., 2019): all uncased, heads = hidden / 64.
    + [
        f"uncased_L-{layers}_H-{hidden}_A-{hidden // 64}"
        for layers in (2, 4, 6, 8, 10, 12)
        for hidden in (128, 256, 512, 768)
    ]
)

_CASED_MODELS = frozenset(
    [
        "cased_L-12_H-768_A-12",
        "cased_L-24_H-1024_A-16",
        "multi_cased_L-12_H-768_A-12",
        "wwm_cased_L-24_H-1024_A-16",
    ]
)


def _sidecar_path(path: str) -> str:
    """`path` itself if it is a sidecar, else the sidecar in `path` (a directory) or beside it."""
    if os.path.basename(path) == SIDECAR_NAME:
        return path
    if fileio.is_dir(path):
        return os.path.join(path, SIDECAR_NAME)
    return os.path.join(os.path.dirname(path), SIDECAR_NAME)


def _open_binary(path: str):
    """open(path, "rb"), through tf.io.gfile for `gs://`-style paths (as the original did)."""
    if fileio.is_remote(path):
        import tensorflow as tf  # only for remote paths: local reads stay light

        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise OSError("no such file")
        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb")


def read_do_lower_case_sidecar(path: str) -> bool | None:
    """Reads `do_lower_case.txt` (`true`/`false`) for a checkpoint, vocab file or directory.

    `path` may be the sidecar itself, a directory holding it, or a file / checkpoint prefix beside
    it. Returns None when there is no sidecar.
    """
    sidecar = _sidecar_path(os.fspath(path))
    try:
        exists = fileio.is_file(sidecar)
    except OSError as e:
        # Only remote lookups raise here (bucket unreachable, no permission). The sidecar is
        # optional: fall back to the name guess; loading the checkpoint reports the real problem.
        logger.warning("%s: cannot look for the casing sidecar (%s); guessing from the name",
                       sidecar, e.strerror or e)
        return None
    if not exists:
        return None
    try:
        value = fileio.read_text(sidecar).strip().lower()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{sidecar}: cannot read the casing sidecar: {e}") from e
    if value not in ("true", "false"):
        raise UserError(f"{sidecar}: expected `true` or `false`, found {value[:40]!r}")
    return value == "true"


def validate_case_matches_checkpoint(do_lower_case: bool, init_checkpoint: str | None) -> None:
    """Raises UserError if `do_lower_case` contradicts what the checkpoint is known to be.

    A `do_lower_case.txt` sidecar beside the checkpoint (or in it, for a directory) is the
    authority; without one the casing is guessed from Google's released model names, as the
    original did. Unknown names pass.
    """
    if not init_checkpoint:
        return
    flag = f"`--do_lower_case={do_lower_case}`"
    opposite = f"`--do_lower_case={not do_lower_case}`"
    sidecar_value = read_do_lower_case_sidecar(init_checkpoint)
    if sidecar_value is not None:
        if sidecar_value != bool(do_lower_case):
            sidecar = _sidecar_path(init_checkpoint)
            case_name = "lowercased" if sidecar_value else "cased"
            raise UserError(
                f"You passed in {flag} with `--init_checkpoint={init_checkpoint}`. However, "
                f"{sidecar} says `{str(sidecar_value).lower()}` (a {case_name} model), so you "
                f"should pass in {opposite} so that the fine-tuning matches how the model was "
                f"pre-trained. If this error is wrong, fix {sidecar} or the flag."
            )
        return

    # Same pattern as the original (unescaped dot included) so the same paths are recognised.
    m = re.match("^.*?([A-Za-z0-9_-]+)/bert_model.ckpt", init_checkpoint)
    if m is None:
        return
    model_name = m.group(1)
    if model_name in _LOWER_MODELS and not do_lower_case:
        case_name = "lowercased"
    elif model_name in _CASED_MODELS and do_lower_case:
        case_name = "cased"
    else:
        return
    raise UserError(
        f"You passed in {flag} with `--init_checkpoint={init_checkpoint}`. However, "
        f"`{model_name}` seems to be a {case_name} model, so you should pass in {opposite} so "
        f"that the fine-tuning matches how the model was pre-trained. If this error is wrong, "
        f"put a {SIDECAR_NAME} holding `true` or `false` beside the checkpoint, or fix the flag."
    )


# --------------------------------------------------------------------------- text and vocab


def convert_to_unicode(text: str | bytes) -> str:
    """Converts `text` to str (if it's not already), assuming utf-8 input."""
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    raise ValueError(f"Unsupported string type: {type(text)}")


def printable_text(text: str | bytes) -> str:
    """Returns text encoded in a way suitable for print or logging (on Python 3: str)."""
    return convert_to_unicode(text)


def load_vocab(vocab_file: str) -> collections.OrderedDict[str, int]:
    """Loads a vocabulary file (one token a line) into an OrderedDict token -> line index.

    Each line is stripped; a blank line is the token "". A token that appears twice keeps the
    index of its last line (and the position of its first), exactly like the original.
    """
    vocab_file = os.fspath(vocab_file)
    try:
        with _open_binary(vocab_file) as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"vocab file {vocab_file}: cannot read it: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"vocab file {vocab_file}: line {line} is not valid UTF-8") from e
    # The original read line by line with GFile.readline, which ends a line only at "\n" (never
    # at "\r", "\x85" or "\u2028", as str.splitlines would).
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise UserError(f"vocab file {vocab_file} is empty")
    vocab: collections.OrderedDict[str, int] = collections.OrderedDict()
    for index, line in enumerate(lines):
        vocab[line.strip()] = index
    return vocab


def convert_by_vocab(vocab: Mapping, items: Iterable, *, vocab_name: str | None = None) -> list:
    """Converts a sequence of tokens or ids using `vocab`; an unknown item is a UserError."""
    try:
        return [vocab[item] for item in items]
    except KeyError as e:
        item = e.args[0]
        kind = "token" if isinstance(item, str) else "id"
        where = f" {vocab_name}" if vocab_name else ""
        raise UserError(
            f"{kind} {item!r} is not in the vocabulary{where} ({len(vocab)} entries)"
        ) from None


def convert_tokens_to_ids(vocab: Mapping[str, int], tokens: Iterable[str]) -> list[int]:
    return convert_by_vocab(vocab, tokens)


def convert_ids_to_tokens(inv_vocab: Mapping[int, str], ids: Iterable[int]) -> list[str]:
    return convert_by_vocab(inv_vocab, ids)


def whitespace_tokenize(text: str) -> list[str]:
    """Runs basic whitespace cleaning and splitting on a piece of text."""
    text = text.strip()
    if not text:
        return []
    return text.split()


class FullTokenizer:
    """Runs end-to-end tokenization: basic, then WordPiece."""

    def __init__(self, vocab_file: str, do_lower_case: bool = True):
        self.vocab_file = os.fspath(vocab_file)
        self.vocab = load_vocab(self.vocab_file)
        self.inv_vocab = {v: k for k, v in self.vocab.items()}
        self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)

    def tokenize(self, text: str | bytes) -> list[str]:
        wordpiece = self.wordpiece_tokenizer.tokenize_word
        split_tokens: list[str] = []
        for token in self.basic_tokenizer.tokenize(text):
            split_tokens.extend(wordpiece(token))
        return split_tokens

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return convert_by_vocab(self.vocab, tokens, vocab_name=self.vocab_file)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return convert_by_vocab(self.inv_vocab, ids, vocab_name=self.vocab_file)


# --------------------------------------------------------------------------- character classes


def _is_whitespace(char: str) -> bool:
    """Checks whether `char` is a whitespace character."""
    # \t, \n, and \r are technically control characters but we treat them as whitespace.
    if char in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    """Checks whether `char` is a control character."""
    # These are technically control characters but we count them as whitespace.
    if char in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
    """Checks whether `char` is a punctuation character."""
    cp = ord(char)
    # All non-letter/number ASCII counts as punctuation: "^", "$" and "`" are not in the Unicode
    # Punctuation class but are treated as punctuation anyway, for consistency.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp: int) -> bool:
    """Checks whether code point `cp` is a CJK ideograph (the CJK Unified Ideographs blocks).

    Hangul, Hiragana and Katakana are not: those scripts write space-separated words.
    """
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


_TABLE_LIMIT = 1 << 17


class _CharTable(dict):
    """A `str.translate` table that computes each code point's mapping once, on first sight."""

    def __init__(self, rule: Callable[[int], int | str | None]):
        super().__init__()
        self._rule = rule

    def __missing__(self, cp: int) -> int | str | None:
        value = self._rule(cp)
        if len(self) < _TABLE_LIMIT:  # bounded memory whatever the input
            self[cp] = value
        return value


def _clean_rule(cp: int) -> int | str | None:
    # _clean_text then _tokenize_chinese_chars, composed per character: cleaning maps a char to
    # nothing, " " or itself, and neither nothing nor " " is a CJK ideograph.
    char = chr(cp)
    if cp == 0 or cp == 0xFFFD or _is_control(char):
        return None
    if _is_whitespace(char):
        return " "
    if _is_chinese_char(cp):
        return f" {char} "
    return cp


def _accent_rule(cp: int) -> int | None:
    return None if unicodedata.category(chr(cp)) == "Mn" else cp


def _punct_rule(cp: int) -> int | str:
    # Spaces around a punctuation mark, then one split(), give the same pieces as the original's
    # _run_split_on_punc + " ".join + whitespace_tokenize: no punctuation mark is whitespace.
    char = chr(cp)
    return f" {char} " if _is_punctuation(char) else cp


_CLEAN_TABLE = _CharTable(_clean_rule)
_ACCENT_TABLE = _CharTable(_accent_rule)
_PUNCT_TABLE = _CharTable(_punct_rule)


# --------------------------------------------------------------------------- tokenizers


class BasicTokenizer:
    """Runs basic tokenization (punctuation splitting, lower casing, etc.)."""

    def __init__(self, do_lower_case: bool = True):
        self.do_lower_case = do_lower_case

    def tokenize(self, text: str | bytes) -> list[str]:
        """Tokenizes a piece of text."""
        text = convert_to_unicode(text).translate(_CLEAN_TABLE)
        if self.do_lower_case:
            if text.isascii():
                # ASCII: lower() is per character and NFD changes nothing, so the whole text can
                # go at once.
                text = text.lower()
            else:
                # Per whitespace token, as the original: str.lower() looks at neighbours (Greek
                # final sigma).
                text = " ".join(
                    tok.lower()
                    if tok.isascii()
                    else unicodedata.normalize("NFD", tok.lower()).translate(_ACCENT_TABLE)
                    for tok in text.split()
                )
        return text.translate(_PUNCT_TABLE).split()

    def _reference_tokenize(self, text: str | bytes) -> list[str]:
        """The original's step-by-step algorithm; `tokenize` must always agree with it."""
        text = convert_to_unicode(text)
        text = self._clean_text(text)
        # Added November 1st, 2018 for the multilingual and Chinese models; harmless for English.
        text = self._tokenize_chinese_chars(text)
        split_tokens = []
        for token in whitespace_tokenize(text):
            if self.do_lower_case:
                token = token.lower()
                token = self._run_strip_accents(token)
            split_tokens.extend(self._run_split_on_punc(token))
        return whitespace_tokenize(" ".join(split_tokens))

    def _run_strip_accents(self, text: str) -> str:
        """Strips accents from a piece of text."""
        text = unicodedata.normalize("NFD", text)
        return "".join(c for c in text if unicodedata.category(c) != "Mn")

    def _run_split_on_punc(self, text: str) -> list[str]:
        """Splits punctuation on a piece of text."""
        output: list[list[str]] = []
        start_new_word = True
        for char in text:
            if _is_punctuation(char):
                output.append([char])
                start_new_word = True
            else:
                if start_new_word:
                    output.append([])
                start_new_word = False
                output[-1].append(char)
        return ["".join(x) for x in output]

    def _tokenize_chinese_chars(self, text: str) -> str:
        """Adds whitespace around any CJK character."""
        return "".join(f" {c} " if _is_chinese_char(ord(c)) else c for c in text)

    def _is_chinese_char(self, cp: int) -> bool:
        return _is_chinese_char(cp)

    def _clean_text(self, text: str) -> str:
        """Performs invalid character removal and whitespace cleanup on text."""
        output = []
        for char in text:
            cp = ord(char)
            if cp == 0 or cp == 0xFFFD or _is_control(char):
                continue
            output.append(" " if _is_whitespace(char) else char)
        return "".join(output)


class WordpieceTokenizer:
    """Runs WordPiece tokenization."""

    def __init__(
        self,
        vocab: Mapping[str, int],
        unk_token: str = "[UNK]",
        max_input_chars_per_word: int = 200,
    ):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize(self, text: str | bytes) -> list[str]:
        """Tokenizes whitespace-separated words into word pieces, greedy longest-match-first.

        For example "unaffable" -> ["un", "##aff", "##able"]. `text` should already have been
        through `BasicTokenizer`. A word longer than `max_input_chars_per_word`, or one that
        cannot be covered by vocab pieces, becomes `unk_token`.
        """
        output_tokens: list[str] = []
        for token in whitespace_tokenize(convert_to_unicode(text)):
            output_tokens.extend(self.tokenize_word(token))
        return output_tokens

    def tokenize_word(self, token: str) -> list[str]:
        """Word pieces of one word (no whitespace in it)."""
        n = len(token)
        if n > self.max_input_chars_per_word:
            return [self.unk_token]
        if n == 0:
            return []
        vocab = self.vocab
        if token in vocab:  # the common case: a whole word in the vocab
            return [token]
        sub_tokens = []
        start = 0
        while start < n:
            end = n
            cur_substr = None
            while start < end:
                substr = token[start:end]
                if start > 0:
                    substr = "##" + substr
                if substr in vocab:
                    cur_substr = substr
                    break
                end -= 1
            if cur_substr is None:
                return [self.unk_token]
            sub_tokens.append(cur_substr)
            start = end
        return sub_tokens
