"""Factors view (issue 13): what one hidden vector is made of, under the model's dictionary.

Pieces, each a function of numbers the controller (``app/factors.py``) computed:

* ``token_strip`` — the tokens of a layer's view as buttons that open the panel for that
  token's residual vector (``data-action="factors-open"``, ``data-stream``, ``data-position``);
* ``panel`` — the code of the clicked vector: one ``data-testid="factor"`` row per nonzero
  coefficient (largest first, ``data-factor``, ``data-weight`` = the coefficient, 17
  significant digits), each with its class, importance curve (inline SVG, one point per
  residual stream) and top contexts; the reconstruction error; the occlusion attribution of a
  chosen factor drawn over the token chips; the factor browser slot;
* ``browser`` — every factor with search by word (the target tokens of its top contexts).
"""

from __future__ import annotations

from html import escape

import numpy as np

from glassbox import factors as gf

from .common import View, css_color, diverging, fmt, text_on, token_label

SHOWN = 12  # factor rows drawn in full; the rest are listed compactly
BROWSER_MAX = 80  # factors listed by the browser at once


def stream_label(stream: int) -> str:
    return "embedding (emb)" if stream == 0 else f"after block {stream} (h.{stream - 1}.res_2)"


def token_strip(tokens, stream: int, start: int = 0, note: str = "") -> str:
    """Buttons for every token: a click shows what its residual vector at ``stream`` is made of."""
    chips = "".join(
        f'<button type="button" class="chip factor-token" data-action="factors-open" data-stream="{stream}" '
        f'data-position="{start + i}" data-testid="factors-open" '
        f'aria-label="Factors of token {start + i} ‘{escape(token_label(t))}’ at {escape(stream_label(stream))}">'
        f'{escape(token_label(t))}</button>'
        for i, t in enumerate(tokens))
    return (f'<div class="factor-strip" data-testid="factor-strip" data-stream="{stream}">'
            f'<span class="muted small">What is each vector made of? {note}Click a token for its factors '
            f'at {escape(stream_label(stream))}:</span> <span class="factor-chips">{chips}</span></div>')


def intro(has_dictionary: bool) -> View:
    """The section before any token was clicked."""
    if not has_dictionary:
        return View('<h2>Factors: what a hidden vector is made of</h2><p class="muted">This model ships no factors '
                    'dictionary (tools/learn_dictionary.py learns one).</p>')
    return View('<h2>Factors: what a hidden vector is made of</h2><p class="muted" data-testid="factors-intro">'
                'Click a token under the embedding, attention or block view: this panel shows which of the '
                'dictionary\'s factors its residual vector at that layer is made of.</p>')


def importance_svg(curve: np.ndarray, current: int | None = None, width: int = 96, height: int = 28) -> str:
    """The importance curve over streams 0..L as a small line chart (peak = 1)."""
    S = len(curve)
    xs = [4 + i * (width - 8) / max(S - 1, 1) for i in range(S)]
    ys = [height - 4 - float(v) * (height - 8) for v in curve]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{3 if i == current else 2}" class="{"now" if i == current else ""}"/>'
        for i, (x, y) in enumerate(zip(xs, ys)))
    values = ", ".join(f"{s}: {fmt(v, 2)}" for s, v in enumerate(curve))
    return (f'<svg class="importance" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="Importance by layer (0 = embedding): {values}"><polyline points="{points}"/>{dots}</svg>')


def _readable(text: str) -> str:
    """Display strings with their escaped newlines and tabs as visible marks."""
    return text.replace("\\n", "⏎").replace("\\t", "⇥")


def context_html(vocab, ctx) -> str:
    before, target, after, act = ctx
    text = lambda ids: escape(_readable("".join(vocab[t] for t in ids)))  # noqa: E731
    return (f'<li class="context"><span class="ctx">{text(before)}</span><mark>{text([target])}</mark>'
            f'<span class="ctx">{text(after)}</span> <span class="muted small">({fmt(act, 3)})</span></li>')


