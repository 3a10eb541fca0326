"""Weight popovers: the real weight matrix behind each product, as a heat map.

A matrix bigger than ``MAX_ROWS`` x ``MAX_COLS`` is downsampled into blocks of neighbouring
rows and columns (sizes differ by at most one). Each block is drawn as its **signed maximum
absolute value** — the entry with the largest magnitude, sign kept — so a single large
weight stays visible instead of being averaged away; hover reports that value, the block's
mean and the source rows and columns. Matrices are [out, in] as stored (one row per output
channel); the popover says which product they feed.

The popovers use the HTML ``popover`` attribute: the button opens it, Escape or a click
outside closes it, no script needed. A view draws each popover without its map
(``lazy_popover``); the map is computed when the popover first opens (issue 16, hw20:
binding.py's beforetoggle listener), in the model worker where there is one (app/lab.py's
``weight_map``), and kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import numpy as np

from .common import Heat, View, canvas_html, diverging, fmt, legend_html, robust_scale

MAX_ROWS = 128
MAX_COLS = 128


def _starts(size: int, blocks: int) -> np.ndarray:
    """First index of each of ``blocks`` near-equal blocks covering range(size)."""
    return np.linspace(0, size, blocks + 1).astype(np.intp)[:-1]


def downsample(w: np.ndarray, max_rows: int = MAX_ROWS, max_cols: int = MAX_COLS):
    """Signed block max-abs and block mean of a 2-D matrix.

    Returns (maxabs [R, C], mean [R, C], row_spans, col_spans) with R <= max_rows,
    C <= max_cols; spans are inclusive (first, last) source indices.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"a weight matrix must be 2-D and non-empty, got shape {w.shape}")
    rows, cols = w.shape
    R, C = min(rows, max_rows), min(cols, max_cols)
    rs, cs = _starts(rows, R), _starts(cols, C)
    hi = np.maximum.reduceat(np.maximum.reduceat(w, rs, axis=0), cs, axis=1)
    lo = np.minimum.reduceat(np.minimum.reduceat(w, rs, axis=0), cs, axis=1)
    total = np.add.reduceat(np.add.reduceat(w.astype(np.float64), rs, axis=0), cs, axis=1)
    r_end = np.append(rs[1:], rows)
    c_end = np.append(cs[1:], cols)
    counts = np.outer(r_end - rs, c_end - cs)
    mean = (total / counts).astype(np.float32)
    maxabs = np.where(-lo > hi, lo, hi).astype(np.float32)
    row_spans = [(int(a), int(b) - 1) for a, b in zip(rs, r_end)]
    col_spans = [(int(a), int(b) - 1) for a, b in zip(cs, c_end)]
    return maxabs, mean, row_spans, col_spans


class WeightHeat(Heat):
    """A downsampled weight map whose hover text also gives the block mean."""

    def __init__(self, key: str, title: str, maxabs, mean, row_spans, col_spans, scale: float,
                 source_shape: tuple[int, int] = (0, 0), stats: str = ""):
        super().__init__(key, title, maxabs, diverging(maxabs, scale), [], "col", "row",
                         row_spans=row_spans, col_spans=col_spans, how="signed max |w|")
        self.mean = mean
        self.scale = scale
        self.source_shape = source_shape  # [out, in] of the matrix before downsampling
        self.stats = stats  # min / max / mean / std of the whole matrix, as text

    def describe(self, r: int, c: int) -> str:
        rows, cols = self.shape
        r, c = min(max(int(r), 0), rows - 1), min(max(int(c), 0), cols - 1)
        text = super().describe(r, c)
        (r0, r1), (c0, c1) = self.row_spans[r], self.col_spans[c]
        if (r0, c0) != (r1, c1):
            text += f" · block mean {fmt(self.mean[r, c], 4)}"
        return text


def weight_heat(key: str, title: str, w: np.ndarray, max_rows: int = MAX_ROWS, max_cols: int = MAX_COLS) -> WeightHeat:
    """The downsampled map of ``w`` with its summary statistics (computed once: callers cache it)."""
    w = np.asarray(w, dtype=np.float32)
    maxabs, mean, row_spans, col_spans = downsample(w, max_rows, max_cols)
    stats = (f"min {fmt(w.min(), 4)} · max {fmt(w.max(), 4)} · mean {fmt(w.mean(dtype=np.float64), 4)} · "
             f"std {fmt(w.std(dtype=np.float64), 4)}")
    return WeightHeat(key, title, maxabs, mean, row_spans, col_spans, robust_scale(w),
                      (int(w.shape[0]), int(w.shape[1])), stats)


