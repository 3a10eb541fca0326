"""Block view: the rest of one transformer block, in order, with the trace's numbers.

    x -> ln_1 (mean, variance, normalized) -> [attention] -> attn_proj -> res_1 = x + attn_proj
      -> ln_2 -> mlp_fc (x W1^T + b1, D -> F) -> GELU -> mlp_proj (F -> D) -> res_2 = res_1 + mlp_proj

``x`` is ``emb`` for the first block and the previous block's ``res_2`` otherwise. One token
(``position``) is also shown on its own: its layer-norm arithmetic and where its F MLP
activations fall on the GELU curve.
"""

from __future__ import annotations

from html import escape

import numpy as np

from glassbox.reference import gelu
from glassbox.trace import Trace, layer_name

from .common import (View, canvas_html, check_shape, check_tokens, exact, fmt, legend_html, robust_scale, scroll_box,
                     signed_heat, token_label)
from .embedding import labels_column, row_labels
from .mathtex import panel as math_panel

ROW_PX = 14


def block_input(trace: Trace, layer: int) -> np.ndarray:
    """The residual stream entering block ``layer``: emb, or the previous block's res_2."""
    return trace["emb"] if layer == 0 else trace[layer_name(layer - 1, "res_2")]


def gelu_plot(fc: np.ndarray, act: np.ndarray, label: str) -> str:
    """The GELU curve over this token's range, with its F activations as dots."""
    lo, hi = float(min(fc.min(), -3.0)), float(max(fc.max(), 3.0))
    xs = np.linspace(lo, hi, 121, dtype=np.float32)
    ys = gelu(xs)
    y_lo, y_hi = float(min(ys.min(), act.min())), float(max(ys.max(), act.max()))
    W, H, pad = 420, 220, 28

    def px(x):
        return pad + (x - lo) / (hi - lo) * (W - 2 * pad)

    def py(y):
        return H - pad - (y - y_lo) / ((y_hi - y_lo) or 1) * (H - 2 * pad)

    curve = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2"/>' for x, y in zip(fc, act))
    negative = int((fc < 0).sum())
    return (f'<svg class="gelu-plot" viewBox="0 0 {W} {H}" role="img" data-testid="gelu-plot" '
            f'aria-label="GELU curve with the {fc.size} MLP activations of {escape(label)}; {negative} inputs are negative">'
            f'<line class="axis" x1="{pad}" x2="{W - pad}" y1="{py(0):.1f}" y2="{py(0):.1f}"/>'
            f'<line class="axis" x1="{px(0):.1f}" x2="{px(0):.1f}" y1="{pad}" y2="{H - pad}"/>'
            f'<polyline class="curve" points="{curve}"/><g class="dots">{dots}</g>'
            f'<text x="{W - pad}" y="{H - 8}" text-anchor="end" font-size="11">mlp_fc (input)</text>'
            f'<text x="{pad}" y="14" font-size="11">GELU (output)</text>'
            f'<text x="{pad}" y="{H - 8}" font-size="10">{fmt(lo, 3)}</text>'
            f'<text x="{W - pad}" y="{H - 22}" text-anchor="end" font-size="10">{fmt(hi, 3)}</text></svg>')


