"""Shared pieces of the explainer views: colour scales, heat maps, tokens, numbers, TeX.

A view returns a :class:`View`: one HTML string plus the heat maps whose pixels go into the
``<canvas data-heat=KEY>`` elements of that HTML (one ``putImageData`` per canvas, from a
numpy RGBA buffer) and whose values answer hover and keyboard questions. Nothing here
imports ``js``: the page side (``app/binding.py``) does the DOM writes.

Colour scales (both safe for the common colour-vision deficiencies):

* ``diverging`` — blue (negative) through near-white (0) to orange (positive), symmetric
  around zero; used for every signed tensor (embeddings, activations, weights).
* ``viridis`` — matplotlib's perceptually uniform dark-violet-to-yellow map, for values in
  [0, 1] (attention weights, probabilities).

Signed maps are scaled to ``robust_scale(values)`` (the 99.5th percentile of |x|, see
there): a few huge channels (GPT-2's residual stream has some) would otherwise wash every
other value out. Values beyond the scale saturate; hover always reports the exact number.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from html import escape

import numpy as np

# matplotlib's viridis at 0, 0.1, ..., 1.0 (from its 256-entry table); linear in between.
_VIRIDIS = np.array([
    (0.267004, 0.004874, 0.329415), (0.282623, 0.140926, 0.457517), (0.253935, 0.265254, 0.529983),
    (0.206756, 0.371758, 0.553117), (0.163625, 0.471133, 0.558148), (0.127568, 0.566949, 0.550556),
    (0.134692, 0.658636, 0.517649), (0.266941, 0.748751, 0.440573), (0.477504, 0.821444, 0.318195),
    (0.741388, 0.873449, 0.149561), (0.993248, 0.906157, 0.143936),
], dtype=np.float32)
# Blue - white - orange (ColorBrewer PuOr's orange end, RdBu's blue end) at -1, -0.5, 0, 0.5, 1.
_DIVERGING = np.array([
    (0x21, 0x66, 0xAC), (0x86, 0xB6, 0xD9), (0xF4, 0xF4, 0xF2), (0xF6, 0xB0, 0x5C), (0xB3, 0x58, 0x06),
], dtype=np.float32) / 255.0

MASKED_RGBA = (0xC8, 0xCC, 0xD4, 255)  # cells a causal mask removed (drawn hatched in SVG)


def _ramp(stops: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation of colour stops at t in [0, 1]. [...] -> [..., 3] in [0, 1]."""
    t = np.clip(np.nan_to_num(np.asarray(t, dtype=np.float32)), 0.0, 1.0)
    pos = t * (len(stops) - 1)
    lo = np.minimum(pos.astype(np.int64), len(stops) - 2)
    frac = (pos - lo)[..., None]
    return stops[lo] * (1 - frac) + stops[lo + 1] * frac


def _lut(stops: np.ndarray) -> np.ndarray:
    """A 257-entry RGBA table of a colour ramp (maps are drawn by table lookup: fast in Pyodide;
    an odd size puts 0.5, the diverging map's zero, exactly on an entry)."""
    return _rgba(_ramp(stops, np.linspace(0.0, 1.0, 257, dtype=np.float32)))


