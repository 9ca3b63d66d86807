"""Tokenization: the original's tokenization_test.py cases, parity with a real uncased vocab on the
MiniLM reference inputs, the fast path against the original's step-by-step algorithm, vocab and
casing-check errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from bert_finetune import tokenization
from bert_finetune.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "data" / "reference" / "minilm_reference.npz"
MAX_SEQ = 128

TEN_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ","]


def _write_vocab(path: Path, tokens: list[str]) -> str:
    path.write_bytes("".join(t + "\n" for t in tokens).encode("utf-8"))
    return str(path)


@pytest.fixture
def ten_vocab_file(tmp_path: Path) -> str:
    return _write_vocab(tmp_path / "vocab.txt", TEN_TOKENS)


# --------------------------------------------------------------------------- the original's tests


def test_full_tokenizer(ten_vocab_file):
    tokenizer = tokenization.FullTokenizer(ten_vocab_file)
    tokens = tokenizer.tokenize("UNwant\u00e9d,running")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tokenizer.convert_tokens_to_ids(tokens) == [7, 4, 5, 10, 8, 9]
    assert tokenizer.convert_ids_to_tokens([7, 4, 5, 10, 8, 9]) == tokens
    assert tokenizer.tokenize(b"UNwant\xc3\xa9d,running") == tokens  # bytes are utf-8


def test_full_tokenizer_without_lower_case(ten_vocab_file):
    tokenizer = tokenization.FullTokenizer(ten_vocab_file, do_lower_case=False)
    # No lower-casing means no accent stripping either: "\u00e9" stays and the word is [UNK].
    assert tokenizer.tokenize("UNwant\u00e9d,running") == ["[UNK]", ",", "runn", "##ing"]
    assert tokenizer.tokenize("unwanted,running") == ["un", "##want", "##ed", ",", "runn", "##ing"]


def test_chinese():
    tokenizer = tokenization.BasicTokenizer()
    assert tokenizer.tokenize("ah\u535a\u63a8zz") == ["ah", "\u535a", "\u63a8", "zz"]


def test_basic_tokenizer_lower():
    tokenizer = tokenization.BasicTokenizer(do_lower_case=True)
    assert tokenizer.tokenize(" \tHeLLo!how  \n Are yoU?  ") == [
        "hello",
        "!",
        "how",
        "are",
        "you",
        "?",
    ]
    assert tokenizer.tokenize("H\u00e9llo") == ["hello"]


def test_basic_tokenizer_no_lower():
    tokenizer = tokenization.BasicTokenizer(do_lower_case=False)
    assert tokenizer.tokenize(" \tHeLLo!how  \n Are yoU?  ") == [
        "HeLLo",
        "!",
        "how",
        "Are",
        "yoU",
        "?",
    ]
    assert tokenizer.tokenize("H\u00e9llo") == ["H\u00e9llo"]


def test_wordpiece_tokenizer():
    vocab = {t: i for i, t in enumerate(TEN_TOKENS[:10])}
    tokenizer = tokenization.WordpieceTokenizer(vocab=vocab)
    assert tokenizer.tokenize("") == []
    assert tokenizer.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tokenizer.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]


def test_wordpiece_max_input_chars_per_word():
    vocab = {"[UNK]": 0, "a": 1, "##a": 2}
    tokenizer = tokenization.WordpieceTokenizer(vocab=vocab)
    assert tokenizer.tokenize("a" * 200) == ["a"] + ["##a"] * 199
    assert tokenizer.tokenize("a" * 201) == ["[UNK]"]
    short = tokenization.WordpieceTokenizer(
        vocab=vocab, unk_token="<unk>", max_input_chars_per_word=3
    )
    assert short.tokenize("aaa aaaa b") == ["a", "##a", "##a", "<unk>", "<unk>"]


def test_convert_tokens_to_ids():
    vocab = {t: i for i, t in enumerate(TEN_TOKENS[:10])}
    ids = tokenization.convert_tokens_to_ids(vocab, ["un", "##want", "##ed", "runn", "##ing"])
    assert ids == [7, 4, 5, 8, 9]
    inv = {i: t for t, i in vocab.items()}
    assert tokenization.convert_ids_to_tokens(inv, np.array(ids)) == [
        "un",
        "##want",
        "##ed",
        "runn",
        "##ing",
    ]


def test_is_whitespace():
    for c in (" ", "\t", "\r", "\n", "\u00a0", "\u3000"):
        assert tokenization._is_whitespace(c), repr(c)
    for c in ("A", "-", "\u2028", "\x0b"):  # Zl and \v are not Zs
        assert not tokenization._is_whitespace(c), repr(c)


def test_is_control():
    for c in ("\u0005", "\x00", "\x7f", "\u200b", "\u00ad"):  # Cc and Cf
        assert tokenization._is_control(c), repr(c)
    for c in ("A", " ", "\t", "\r", "\n", "\ue000", "\ud800"):  # Co and Cs are not
        assert not tokenization._is_control(c), repr(c)


def test_is_punctuation():
    for c in ("-", "$", "`", ".", "^", "~", "\u2014", "\u00bf", "\u2026", "\u3002"):
        assert tokenization._is_punctuation(c), repr(c)
    for c in ("A", " ", "0", "\u00e9", "\u535a", "\u00a2"):  # U+00A2 cent is Sc, not P
        assert not tokenization._is_punctuation(c), repr(c)


# --------------------------------------------------------------------------- cleaning and CJK


def test_clean_text_drops_controls_nul_and_replacement_char():
    tokenizer = tokenization.BasicTokenizer(do_lower_case=False)
    text = "tab\there\x00null\x07bell\r\nnew\u200bzero\u00adsoft \ufffdrepl\x1fend"
    assert tokenizer.tokenize(text) == ["tab", "herenullbell", "newzerosoft", "replend"]


def test_cjk_ranges_are_the_originals():
    inside = [
        0x4E00,
        0x9FFF,
        0x3400,
        0x4DBF,
        0x20000,
        0x2A6DF,
        0x2A700,
        0x2B73F,
        0x2B740,
        0x2B81F,
        0x2B820,
        0x2CEAF,
        0xF900,
        0xFAFF,
        0x2F800,
        0x2FA1F,
    ]
    outside = [0x4DFF, 0x3041, 0x30BF, 0xAC00, 0x2CEB0, 0x30000, 0x2FA20, 0xF8FF, 0xFB00]
    assert all(tokenization._is_chinese_char(cp) for cp in inside)
    assert not any(tokenization._is_chinese_char(cp) for cp in outside)
    # Katakana and Hangul are not split per character.
    tokenizer = tokenization.BasicTokenizer(do_lower_case=False)
    assert tokenizer.tokenize("\u6771\u4eac\u30bf\u30ef\u30fc \uc548\ub155") == [
        "\u6771",
        "\u4eac",
        "\u30bf\u30ef\u30fc",
        "\uc548\ub155",
    ]


def test_accents_stripped_only_when_lower_casing():
    lower = tokenization.BasicTokenizer(do_lower_case=True)
    cased = tokenization.BasicTokenizer(do_lower_case=False)
    text = "Na\u00efve \u00c5ngstr\u00f6m Stra\u00dfe"
    assert lower.tokenize(text) == ["naive", "angstrom", "stra\u00dfe"]  # ß has no decomposition
    assert cased.tokenize(text) == ["Na\u00efve", "\u00c5ngstr\u00f6m", "Stra\u00dfe"]
    # NFD can produce ASCII punctuation (U+2260 -> "=" + U+0338), which is then split off.
    assert lower.tokenize("a\u2260b") == ["a", "=", "b"]


def test_greek_final_sigma_is_lowered_per_word():
    # str.lower() is context-sensitive for Σ; the original lowers each whitespace token alone.
    tokenizer = tokenization.BasicTokenizer(do_lower_case=True)
    assert tokenizer.tokenize("\u039f\u0394\u039f\u03a3 \u03a3\u0391") == [
        "\u03bf\u03b4\u03bf\u03c2",
        "\u03c3\u03b1",
    ]
    assert tokenizer.tokenize("\u039f\u03a3.\u03a3") == tokenizer._reference_tokenize(
        "\u039f\u03a3.\u03a3"
    )


def _random_texts(n: int, seed: int) -> list[str]:
    """Strings mixing the characters each step treats specially with random code points."""
    rng = random.Random(seed)
    special = (
        " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000"  # whitespace-ish
        "\x00\x07\x7f\u200b\u200d\u00ad\ufeff\ufffd\ud800\ue000"  # controls, format, odd
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u2014\u2026\u00bf\u3002\u00a2\u00a7"  # punctuation
        "\u0301\u0308\u0338\u20dd\u2260\u00e9\u00c5\u0130\u00df\ufb01\u1e9e"  # marks, casing
        "\u03a3\u03c3\u03c2\u0391\u039f"  # Greek sigma
        "\u535a\u63a8\uf900\ufa6d\U00020000\U0002f800\u30bf\uac00\U0001f642"  # CJK and others
        "aAzZ09"
    )
    texts = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(0, 40)):
            r = rng.random()
            if r < 0.6:
                chars.append(rng.choice(special))
            elif r < 0.8:
                chars.append(chr(rng.randrange(0x20, 0x250)))
            else:
                chars.append(chr(rng.randrange(0, 0x110000)))
        texts.append("".join(chars))
    return texts


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fast_path_equals_original_algorithm(do_lower_case):
    tokenizer = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
    for text in _random_texts(3000, seed=1234 + do_lower_case):
        assert tokenizer.tokenize(text) == tokenizer._reference_tokenize(text), ascii(text)


def test_fast_path_equals_original_on_every_bmp_char():
    # One string per block of 256 code points, each char separated and also run together.
    for do_lower_case in (True, False):
        tokenizer = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
        for block in range(0, 0x10000, 256):
            chars = [chr(cp) for cp in range(block, block + 256)]
            for text in (" ".join(chars), "x".join(chars), "".join(chars)):
                assert tokenizer.tokenize(text) == tokenizer._reference_tokenize(text), hex(block)


# --------------------------------------------------------------------------- vocab files


def test_load_vocab_strips_lines_and_keeps_blank_ones(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(
        b"[PAD]\r\n  a  \n\nb\rc\n\xc3\xa9"
    )  # CRLF, spaces, blank, lone CR, no final \n
    vocab = tokenization.load_vocab(str(path))
    assert list(vocab.items()) == [("[PAD]", 0), ("a", 1), ("", 2), ("b\rc", 3), ("\u00e9", 4)]


def test_load_vocab_duplicate_keeps_last_index(tmp_path):
    path = _write_vocab(tmp_path / "vocab.txt", ["[UNK]", "a", "b", "a"])
    vocab = tokenization.load_vocab(path)
    assert list(vocab.items()) == [("[UNK]", 0), ("a", 3), ("b", 2)]
    tokenizer = tokenization.FullTokenizer(path)
    assert tokenizer.inv_vocab == {0: "[UNK]", 2: "b", 3: "a"}  # as the original: no id 1


def test_load_vocab_missing_file(tmp_path):
    path = str(tmp_path / "nope" / "vocab.txt")
    with pytest.raises(UserError, match="nope/vocab.txt"):
        tokenization.load_vocab(path)
    with pytest.raises(UserError, match="nope/vocab.txt"):
        tokenization.FullTokenizer(path)


def test_load_vocab_directory(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path)):
        tokenization.load_vocab(str(tmp_path))


def test_load_vocab_empty_file(tmp_path):
    path = tmp_path / "empty_vocab.txt"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="empty_vocab.txt is empty"):
        tokenization.load_vocab(str(path))


def test_load_vocab_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"[UNK]\ncaf\xe9\n")
    with pytest.raises(UserError, match="latin1.txt: line 2 is not valid UTF-8") as e:
        tokenization.load_vocab(str(path))
    assert "\n" not in str(e.value)


def test_unknown_token_and_id_are_user_errors(ten_vocab_file):
    tokenizer = tokenization.FullTokenizer(ten_vocab_file)
    with pytest.raises(UserError, match=r"token '\[MASK\]' is not in the vocabulary .*vocab.txt"):
        tokenizer.convert_tokens_to_ids(["un", "[MASK]"])
    with pytest.raises(UserError, match="id 99 is not in the vocabulary"):
        tokenizer.convert_ids_to_tokens([1, 99])
    with pytest.raises(UserError, match="'zz' is not in the vocabulary"):
        tokenization.convert_tokens_to_ids({"a": 0}, ["zz"])


def test_text_helpers():
    assert tokenization.convert_to_unicode("x\u00e9") == "x\u00e9"
    assert tokenization.convert_to_unicode(b"x\xc3\xa9\xff") == "x\u00e9"  # bad bytes ignored
    assert tokenization.printable_text(b"\xc3\xa9") == "\u00e9"
    with pytest.raises(ValueError, match="Unsupported string type"):
        tokenization.convert_to_unicode(3)
    assert tokenization.whitespace_tokenize("  a \u3000b\n") == ["a", "b"]
    assert tokenization.whitespace_tokenize(" \t ") == []


# --------------------------------------------------------------------------- casing check

SMALL_BERTS = [
    f"uncased_L-{layers}_H-{h}_A-{a}"
    for layers in (2, 4, 6, 8, 10, 12)
    for h, a in ((128, 2), (256, 4), (512, 8), (768, 12))
]
UNCASED = [
    "uncased_L-24_H-1024_A-16",
    "uncased_L-12_H-768_A-12",
    "multilingual_L-12_H-768_A-12",
    "chinese_L-12_H-768_A-12",
    "wwm_uncased_L-24_H-1024_A-16",
    *SMALL_BERTS,
]
CASED = [
    "cased_L-12_H-768_A-12",
    "cased_L-24_H-1024_A-16",
    "multi_cased_L-12_H-768_A-12",
    "wwm_cased_L-24_H-1024_A-16",
]


def test_small_bert_list_has_24_names():
    assert len(set(SMALL_BERTS)) == 24


@pytest.mark.parametrize("name", UNCASED)
def test_uncased_model_names(name):
    ckpt = f"/models/{name}/bert_model.ckpt"
    tokenization.validate_case_matches_checkpoint(True, ckpt)
    with pytest.raises(UserError) as e:
        tokenization.validate_case_matches_checkpoint(False, ckpt)
    msg = str(e.value)
    assert msg.startswith(f"You passed in `--do_lower_case=False` with `--init_checkpoint={ckpt}`.")
    assert f"`{name}` seems to be a lowercased model" in msg
    assert "`--do_lower_case=True`" in msg and "do_lower_case.txt" in msg and "\n" not in msg


@pytest.mark.parametrize("name", CASED)
def test_cased_model_names(name):
    ckpt = f"gs://bucket/{name}/bert_model.ckpt"
    tokenization.validate_case_matches_checkpoint(False, ckpt)
    with pytest.raises(
        UserError, match=f"`{name}` seems to be a cased model.*--do_lower_case=False"
    ):
        tokenization.validate_case_matches_checkpoint(True, ckpt)


@pytest.mark.parametrize(
    "ckpt",
    [
        None,
        "",
        "/models/my_model/bert_model.ckpt",
        "/models/uncased_L-2_H-256_A-2/bert_model.ckpt",  # not a released combination
        "/models/uncased_L-12_H-768_A-12/model.ckpt-1000",  # the regex wants bert_model.ckpt
    ],
)
def test_unknown_checkpoints_pass(ckpt):
    tokenization.validate_case_matches_checkpoint(True, ckpt)
    tokenization.validate_case_matches_checkpoint(False, ckpt)


def test_sidecar_wins_over_name(tmp_path):
    model_dir = tmp_path / "uncased_L-12_H-768_A-12"
    model_dir.mkdir()
    (model_dir / "do_lower_case.txt").write_text("false\n")
    ckpt = str(model_dir / "bert_model.ckpt")
    tokenization.validate_case_matches_checkpoint(False, ckpt)  # the name alone would refuse
    with pytest.raises(UserError) as e:
        tokenization.validate_case_matches_checkpoint(True, ckpt)
    msg = str(e.value)
    assert "do_lower_case.txt says `false` (a cased model)" in msg
    assert "`--do_lower_case=False`" in msg and "fix " in msg and "\n" not in msg
    # A directory as --init_checkpoint reads the sidecar inside it.
    with pytest.raises(UserError, match="says `false`"):
        tokenization.validate_case_matches_checkpoint(True, str(model_dir))


def test_sidecar_for_unknown_name(tmp_path):
    (tmp_path / "do_lower_case.txt").write_text(" TRUE ")
    ckpt = str(tmp_path / "model.ckpt-100")
    tokenization.validate_case_matches_checkpoint(True, ckpt)
    with pytest.raises(UserError, match="a lowercased model.*`--do_lower_case=True`"):
        tokenization.validate_case_matches_checkpoint(False, ckpt)


def test_read_do_lower_case_sidecar(tmp_path):
    assert tokenization.read_do_lower_case_sidecar(str(tmp_path)) is None
    assert tokenization.read_do_lower_case_sidecar(str(tmp_path / "bert_model.ckpt")) is None
    sidecar = tmp_path / "do_lower_case.txt"
    sidecar.write_text("true\n")
    assert tokenization.read_do_lower_case_sidecar(str(tmp_path)) is True
    assert tokenization.read_do_lower_case_sidecar(str(tmp_path / "vocab.txt")) is True
    assert tokenization.read_do_lower_case_sidecar(str(sidecar)) is True
    sidecar.write_text("False")
    assert tokenization.read_do_lower_case_sidecar(str(tmp_path)) is False
    sidecar.write_text("yes\n")
    with pytest.raises(
        UserError, match="do_lower_case.txt: expected `true` or `false`, found 'yes'"
    ):
        tokenization.read_do_lower_case_sidecar(str(tmp_path))


# --------------------------------------------------------------------------- real vocab parity


# `minilm_weights` comes from conftest.py.


def _truncate_seq_pair(tokens_a: list[str], tokens_b: list[str], max_length: int) -> None:
    """The original's: pop from the longer list (b on a tie) until the pair fits."""
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def test_parity_with_minilm_reference(minilm_weights):
    ref = np.load(REFERENCE)
    tokenizer = tokenization.FullTokenizer(str(minilm_weights / "all-MiniLM-L6-v2" / "vocab.txt"))
    assert len(tokenizer.vocab) == 30522
    for i, (text_a, text_b) in enumerate(zip(ref["text_a"], ref["text_b"], strict=True)):
        tokens_a = tokenizer.tokenize(str(text_a))
        tokens_b = tokenizer.tokenize(str(text_b)) if text_b else []
        if text_b:
            _truncate_seq_pair(tokens_a, tokens_b, MAX_SEQ - 3)
            packed = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
        else:
            packed = ["[CLS]", *tokens_a[: MAX_SEQ - 2], "[SEP]"]
        assert " ".join(packed) == str(ref["tokens"][i]), ref["names"][i]
        real = ref["input_mask"][i] == 1
        assert tokenizer.convert_tokens_to_ids(packed) == ref["input_ids"][i][real].tolist()
        segments = [0] * (len(tokens_a[: MAX_SEQ - 2]) + 2) + [1] * (len(tokens_b) + 1) * bool(
            text_b
        )
        assert segments == ref["segment_ids"][i][real].tolist()


def test_minilm_special_cases(minilm_weights):
    tokenizer = tokenization.FullTokenizer(str(minilm_weights / "all-MiniLM-L6-v2" / "vocab.txt"))
    # Google's tokenizer does not keep special tokens in text (HF's does): "[ cl ##s ]".
    assert tokenizer.tokenize("a [CLS] b") == ["a", "[", "cl", "##s", "]", "b"]
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]"]) == [
        0,
        100,
        101,
        102,
    ]


def test_minilm_checkpoint_sidecar(minilm_weights):
    ckpt = str(minilm_weights / "all-MiniLM-L6-v2-google-ckpt" / "bert_model.ckpt")
    assert tokenization.read_do_lower_case_sidecar(ckpt) is True
    tokenization.validate_case_matches_checkpoint(True, ckpt)
    with pytest.raises(UserError, match="says `true`"):
        tokenization.validate_case_matches_checkpoint(False, ckpt)
