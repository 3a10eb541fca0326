"""Attention view: every head's pattern, the selected head's Q, K, V, its attention matrix
(one SVG cell per query/key pair, with the trace's value on it) and the animated derivation
QK^T -> /sqrt(K) -> causal mask -> softmax -> x V -> head output -> concat -> projection.

All numbers are the trace's (``h.{l}.q/k/v/scores/scaled/masked/att/head_out/attn_concat/
attn_proj``); the worked examples recompute one cell from them and show both. Arrays are
row-per-token (Glassbox's layout): row i of ``att`` is query i and sums to 1.

Cells: ``data-testid="attention-cell"`` with ``data-q``, ``data-k`` (absolute positions) and
``data-value`` (the attention weight, 9 significant digits); masked (future) cells also carry
``data-masked="true"`` and are drawn hatched. Longer inputs show a window of the last
``WINDOW`` positions (the page says so).
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

from glassbox.reference import MASK_VALUE
from glassbox.trace import Trace, layer_name

from .common import (View, canvas_html, check_shape, check_tokens, css_color, diverging, exact, fmt, legend_html,
                     prob_heat, robust_scale, signed_heat, tex, text_on, token_label, viridis)
from .embedding import labels_column, row_labels
from .mathtex import panel as math_panel
from .weights import button as weight_button

WINDOW = 48  # positions shown in the attention matrix
TABLE_MAX = 12  # matrices up to this many tokens show their numbers in the cells
ROW_PX = 16

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


def matrix_svg(att: np.ndarray, tokens: list[str], layer: int, head: int, start: int = 0) -> str:
    """The attention matrix of one head as SVG: rows = queries, columns = keys."""
    n = att.shape[0]
    q0 = max(0, n - WINDOW)
    shown = n - q0
    cell = min(44, max(9, int(440 / shown)))
    labels = [token_label(t) for t in tokens]
    longest = max((len(s) for s in labels[q0:]), default=1)
    margin_left = int(min(110, 16 + 7 * longest + 24))
    margin_top = int(min(110, 16 + 6 * longest + 24))
    width = margin_left + shown * cell + 6
    height = margin_top + shown * cell + 6
    font = 12 if cell >= 14 else 9
    numbers = shown <= TABLE_MAX
    parts = [
        f'<svg class="attn-matrix" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="grid" tabindex="0" data-grid="attention" data-layer="{layer}" data-head="{head}" data-n="{n}" '
        f'data-q0="{q0}" aria-label="Attention matrix of layer {layer + 1}, head {head + 1}: '
        f'{shown} queries by {shown} keys. Arrow keys move between cells." data-testid="attention-matrix">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#e6e8ee"/><line x1="0" y1="0" x2="0" y2="6" stroke="#aab0bd" stroke-width="2"/>'
        '</pattern></defs>',
    ]
    for i in range(q0, n):
        y = margin_top + (i - q0) * cell + cell / 2
        parts.append(f'<text class="qlabel" x="{margin_left - 6}" y="{y:.1f}" font-size="{font}" '
                     f'text-anchor="end" dominant-baseline="middle">{escape(labels[i])}</text>')
        x = margin_left + (i - q0) * cell + cell / 2
        parts.append(f'<text class="klabel" x="{x:.1f}" y="{margin_top - 6}" font-size="{font}" '
                     f'transform="rotate(-60 {x:.1f} {margin_top - 6})">{escape(labels[i])}</text>')
    colors = viridis(att)
    for i in range(q0, n):
        y = margin_top + (i - q0) * cell
        for j in range(q0, n):
            x = margin_left + (j - q0) * cell
            value = att[i, j]
            if j > i:
                parts.append(
                    f'<rect class="cell masked" data-testid="attention-cell" data-q="{start + i}" data-k="{start + j}" '
                    f'data-value="{exact(value)}" data-masked="true" x="{x}" y="{y}" width="{cell}" height="{cell}" '
                    f'fill="url(#hatch)"/>')
                continue
            parts.append(
                f'<rect class="cell" data-testid="attention-cell" data-q="{start + i}" data-k="{start + j}" '
                f'data-value="{exact(value)}" x="{x}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="{css_color(colors[i, j])}"/>')
            if numbers:
                parts.append(f'<text class="cellnum" x="{x + cell / 2:.1f}" y="{y + cell / 2:.1f}" font-size="{10 if cell >= 36 else 9}" '
                             f'text-anchor="middle" dominant-baseline="middle" fill="{text_on(colors[i, j])}">'
                             f'{value:.2f}</text>')
    parts.append(f'<rect class="grid-cursor" x="0" y="0" width="{cell}" height="{cell}" visibility="hidden"/>')
    parts.append(f'<text class="axis" x="4" y="{margin_top - 4}" font-size="10">query ↓ key →</text>')
    parts.append("</svg>")
    return "".join(parts)


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
    return (f'<div class="table-scroll"><table class="matrix"><caption>{escape(caption)}</caption>'
            f'<thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _terms(a: np.ndarray, b: np.ndarray, count: int = 3) -> str:
    terms = " + ".join(f"({fmt(x, 3)})({fmt(y, 3)})" for x, y in zip(a[:count], b[:count]))
    return terms + (f" + … ({a.size} terms)" if a.size > count else "")


def render(trace: Trace, tokens, layer: int, head: int, *, derivation_open: bool = False,
           stage: int = 0, popovers: dict | None = None) -> View:
    """The attention section for ``layer``/``head`` (0-based)."""
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

    # Every head of this layer, as thumbnails that select the head.
    thumbs = []
    for h in range(H):
        heat = prob_heat(f"attn.{layer}.thumb{h}", f"layer {layer + 1} head {h + 1}", att[h], labels, labels,
                         mask=future)
        heats.append(heat)
        current = ' aria-current="true"' if h == head else ""
        thumbs.append(
            f'<button type="button" class="head-thumb{" current" if h == head else ""}" data-action="head" '
            f'data-head="{h}" data-testid="head-thumb"{current} aria-label="Show head {h + 1}">'
            f'<canvas class="heat thumb" data-heat="{heat.key}" width="{n}" height="{n}" aria-hidden="true"></canvas>'
            f'<span>Head {h + 1}</span></button>'
        )

    # Q, K, V of the selected head.
    qkv_scale = max(robust_scale(q[head]), robust_scale(k[head]), robust_scale(v[head]))
    qkv = []
    for name, arr, title in (("q", q, "Query"), ("k", k, "Key"), ("v", v, "Value")):
        heat = signed_heat(f"{key}.{name}", f"{title} (head {head + 1})", arr[head], labels, qkv_scale)
        heats.append(heat)
        qkv.append(f'<figure class="map"><figcaption>{title} <code>{name}[{head}]</code> '
                   f'<span class="muted">[{n}×{K}]</span></figcaption><div class="map-body">'
                   f'{labels_column(tokens, trace.start)}{canvas_html(heat, f"{title} vectors of head {head + 1}", ROW_PX, 640)}'
                   f'</div></figure>')

    pops = popovers or {}
    matrix = matrix_svg(att[head], tokens, layer, head, trace.start)
    window_note = (f'<p class="muted small">Showing the last {WINDOW} of {n} positions; rows still sum to 1 over all keys.</p>'
                   if n > WINDOW else "")

    # The derivation, stage by stage, with one worked cell per stage.
    i = n - 1
    j = int(np.argmax(att[head, i]))
    r = n - 1  # the worked examples follow the last token, the one whose next token is predicted
    sqrt_k = math.sqrt(K)
    m_row = masked[head, i, : i + 1]
    row_max = float(m_row.max())
    exps = np.exp((m_row - row_max).astype(np.float64))
    stages_html = []
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
    for index, (name, title, formula) in enumerate(STAGES, 1):
        stages_html.append(
            f'<section class="stage" data-stage-name="{name}" data-testid="stage-{name}" aria-label="{escape(title)}">'
            f'<h4>{escape(title)}</h4><div class="stage-formula">{tex(formula, display=True)}</div>'
            f'{stage_bodies[name]}</section>')
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
<p class="muted small">Row = query (the token being updated), column = key (the token looked at). Hover a cell
or focus the matrix and use the arrow keys. Hatched cells are masked: a token never sees the future.</p>
<div class="legend-row">{legend_html(1.0, "viridis", "attention weight")}</div>
<div class="matrix-wrap" data-tour="attention-matrix">{matrix}</div>
{window_note}
<p><button type="button" id="derivation-toggle" data-action="derivation" data-testid="derivation-toggle"
  aria-expanded="{"true" if derivation_open else "false"}" aria-controls="derivation">{"Hide" if derivation_open else "Show"} how the matrix is computed</button></p>
{derivation}
{math_panel("attention", cfg, n)}
"""
    for pop in pops.values():
        heats.extend(pop.heats)
    return View(html, heats)