def button(pop_id: str, label: str, title: str) -> str:
    """A button that opens the popover ``pop_id`` (more than one may point at the same one)."""
    # data-testid="weights-button" on every such button (issue 10); the label keeps the older
    # per-popover test id "weights-<pop_id>" (a click on it is a click on the button). Its
    # accessible name starts with the visible label (WCAG 2.5.3, issue 16).
    return (f'<button type="button" class="weights-button" popovertarget="{escape(pop_id)}" data-testid="weights-button" '
            f'data-pop="{escape(pop_id)}" aria-label="{escape(label)}, {escape(title)}">'
            f'<span data-testid="weights-{escape(pop_id)}">{escape(label)}</span></button>')


def _frame(pop_id: str, title: str, body: str, lazy: bool = False) -> str:
    """The popover element around ``body`` (its head: title and close button)."""
    return (
        f'<div class="popover weights-pop" id="{escape(pop_id)}" popover data-testid="popover-{escape(pop_id)}" '
        f'role="dialog" aria-label="{escape(title)}"{" data-lazy" if lazy else ""}>'
        f'<div class="pop-head"><h3>{escape(title)}</h3>'
        f'<button type="button" class="close" popovertarget="{escape(pop_id)}" popovertargetaction="hide" '
        f'aria-label="Close">×</button></div>'
        f'{body}</div>'
    )


def popover_body(title: str, heat: WeightHeat, product: str, stored: str = "") -> str:
    """What a popover shows below its head: the product, the stored shape, the statistics and the map."""
    rows, cols = heat.source_shape
    R, C = heat.shape
    sampled = (f"downsampled to {R}×{C} blocks, each drawn as its signed max |w| (hover: block mean too)"
               if (R, C) != (rows, cols) else "every weight drawn (no downsampling)")
    row_px = max(2, min(6, 512 // max(R, 1)))
    return (
        f'<p>{escape(product)}</p>'
        f'<p class="muted small">Stored [{rows}×{cols}] (rows = output channels, columns = input channels)'
        f'{" · " + escape(stored) if stored else ""}; {sampled}.</p>'
        f'<p class="muted small">{heat.stats}</p>'
        f'{legend_html(heat.scale, note="99.5th percentile of |w|")}'
        f'<div class="pop-map">{canvas_html(heat, title, row_px, cls="heat weight-map")}</div>'
    )


def popover(pop_id: str, button_label: str, title: str, heat: WeightHeat, product: str, stored: str = "") -> "Popover":
    """The popover drawing ``heat`` (from ``weight_heat``) and the button that opens it."""
    html = _frame(pop_id, title, popover_body(title, heat, product, stored))
    return Popover(html, [heat], button(pop_id, button_label, title))


def lazy_popover(pop_id: str, button_label: str, title: str, product: str, shape: tuple[int, int]) -> "Popover":
    """A popover whose map is not computed yet (issue 16, hw20): when it first opens
    (binding.py: the popover's beforetoggle event -> the explainer's "weights-open" action)
    the page computes the map where the model computes (the model worker) and fills it in with
    ``popover_body``, so drawing a view never dequantizes a matrix — wte of GPT-2's shape
    (V x D = 50257 x 768) took a 3.6 s main-thread task at the first drawing."""
    body = _waiting(product, shape, "the map of its weights is computed when this opens.")
    return Popover(_frame(pop_id, title, body, lazy=True), [], button(pop_id, button_label, title))


def _waiting(product: str, shape: tuple[int, int], note: str, alert: bool = False) -> str:
    rows, cols = shape
    role = ' role="alert"' if alert else ""
    return (f'<p>{escape(product)}</p>'
            f'<p class="muted small" data-testid="weights-pending"{role}>Stored [{rows}×{cols}]; {escape(note)}</p>')


def computing_body(product: str, shape: tuple[int, int]) -> str:
    """A popover's body while its map is computed (the model worker dequantizes the matrix)."""
    return _waiting(product, shape, "computing the map of its weights…")


def failed_body(product: str, shape: tuple[int, int], error: BaseException) -> str:
    """A popover's body when its map could not be computed: why, and that opening it again retries."""
    reason = str(error) or type(error).__name__
    return _waiting(product, shape, f"its map could not be computed ({reason}); close and open it again to retry.",
                    alert=True)


@dataclass
class Popover(View):
    """A weight popover: ``html`` is the popover itself (a block: place it outside any <p>),
    ``button`` the inline button that opens it."""

    button: str = ""