def factor_label(d: gf.Dictionary, vocab, factor: int, stream: int | None = None, n: int = 3) -> str:
    """A factor's most telling target tokens (from its top contexts at its peak stream)."""
    s = int(np.argmax(d.importance[:, factor])) if stream is None else stream
    words = []
    for _, target, _, _ in gf.contexts_of(d, factor, s):
        w = vocab[target].strip() or token_label(vocab[target])
        if w not in words:
            words.append(w)
    return ", ".join(words[:n])


def factor_row(d: gf.Dictionary, vocab, factor: int, weight: float, stream: int, biggest: float, full: bool) -> str:
    width = 100 * weight / biggest if biggest > 0 else 0
    klass = d.class_name(factor)
    head = (f'<span class="fid">#{factor}</span> <span class="fbar" style="--w:{width:.1f}%"></span>'
            f'<span class="fw">{fmt(weight, 4)}</span> <span class="fclass {klass}">{klass}</span>')
    if not full:
        return (f'<li class="factor compact" data-testid="factor" data-factor="{factor}" data-weight="{weight!r}">'
                f'<button type="button" data-action="factors-select" data-factor="{factor}">{head}</button></li>')
    contexts = "".join(context_html(vocab, c) for c in gf.contexts_of(d, factor, stream)[:2])
    return (f'<li class="factor" data-testid="factor" data-factor="{factor}" data-weight="{weight!r}">'
            f'<div class="fhead">{head} {importance_svg(d.importance[:, factor], stream)}'
            f'<button type="button" class="small" data-action="factors-attribute" data-factor="{factor}" '
            f'data-testid="factor-attribute">Which tokens?</button>'
            f'<button type="button" class="small" data-action="factors-select" data-factor="{factor}">More</button></div>'
            f'<ol class="contexts">{contexts or "<li class=muted>no stored context at this layer</li>"}</ol></li>')


def occlusion_html(tokens, position: int, factor: int, values: np.ndarray, base: float) -> str:
    scale = float(np.max(np.abs(values))) or 1.0
    colours = diverging(values, scale)
    chips = "".join(
        f'<li class="token occ" data-testid="occlusion-token" data-position="{i}" data-value="{float(v)!r}" '
        f'style="background:{css_color(c)};color:{text_on(c)}" title="{fmt(v, 4)}">'
        f'<span class="tok-text">{escape(token_label(tokens[i]))}</span><span class="tok-id">{fmt(v, 2)}</span></li>'
        for i, (v, c) in enumerate(zip(values, colours)))
    return (f'<div class="occlusion" data-testid="occlusion" data-factor="{factor}">'
            f'<h4>Which tokens make factor #{factor} at token {position}?</h4>'
            f'<p class="muted small">Each chip: the factor\'s activation ({fmt(base, 4)}) minus its activation when '
            f'the text is run again without that token (orange: the token raises it; blue: lowers it). Later tokens '
            f'cannot matter: the model only looks back.</p><ol class="tokens">{chips}</ol></div>')


def detail_html(d: gf.Dictionary, vocab, factor: int) -> str:
    """One factor: class, importance curve, top contexts at every layer."""
    rows = "".join(
        f'<li><strong>Layer {s}</strong> <span class="muted small">{escape(stream_label(s))}, importance '
        f'{fmt(d.importance[s, factor], 2)}</span><ol class="contexts">'
        + "".join(context_html(vocab, c) for c in gf.contexts_of(d, factor, s))
        + "</ol></li>"
        for s in range(d.importance.shape[0]))
    return (f'<div class="factor-detail" data-testid="factor-detail" data-factor="{factor}">'
            f'<h4>Factor #{factor} · {d.class_name(factor)}</h4>'
            f'{importance_svg(d.importance[:, factor], None, 220, 60)}'
            f'<ol class="by-layer">{rows}</ol></div>')


def browser(d: gf.Dictionary, vocab, query: str, labels: list[str]) -> View:
    """Factors whose top-context target tokens contain ``query`` (all when empty)."""
    q = query.strip().lower()
    hits = [f for f in range(d.n_factors) if not q or q in labels[f].lower()]
    items = "".join(
        f'<li><button type="button" class="chip" data-action="factors-select" data-factor="{f}" '
        f'data-testid="browser-factor">#{f} <span class="muted">{escape(d.class_name(f)[0].upper())}</span> '
        f'{escape(labels[f])}</button></li>'
        for f in hits[:BROWSER_MAX])
    more = f" (first {BROWSER_MAX} shown)" if len(hits) > BROWSER_MAX else ""
    return View(f'<p class="muted small" data-testid="browser-count">{len(hits)} of {d.n_factors} factors{more}'
                f'{" match ‘" + escape(query) + "’" if q else ""}.</p><ul class="browser">{items}</ul>')


