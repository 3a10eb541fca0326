"""The model map: the whole model as one picture, drawn from the live run, and the page's
navigation.

Left to right: the tokens, the embedding, the L blocks — each a box with its attention part
and its MLP part — the final layer norm and the next-token probabilities. Each token is a
ribbon whose thickness in a column is its share of the column's total vector length,
``‖x_n‖ / Σ_n' ‖x_n'‖``, where x is the residual stream at that point (``emb``; in each
block ``res_1`` after attention and ``res_2`` after the MLP; ``ln_f``). The last token's
ribbon then splits into the most likely next tokens, thickness proportional to their
probability (tokens the sampling filter removed, probability 0, are left out).

Every part carries ``data-part`` (``tokens``, ``embedding``, ``block-2-attention``,
``block-2-mlp`` — blocks counted from 0 like the trace's ``h.2`` —, ``output``) and the
action ``open-part``: the map controller opens that part's detailed view. A block's title
selects its layer (``data-testid="sankey-block"``). ``mini_map`` is the small sticky copy.
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
        cols.append((f"Block {layer + 1} attention", layer_name(layer, "res_1"), trace[layer_name(layer, "res_1")]))
        cols.append((f"Block {layer + 1} MLP", layer_name(layer, "res_2"), trace[layer_name(layer, "res_2")]))
    cols.append(("ln_f", "ln_f", trace["ln_f"]))
    return cols


def _part(part: str, label: str, x: float, y: float, w: float, h: float, opened: set[str], extra: str = "") -> str:
    """A clickable map part: a transparent box on top of the drawing."""
    pressed = "true" if part in opened else "false"
    return (f'<g class="part" data-action="open-part" data-part="{part}" role="button" tabindex="0" '
            f'aria-pressed="{pressed}" aria-label="{escape(label)}"{extra}><title>{escape(label)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="6"/></g>')


def render(trace: Trace, tokens, dist: Distribution, vocab, layer: int, opened: set[str] = frozenset()) -> View:
    cfg = trace.config
    n = int(trace.ids.size)
    tokens = check_tokens(tokens, n)
    D, L = cfg.n_embd, cfg.n_layer
    if not 0 <= layer < L:
        raise ValueError(f"layer {layer} out of range")
    stages = stage_vectors(trace)
    for _, name, value in stages:
        check_shape(name, value, (n, D))
    first = max(0, n - MAX_TOKENS)
    shown = list(range(first, n))
    norms = np.stack([np.linalg.norm(v[first:].astype(np.float64), axis=-1) for _, _, v in stages])  # [S, n']
    S = len(stages)
    rows = len(shown)
    W, gap, top_y, node_w = 1200, 2.0, 46, 8
    budget = min(max(150.0, 10.0 * rows), 250.0)
    fan_budget = budget * 0.6
    H = top_y + max(budget + gap * (rows - 1), fan_budget + FAN * 18) + 34
    x_tokens, x_emb, x_lnf, x_pred = 120, 200, 960, 1010
    # Column x: the embedding, then two per block (after attention, after the MLP), then ln_f.
    block_w = (x_lnf - 40 - (x_emb + 40)) / L
    x_cols = [x_emb]
    for b in range(L):
        left = x_emb + 40 + b * block_w
        x_cols += [left + block_w * 0.38, left + block_w * 0.80]
    x_cols.append(x_lnf)
    x_cols = np.array(x_cols)

    shares = norms / norms.sum(axis=1, keepdims=True)
    thick = np.maximum(shares * budget, 1.0)

    def stack(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tops = top_y + np.concatenate([[0.0], np.cumsum(col[:-1] + gap)])
        return tops, tops + col

    parts = [f'<svg class="sankey model-map" viewBox="0 0 {W} {H:.0f}" role="group" data-testid="sankey" '
             f'aria-label="The model: {rows} tokens through the embedding, {L} blocks (attention, then MLP) and ln_f '
             f'to the next-token probabilities; ribbon width is each token\'s share of the vector length">']
    hits = []
    box_top, box_h = top_y - 40, H - top_y + 34
    # Blocks: one box each, its attention half and its MLP half.
    for b in range(L):
        left = x_emb + 40 + b * block_w + 3
        w = block_w - 6
        current = " current" if b == layer else ""
        attn = np.linalg.norm(trace[layer_name(b, "attn_proj")][first:].astype(np.float64), axis=-1).sum()
        mlp = np.linalg.norm(trace[layer_name(b, "mlp_proj")][first:].astype(np.float64), axis=-1).sum()
        short = L > 6
        parts.append(
            f'<g class="block-box{current}"><rect class="box" x="{left:.1f}" y="{box_top}" width="{w:.1f}" height="{box_h:.0f}" rx="8"/>'
            f'<line class="split" x1="{left + w * 0.55:.1f}" y1="{top_y - 14}" x2="{left + w * 0.55:.1f}" y2="{H - 22:.0f}"/>'
            f'<text x="{left + w / 2:.1f}" y="{box_top + 15}" text-anchor="middle" font-size="{12 if not short else 10}" '
            f'class="box-title">{"B" if short else "Block "}{b + 1}</text>'
            f'<text x="{left + w * 0.27:.1f}" y="{H - 8:.0f}" text-anchor="middle" font-size="{11 if not short else 9}" class="part-label">'
            f'{"A" if short else "Attention"}</text>'
            f'<text x="{left + w * 0.78:.1f}" y="{H - 8:.0f}" text-anchor="middle" font-size="{11 if not short else 9}" class="part-label">'
            f'{"M" if short else "MLP"}</text></g>')
        title = f"Block {b + 1}: select layer {b + 1}"
        hits.append(
            f'<g class="col-hit{current}" data-action="layer" data-layer="{b}" role="button" tabindex="0" '
            f'data-testid="sankey-block" aria-label="Block {b + 1}: show this layer"'
            f'{" aria-current=true" if b == layer else ""}><title>{escape(title)}</title>'
            f'<rect x="{left:.1f}" y="{box_top}" width="{w:.1f}" height="22" rx="6"/></g>')
        hits.append(_part(f"block-{b}-attention",
                          f"Block {b + 1} attention: open it (it added Σ‖attn_proj‖ = {fmt(attn, 4)})",
                          left, box_top + 22, w * 0.55, box_h - 22, opened))
        hits.append(_part(f"block-{b}-mlp", f"Block {b + 1} MLP: open it (it added Σ‖mlp_proj‖ = {fmt(mlp, 4)})",
                          left + w * 0.55, box_top + 22, w * 0.45, box_h - 22, opened))
    for x, label, part, what in ((x_emb, "Embedding", "embedding", "token + position embedding"),
                                 (x_lnf, "ln_f", "output", "final layer norm")):
        parts.append(f'<text x="{x + node_w / 2:.1f}" y="{top_y - 14}" text-anchor="middle" font-size="13">{label}</text>')
    parts.append(f'<text x="{x_tokens - 8}" y="{top_y - 14}" text-anchor="end" font-size="13">Tokens</text>')
    parts.append(f'<text x="{x_pred}" y="{top_y - 14}" font-size="13">Next token</text>')
    hits.append(_part("tokens", "Tokens: back to your text", 4, box_top, x_tokens + 2, box_h, opened))
    hits.append(_part("embedding", "Embedding: open it", x_emb - 30, box_top, 64, box_h, opened))
    hits.append(_part("output", "Output probabilities: open them", x_lnf - 20, box_top, W - x_lnf + 16, box_h, opened))

    # Ribbons, column to column; the token labels on the left.
    tops0, bots0 = stack(thick[0])
    for r, i in enumerate(shown):
        color = PALETTE[i % len(PALETTE)]
        mid = (tops0[r] + bots0[r]) / 2
        parts.append(f'<text class="tok-label" x="{x_tokens - 8}" y="{mid:.1f}" text-anchor="end" dominant-baseline="middle" '
                     f'font-size="{12 if rows <= 16 else 10}">{escape(token_label(tokens[i]))}</text>')
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

    # The last token fans out into the most likely next tokens (never a 0% one).
    top_ids = [int(i) for i in dist.top(FAN) if float(dist.probs[int(i)]) > 0]
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
        parts.append(f'<text x="{x_pred + 14}" y="{y + max(h, 14) / 2:.1f}" dominant-baseline="middle" font-size="12">'
                     f'{escape(label)} <tspan class="muted">{fmt(p * 100, 3)}%</tspan></text>')
        src += sh
        y += max(h, 14) + 4
    parts.extend(hits)
    parts.append("</svg>")
    note = f" Showing the last {MAX_TOKENS} of {n} tokens." if first else ""
    html = f"""
