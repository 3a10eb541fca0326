"""Overview: Sankey-style ribbons from the tokens through the embedding, the L blocks and the
final layer norm to the next-token probabilities.

Every width is a real number. Each token is a ribbon; its thickness in a column is its
share of the column's total vector length, ``‖x_n‖ / Σ_n' ‖x_n'‖``, where x is the residual
stream at that point (``emb``, each block's ``res_2``, ``ln_f``). The last token's ribbon then
splits into the most likely next tokens with thickness proportional to their probability.
Column captions give the real total lengths; hovering a column or ribbon gives details.
Clicking a block (or Enter on it) selects that layer in every view.
"""

from __future__ import annotations

from html import escape

import numpy as np

from glassbox.sampling import Distribution
from glassbox.trace import Trace, layer_name

from .common import View, check_shape, check_tokens, fmt, token_label
from .mathtex import panel as math_panel

# Okabe & Ito's colour-blind-safe palette (black left out), cycled over tokens.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
MAX_TOKENS = 24
FAN = 6  # predictions drawn at the right


def _ribbon(x0: float, a0: float, b0: float, x1: float, a1: float, b1: float) -> str:
    """Closed path of a ribbon from [a0, b0] at x0 to [a1, b1] at x1 (cubic edges)."""
    m = (x0 + x1) / 2
    return (f"M{x0:.1f},{a0:.1f} C{m:.1f},{a0:.1f} {m:.1f},{a1:.1f} {x1:.1f},{a1:.1f} "
            f"L{x1:.1f},{b1:.1f} C{m:.1f},{b1:.1f} {m:.1f},{b0:.1f} {x0:.1f},{b0:.1f} Z")


def stage_vectors(trace: Trace) -> list[tuple[str, str, np.ndarray]]:
    """(short label, trace name, [N, D]) for each column after the tokens."""
    cols = [("Embedding", "emb", trace["emb"])]
    for layer in range(trace.config.n_layer):
        cols.append((f"Block {layer + 1}", layer_name(layer, "res_2"), trace[layer_name(layer, "res_2")]))
    cols.append(("ln_f", "ln_f", trace["ln_f"]))
    return cols


