"""Attention view: every head's pattern, the selected head's Q, K, V, its attention matrix
(one SVG cell per query/key pair, with the trace's value on it) and the animated derivation
QK^T -> /sqrt(K) -> causal mask -> softmax -> x V -> head output -> concat -> projection.

All numbers are the trace's (``h.{l}.q/k/v/scores/scaled/masked/att/head_out/attn_concat/
attn_proj``); the worked examples recompute one cell from them and show both. Arrays are
row-per-token (Glassbox's layout): row i of ``att`` is query i and sums to 1.

The whole matrix of the selected head, every position, is one canvas
(``data-testid="attention-matrix"``, ``data-positions`` = N; one ``putImageData``); the reader
picks its colour scale (``SCALES``: linear, per-row normalised, log) and taps or clicks a cell
to move a zoomed window of at most ``WINDOW`` x ``WINDOW`` positions onto it. The window is SVG:
cells ``data-testid="attention-cell"`` with ``data-q``, ``data-k`` (absolute positions) and
``data-value`` (the attention weight, 9 significant digits); masked (future) cells also carry
``data-masked="true"`` and are drawn hatched.

The lines view (``data-testid="bertviz"``, after BertViz's head view) draws the same weights as
lines from each query token (left column) to the keys it reads (right column), one colour per
head, heads toggled on and off. Up to ``ALL_LINES_MAX`` tokens it can show every query's lines at
once; longer inputs show the lines of one query (the last token until another is picked), with
both columns in a box that scrolls, so it stays legible at 1024 positions.
"""

from __future__ import annotations

import functools

import math
from html import escape

import numpy as np

from glassbox.reference import MASK_VALUE
from glassbox.trace import Trace, layer_name

from .common import (MASKED_RGBA, Heat, View, canvas_html, check_shape, check_tokens, css_color, diverging, exact, fmt,
                     legend_html, prob_heat, robust_scale, scroll_box, signed_heat, tex, text_on, token_label, viridis)
from .embedding import labels_column, row_labels
from .mathtex import panel as math_panel
from .weights import button as weight_button
from .weights import downsample

WINDOW = 32  # positions shown in the zoomed window of the attention matrix (48 made 490 KB of SVG at 256 tokens)
TABLE_MAX = 12  # matrices up to this many tokens show their numbers in the cells
ROW_PX = 16
THUMB_MAX = 128  # head thumbnails pool longer matrices into at most this many cells a side
ALL_LINES_MAX = 24  # the lines view may draw every query's lines up to this many tokens
BV_ROW = 18  # px per token row in the lines view
LOG_FLOOR = 1e-4  # the log scale shows weights from 1e-4 to 1

SCALES = {
    "linear": "linear: the weight itself, 0 to 1",
    "row": "per row: each query's largest weight is 1",
    "log": "log: 10⁻⁴ to 1, so small weights show",
}
# Colour-blind-friendly categorical colours (Okabe & Ito first), one per head, cycled.
HEAD_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
               "#7A5195", "#8C564B", "#4D4D4D", "#B8860B", "#17BECF", "#D62728")

STAGES = (
    ("scores", "1 · Dot products", r"S = Q_h K_h^{\top}"),
    ("scaled", "2 · Scale", r"S' = S / \sqrt{K}"),
    ("masked", "3 · Causal mask", r"M_{ij} = S'_{ij} \text{ if } j \le i \text{ else } -\infty"),
    ("softmax", "4 · Softmax", r"A_{ij} = \frac{e^{M_{ij}}}{\sum_{t} e^{M_{it}}}"),
    ("times-v", "5 · Weighted sum of values", r"O_h = A\, V_h"),
    ("head-out", "6 · Head output", r"\mathrm{head\_out}[h] = O_h \in \mathbb{R}^{N \times K}"),
    ("concat", "7 · Concatenate the heads", r"C = [\,O_1 \;\cdots\; O_H\,] \in \mathbb{R}^{N \times D}"),
    ("proj", "8 · Output projection", r"\mathrm{attn\_proj} = C\, W_O^{\top} + b_O"),
)


def scale_weights(att: np.ndarray, scale: str) -> np.ndarray:
    """Attention weights [..., R, C] -> colour positions in [0, 1] for one of ``SCALES``.

    linear: the weight; row: the weight over its row's largest (every query's strongest key is
    1, so weak heads show their pattern); log: log10 of the weight from ``LOG_FLOOR`` (0) to 1.
    """
    a = np.asarray(att, dtype=np.float32)
    if scale == "linear":
        return a
    if scale == "row":
        top = a.max(axis=-1, keepdims=True)
        return a / np.where(top > 0, top, np.float32(1))
    if scale == "log":
        floor = np.float32(math.log10(LOG_FLOOR))
        return (np.log10(np.maximum(a, np.float32(LOG_FLOOR))) - floor) / -floor
    raise ValueError(f"unknown colour scale {scale!r}; expected one of {tuple(SCALES)}")


def attention_heat(key: str, title: str, att: np.ndarray, labels: list[str], scale: str = "linear",
                   start: int = 0, marks: bool = False) -> Heat:
    """One head's [N, N] weights as a heat map: colour by ``scale``, hover reports the weight."""
    n = att.shape[0]
    future = np.triu(np.ones((n, n), dtype=bool), 1)
    heat = prob_heat(key, title, att, labels, labels, mask=future)
    heat.rgba = viridis(scale_weights(att, scale))
    heat.rgba[future] = MASKED_RGBA
    heat.qk, heat.marks = (start, start), marks
    return heat