def _lookup(lut: np.ndarray, t) -> np.ndarray:
    """lut[round(t * 256)] for t in [0, 1] (NaN as 0.5, clipped). Each RGBA entry is read as one
    uint32, and the index is built in place (issue 16: a third of a 256-token view's time)."""
    t = np.asarray(t, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        index = np.atleast_1d(t * np.float32(256))
    np.nan_to_num(index, copy=False, nan=128.0, posinf=256.0, neginf=0.0)
    index += np.float32(0.5)
    np.clip(index, 0, 256, out=index)
    words = lut.view(np.uint32).reshape(-1)
    return words[index.astype(np.intp, order="C")].view(np.uint8).reshape(t.shape + (4,))


def viridis(t) -> np.ndarray:
    """[...] values in [0, 1] -> [..., 4] uint8 RGBA."""
    return _lookup(_VIRIDIS_LUT, t)


def diverging(x, scale: float) -> np.ndarray:
    """[...] signed values -> [..., 4] uint8 RGBA, saturating at +-scale."""
    x = np.clip(np.asarray(x, dtype=np.float32), np.float32(-3e38), np.float32(3e38))
    s = np.float32(scale if scale > 0 and np.isfinite(scale) else 1.0)
    with np.errstate(over="ignore"):
        t = np.float32(0.5) + np.float32(0.5) * (x / s)
    return _lookup(_DIVERGING_LUT, t)


def _rgba(rgb: np.ndarray) -> np.ndarray:
    out = np.empty(rgb.shape[:-1] + (4,), dtype=np.uint8)
    out[..., :3] = np.round(rgb * 255).astype(np.uint8)
    out[..., 3] = 255
    return out


_VIRIDIS_LUT = _lut(_VIRIDIS)
_DIVERGING_LUT = _lut(_DIVERGING)


def css_color(rgba) -> str:
    r, g, b = (int(v) for v in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def luminance(rgb) -> float:
    """WCAG 2.1 relative luminance of an sRGB colour given as 0-255 channels."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (int(v) / 255 for v in rgb[:3])]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a, b) -> float:
    """WCAG 2.1 contrast ratio of two sRGB colours (1 to 21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_on(rgba) -> str:
    """Black or white text, whichever has the higher WCAG contrast on this background: at
    least 4.58:1 on any colour, so numbers on heat cells meet WCAG AA (issue 16)."""
    return "#000" if contrast(rgba, (0, 0, 0)) >= contrast(rgba, (255, 255, 255)) else "#fff"


def scroll_box(label: str, cls: str = "table-scroll") -> str:
    """The opening tag of a box that may scroll (a wide table on a phone): focusable and named,
    so a keyboard can reach and scroll it (WCAG 2.1.1, axe scrollable-region-focusable; issue 16)."""
    return f'<div class="{cls}" tabindex="0" role="region" aria-label="{escape(label)}">'


def robust_scale(values: np.ndarray) -> float:
    """The 99.5th percentile of |values| (the max when there are few), never 0."""
    a = np.abs(np.asarray(values, dtype=np.float32)).ravel()
    if a.size == 0:
        return 1.0
    s = float(np.percentile(a, 99.5)) if a.size >= 200 else float(a.max())
    if not np.isfinite(s) or s <= 0:
        s = float(a.max()) if a.size and np.isfinite(a.max()) and a.max() > 0 else 1.0
    return s


def fmt(x, digits: int = 4) -> str:
    """A number for reading: ``digits`` significant digits."""
    x = float(x)
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def exact(x) -> str:
    """A float32 number for data attributes: enough digits to round-trip float32."""
    return f"{float(x):.9g}"


def token_label(text: str) -> str:
    """A token's display string with its spaces made visible (U+2423 OPEN BOX)."""
    return text.replace(" ", "\u2423")


def token_html(text: str) -> str:
    """A token as HTML: escaped, spaces visible."""
    return f'<span class="tok-text">{escape(token_label(text))}</span>'


def check_tokens(tokens, n: int, what: str = "trace") -> list[str]:
    tokens = list(tokens)
    if len(tokens) != n:
        raise ValueError(f"got {len(tokens)} token labels for a {what} of {n} tokens")
    if not all(isinstance(t, str) for t in tokens):
        raise ValueError("token labels must be strings")
    return tokens


def check_shape(name: str, value: np.ndarray, shape: tuple) -> np.ndarray:
    """value if its shape matches (None in ``shape`` matches any size); else ValueError."""
    value = np.asarray(value)
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {shape}")
    return value


@dataclass
class Heat:
    """A heat map for one ``<canvas data-heat=key>``: pixels plus the values hover reports.

    ``values`` [R, C] are what the cells show; when the map is downsampled (weights),
    ``row_spans``/``col_spans`` give each cell's [first, last] source rows/columns and
    ``how`` says how a block became one value.
    """

    key: str
    title: str
    values: np.ndarray
    rgba: np.ndarray
    row_labels: list[str]
    col_name: str = "dim"
    row_name: str = "token"
    row_spans: list[tuple[int, int]] | None = None
    col_spans: list[tuple[int, int]] | None = None
    how: str = ""
    col_labels: list[str] | None = None
    mask: np.ndarray | None = None  # True where a cell was removed by the causal mask
    mask_text: str = "masked"
    # Attention maps (rows = queries, columns = keys): the absolute positions of row 0 and
    # column 0. The page then puts data-q/data-k on the tooltip of a cell; ``marks`` says the
    # cell's query and key rows may be highlighted in the Q and K maps of the same head.
    qk: tuple[int, int] | None = None
    marks: bool = False

    def cell_qk(self, r: int, c: int) -> tuple[int, int] | None:
        """The (query, key) positions of cell (r, c) of an attention map, else None."""
        if self.qk is None:
            return None
        if self.row_spans is not None:
            r, c = self.row_spans[r][0], self.col_spans[c][0]
        return self.qk[0] + int(r), self.qk[1] + int(c)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.values.shape[0]), int(self.values.shape[1])

    def describe(self, r: int, c: int) -> str:
        """The hover text of cell (r, c), e.g. "emb · token 2 'fox' · dim 17 = 0.1234"."""
        rows, cols = self.shape
        r, c = min(max(int(r), 0), rows - 1), min(max(int(c), 0), cols - 1)
        value = self.values[r, c]
        if self.row_spans is not None:
            (r0, r1), (c0, c1) = self.row_spans[r], self.col_spans[c]
            rows = f"rows {r0}–{r1}" if r1 > r0 else f"row {r0}"
            cols = f"cols {c0}–{c1}" if c1 > c0 else f"col {c0}"
            how = f" · {self.how}" if (r1, c1) != (r0, c0) else ""
            return f"{self.title} · {rows} · {cols}{how} = {fmt(value, 5)}"
        label = self.row_labels[r] if r < len(self.row_labels) else str(r)
        col = f"{self.col_name} {c}"
        if self.col_labels is not None and c < len(self.col_labels):
            col += f" {self.col_labels[c]}"
        shown = self.mask_text if self.mask is not None and self.mask[r, c] else fmt(value, 5)
        return f"{self.title} · {self.row_name} {r} {label} · {col} = {shown}"


def signed_heat(key: str, title: str, values: np.ndarray, row_labels: list[str],
                scale: float | None = None, col_name: str = "dim", row_name: str = "token") -> Heat:
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"{title}: a heat map needs a 2-D array, got shape {values.shape}")
    s = robust_scale(values) if scale is None else scale
    return Heat(key, title, values, diverging(values, s), row_labels, col_name, row_name)


def prob_heat(key: str, title: str, values: np.ndarray, row_labels: list[str], col_labels: list[str],
              row_name: str = "query", col_name: str = "key", mask: np.ndarray | None = None) -> Heat:
    """A [0, 1] map (attention weights, probabilities) in viridis; masked cells grey."""
    values = np.asarray(values, dtype=np.float32)
    rgba = viridis(values)
    if mask is not None:
        rgba[mask] = MASKED_RGBA
    return Heat(key, title, values, rgba, row_labels, col_name, row_name, col_labels=col_labels,
                mask=mask, mask_text="masked (future token)")


def canvas_html(heat: Heat, label: str, row_px: int = 14, max_height: int | None = None,
                cls: str = "heat") -> str:
    """The ``<canvas>`` for a heat map, focusable (arrow keys move a cursor over its cells).

    Each row is ``row_px`` tall so the rows line up with the token labels beside it; a map
    taller than ``max_height`` (when given) is squeezed to it (weights have no labels)."""
    rows, cols = heat.shape
    height = rows * row_px if max_height is None or heat.row_spans is None else min(rows * row_px, max_height)
    return (
        f'<canvas class="{cls}" data-heat="{escape(heat.key)}" width="{cols}" height="{rows}" '
        f'style="height:{height}px" tabindex="0" role="img" '
        f'aria-label="{escape(label)}: {rows} by {cols}; arrow keys read values"></canvas>'
    )


def legend_html(scale: float, kind: str = "diverging", note: str = "") -> str:
    """A small colour key with its real end values."""
    if kind == "viridis":
        stops = ", ".join(css_color(viridis(t)) for t in np.linspace(0, 1, 6))
        lo, hi = "0", "1"
    else:
        stops = ", ".join(css_color(diverging(x, 1.0)) for x in np.linspace(-1, 1, 5))
        lo, hi = f"−{fmt(scale, 3)}", f"+{fmt(scale, 3)}"
    note_html = f' <span class="legend-note">{escape(note)}</span>' if note else ""
    return (f'<span class="legend"><span class="legend-end">{lo}</span>'
            f'<span class="legend-bar" style="background:linear-gradient(90deg, {stops})"></span>'
            f'<span class="legend-end">{hi}</span>{note_html}</span>')


def tex(expr: str, display: bool = False) -> str:
    """A formula placeholder; the page swaps it for KaTeX's HTML (the TeX text stays as a fallback)."""
    cls = "tex tex-display" if display else "tex"
    return f'<span class="{cls}" data-tex="{escape(expr)}" data-display="{int(display)}">{escape(expr)}</span>'


@dataclass(frozen=True)
class CharGroup:
    """Tokens ``first..last`` (inclusive) whose bytes only together form ``text``: a byte-level
    BPE token may hold part of a UTF-8 character (an emoji's 4 bytes over 2 tokens)."""

    first: int
    last: int
    text: str
    parts: tuple[bytes, ...]

    def bytes_text(self) -> str:
        """The bytes of each token in hex, e.g. "F0 9F | 98 80"."""
        return " | ".join(" ".join(f"{b:02X}" for b in part) for part in self.parts)


def char_groups(token_bytes) -> list[CharGroup]:
    """Runs of neighbouring tokens that split a UTF-8 character between them.

    ``token_bytes`` is one ``bytes`` per token (``Tokenizer.token_bytes``). A token whose
    bytes leave a character unfinished is joined to the next one; each maximal joined run of
    two or more tokens is a group, with the text their bytes decode to (an unfinished
    character at the very end, or bytes that are not UTF-8 at all, decode to U+FFFD).
    """
    parts = [bytes(b) for b in token_bytes]
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    groups, first = [], 0
    for t, part in enumerate(parts):
        decoder.decode(part)
        open_char = bool(decoder.getstate()[0])
        if open_char and t + 1 < len(parts):
            continue  # this token's last character continues in the next token
        if t > first:
            run = tuple(parts[first:t + 1])
            groups.append(CharGroup(first, t, b"".join(run).decode("utf-8", errors="replace"), run))
        decoder.reset()
        first = t + 1
    return groups


def group_chips(chips: list[str], groups: list[CharGroup]) -> list[str]:
    """Token chips (one ``<li>`` each) with each char group's chips wrapped in one item that
    shows the character; the bytes are in its title (hover) and its accessible label."""
    out, t = [], 0
    by_first = {g.first: g for g in groups}
    while t < len(chips):
        g = by_first.get(t)
        if g is None:
            out.append(chips[t])
            t += 1
            continue
        label = f"{g.last - g.first + 1} tokens form {g.text!r}: bytes {g.bytes_text()}"
        out.append(f'<li class="token-group" data-testid="char-group" data-first="{g.first}" data-last="{g.last}" '
                   f'title="{escape(label)}" aria-label="{escape(label)}" tabindex="0">'
                   f'<span class="group-char" aria-hidden="true">{escape(g.text)}</span>'
                   f'<ol class="tokens">{"".join(chips[g.first:g.last + 1])}</ol></li>')
        t = g.last + 1
    return out


@dataclass
class View:
    """What a view hands the page: HTML (one DOM write) and its heat maps' pixels and values."""

    html: str
    heats: list[Heat] = field(default_factory=list)

    def __add__(self, other: "View") -> "View":
        return View(self.html + other.html, self.heats + other.heats)


def join(views) -> View:
    views = list(views)
    return View("".join(v.html for v in views), [h for v in views for h in v.heats])