def render(trace: Trace, tokens, dist: Distribution, vocab, layer: int) -> View:
    cfg = trace.config
    n = int(trace.ids.size)
    tokens = check_tokens(tokens, n)
    D = cfg.n_embd
    if not 0 <= layer < cfg.n_layer:
        raise ValueError(f"layer {layer} out of range")
    stages = stage_vectors(trace)
    for _, name, value in stages:
        check_shape(name, value, (n, D))
    first = max(0, n - MAX_TOKENS)
    shown = list(range(first, n))
    norms = np.stack([np.linalg.norm(v[first:].astype(np.float64), axis=-1) for _, _, v in stages])  # [S, n']
    S = len(stages)
    W = 1000
    rows = len(shown)
    gap = 3.0
    budget = max(160.0, 14.0 * rows)
    fan_budget = min(budget, 260.0)
    H = max(budget + gap * (rows - 1) + 70, 40 + fan_budget + (FAN + 1) * 20 + 30)
    x_tokens = 110
    x_cols = np.linspace(170, 800, S)
    node_w = 12
    x_pred = 880
    top_y = 40

    shares = norms / norms.sum(axis=1, keepdims=True)
    thick = np.maximum(shares * budget, 1.2)

    def stack(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tops = top_y + np.concatenate([[0.0], np.cumsum(col[:-1] + gap)])
        return tops, tops + col

    parts = [f'<svg class="sankey" viewBox="0 0 {W} {H:.0f}" role="img" data-testid="sankey" '
             f'aria-label="Flow of {rows} tokens through the embedding, {cfg.n_layer} blocks and ln_f to the next-token '
             f'probabilities; ribbon width is each token\'s share of the vector length">']
    # Column backgrounds: blocks are buttons that select the layer.
    hits = []
    for s, (label, name, value) in enumerate(stages):
        x = x_cols[s]
        total = norms[s].sum()
        is_block = name.startswith("h.")
        cls = "col" + (" block" if is_block else "") + (" current" if is_block and s - 1 == layer else "")
        title = f"{label}: total vector length Σ‖x‖ = {fmt(total, 4)} over the tokens shown"
        if is_block:
            blk = s - 1
            attn = np.linalg.norm(trace[layer_name(blk, "attn_proj")][first:].astype(np.float64), axis=-1).sum()
            mlp = np.linalg.norm(trace[layer_name(blk, "mlp_proj")][first:].astype(np.float64), axis=-1).sum()
            title += f"; attention added Σ‖attn_proj‖ = {fmt(attn, 4)}, the MLP Σ‖mlp_proj‖ = {fmt(mlp, 4)}"
            parts.append(
                f'<g class="{cls}"><rect class="col-bg" x="{x - 16:.1f}" y="{top_y - 30}" width="{node_w + 32}" '
                f'height="{H - top_y - 4:.0f}" rx="6"/>'
                f'<text x="{x + node_w / 2:.1f}" y="{top_y - 14}" text-anchor="middle" font-size="13">{escape(label)}</text>'
                f'<text x="{x + node_w / 2:.1f}" y="{H - 10:.0f}" text-anchor="middle" font-size="10" class="muted">{fmt(total, 3)}</text></g>')
            # The clickable area goes on top of the ribbons (added last, below).
            hits.append(
                f'<g class="col-hit{" current" if blk == layer else ""}" data-action="layer" data-layer="{blk}" role="button" '
                f'tabindex="0" data-testid="sankey-block" aria-label="Block {blk + 1}: show this layer"'
                f'{" aria-current=true" if blk == layer else ""}><title>{escape(title)}</title>'
                f'<rect x="{x - 16:.1f}" y="{top_y - 30}" width="{node_w + 32}" height="{H - top_y - 4:.0f}" rx="6"/></g>')
        else:
            parts.append(
                f'<g class="{cls}"><title>{escape(title)}</title>'
                f'<text x="{x + node_w / 2:.1f}" y="{top_y - 14}" text-anchor="middle" font-size="13">{escape(label)}</text>'
                f'<text x="{x + node_w / 2:.1f}" y="{H - 10:.0f}" text-anchor="middle" font-size="10" class="muted">{fmt(total, 3)}</text></g>')
    parts.append(f'<text x="{x_tokens - 8}" y="{top_y - 14}" text-anchor="end" font-size="13">Tokens</text>')
    parts.append(f'<text x="{x_pred}" y="{top_y - 14}" font-size="13">Next token</text>')
    parts.append(f'<text x="{x_tokens - 8}" y="{H - 10:.0f}" text-anchor="end" font-size="10" '
                 f'class="muted">Σ‖x‖ per column:</text>')

    # Ribbons, column to column; the token labels on the left.
    tops0, bots0 = stack(thick[0])
    for r, i in enumerate(shown):
        color = PALETTE[i % len(PALETTE)]
        mid = (tops0[r] + bots0[r]) / 2
        parts.append(f'<text class="tok-label" x="{x_tokens - 8}" y="{mid:.1f}" text-anchor="end" dominant-baseline="middle" '
                     f'font-size="12">{escape(token_label(tokens[i]))}</text>')
        parts.append(f'<path class="ribbon" style="--col:0" fill="{color}" '
                     f'd="{_ribbon(x_tokens, mid - 2, mid + 2, x_cols[0], tops0[r], bots0[r])}"/>')
    prev_t, prev_b = tops0, bots0
    for s in range(S):
        tops, bots = stack(thick[s])
        for r, i in enumerate(shown):
            color = PALETTE[i % len(PALETTE)]
            if s > 0:
                tip = (f"{token_label(tokens[i])} (position {i}): ‖x‖ {fmt(norms[s - 1, r], 4)} → {fmt(norms[s, r], 4)} "
                       f"({stages[s][0]})")
                parts.append(f'<path class="ribbon" style="--col:{s}" fill="{color}" '
                             f'd="{_ribbon(x_cols[s - 1] + node_w, prev_t[r], prev_b[r], x_cols[s], tops[r], bots[r])}">'
                             f'<title>{escape(tip)}</title></path>')
            parts.append(f'<rect class="node" x="{x_cols[s]:.1f}" y="{tops[r]:.1f}" width="{node_w}" '
                         f'height="{bots[r] - tops[r]:.1f}" fill="{color}"/>')
        prev_t, prev_b = tops, bots

    # The last token fans out into the most likely next tokens.
    top_ids = [int(i) for i in dist.top(FAN)]
    probs = np.array([float(dist.probs[i]) for i in top_ids])
    rest = max(0.0, 1.0 - probs.sum())
    src_t, src_b = prev_t[-1], prev_b[-1]
    y = top_y
    src = src_t
    color = PALETTE[(n - 1) % len(PALETTE)]
    for i, p in list(zip(top_ids, probs)) + ([(-1, rest)] if rest > 1e-6 else []):
        h = max(p * fan_budget, 1.0)
        sh = (src_b - src_t) * p
        label = "all others" if i < 0 else token_label(vocab[i])
        parts.append(f'<path class="ribbon fan" style="--col:{S}" fill="{color}" '
                     f'd="{_ribbon(x_cols[-1] + node_w, src, src + sh, x_pred, y, y + h)}"><title>'
                     f'{escape(label)}: p = {fmt(p, 4)}</title></path>')
        parts.append(f'<rect class="node pred{" other" if i < 0 else ""}" x="{x_pred}" y="{y:.1f}" width="8" height="{h:.1f}"/>')
        parts.append(f'<text x="{x_pred + 14}" y="{y + max(h, 16) / 2:.1f}" dominant-baseline="middle" font-size="12">'
                     f'{escape(label)} <tspan class="muted">{fmt(p * 100, 3)}%</tspan></text>')
        src += sh
        y += max(h, 16) + 4
    parts.extend(hits)
    parts.append("</svg>")
    note = (f'<p class="muted small">Showing the last {MAX_TOKENS} of {n} tokens.</p>' if first else "")
    html = f"""
<h2>Overview: from tokens to probabilities</h2>
<p>Each coloured ribbon is one token's vector on its way through the model: its width is that token's share of
the total vector length in the column (the numbers under the columns are the totals). The last token's ribbon
splits into the most likely next tokens. Click a block to inspect that layer.</p>
<div class="sankey-wrap" data-tour="sankey">{"".join(parts)}</div>
{note}
{math_panel("overview", cfg, n)}
"""
    return View(html, [])