@functools.lru_cache(maxsize=8)
def _visible_blocks(n: int):
    """(visible, row_spans, col_spans): which thumbnail blocks of an [n, n] causal matrix hold a
    visible (unmasked) cell, and the blocks (weights.downsample's); the same for every head,
    so computed once per n (issue 16: thumbnails were a third of a 256-token view's time)."""
    visible, _, row_spans, col_spans = downsample(np.tril(np.ones((n, n), dtype=np.float32)),
                                                  THUMB_MAX, THUMB_MAX)
    visible.setflags(write=False)
    return visible, row_spans, col_spans


def _block_max(w: np.ndarray, spans) -> np.ndarray:
    """The largest value of each block of a square matrix (downsample's blocks ``spans``): for
    weights >= 0 this is downsample's signed max-abs, without its min and float64 mean."""
    starts = np.array([a for a, _ in spans], dtype=np.intp)
    return np.maximum.reduceat(np.maximum.reduceat(np.asarray(w, dtype=np.float32), starts, axis=0), starts, axis=1)


def thumb_heat(key: str, title: str, att: np.ndarray, labels: list[str], scale: str, start: int) -> Heat:
    """A head thumbnail: the whole matrix; above ``THUMB_MAX`` positions each cell is the
    largest weight of a block of queries and keys (a max keeps one-key patterns visible)."""
    n = att.shape[0]
    if n <= THUMB_MAX:
        return attention_heat(key, title, att, labels, scale, start)
    visible, row_spans, col_spans = _visible_blocks(n)
    pooled = _block_max(scale_weights(att, scale), row_spans)
    weights = _block_max(att, row_spans)
    rgba = viridis(pooled)
    rgba[visible <= 0] = MASKED_RGBA
    return Heat(key, title, weights, rgba, [], "key", "query", row_spans=row_spans, col_spans=col_spans,
                how="largest weight", qk=(start, start))


def window_origin(n: int, origin: tuple[int, int] | None) -> tuple[int, int]:
    """The zoomed window's first query and first key: ``origin`` kept inside the matrix, or the
    last positions (the token whose next token is predicted) when None."""
    last = max(0, n - WINDOW)
    if origin is None:
        return last, last
    return min(max(int(origin[0]), 0), last), min(max(int(origin[1]), 0), last)


def window_for(n: int, q: int, k: int, origin: tuple[int, int] | None) -> tuple[int, int]:
    """The window origin that shows cell (q, k): unchanged if it already does, else centred on it."""
    r0, c0 = window_origin(n, origin)
    if not r0 <= q < r0 + WINDOW:
        r0 = q - WINDOW // 2
    if not c0 <= k < c0 + WINDOW:
        c0 = k - WINDOW // 2
    return window_origin(n, (r0, c0))


def matrix_svg(att: np.ndarray, tokens: list[str], layer: int, head: int, start: int = 0,
               origin: tuple[int, int] | None = None, scale: str = "linear") -> str:
    """A window of the attention matrix of one head as SVG: rows = queries, columns = keys.

    ``origin`` = (first query, first key) of the window (see ``window_origin``)."""
    n = att.shape[0]
    r0, c0 = window_origin(n, origin)
    rows, cols = range(r0, min(n, r0 + WINDOW)), range(c0, min(n, c0 + WINDOW))
    shown = max(len(rows), len(cols))
    cell = min(44, max(9, int(440 / shown)))
    labels = [token_label(t) for t in tokens]
    longest = max((len(labels[i]) for i in (*rows, *cols)), default=1)
    margin_left = int(min(110, 16 + 7 * longest + 24))
    margin_top = int(min(110, 16 + 6 * longest + 24))
    width = margin_left + len(cols) * cell + 6
    height = margin_top + len(rows) * cell + 6
    font = 12 if cell >= 14 else 9
    numbers = shown <= TABLE_MAX
    parts = [
        f'<svg class="attn-matrix" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="grid" tabindex="0" data-grid="attention" data-layer="{layer}" data-head="{head}" data-n="{n}" '
        f'data-r0="{r0}" data-c0="{c0}" data-rows="{len(rows)}" data-cols="{len(cols)}" data-start="{start}" '
        f'aria-label="Attention of layer {layer + 1}, head {head + 1}, zoomed: queries {start + r0} to '
        f'{start + rows[-1]} by keys {start + c0} to {start + cols[-1]}. Arrow keys move between cells." '
        f'data-testid="attention-window">',
        '<defs aria-hidden="true"><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#e6e8ee"/><line x1="0" y1="0" x2="0" y2="6" stroke="#aab0bd" stroke-width="2"/>'
        '</pattern></defs>',
    ]
    # A real grid for assistive technology (issue 16): a header row of keys, then one row per
    # query with its row header and a named gridcell per key; the cursor and hatch are hidden.
    header = [f'<text class="axis" role="columnheader" x="4" y="{margin_top - 4}" font-size="10">query ↓ key →</text>']
    for j in cols:
        x = margin_left + (j - c0) * cell + cell / 2
        header.append(f'<text class="klabel" role="columnheader" data-k="{start + j}" x="{x:.1f}" y="{margin_top - 6}" '
                      f'font-size="{font}" transform="rotate(-60 {x:.1f} {margin_top - 6})">{escape(labels[j])}</text>')
    parts.append(f'<g role="row">{"".join(header)}</g>')
    colors = viridis(scale_weights(att[r0:r0 + WINDOW], scale)[:, c0:c0 + WINDOW])
    for i in rows:
        y = margin_top + (i - r0) * cell
        row = [f'<text class="qlabel" role="rowheader" data-q="{start + i}" x="{margin_left - 6}" y="{y + cell / 2:.1f}" '
               f'font-size="{font}" text-anchor="end" dominant-baseline="middle">{escape(labels[i])}</text>']
        for j in cols:
            x = margin_left + (j - c0) * cell
            value = att[i, j]
            if j > i:
                row.append(
                    f'<g role="gridcell" aria-label="masked"><rect class="cell masked" data-testid="attention-cell" '
                    f'data-q="{start + i}" data-k="{start + j}" data-value="{exact(value)}" data-masked="true" '
                    f'x="{x}" y="{y}" width="{cell}" height="{cell}" fill="url(#hatch)"/></g>')
                continue
            color = colors[i - r0, j - c0]
            # The cell's name is its printed number, or its value when the window is too big for numbers.
            number = (f'<text class="cellnum" x="{x + cell / 2:.1f}" y="{y + cell / 2:.1f}" font-size="{10 if cell >= 36 else 9}" '
                      f'text-anchor="middle" dominant-baseline="middle" fill="{text_on(color)}">{value:.2f}</text>'
                      if numbers else "")
            named = "" if numbers else f' aria-label="{fmt(value, 3)}"'
            row.append(
                f'<g role="gridcell"{named}><rect class="cell" data-testid="attention-cell" '
                f'data-q="{start + i}" data-k="{start + j}" data-value="{exact(value)}" x="{x}" y="{y}" '
                f'width="{cell}" height="{cell}" fill="{css_color(color)}"/>{number}</g>')
        parts.append(f'<g role="row">{"".join(row)}</g>')
    parts.append(f'<rect class="grid-cursor" aria-hidden="true" x="0" y="0" width="{cell}" height="{cell}" visibility="hidden"/>')
    parts.append("</svg>")
    return "".join(parts)


