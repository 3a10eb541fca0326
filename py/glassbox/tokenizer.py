"""GPT-2's byte-level BPE tokenizer in pure Python (standard library only).

Built from the two files OpenAI published with GPT-2: ``encoder.json`` (token string -> id)
and ``vocab.bpe`` (the merges, best first). Hugging Face names the same files
``vocab.json`` and ``merges.txt``. The ids agree exactly with Hugging Face ``tokenizers``
(``models.BPE`` + ``pre_tokenizers.ByteLevel(add_prefix_space=False)``) for any string made of
characters the running Python's Unicode version knows (see "Unicode versions" below);
tests/test_tokenizer.py checks that on a broad corpus, on every such code point and on
generated text.

Encoding has three steps:

1. Pre-tokenize: split the text into pieces with GPT-2's pattern
   ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``.
   Pyodide has no ``regex`` module and ``re`` knows no ``\\p{L}``, so each character is
   first replaced by a stand-in of its class (see ``_CharClasses``): ASCII stays itself,
   any other letter becomes ``a``, number ``0``, white space ``\\t``, anything else ``!``.
   The pattern, rewritten with ASCII classes, then runs with ``re`` over that same-length
   stand-in string, and its match spans cut the original text. The stand-ins keep every
   distinction the pattern makes (class, the literal space, the apostrophe and the
   contraction letters), and ``re`` backtracks like Oniguruma, the engine behind
   ``tokenizers``, so the pieces are the same. Classes: ``\\p{L}`` = Unicode categories
   L* (Lu Ll Lt Lm Lo), ``\\p{N}`` = N* (Nd Nl No) from ``unicodedata``; ``\\s`` = the
   Unicode White_Space property (``WHITE_SPACE`` below), which is what Oniguruma uses and
   is NOT ``str.isspace()``: U+001C..U+001F are ``isspace()`` but not White_Space, so they
   count as punctuation here. The pattern is case-sensitive: "I'M" splits as I ' M.
2. Map each piece's UTF-8 bytes to GPT-2's printable stand-in characters
   (``bytes_to_unicode``: a space becomes "Ġ", a newline "Ċ").
3. BPE: merge adjacent symbols, always the best-ranked pair first (leftmost on a tie),
   exactly as ``tokenizers``' ``Word::merge_all`` does, with a heap so that a very long
   word costs O(n log n). Results are cached per piece.

Unicode versions: categories come from the running Python's ``unicodedata`` (CPython 3.11:
Unicode 14.0; Pyodide 0.27 / Python 3.12: 15.0) while ``tokenizers`` 0.23 (Oniguruma) uses
Unicode 16.0. Every letter or number assigned in 15.0-16.0 (e.g. CJK Extension H/I,
Kawi, Garay, Tulu-Tigalari) is "unassigned" to an older Python and so classed as
punctuation here: text containing such characters can split into pieces differently, and
so get different ids, from ``tokenizers``. Nothing assigned in Python's own Unicode
version differs (the tests check every such code point). Encoding and decoding still
round-trip for every string.

``<|endoftext|>`` in the text is plain text (like ``tokenizers``' BPE without special
tokens): it encodes to ``< | end of text | >``; only id 50256 (``eot_id``) is the special
token. Text must be valid Unicode: a lone surrogate raises ``UnicodeEncodeError`` (a
ValueError).
"""

from __future__ import annotations

import heapq
import json
import os
import re
import unicodedata

# GPT-2's pre-tokenizer pattern as published (needs the `regex` module; shown for reference).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Unicode White_Space: what \s means in Oniguruma (and Rust regex). Not str.isspace().
WHITE_SPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
     0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)

# The same pattern over the stand-in string (ASCII only; \s is spelled out because re's \s
# would also take U+001C..U+001F).
_S = r"\t\n\x0b\x0c\r "
_SPLIT = re.compile(
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_S}A-Za-z0-9]+|[{_S}]+(?![^{_S}])|[{_S}]+"
)

