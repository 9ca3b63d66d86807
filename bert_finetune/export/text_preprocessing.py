"""BERT's tokenizer as TensorFlow ops: `tokenization.FullTokenizer`'s ids, in the graph.

`BertPreprocessor` turns a string tensor [B] into word piece ids and packs them as
`run_classifier.py` does (`[CLS] a [SEP] b [SEP]`, `_truncate_seq_pair`, zero padding to T). It
survives SavedModel export and serving, which `tf.numpy_function` does not.

tensorflow_text's stock `BertTokenizer`/`FastBertTokenizer` are not id-identical to the original
(compatibility case folding, control characters turned into spaces, U+FFFD kept, a word limit in
bytes), so the basic tokenizer is rebuilt step by step from `tf.strings` ops, with character
classes generated from this Python's `unicodedata` (the tables `FullTokenizer` itself uses):

  decode (invalid UTF-8 dropped) -> drop NUL, U+FFFD, Cc/Cf (not \\t \\n \\r) -> whitespace to " "
  -> spaces around CJK ideographs -> [lower-case (full mapping, final sigma) -> NFD -> drop Mn]
  -> spaces around punctuation -> split on whitespace -> a word over 200 characters is [UNK]
  -> tensorflow_text.FastWordpieceTokenizer (greedy longest match first, no normalisation of its
  own, pre-tokenized input).

A graph holding these ops loads only after `import tensorflow_text` (its ops register on import).

Shape legend: B = batch size, W = words of a text, P = word pieces of a text, T = seq_len.
"""

from __future__ import annotations

import functools
import unicodedata

import tensorflow as tf

from bert_finetune import tokenization
from bert_finetune.errors import UserError

MAX_INPUT_CHARS_PER_WORD = 200  # the original WordpieceTokenizer's limit, in characters
PAIR_SEPARATOR = "|||"
_MAX_UNICODE = 0x110000


def import_tensorflow_text():
    """`tensorflow_text` (registers its ops), or a UserError saying how to get it."""
    try:
        import tensorflow_text  # noqa: F401  (registers the FastWordpiece ops)
    except ImportError as e:
        raise UserError("in-graph tokenization needs tensorflow-text "
                        f"(`pip install tensorflow-text`): {e}") from None
    return tensorflow_text


# -- character classes (from Python's unicodedata: the tables FullTokenizer uses) --------------
def _ranges(codepoints: list[int]) -> list[tuple[int, int]]:
    """Sorted code points -> inclusive (first, last) runs."""
    out: list[tuple[int, int]] = []
    for cp in codepoints:
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


def _char_class(codepoints: list[int]) -> str:
    """An RE2 character class `[...]` matching exactly `codepoints`."""
    parts = [f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}"
             for a, b in _ranges(codepoints)]
    return "[" + "".join(parts) + "]"


@functools.cache
def _patterns() -> dict[str, str]:
    """The regexes of `basic_tokenize`, from one pass over every code point (~1 s)."""
    classes: dict[str, list[int]] = {k: [] for k in ("removed", "whitespace", "cjk", "marks",
                                                     "punct", "split_space")}
    category = unicodedata.category
    is_cjk = tokenization._is_chinese_char
    # The tokenizer's predicates, inlined on one category lookup (tests check them against
    # FullTokenizer on every code point).
    for cp in range(_MAX_UNICODE):
        if 0xD800 <= cp <= 0xDFFF:  # surrogates never occur in valid UTF-8
            continue
        char = chr(cp)
        cat = category(char)
        if cp == 0xFFFD:  # the replacement character (category So)
            classes["removed"].append(cp)
        elif cat[0] in "CZ":
            if cp == 0 or (cat in ("Cc", "Cf") and char not in "\t\n\r"):
                classes["removed"].append(cp)
            elif char in " \t\n\r" or cat == "Zs":
                classes["whitespace"].append(cp)
            elif char.isspace():
                # What str.split() still splits on after cleaning (U+2028, U+2029), not " ".
                classes["split_space"].append(cp)
        elif cat == "Mn":
            classes["marks"].append(cp)
        elif cat[0] == "P" or (cp < 128 and tokenization._is_punctuation(char)):
            classes["punct"].append(cp)
        if cp >= 0x3400 and is_cjk(cp):
            classes["cjk"].append(cp)
    out = {name: _char_class(cps) for name, cps in classes.items()}
    out["cjk"] = f"({out['cjk']})"
    out["punct"] = f"({out['punct']})"
    return out