<div class="map-head"><h2>The model</h2>
<p class="muted small"><span class="lead">Your {n} tokens flow left to right through the embedding and {L} blocks (attention,
then MLP) to the next-token probabilities.</span><span class="long"> A ribbon's width is that token's share of the vector length, from this run.</span>
<strong>Click a part to open it.</strong>{note}</p></div>
<div class="sankey-wrap" data-tour="sankey" data-testid="model-map">{"".join(parts)}</div>
{math_panel("overview", cfg, n)}
"""
    return View(html, [])


def mini_map(n_layer: int, layer: int, opened: set[str] = frozenset()) -> str:
    """The small sticky map: a button per part, the selected layer's block marked."""
    def button(part: str, text: str, label: str, cls: str = "") -> str:
        pressed = "true" if part in opened else "false"
        return (f'<button type="button" class="mini-part{cls}" data-action="open-part" data-part="{part}" '
                f'aria-pressed="{pressed}" aria-label="{escape(text)}: {escape(label)}" title="{escape(label)}">{text}</button>')

    blocks = "".join(
        f'<span class="mini-block{" current" if b == layer else ""}">'
        + button(f"block-{b}-attention", "A", f"Block {b + 1} attention")
        + button(f"block-{b}-mlp", "M", f"Block {b + 1} MLP") + "</span>"
        for b in range(n_layer))
    return (f'<div class="mini-map" data-testid="mini-map" role="group" aria-label="Model map: open a part">'
            + button("embedding", "Emb", "Embedding") + '<span class="mini-arrow" aria-hidden="true">→</span>'
            + blocks + '<span class="mini-arrow" aria-hidden="true">→</span>' + button("output", "Out", "Output probabilities")
            + "</div>")