EOT_TOKEN = "<|endoftext|>"
_CACHE_LIMIT = 1 << 16  # pieces kept in a Tokenizer's BPE cache before it is emptied


class _CharClasses(dict):
    """Code point -> code point of its class's stand-in, filled lazily; used by str.translate.

    ASCII maps to itself; other letters (L*) to "a", numbers (N*) to "0", White_Space to
    "\\t", everything else to "!". None of the stand-ins is a space, an apostrophe or a
    letter of a contraction, so the pattern treats a stand-in exactly as the original.
    """

    def __missing__(self, cp: int) -> int:
        if cp < 0x80:
            out = cp
        elif cp in WHITE_SPACE:
            out = 0x09
        else:
            major = unicodedata.category(chr(cp))[0]
            out = 0x61 if major == "L" else 0x30 if major == "N" else 0x21
        self[cp] = out
        return out


_CLASSES = _CharClasses()  # cache (depends only on unicodedata)


def pre_tokenize(text: str) -> list[str]:
    """Split ``text`` into GPT-2's pre-token pieces (see the module docstring).

    str -> list[str] whose concatenation is ``text``. BPE never merges across pieces.
    """
    stand_in = text if text.isascii() else text.translate(_CLASSES)
    pieces = []
    start = 0
    for match in _SPLIT.findall(stand_in):
        end = start + len(match)
        pieces.append(text[start:end])
        start = end
    return pieces


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map byte (0..255) -> printable character; ids in encoder.json are spelled in it.

    Printable Latin-1 bytes ("!".."~", "¡".."¬", "®".."ÿ") stand for themselves; the other
    68 take the characters U+0100 onwards in byte order (space -> "Ġ", newline -> "Ċ").
    """
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


# Escapes for characters that would be invisible or would break a view's layout.
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_BIDI_CONTROLS = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def _show_char(ch: str) -> str:
    """One character as display() shows it: itself, or an escape if it is a control."""
    esc = _ESCAPES.get(ch)
    if esc is not None:
        return esc
    cp = ord(ch)
    if cp < 0x20 or 0x7F <= cp <= 0x9F or cp in (0x2028, 0x2029) or cp in _BIDI_CONTROLS:
        if cp <= 0xFF:
            return f"\\x{cp:02x}"
        return f"\\u{cp:04x}"
    return ch


def _utf8_length(lead: int) -> int:
    """Length of the UTF-8 sequence a lead byte starts (0 if it cannot start one)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def display_bytes(data: bytes) -> str:
    """A readable string for one token's bytes (the rules are in ``Tokenizer.display``)."""
    out = []
    i, n = 0, len(data)
    while i < n:
        size = _utf8_length(data[i])
        if size and i + size <= n:
            try:
                out.append(_show_char(data[i:i + size].decode("utf-8")))
                i += size
                continue
            except UnicodeDecodeError:
                pass
        out.append(f"<0x{data[i]:02X}>")
        i += 1
    return "".join(out)


BUILD_STEP = 10_000  # merges or tokens per step of Tokenizer.from_bytes_steps