def render(trace: Trace, tokens, layer: int, position: int, popovers: dict | None = None) -> View:
    cfg = trace.config
    D, F, eps = cfg.n_embd, cfg.mlp_width, cfg.layer_norm_epsilon
    n = int(trace.ids.size)
    tokens = check_tokens(tokens, n)
    if not 0 <= layer < cfg.n_layer:
        raise ValueError(f"layer {layer} out of range (the model has {cfg.n_layer})")
    if not 0 <= position < n:
        raise ValueError(f"token position {position} out of range (the trace has {n} tokens)")
    g = lambda name: trace[layer_name(layer, name)]  # noqa: E731
    x = check_shape("block input", block_input(trace, layer), (n, D))
    t = {name: check_shape(name, g(name), shape) for name, shape in (
        ("ln_1.mean", (n,)), ("ln_1.var", (n,)), ("ln_1", (n, D)), ("attn_proj", (n, D)), ("res_1", (n, D)),
        ("ln_2.mean", (n,)), ("ln_2.var", (n,)), ("ln_2", (n, D)), ("mlp_fc", (n, F)), ("mlp_gelu", (n, F)),
        ("mlp_proj", (n, D)), ("res_2", (n, D)))}
    labels = row_labels(tokens)
    key = f"block.{layer}"
    heats = []
    pops = popovers or {}
    stream_scale = max(robust_scale(x), robust_scale(t["res_1"]), robust_scale(t["res_2"]))

    def vmap(name: str, m: np.ndarray, title: str, scale: float | None = None, cols: str = "dim") -> str:
        heat = signed_heat(f"{key}.{name}", title, m, labels, scale, col_name=cols)
        heats.append(heat)
        return (f'<div class="map-body">{labels_column(tokens, trace.start, ROW_PX)}'
                f'{canvas_html(heat, title, ROW_PX, 420)}</div>')

    def strip(name: str, v: np.ndarray, title: str, scale: float) -> str:
        heat = signed_heat(f"{key}.tok.{name}", title, v[None, :], [labels[position]], scale)
        heats.append(heat)
        return (f'<div class="strip"><span class="strip-label">{escape(title)}</span>'
                f'{canvas_html(heat, title, 18)}</div>')

    def stats_table(which: str) -> str:
        mean, var = t[f"{which}.mean"], t[f"{which}.var"]
        rows = "".join(
            f'<tr{" class=current" if i == position else ""}><th scope="row">{i} {escape(token_label(tokens[i]))}</th>'
            f'<td data-testid="{which}-mean" data-value="{exact(mean[i])}">{fmt(mean[i], 5)}</td>'
            f'<td data-testid="{which}-var" data-value="{exact(var[i])}">{fmt(var[i], 5)}</td>'
            f'<td>{fmt(np.sqrt(var[i] + eps), 5)}</td></tr>'
            for i in range(n))
        return (f'{scroll_box(f"{which}: statistics of each token", "table-scroll short")}'
                f'<table class="numbers stats"><caption>{which}: statistics of each token'
                f'</caption><thead><tr><th>token</th><th>mean μ</th><th>variance σ²</th><th>√(σ²+ε)</th></tr></thead>'
                f'<tbody>{rows}</tbody></table></div>')

    def ln_detail(which: str, inp: np.ndarray) -> str:
        mean, var = t[f"{which}.mean"][position], t[f"{which}.var"][position]
        xhat = ((inp[position] - mean) / np.sqrt(var + np.float32(eps))).astype(np.float32)
        out = t[which][position]
        return (f'<div class="ln-detail"><p class="worked">Token {position} {escape(labels[position])}: '
                f'μ = {fmt(mean, 5)}, σ² = {fmt(var, 5)}; dimension 0: ({fmt(inp[position, 0], 5)} − {fmt(mean, 5)}) / '
                f'√({fmt(var, 5)} + {eps:g}) = {fmt(xhat[0], 5)}, then × γ + β = <strong>{fmt(out[0], 5)}</strong>.</p>'
                + strip(f"{which}.in", inp[position], "input x", robust_scale(inp[position]))
                + strip(f"{which}.hat", xhat, "normalized (x − μ)/σ", robust_scale(xhat))
                + strip(f"{which}.out", out, f"{which} = γ·x̂ + β", robust_scale(out))
                + '<p class="muted small">Each strip has its own colour scale (the input is much smaller than the '
                  'normalized vector); hover for values.</p></div>')

    p = position
    options = "".join(f'<option value="{i}"{" selected" if i == p else ""}>{i}: {escape(token_label(tok))}</option>'
                      for i, tok in enumerate(tokens))
    x_name = "emb" if layer == 0 else f"h.{layer - 1}.res_2"
    fc, act = t["mlp_fc"][p], t["mlp_gelu"][p]
    steps = [
        ("input", "Block input", f"x = <code>{x_name}</code> [{n}×{D}]",
         vmap("x", x, "block input x", stream_scale)),
        ("ln1", "Layer norm 1", f"<code>h.{layer}.ln_1</code>: each token shifted to mean 0 and scaled to variance 1, "
         "then γ·x̂ + β", stats_table("ln_1") + vmap("ln_1", t["ln_1"], "ln_1") + ln_detail("ln_1", x)),
        ("attn", "Attention", f'<code>attn_proj</code> [{n}×{D}]: the attention section above, projected back to D',
         vmap("attn_proj", t["attn_proj"], "attn_proj")),
        ("res1", "Residual addition 1", "res_1 = x + attn_proj",
         vmap("res_1", t["res_1"], "res_1", stream_scale)
         + f'<p class="worked">Token {p}, dimension 0: {fmt(x[p, 0], 5)} + {fmt(t["attn_proj"][p, 0], 5)} = '
           f'<strong>{fmt(t["res_1"][p, 0], 5)}</strong></p>'),
        ("ln2", "Layer norm 2", f"<code>h.{layer}.ln_2</code> of res_1",
         stats_table("ln_2") + vmap("ln_2", t["ln_2"], "ln_2") + ln_detail("ln_2", t["res_1"])),
        ("fc", "MLP expansion", f"mlp_fc = ln_2 · W₁ᵀ + b₁: {D} → {F} numbers per token "
         + (pops["c_fc"].button if "c_fc" in pops else ""), vmap("mlp_fc", t["mlp_fc"], "mlp_fc", cols="unit")),
        ("gelu", "GELU", "mlp_gelu = GELU(mlp_fc), element by element",
         vmap("mlp_gelu", t["mlp_gelu"], "mlp_gelu", cols="unit")
         + f'<figure class="gelu"><figcaption>The {F} activations of token {p} {escape(labels[p])} on the GELU curve: '
           f'{int((fc > 0).sum())} positive inputs pass almost unchanged, negative ones are squashed towards 0.</figcaption>'
         + gelu_plot(fc, act, labels[p]) + '</figure>'),
        ("proj", "MLP projection", f"mlp_proj = mlp_gelu · W₂ᵀ + b₂: {F} → {D} "
         + (pops["c_proj"].button if "c_proj" in pops else ""), vmap("mlp_proj", t["mlp_proj"], "mlp_proj")),
        ("res2", "Residual addition 2", "res_2 = res_1 + mlp_proj: the block's output",
         vmap("res_2", t["res_2"], "res_2", stream_scale)
         + f'<p class="worked">Token {p}, dimension 0: {fmt(t["res_1"][p, 0], 5)} + {fmt(t["mlp_proj"][p, 0], 5)} = '
           f'<strong>{fmt(t["res_2"][p, 0], 5)}</strong></p>'),
    ]
    for pop in pops.values():
        heats.extend(pop.heats)
    items = "".join(
        f'<li class="flow-step" data-step="{sid}" data-tour="block-{sid}"><h3>{escape(title)}</h3>'
        f'<p class="muted small">{desc}</p>{body}</li>'
        for sid, title, desc, body in steps)
    html = f"""
<h2>Layer norm, MLP and residuals · layer {layer + 1}</h2>
<p>The block's other half, in order. The residual stream (x, res_1, res_2) shares one colour scale; the
branches have their own.</p>
<label class="inline-field">Token shown in detail
  <select id="block-token" data-action="block-token" data-testid="block-token">{options}</select></label>
<div class="legend-row">{legend_html(stream_scale, note="residual stream scale")}</div>
<ol class="flow">{items}</ol>
{"".join(pop.html for pop in pops.values())}
{math_panel("block", cfg, n)}
"""
    return View(html, heats)