def panel(*, status: str, d: gf.Dictionary | None = None, vocab=None, tokens=(), stream: int = 0,
          position: int = 0, coding: gf.Coding | None = None, n_streams: int = 1, selected: int | None = None,
          occlusion=None, query: str = "", labels=None) -> View:
    """The panel: ``status`` alone until the dictionary and the code are ready."""
    close = '<button type="button" class="close" data-action="factors-close" aria-label="Close the factors panel">Close</button>'
    if d is None or coding is None:
        return View(f'<div class="factors-panel" data-testid="factors-panel" data-ready="false">{close}'
                    f'<h2 tabindex="-1" id="factors-title">Factors</h2><p role="status">{escape(status)}</p></div>')
    nonzero = coding.nonzero()
    biggest = nonzero[0][1] if nonzero else 0.0
    rows = "".join(factor_row(d, vocab, f, w, stream, biggest, True) for f, w in nonzero[:SHOWN])
    rest = "".join(factor_row(d, vocab, f, w, stream, biggest, False) for f, w in nonzero[SHOWN:])
    if rest:
        rest = (f'<p class="muted small">The other {len(nonzero) - SHOWN}, smaller (click one for its contexts):</p>'
                f'<ol class="factor-rest">{rest}</ol>')
    streams = "".join(
        f'<button type="button" class="chip" data-action="factors-stream" data-stream="{s}" '
        f'aria-pressed="{"true" if s == stream else "false"}">{s}</button>' for s in range(n_streams))
    tok = tokens[position] if position < len(tokens) else ""
    occ = occlusion_html(tokens, position, *occlusion) if occlusion is not None else ""
    detail = detail_html(d, vocab, selected) if selected is not None else ""
    html = f"""
<div class="factors-panel" data-testid="factors-panel" data-ready="true" data-stream="{stream}" data-position="{position}">
{close}<h2 tabindex="-1" id="factors-title">Factors of ‘{escape(token_label(tok))}’ (token {position}) at layer {stream}</h2>
<p class="muted small">The residual vector x ({escape(stream_label(stream))}), divided by that layer's mean norm
({fmt(d.scale[stream], 4)}), written as a sparse non-negative sum of the dictionary's {d.n_factors} unit vectors:
x ≈ Σ a<sub>f</sub> φ<sub>f</sub>, a ≥ 0, found by FISTA on ½‖x − Φa‖² + λ‖a‖₁ with λ = {fmt(d.lam, 3)}.</p>
<p class="factor-layers">Layer: {streams}</p>
<p data-testid="factors-summary"><strong>{len(nonzero)}</strong> active factors; reconstruction error
‖x − Φa‖ = <span data-testid="residual-norm" data-value="{coding.residual_norm!r}">{fmt(coding.residual_norm, 4)}</span>
of ‖x‖ = {fmt(coding.norm, 4)} (<strong>{100 * coding.relative_error:.1f}%</strong>); objective {fmt(coding.objective, 6)}.</p>
{f'<p class="input-error" role="status" data-testid="factors-status">{escape(status)}</p>' if status else ""}
<ol class="factor-list" aria-label="Factors, largest weight first">{rows}</ol>{rest}
{occ}{detail}
<details class="factor-browser" data-testid="factor-browser"><summary>Browse all {d.n_factors} factors</summary>
<label class="inline-field">Search by word <input type="search" data-action="factors-search" data-testid="factor-search"
 value="{escape(query)}" autocomplete="off" spellcheck="false"></label>
<div data-slot="factor-browser">{browser(d, vocab, query, labels).html}</div></details>
<p class="muted small">A factor's class comes from the layer where its importance (mean activation over the corpus)
peaks: early = word-level, middle = sentence-level, late = long-range (Yun et al. 2021). Its contexts are the
corpus tokens (highlighted) where it was strongest.</p>
</div>"""
    return View(html)