def scale_legend(scale: str) -> str:
    """The colour key of the chosen scale, with its real end values."""
    stops = ", ".join(css_color(viridis(t)) for t in np.linspace(0, 1, 6))
    lo, hi = {"linear": ("0", "1"), "row": ("0", "row max"), "log": ("≤10⁻⁴", "1")}[scale]
    return (f'<span class="legend"><span class="legend-end">{lo}</span>'
            f'<span class="legend-bar" style="background:linear-gradient(90deg, {stops})"></span>'
            f'<span class="legend-end">{hi}</span><span class="legend-note">{escape(SCALES[scale])}; '
            f'grey = masked (future)</span></span>')


def scale_select(scale: str) -> str:
    options = "".join(f'<option value="{name}"{" selected" if name == scale else ""}>{escape(text.split(":")[0])}</option>'
                      for name, text in SCALES.items())
    return (f'<label class="inline-field">Colour scale <select id="attn-scale" data-action="attn-scale" '
            f'data-testid="attention-scale">{options}</select></label>')


def window_view(att: np.ndarray, tokens: list[str], layer: int, head: int, start: int,
                origin: tuple[int, int] | None, scale: str) -> View:
    """The whole matrix (canvas) and its zoomed window (SVG): the ``attention-matrix`` slot."""
    n = att.shape[0]
    r0, c0 = window_origin(n, origin)
    heat = attention_heat(f"attn.{layer}.{head}.matrix", f"layer {layer + 1} head {head + 1}", att,
                          row_labels(tokens), scale, start, marks=True)
    rows, cols = min(WINDOW, n - r0), min(WINDOW, n - c0)
    box = ""
    if (rows, cols) != (n, n):
        box = (f'<span class="window-box" aria-hidden="true" style="left:{100 * c0 / n:.3f}%;top:{100 * r0 / n:.3f}%;'
               f'width:{100 * cols / n:.3f}%;height:{100 * rows / n:.3f}%"></span>')
    whole = (
        f'<figure class="attn-whole"><figcaption>Whole matrix: all <strong>{n}</strong> positions '
        f'<span class="muted">(tap or click a cell to zoom there)</span></figcaption>'
        f'<div class="canvas-wrap attn-canvas-wrap" style="max-width:{min(26.0, max(9.0, 1.6 * n)):.1f}rem">'
        f'<canvas class="heat attn-canvas" data-heat="{heat.key}" data-testid="attention-matrix" data-positions="{n}" '
        f'data-action="attn-select" width="{n}" height="{n}" tabindex="0" role="img" '
        f'aria-label="Attention matrix of layer {layer + 1}, head {head + 1}: all {n} queries by {n} keys. Arrow keys '
        f'read cells; Enter zooms the window there."></canvas>{box}</div></figure>')
    note = (f'Queries {start + r0}–{start + r0 + rows - 1} × keys {start + c0}–{start + c0 + cols - 1} of {n}'
            if (rows, cols) != (n, n) else f"All {n} positions")
    zoom = (f'<figure class="attn-zoom"><figcaption>Zoomed window: {note}. '
            f'<span class="muted">Rows still sum to 1 over all keys.</span></figcaption>'
            f'<div class="matrix-wrap">{matrix_svg(att, tokens, layer, head, start, (r0, c0), scale)}</div></figure>')
    selection = ('<p class="attn-selection muted small" data-testid="attention-selection" aria-live="polite">'
                 'Hover or tap a cell: its query and key light up in the Q and K maps.</p>')
    return View(f'<div class="attn-pair">{whole}{zoom}</div>{selection}', [heat])