@functools.cache
def _lower_fixes() -> dict[str, str]:
    """{char: str.lower(char)} where TensorFlow's ICU lower-cases a character differently.

    ICU and this Python's `unicodedata` may be different Unicode versions (TF 2.21's ICU does
    not know the case pairs Unicode 14 added, e.g. U+2C2F): those letters are patched in the
    graph. The other way round, characters this Python does not know at all (category Cn) may be
    normalised by a newer ICU; FullTokenizer passes them through unchanged.
    """
    chars = [chr(cp) for cp in range(1, _MAX_UNICODE) if not 0xD800 <= cp <= 0xDFFF]
    with tf.init_scope():  # eager, even when first called while tracing
        lowered = tf.strings.lower(tf.constant([c.encode() for c in chars]), encoding="utf-8")
    return {char: char.lower() for char, low in zip(chars, lowered.numpy(), strict=True)
            if low.decode("utf-8") != char.lower()}


def _patch_lower(text: tf.Tensor) -> tf.Tensor:
    """str.lower() for the letters TF's ICU does not know, on the (rare) texts that have them."""
    fixes = _lower_fixes()
    if not fixes:
        return text
    has = tf.strings.regex_full_match(text, "(?s).*" + _char_class(sorted(map(ord, fixes))) + ".*")
    rows = tf.where(has)  # [R, 1]
    sub = tf.gather_nd(text, rows)
    one_to_one = {ord(c): ord(lo) for c, lo in fixes.items() if len(lo) == 1}
    for char, lower in fixes.items():  # none on TF 2.21: all its gaps are single letters
        if ord(char) not in one_to_one:
            sub = tf.strings.regex_replace(sub, f"\\x{{{ord(char):X}}}", lower)
    if one_to_one:
        keys = sorted(one_to_one)
        cps = tf.strings.unicode_decode(sub, "UTF-8")  # [R, (C)] int32
        flat = cps.flat_values
        at = tf.minimum(tf.searchsorted(tf.constant(keys, tf.int32), flat), len(keys) - 1)
        hit = tf.gather(tf.constant(keys, tf.int32), at) == flat
        mapped = tf.where(hit, tf.gather(tf.constant([one_to_one[k] for k in keys]), at), flat)
        sub = tf.strings.unicode_encode(cps.with_flat_values(mapped), "UTF-8")
    return tf.tensor_scatter_nd_update(text, rows, sub)


# -- the graph ops ------------------------------------------------------------------------------
def basic_tokenize(text: tf.Tensor, do_lower_case: bool) -> tf.RaggedTensor:
    """`BasicTokenizer.tokenize` on a string tensor [B] -> words, a string RaggedTensor [B, (W)]."""
    tf_text = import_tensorflow_text()
    p = _patterns()
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="ignore")
    text = tf.strings.regex_replace(text, p["removed"], "")
    text = tf.strings.regex_replace(text, p["whitespace"], " ")
    text = tf.strings.regex_replace(text, p["cjk"], r" \1 ")
    if do_lower_case:
        # ICU's full lower-casing, like str.lower() (final sigma, U+0130); the original lowers
        # one whitespace token at a time, and a space ends a final-sigma context in both.
        text = tf.strings.lower(_patch_lower(text), encoding="utf-8")
        text = tf_text.normalize_utf8(text, "NFD")
        text = tf.strings.regex_replace(text, p["marks"], "")
    text = tf.strings.regex_replace(text, p["punct"], r" \1 ")
    text = tf.strings.regex_replace(text, p["split_space"], " ")
    return tf.strings.split(text)  # on runs of whitespace, no empty words


def _fast_wordpiece_vocab(vocab: dict[str, int], unk_token: str) -> list[str]:
    """The vocab as a list whose index is the id `load_vocab` gives each token.

    `load_vocab` keeps a repeated token's last line and reads a blank line as the token "";
    those lines (and ids with no token) become placeholders no word can match (words have no
    spaces).
    """
    size = max(vocab.values()) + 1
    tokens = [f" [unreachable {i}] " for i in range(size)]
    for token, index in vocab.items():
        if token:
            tokens[index] = token
    if unk_token not in vocab:
        raise UserError(f"the vocabulary has no {unk_token} token")
    return tokens