def run_steps(steps):
    """Run a generator of steps (like ``Tokenizer.from_bytes_steps``) to its end; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


class Tokenizer:
    """GPT-2 byte-level BPE: text <-> token ids (V = ``vocab_size`` ids, 0..V-1).

    Build with ``Tokenizer.from_bytes(encoder_json, vocab_bpe)`` or ``from_folder(path)``.
    """

    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]]):
        """encoder: token string (byte-level characters) -> id; merges: pairs, best first."""
        for _ in self._build(encoder, merges):
            pass

    def _build(self, encoder: dict[str, int], merges: list[tuple[str, str]], step: int = BUILD_STEP):
        """__init__'s work as a generator that yields after every ``step`` merges or tokens
        (``from_bytes_steps``)."""
        ids = sorted(encoder.values())
        if ids != list(range(len(ids))):
            raise ValueError("encoder ids must be exactly 0..V-1, each once")
        byte_chars = bytes_to_unicode()
        missing = [b for b, ch in byte_chars.items() if ch not in encoder]
        if missing:
            raise ValueError(
                f"encoder lacks single-byte tokens for bytes {missing[:8]}: not a byte-level BPE vocabulary"
            )
        yield
        self._encoder = encoder
        self._merges: dict[tuple[str, str], tuple[int, int]] = {}  # pair -> (rank, merged id)
        for rank, (left, right) in enumerate(merges):
            merged = encoder.get(left + right)
            if merged is None or left not in encoder or right not in encoder:
                raise ValueError(f"merge {rank + 1} ({left!r} {right!r}) uses a token that is not in the encoder")
            self._merges[(left, right)] = (rank, merged)  # a repeated pair: the last wins, as in tokenizers
            if rank % step == step - 1:
                yield
        self._byte_table = str.maketrans({chr(b): ch for b, ch in byte_chars.items()})
        char_to_byte = {ch: b for b, ch in byte_chars.items()}
        self._bytes: list[bytes] = [b""] * len(ids)
        for count, (token, i) in enumerate(encoder.items()):
            try:
                self._bytes[i] = bytes(char_to_byte[ch] for ch in token)
            except KeyError:
                raise ValueError(f"token {i} ({token!r}) has a character outside GPT-2's byte alphabet") from None
            if count % step == step - 1:
                yield
        self._cache: dict[str, tuple[int, ...]] = {}  # piece -> ids
        self.vocab_size: int = len(ids)
        self.eot_id: int | None = encoder.get(EOT_TOKEN)  # 50256 for GPT-2

    @classmethod
    def from_bytes(cls, encoder_json: bytes, vocab_bpe: bytes) -> "Tokenizer":
        """From the contents of encoder.json (vocab.json) and vocab.bpe (merges.txt)."""
        return run_steps(cls.from_bytes_steps(encoder_json, vocab_bpe))

    @classmethod
    def from_bytes_steps(cls, encoder_json: bytes, vocab_bpe: bytes, step: int = BUILD_STEP):
        """``from_bytes`` as a generator: it yields between steps of at most ``step`` merges or
        tokens (and after parsing each file) and returns the Tokenizer. A page drives it with a
        turn for the browser at each yield (app/loader.build_model_steps): built in one go,
        GPT-2's vocabulary was a ~0.5 s main-thread task (issue 16, hw20)."""
        try:
            encoder = json.loads(encoder_json)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"encoder.json is not valid JSON: {e}") from None
        if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
            raise ValueError("encoder.json must be a JSON object of token -> integer id")
        yield
        try:
            text = vocab_bpe.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"vocab.bpe is not UTF-8: {e}") from None
        merges = []
        # Split on "\n" only: str.splitlines() would also split on U+0085, U+2028, ...
        for number, line in enumerate(text.split("\n"), 1):
            line = line.rstrip("\r")
            if number % step == 0:
                yield
            if not line or line.startswith("#version"):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"vocab.bpe line {number} is not two tokens separated by a space: {line!r}")
            merges.append((parts[0], parts[1]))
        tokenizer = cls.__new__(cls)
        yield from tokenizer._build(encoder, merges, step)
        return tokenizer

    @classmethod
    def from_folder(cls, path: str | os.PathLike) -> "Tokenizer":
        """From a folder holding encoder.json + vocab.bpe, or Hugging Face's vocab.json + merges.txt."""
        for vocab_name, merges_name in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
            vocab_path = os.path.join(path, vocab_name)
            merges_path = os.path.join(path, merges_name)
            if os.path.isfile(vocab_path) and os.path.isfile(merges_path):
                with open(vocab_path, "rb") as f:
                    vocab = f.read()
                with open(merges_path, "rb") as f:
                    merges = f.read()
                return cls.from_bytes(vocab, merges)
        raise FileNotFoundError(
            f"no tokenizer in {os.fspath(path)!r}: expected encoder.json + vocab.bpe or vocab.json + merges.txt"
        )

    def encode(self, text: str) -> list[int]:
        """str -> list[int] of token ids (N of them; N == 0 for "")."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        ids: list[int] = []
        cache = self._cache
        for piece in pre_tokenize(text):
            tokens = cache.get(piece)
            if tokens is None:
                word = piece.encode("utf-8").decode("latin-1").translate(self._byte_table)
                tokens = self._bpe(word)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[piece] = tokens
            ids.extend(tokens)
        return ids

    def _bpe(self, word: str) -> tuple[int, ...]:
        """One piece, spelled in byte-level characters -> its token ids.

        Repeatedly merges the adjacent pair with the lowest rank (the leftmost one on a tie),
        like tokenizers' Word::merge_all: a heap of candidate merges, each checked against
        the current symbols when popped (a stale entry is skipped).
        """
        encoder, merges = self._encoder, self._merges
        if len(word) == 1:
            return (encoder[word],)
        symbols: list[str | None] = list(word)
        n = len(symbols)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            merge = merges.get((symbols[i], symbols[i + 1]))
            if merge is not None:
                heap.append((merge[0], i))
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            left = symbols[i]
            j = nxt[i]
            if left is None or j < 0:
                continue
            merge = merges.get((left, symbols[j]))
            if merge is None or merge[0] != rank:
                continue  # stale: one side has merged since this entry was pushed
            symbols[i] = left + symbols[j]
            symbols[j] = None
            k = nxt[j]
            nxt[i] = k
            if k >= 0:
                prv[k] = i
            p = prv[i]
            if p >= 0:
                merge = merges.get((symbols[p], symbols[i]))
                if merge is not None:
                    heapq.heappush(heap, (merge[0], p))
            if k >= 0:
                merge = merges.get((symbols[i], symbols[k]))
                if merge is not None:
                    heapq.heappush(heap, (merge[0], i))
        return tuple(encoder[s] for s in symbols if s is not None)

    def _check_id(self, i) -> int:
        i = int(i)
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {i} is out of range 0..{self.vocab_size - 1}")
        return i

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes one token stands for (b" world" for 995)."""
        return self._bytes[self._check_id(token_id)]

    def decode(self, ids) -> str:
        """Iterable of ids -> str. decode(encode(s)) == s for every valid string s.

        Bytes that do not form valid UTF-8 (ids that cut a character) become U+FFFD, one per
        maximal invalid subsequence, as in tokenizers' ByteLevel decoder.
        """
        data = b"".join(self._bytes[self._check_id(i)] for i in ids)
        return data.decode("utf-8", errors="replace")

    def display(self, ids) -> list[str]:
        """Iterable of ids -> one readable string per token, for views and the CLI.

        - A space (leading or not) is a normal space; the view decides how to mark it.
        - A byte that does not complete a UTF-8 character within the token is shown as
          ``<0xF0>`` (upper-case hex): an emoji split over two tokens shows as
          ``<0xF0><0x9F>`` and ``<0x98><0x80>``, never as U+FFFD.
        - Control characters are escaped like Python string literals: ``\\n``, ``\\t``,
          ``\\r``, other C0/C1 controls and DEL as ``\\x00``..``\\x9f``; U+2028, U+2029 and
          bidirectional controls as ``\\u2028`` etc. (they would break or reorder a view).
        - Every other character is itself (including NBSP, ZWJ and combining marks).

        Display strings are for reading, not parsing: a literal backslash or "<0x41>" in the
        text looks like an escape. ``token_bytes`` is the exact value.
        """
        return [display_bytes(self.token_bytes(i)) for i in ids]

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)})"