def lines_view(att: np.ndarray, tokens: list[str], layer: int, head: int, *, heads=None, query: int | None = None,
               scale: str = "linear", start: int = 0) -> View:
    """The lines view of ``att`` [H, N, N] (after BertViz's head view): queries on the left, keys on
    the right, a line for each weight of the visible heads (``heads``; default: ``head``), its
    opacity the weight on the chosen colour scale. ``query`` picks one query's lines; None shows
    every query's when N <= ``ALL_LINES_MAX``, else the last token's."""
    H, n, _ = att.shape
    heads = sorted({int(h) for h in heads if 0 <= int(h) < H}) if heads is not None else [head]
    if query is not None and not 0 <= int(query) < n:
        query = None
    every = query is None and n <= ALL_LINES_MAX
    chosen = None if every else (n - 1 if query is None else int(query))
    queries = range(n) if every else (chosen,)
    labels = [token_label(t) for t in tokens]
    short = [s if len(s) <= 14 else s[:13] + "…" for s in labels]
    top, left_x, right_x, width = 8, 150, 310, 460
    height = top * 2 + n * BV_ROW
    y = lambda i: top + i * BV_ROW + BV_ROW / 2  # noqa: E731
    floor = 0.01 if every else 0.002  # lines fainter than this are not drawn
    lines = []
    for h in heads:
        shown = scale_weights(att[h], scale)
        color = HEAD_COLORS[h % len(HEAD_COLORS)]
        group = []
        for i in queries:
            for j in range(i + 1):
                w = float(shown[i, j])
                if w < floor:
                    continue
                group.append(f'<line x1="{left_x + 6}" y1="{y(i):.1f}" x2="{right_x - 6}" y2="{y(j):.1f}" '
                             f'stroke-opacity="{min(1.0, w):.3f}" stroke-width="{1 + 3 * min(1.0, w):.2f}"/>')
        lines.append(f'<g class="bv-lines" data-head="{h}" stroke="{color}">{"".join(group)}</g>')
    rows = []
    for i in range(n):
        on = chosen == i
        rows.append(
            f'<g class="bv-q{" on" if on else ""}" role="button" tabindex="0" data-action="bv-token" data-q="{start + i}" '
            f'data-index="{i}" aria-pressed="{str(on).lower()}" aria-label="Lines of query {start + i} {escape(labels[i])}">'
            f'<rect x="4" y="{y(i) - BV_ROW / 2 + 1:.1f}" width="{left_x - 2}" height="{BV_ROW - 2}" rx="3"/>'
            f'<text x="{left_x}" y="{y(i):.1f}" text-anchor="end" dominant-baseline="middle">{escape(short[i])}</text></g>')
        attended = chosen is not None and i <= chosen and any(att[h, chosen, i] >= 0.1 for h in heads)
        rows.append(f'<text class="bv-k{" on" if attended else ""}" x="{right_x}" y="{y(i):.1f}" '
                    f'dominant-baseline="middle">{escape(short[i])}</text>')
    toggles = "".join(
        f'<button type="button" class="bv-head" data-action="bv-head" data-head="{h}" '
        f'aria-pressed="{str(h in heads).lower()}" style="--head:{HEAD_COLORS[h % len(HEAD_COLORS)]}" '
        f'aria-label="Head {h + 1} lines {"shown" if h in heads else "hidden"}">'
        f'<span class="swatch" aria-hidden="true"></span>{h + 1}</button>' for h in range(H))
    which = ("every query's lines" if every else
             f"the lines of query {start + chosen} ‘{escape(labels[chosen])}’ (tap a token on the left to pick another)")
    all_button = ('<button type="button" data-action="bv-token" data-index="-1">All queries</button>'
                  if n <= ALL_LINES_MAX and not every else "")
    svg = (f'<svg class="bertviz-svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="group" aria-label="Lines from each query token to the keys it attends to">'
           f'<g class="bv-all-lines">{"".join(lines)}</g>{"".join(rows)}</svg>')
    html = (f'<div class="bertviz" data-testid="bertviz" data-heads="{",".join(str(h) for h in heads)}" '
            f'data-query="{"all" if every else start + chosen}" data-layer="{layer}">'
            f'<div class="bv-controls" role="group" aria-label="Heads shown as lines"><span>Heads:</span>{toggles}'
            f'{all_button}</div>'
            f'<p class="muted small">Layer {layer + 1}: {which}. Line strength = attention weight '
            f'({escape(SCALES[scale].split(":")[0])} scale), one colour per head.</p>'
            f'<div class="bertviz-scroll" data-keep-in-view><div class="bv-heads" aria-hidden="true"><span>query</span><span>key</span></div>'
            f'{svg}</div></div>')
    return View(html)