class BertPreprocessor(tf.Module):
    """Raw text -> `input_ids`, `input_mask`, `segment_ids` [B, T] int32, as FullTokenizer +
    `convert_single_example` make them.

    Example:
      pre = BertPreprocessor("vocab.txt", do_lower_case=True, seq_len=128)
      pre.tokenize(tf.constant(["Hello!"]))           # int32 RaggedTensor [B, (P)]
      pre(tf.constant(["a question ||| a passage"]))  # dict of [B, T] int32
    """

    def __init__(self, vocab_file: str, do_lower_case: bool = True, seq_len: int = 128,
                 unk_token: str = "[UNK]", name: str | None = None):
        super().__init__(name=name)
        tf_text = import_tensorflow_text()
        if seq_len < 3:
            raise UserError(f"seq_len={seq_len} leaves no room for text ([CLS] and [SEP] take 2)")
        vocab = tokenization.load_vocab(vocab_file)
        for token in ("[CLS]", "[SEP]", unk_token):
            if token not in vocab:
                raise UserError(f"vocab file {vocab_file} has no {token} token")
        self.do_lower_case = bool(do_lower_case)
        self.seq_len = int(seq_len)
        self.unk_token = unk_token
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.unk_id = vocab[unk_token]
        # Word length is checked in characters before this (the original's rule), so the byte
        # limit here never decides: 4 bytes is the longest UTF-8 character.
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=_fast_wordpiece_vocab(vocab, unk_token), suffix_indicator="##",
            max_bytes_per_word=4 * MAX_INPUT_CHARS_PER_WORD, token_out_type=tf.int32,
            unknown_token=unk_token, no_pretokenization=True)

    def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
        """FullTokenizer ids of each text: string [B] -> int32 RaggedTensor [B, (P)]."""
        words = basic_tokenize(tf.convert_to_tensor(text, tf.string), self.do_lower_case)
        return self.word_pieces(words).merge_dims(1, 2)

    def word_pieces(self, words: tf.RaggedTensor, with_offsets: bool = False):
        """WordpieceTokenizer on BasicTokenizer words: string [B, (W)] -> int32 [B, (W), (P)].

        With `with_offsets`, also (begin, end) byte offsets [B, (W), (P)] of each piece in its
        word (a word over 200 characters is one [UNK] piece whose offsets are meaningless).
        """
        lengths = tf.strings.length(words.flat_values, unit="UTF8_CHAR")
        flat = tf.where(lengths > MAX_INPUT_CHARS_PER_WORD, self.unk_token, words.flat_values)
        words = words.with_flat_values(flat)
        if with_offsets:
            return self._wordpiece.tokenize_with_offsets(words)
        return self._wordpiece.tokenize(words)

    def pack(self, ids_a: tf.RaggedTensor,
             ids_b: tf.RaggedTensor | None = None) -> dict[str, tf.Tensor]:
        """`convert_single_example`'s packing of word piece ids into [B, T] int32 features."""
        return pack_inputs(ids_a, ids_b, self.seq_len, self.cls_id, self.sep_id)

    def __call__(self, text_a: tf.Tensor, text_b: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Texts [B] (and second texts [B]) -> features [B, T]; see `split_pairs` for "a ||| b"."""
        if text_b is None:
            return self.pack(self.tokenize(text_a))
        # One tokenization of both halves: half the ops to trace.
        ids = self.tokenize(tf.concat([text_a, text_b], axis=0))  # [2B, (P)]
        batch = tf.shape(text_a)[0]
        return self.pack(ids[:batch], ids[batch:])


def split_pairs(text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """"a ||| b" -> ("a", "b") at the first `|||`; a text without it -> (text, "").

    An empty second text (no tokens) packs as a single sequence, as in the original.
    """
    parts = tf.strings.split(text, PAIR_SEPARATOR, maxsplit=1)  # [B, (1 or 2)]
    padded = parts.to_tensor(default_value="", shape=[None, 2])
    return padded[:, 0], padded[:, 1]


def truncated_lengths(len_a: tf.Tensor, len_b: tf.Tensor, max_length: int | tf.Tensor):
    """Lengths `_truncate_seq_pair` leaves (it pops from the longer, from b on ties)."""
    m = tf.cast(max_length, len_a.dtype)
    ceil_half, floor_half = (m + 1) // 2, m // 2
    fits = len_a + len_b <= m
    new_a = tf.minimum(len_a, tf.maximum(m - len_b, ceil_half))
    new_b = tf.minimum(len_b, tf.maximum(m - len_a, floor_half))
    return tf.where(fits, len_a, new_a), tf.where(fits, len_b, new_b)


def _scatter_pieces(ids: tf.RaggedTensor, keep: tf.Tensor, offset: tf.Tensor):
    """(indices [K, 2], values [K]) putting each row's first `keep` ids at offset + position."""
    rows = ids.value_rowids()  # [N] row of each id
    pos = tf.range(tf.size(rows, out_type=tf.int64)) - tf.gather(ids.row_starts(), rows)
    kept = pos < tf.gather(keep, rows)
    rows, pos = tf.boolean_mask(rows, kept), tf.boolean_mask(pos, kept)
    indices = tf.stack([rows, tf.gather(offset, rows) + pos], axis=1)
    return indices, tf.boolean_mask(ids.flat_values, kept)


def pack_inputs(ids_a: tf.RaggedTensor, ids_b: tf.RaggedTensor | None, seq_len: int,
                cls_id: int, sep_id: int) -> dict[str, tf.Tensor]:
    """`[CLS] a [SEP] (b [SEP])`, truncated as the original, zero padded to [B, T] int32.

    A row whose b has no tokens is a single sequence (as `if tokens_b:` in the original).
    Built with dense scatters (no ragged concatenation): quick to trace and to run.
    """
    ids_a = tf.cast(ids_a, tf.int32)
    len_a = ids_a.row_lengths()  # [B] int64
    if ids_b is None:
        ids_b = tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int32),
                                                 tf.zeros_like(len_a), validate=False)
    ids_b = tf.cast(ids_b, tf.int32)
    len_b = ids_b.row_lengths()
    is_pair = len_b > 0
    pair_a, pair_b = truncated_lengths(len_a, len_b, seq_len - 3)
    keep_a = tf.where(is_pair, pair_a, tf.minimum(len_a, seq_len - 2))
    keep_b = tf.where(is_pair, pair_b, tf.zeros_like(len_b))
    batch = tf.shape(len_a, out_type=tf.int64)[0]
    rows = tf.range(batch)
    one = tf.ones_like(len_a)
    sep_at = 1 + keep_a  # [B]
    total = 2 + keep_a + tf.where(is_pair, keep_b + 1, tf.zeros_like(keep_b))  # [B]
    idx_a, val_a = _scatter_pieces(ids_a, keep_a, one)
    idx_b, val_b = _scatter_pieces(ids_b, keep_b, sep_at + 1)
    pair_rows = tf.boolean_mask(rows, is_pair)
    idx_sep_b = tf.stack([pair_rows, tf.boolean_mask(total, is_pair) - 1], axis=1)
    specials = tf.concat([tf.stack([rows, 0 * one], 1), tf.stack([rows, sep_at], 1)], 0)
    indices = tf.concat([specials, idx_a, idx_b, idx_sep_b], 0)
    values = tf.concat([tf.fill([batch], cls_id), tf.fill([batch], sep_id), val_a, val_b,
                        tf.fill(tf.shape(pair_rows), sep_id)], 0)
    shape = tf.stack([batch, tf.constant(seq_len, tf.int64)])
    input_ids = tf.scatter_nd(indices, values, shape)  # [B, T]
    segment_indices = tf.concat([idx_b, idx_sep_b], 0)
    segment_ids = tf.scatter_nd(segment_indices, tf.ones(tf.shape(segment_indices)[:1], tf.int32),
                                shape)
    input_mask = tf.cast(tf.range(seq_len, dtype=tf.int64)[tf.newaxis] < total[:, tf.newaxis],
                         tf.int32)
    static = [None, seq_len]
    return {"input_ids": tf.ensure_shape(input_ids, static),
            "input_mask": tf.ensure_shape(input_mask, static),
            "segment_ids": tf.ensure_shape(segment_ids, static)}