def numbers_table(m: np.ndarray, labels: list[str], kind: str, caption: str, mask: np.ndarray | None = None,
                  scale: float | None = None, masked_text: str = "−∞") -> str:
    """A small [N, T] matrix with its numbers in coloured cells (kind: 'signed' or 'prob')."""
    n, t = m.shape
    if kind == "prob":
        colors = viridis(m)
    else:
        values = m if mask is None else np.where(mask, np.float32(0), m)
        colors = diverging(values, scale or robust_scale(values[~mask] if mask is not None and (~mask).any() else values))
    head = "".join(f'<th scope="col">{escape(labels[j])}</th>' for j in range(t))
    body = []
    for i in range(n):
        cells = []
        for j in range(t):
            if mask is not None and mask[i, j]:
                cells.append(f'<td class="masked" title="masked: a future token">{masked_text}</td>')
            else:
                c = colors[i, j]
                cells.append(f'<td style="background:{css_color(c)};color:{text_on(c)}" '
                             f'title="{escape(labels[i])} · {escape(labels[j])} = {fmt(m[i, j], 6)}">{fmt(m[i, j], 3)}</td>')
        body.append(f'<tr><th scope="row">{escape(labels[i])}</th>{"".join(cells)}</tr>')
    return (f'{scroll_box(caption)}<table class="matrix"><caption>{escape(caption)}</caption>'
            f'<thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _terms(a: np.ndarray, b: np.ndarray, count: int = 3) -> str:
    terms = " + ".join(f"({fmt(x, 3)})({fmt(y, 3)})" for x, y in zip(a[:count], b[:count]))
    return terms + (f" + … ({a.size} terms)" if a.size > count else "")


def _anim_canvas(heat: Heat, cls: str) -> str:
    rows, cols = heat.shape
    return (f'<canvas class="heat anim {cls}" data-heat="{escape(heat.key)}" width="{cols}" height="{rows}" '
            f'aria-hidden="true"></canvas>')


def _bars(values: np.ndarray, start: np.ndarray, cls: str) -> str:
    """Bars whose heights animate from ``start`` to ``values`` (both in [0, 1]) when the stage plays."""
    return "".join(f'<span class="{cls}" style="--from:{100 * a:.1f}%;--to:{100 * b:.1f}%"></span>'
                   for a, b in zip(start, values))


def stage_pictures(key: str, head: int, q, k, v, scores, scaled, masked, att, out, K: int, labels) -> dict[str, View]:
    """A small moving picture for each of the first five stages, from the head's real tensors.

    Q [N, K] and Kᵀ [K, N] slide into QKᵀ; the scale sweeps across the scores; the mask wipes
    over the future; the last query's row turns from scores into probabilities (bar heights
    animate from one to the other); the row sweeps down V into the output row. The page
    plays each when its stage becomes the active one (CSS, keyed on data-stage)."""
    n = att.shape[0]
    future = np.triu(np.ones((n, n), dtype=bool), 1)
    s_scale = max(robust_scale(scores), robust_scale(scaled))
    qk_scale = max(robust_scale(q), robust_scale(k))
    h_q = signed_heat(f"{key}.anim.q", "Q", q, labels, qk_scale)
    h_kt = signed_heat(f"{key}.anim.kt", "Kᵀ", k.T, [f"dim {d}" for d in range(K)], qk_scale)
    h_s = signed_heat(f"{key}.anim.s", "scores", scores, labels, s_scale)
    h_s2 = signed_heat(f"{key}.anim.s2", "scaled", scaled, labels, s_scale)
    h_m = signed_heat(f"{key}.anim.m", "masked", np.where(future, 0, scaled), labels, s_scale)
    h_m.rgba[future] = (0x8A, 0x93, 0xA5, 255)  # darker than MASKED_RGBA: the wipe must read on pale scores
    h_a = prob_heat(f"{key}.anim.a", "att", att, labels, labels, mask=future)
    v_scale = max(robust_scale(v), robust_scale(out))
    h_v = signed_heat(f"{key}.anim.v", "V", v, labels, v_scale)
    i = n - 1
    h_row = prob_heat(f"{key}.anim.row", f"att row {i}", att[i][:, None], labels, ["weight"])
    h_o = signed_heat(f"{key}.anim.o", f"output row {i}", out[i][None, :], [labels[i]], v_scale)
    pics = {}
    pics["scores"] = View(
        '<figure class="anim-pic anim-qk" aria-hidden="true"><span class="slot-empty"></span>'
        f'<div class="anim-kt">{_anim_canvas(h_kt, "kt")}<span class="anim-label">Kᵀ [{K}×{n}]</span></div>'
        f'<div class="anim-q">{_anim_canvas(h_q, "q")}<span class="anim-label">Q [{n}×{K}]</span></div>'
        f'<div class="anim-s">{_anim_canvas(h_s, "s")}<span class="anim-label">QKᵀ [{n}×{n}]</span></div></figure>',
        [h_q, h_kt, h_s])
    pics["scaled"] = View(
        '<figure class="anim-pic anim-sweep" aria-hidden="true"><div class="anim-stack">'
        f'{_anim_canvas(h_s, "under")}{_anim_canvas(h_s2, "over")}<span class="sweep-bar">÷√{K}</span></div>'
        f'<span class="anim-label">every score ÷ {fmt(math.sqrt(K), 4)}</span></figure>', [h_s2])
    pics["masked"] = View(
        '<figure class="anim-pic anim-mask" aria-hidden="true"><div class="anim-stack">'
        f'{_anim_canvas(h_s2, "under")}{_anim_canvas(h_m, "over")}</div>'
        f'<span class="anim-label">the future (above the diagonal) becomes −∞</span></figure>', [h_m])
    keys = range(max(0, i + 1 - WINDOW), i + 1)
    row = masked[i, keys.start:i + 1].astype(np.float64)
    before = (row - row.min()) / ((row.max() - row.min()) or 1.0)
    probs = att[i, keys.start:i + 1].astype(np.float64)
    after = probs / (probs.max() or 1.0)
    pics["softmax"] = View(
        '<figure class="anim-pic anim-softmax" aria-hidden="true">'
        f'<div class="bars">{_bars(after, before, "bar-col")}</div>'
        f'<span class="anim-label">row {i} {escape(labels[i])}, keys {keys.start}–{i}: scores → probabilities '
        f'(largest {fmt(probs.max(), 3)}; all {i + 1} sum to 1)</span></figure>')
    pics["times-v"] = View(
        '<figure class="anim-pic anim-times-v" aria-hidden="true">'
        f'<div class="anim-row">{_anim_canvas(h_row, "row")}<span class="anim-label">a[{i}]</span></div>'
        '<span class="anim-op">×</span>'
        f'<div><div class="anim-stack anim-v">{_anim_canvas(h_v, "v")}<span class="sweep-row"></span></div>'
        f'<span class="anim-label">V [{n}×{K}]</span></div>'
        '<span class="anim-op">→</span>'
        f'<div class="anim-out">{_anim_canvas(h_o, "o")}<span class="anim-label">output row {i}</span></div></figure>',
        [h_v, h_row, h_o])
    return pics


def head_thumbs(trace: Trace, tokens, layer: int, scale: str):
    """The thumbnail of each head of ``layer`` (``thumb_heat``), one at a time: a generator, so
    that a caller may give the page a turn between heads (issue 16: on a long input they were
    a good part of the view's 200 ms)."""
    att = trace[layer_name(layer, "att")]
    labels = row_labels(check_tokens(tokens, int(trace.ids.size)))
    for h in range(trace.config.n_head):
        yield thumb_heat(f"attn.{layer}.thumb{h}", f"layer {layer + 1} head {h + 1}", att[h], labels, scale, trace.start)


def render(trace: Trace, tokens, layer: int, head: int, *, derivation_open: bool = False,
           stage: int = 0, popovers: dict | None = None, lens=None, thumbs: list[Heat] | None = None) -> View:
    """The attention section for ``layer``/``head`` (0-based). ``lens`` (an
    ``app.attention_lens.AttentionLens``, or None for its defaults) holds the reader's choices:
    colour scale, zoomed window, the lines view's heads and query. ``thumbs``: the heads'
    thumbnails from ``head_thumbs`` for this trace, layer and scale, when already made."""
    cfg = trace.config
    H, K, D = cfg.n_head, cfg.head_size, cfg.n_embd
    n = int(trace.ids.size)
    tokens = check_tokens(tokens, n)
    if not 0 <= layer < cfg.n_layer or not 0 <= head < H:
        raise ValueError(f"layer {layer} / head {head} out of range ({cfg.n_layer} layers, {H} heads)")
    g = lambda name: trace[layer_name(layer, name)]  # noqa: E731
    q = check_shape("q", g("q"), (H, n, K))
    k = check_shape("k", g("k"), (H, n, K))
    v = check_shape("v", g("v"), (H, n, K))
    scores = check_shape("scores", g("scores"), (H, n, n))
    scaled = check_shape("scaled", g("scaled"), (H, n, n))
    masked = check_shape("masked", g("masked"), (H, n, n))
    att = check_shape("att", g("att"), (H, n, n))
    head_out = check_shape("head_out", g("head_out"), (H, n, K))
    concat = check_shape("attn_concat", g("attn_concat"), (n, D))
    proj = check_shape("attn_proj", g("attn_proj"), (n, D))
    labels = row_labels(tokens)
    short = [token_label(t) for t in tokens]
    future = np.triu(np.ones((n, n), dtype=bool), 1)
    key = f"attn.{layer}.{head}"
    heats = []
    scale = getattr(lens, "scale", "linear")
    if scale not in SCALES:
        raise ValueError(f"unknown colour scale {scale!r}; expected one of {tuple(SCALES)}")

    # Every head of this layer, as thumbnails that select the head.
    made = list(thumbs) if thumbs is not None else list(head_thumbs(trace, tokens, layer, scale))
    thumbs = []
    for h, heat in enumerate(made):
        heats.append(heat)
        current = ' aria-current="true"' if h == head else ""
        size = heat.shape[0]
        thumbs.append(
            f'<button type="button" class="head-thumb{" current" if h == head else ""}" data-action="head" '
            f'data-head="{h}" data-testid="head-thumb"{current} aria-label="Show head {h + 1}">'
            f'<canvas class="heat thumb" data-heat="{heat.key}" width="{size}" height="{size}" aria-hidden="true"></canvas>'
            f'<span>Head {h + 1}</span></button>'
        )

    # Q, K, V of the selected head.
    qkv_scale = max(robust_scale(q[head]), robust_scale(k[head]), robust_scale(v[head]))
    qkv = []
    for name, arr, title in (("q", q, "Query"), ("k", k, "Key"), ("v", v, "Value")):
        heat = signed_heat(f"{key}.{name}", f"{title} (head {head + 1})", arr[head], labels, qkv_scale)
        heats.append(heat)
        # Q and K carry a row mark the page moves onto the hovered matrix cell's query / key.
        mark = f'<span class="row-mark" data-mark="{name}" hidden></span>' if name in "qk" else ""
        qkv.append(f'<figure class="map" data-rows="{name}"><figcaption>{title} <code>{name}[{head}]</code> '
                   f'<span class="muted">[{n}×{K}]</span></figcaption><div class="map-body">'
                   f'{labels_column(tokens, trace.start)}<div class="canvas-wrap">'
                   f'{canvas_html(heat, f"{title} vectors of head {head + 1}", ROW_PX, 640)}{mark}</div>'
                   f'</div></figure>')

    pops = popovers or {}
    matrix = window_view(att[head], tokens, layer, head, trace.start, getattr(lens, "origin", None), scale)
    heats.extend(matrix.heats)
    lines = lines_view(att, tokens, layer, head, heads=lens.visible_heads(head) if lens is not None else None,
                       query=getattr(lens, "query", None),
                       scale=scale, start=trace.start)

    # The derivation, stage by stage, with one worked cell per stage: built only while it is
    # open (opening it re-renders the view), so a closed one costs no HTML, heat maps or time —
    # at 256 tokens its nine maps were half of the view's HTML (issue 16: no task over 200 ms).
    stages_html = []
    if derivation_open:
        # The derivation, stage by stage, with one worked cell per stage.
        i = n - 1
        j = int(np.argmax(att[head, i]))
        r = n - 1  # the worked examples follow the last token, the one whose next token is predicted
        sqrt_k = math.sqrt(K)
        m_row = masked[head, i, : i + 1]
        row_max = float(m_row.max())
        exps = np.exp((m_row - row_max).astype(np.float64))
        stage_bodies = {}

        def grid(name: str, m: np.ndarray, kind: str, caption: str, mask=None) -> str:
            if n <= TABLE_MAX:
                return numbers_table(m, short, kind, caption, mask, masked_text="0" if kind == "prob" else "−∞")
            if kind == "prob":
                heat = prob_heat(f"{key}.{name}", caption, m, labels, labels, mask=mask)
            else:
                shown = np.where(mask, 0, m) if mask is not None else m
                heat = signed_heat(f"{key}.{name}", caption, shown, labels, col_name="key", row_name="query")
                heat.col_labels = labels
                if mask is not None:
                    heat.mask, heat.mask_text = mask, "−∞ (masked: a future token)"
                    heat.rgba[mask] = (200, 204, 212, 255)
            heat.qk, heat.marks = (trace.start, trace.start), True  # an attention-shaped map: query x key
            heats.append(heat)
            return f'<div class="map-body">{labels_column(tokens, trace.start)}{canvas_html(heat, caption, ROW_PX, 480)}</div>'

        def vec_map(name: str, m: np.ndarray, caption: str, cols: str = "dim", highlight: tuple[int, int] | None = None) -> str:
            heat = signed_heat(f"{key}.{name}", caption, m, labels, col_name=cols)
            heats.append(heat)
            overlay = ""
            if highlight is not None:
                a, b = highlight
                total = m.shape[1]
                overlay = (f'<span class="col-highlight" style="left:{100 * a / total:.3f}%;width:{100 * (b - a) / total:.3f}%" '
                           f'aria-hidden="true"></span>')
            return (f'<div class="map-body">{labels_column(tokens, trace.start)}<div class="canvas-wrap">'
                    f'{canvas_html(heat, caption, ROW_PX, 480)}{overlay}</div></div>')

        q_i, k_j = q[head, i], k[head, j]
        stage_bodies["scores"] = (
            grid("scores", scores[head], "signed", f"scores[{head}] = Q·Kᵀ (every pair, before the mask)")
            + f'<p class="worked">Query {i} {escape(labels[i])} · key {j} {escape(labels[j])}: '
              f'q·k = {_terms(q_i, k_j)} = <strong>{fmt(scores[head, i, j], 6)}</strong> '
              f'<span class="muted">(recomputed: {fmt(float(np.dot(q_i.astype(np.float64), k_j)), 6)})</span></p>')
        stage_bodies["scaled"] = (
            grid("scaled", scaled[head], "signed", f"scaled[{head}] = scores / √{K}")
            + f'<p class="worked">√K = √{K} = {fmt(sqrt_k, 6)}; {fmt(scores[head, i, j], 6)} / {fmt(sqrt_k, 6)} = '
              f'<strong>{fmt(scaled[head, i, j], 6)}</strong></p>')
        stage_bodies["masked"] = (
            grid("masked", masked[head], "signed", f"masked[{head}]: future cells set to −∞", mask=future)
            + f'<p class="worked">{n * (n - 1) // 2} of {n * n} cells are in the future and become −∞ '
              f'(stored as {float(MASK_VALUE):g}, so e^(−∞ − max) is exactly 0); query 0 {escape(labels[0])} can only see itself.</p>')
        stage_bodies["softmax"] = (
            grid("softmax", att[head], "prob", f"att[{head}] = softmax over each row", mask=future)
            + f'<p class="worked">Row {i} {escape(labels[i])}: max = {fmt(row_max, 5)}, '
              f'Σ e^(x − max) = {fmt(exps.sum(), 6)}; key {j}: e^({fmt(m_row[j] - row_max, 4)}) / {fmt(exps.sum(), 6)} = '
              f'<strong>{fmt(exps[j] / exps.sum(), 6)}</strong> (trace: {fmt(att[head, i, j], 6)}). '
              f'The row sums to {fmt(float(att[head, i].sum(dtype=np.float64)), 7)}.</p>')
        contrib = np.argsort(-att[head, r, : r + 1])[:3]
        recomputed = sum(float(att[head, r, t]) * float(v[head, t, 0]) for t in range(r + 1))
        stage_bodies["times-v"] = (
            '<div class="maps two">'
            + f'<figure class="map"><figcaption>Values <code>v[{head}]</code> [{n}×{K}]</figcaption>'
            + vec_map("v2", v[head], f"values (head {head + 1})") + '</figure>'
            + f'<figure class="map"><figcaption>Weighted sum <code>att[{head}] @ v[{head}]</code> [{n}×{K}]</figcaption>'
            + vec_map("o", head_out[head], f"att @ v (head {head + 1})") + '</figure></div>'
            + f'<p class="worked">Output row {r} {escape(labels[r])} mixes the values with its attention row; the largest '
              'weights: ' + ", ".join(f"{fmt(att[head, r, t], 3)} × v[{t}] {escape(labels[t])}" for t in contrib)
            + f'. Dimension 0: Σₜ a·v = {fmt(recomputed, 6)} (trace: {fmt(head_out[head, r, 0], 6)}).</p>')
        stage_bodies["head-out"] = (
            vec_map("headout", head_out[head], f"head_out[{head}]")
            + f'<p class="worked">Head {head + 1} hands on {K} numbers per token; the norm of each row: '
            + ", ".join(f"{escape(short[t])} {fmt(np.linalg.norm(head_out[head, t]), 3)}" for t in range(min(n, 8)))
            + ("…" if n > 8 else "") + '</p>')
        a, b = head * K, (head + 1) * K
        stage_bodies["concat"] = (
            vec_map("concat", concat, "attn_concat", highlight=(a, b))
            + f'<p class="worked">Columns {a}–{b - 1} are head {head + 1}: attn_concat[{r}, {a}] = {fmt(concat[r, a], 6)} '
              f'= head_out[{head}][{r}, 0] = {fmt(head_out[head, r, 0], 6)}.</p>')
        stage_bodies["proj"] = (
            vec_map("proj", proj, "attn_proj")
            + (weight_button(f"pop-{layer}-attn_c_proj", "Weights: attn c_proj", "attn.c_proj") if "c_proj" in pops else "")
            + f'<p class="worked">attn_proj = attn_concat · W_Oᵀ + b ({D}×{D} weights in <code>attn.c_proj</code>); '
              'it is added to the residual stream (see the block view).</p>')
        pictures = stage_pictures(key, head, q[head], k[head], v[head], scores[head], scaled[head], masked[head], att[head],
                                  head_out[head], K, labels)
        for index, (name, title, formula) in enumerate(STAGES, 1):
            picture = pictures.get(name)
            if picture is not None:
                heats.extend(picture.heats)
            stages_html.append(
                f'<section class="stage" data-stage-name="{name}" data-testid="stage-{name}" aria-label="{escape(title)}">'
                f'<h4>{escape(title)}</h4><div class="stage-formula">{tex(formula, display=True)}</div>'
                f'{picture.html if picture is not None else ""}{stage_bodies[name]}</section>')
    total = len(STAGES)
    stage = max(0, min(int(stage), total))
    derivation = (
        f'<div class="derivation" id="derivation" data-testid="derivation" data-stage="{stage}" '
        f'{"" if derivation_open else "hidden"}>'
        f'<div class="player" role="group" aria-label="Derivation playback">'
        f'<button type="button" id="deriv-play" data-action="deriv-play" data-testid="derivation-play" aria-pressed="false">Play</button>'
        f'<button type="button" id="deriv-step" data-action="deriv-step" data-testid="derivation-step">Step</button>'
        f'<button type="button" id="deriv-replay" data-action="deriv-replay" data-testid="derivation-replay">Replay</button>'
        f'<button type="button" id="deriv-all" data-action="deriv-all" data-testid="derivation-all">Show all</button>'
        f'<span class="stage-count" data-testid="stage-count" aria-live="polite">{stage} of {total} stages shown</span></div>'
        f'<div class="stages">{"".join(stages_html)}</div></div>'
    )

    html = f"""
<h2>Attention · layer {layer + 1}, head {head + 1}</h2>
<p>Each token's layer-normed vector is multiplied by <code>c_attn</code> into a query, a key and a value for
each of the {H} heads ({K} numbers each). A query scores every key up to its own position; the softmax turns
the scores into weights; the output is the weighted sum of the values. The heads' outputs are concatenated and
projected back to {D} numbers by <code>c_proj</code>. {" ".join(pops[k].button for k in ("c_attn", "c_proj") if k in pops)}</p>
{"".join(pop.html for pop in pops.values())}
<h3>All heads of layer {layer + 1}</h3>
<div class="head-thumbs" role="group" aria-label="Heads of layer {layer + 1}" data-tour="heads">{"".join(thumbs)}</div>
<h3>Queries, keys and values of head {head + 1}</h3>
<div class="legend-row">{legend_html(qkv_scale, note="one scale for Q, K and V")}</div>
<div class="maps three" data-tour="qkv">{"".join(qkv)}</div>
<h3>Attention matrix</h3>
<p class="muted small">Row = query (the token being updated), column = key (the token looked at). Hover or tap a
cell, or focus the matrix and use the arrow keys. Grey or hatched cells are masked: a token never sees the future.</p>
<div class="legend-row attn-scale-row">{scale_select(scale)} {scale_legend(scale)}</div>
<div class="attn-matrix-slot" data-slot="attention-matrix" data-tour="attention-matrix">{matrix.html}</div>
<h3>Lines view of layer {layer + 1}</h3>
<div data-slot="bertviz">{lines.html}</div>
<p><button type="button" id="derivation-toggle" data-action="derivation" data-testid="derivation-toggle"
  aria-expanded="{"true" if derivation_open else "false"}" aria-controls="derivation">{"Hide" if derivation_open else "Show"} how the matrix is computed</button></p>
{derivation}
{math_panel("attention", cfg, n)}
"""
    for pop in pops.values():
        heats.extend(pop.heats)
    return View(html, heats)
