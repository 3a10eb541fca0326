"""Output view: logits -> logits / T -> top-k / top-p -> softmax -> the sampled next token.

Built from a :class:`glassbox.sampling.Distribution` (the last token's logits and every
sampling step) plus the vectors of the walk-through: the final layer-normed vector of the
last token (``ln_f[-1]``) and the unembedding row of the token being explained.

Prediction rows carry ``data-testid="prediction"``, ``data-token-id`` and ``data-prob``: the
probability the token is sampled with (``dist.probs``, after temperature and filtering). A token
the filters cut (p = 0) shows instead, faintly, the probability it had before the filter
(``dist.full_probs``, softmax over all V at this temperature), in ``data-prob-before``.
"""

from __future__ import annotations

from html import escape

import numpy as np

from glassbox.sampling import Distribution

from .common import View, canvas_html, exact, fmt, robust_scale, scroll_box, signed_heat, token_label
from .mathtex import panel as math_panel

TOP_N = 20


def _label(vocab, i: int) -> str:
    return token_label(vocab[int(i)])


def histogram(dist: Distribution, bins: int = 48) -> str:
    """How all V logits are spread, with the kept ones (top-k/top-p) in a second colour."""
    z = dist.logits.astype(np.float64)
    edges = np.linspace(z.min(), z.max() if z.max() > z.min() else z.min() + 1, bins + 1)
    all_counts, _ = np.histogram(z, edges)
    kept_counts, _ = np.histogram(z[dist.kept], edges)
    W, H, pad = 480, 150, 24
    top = np.log1p(all_counts.max())
    bw = (W - 2 * pad) / bins
    bars = []
    for b in range(bins):
        h_all = np.log1p(all_counts[b]) / top * (H - 2 * pad) if top else 0
        h_kept = np.log1p(kept_counts[b]) / top * (H - 2 * pad) if top else 0
        x = pad + b * bw
        bars.append(f'<rect class="h-all" x="{x:.1f}" y="{H - pad - h_all:.1f}" width="{bw - 1:.1f}" height="{h_all:.1f}">'
                    f'<title>{all_counts[b]} tokens with logits {fmt(edges[b], 3)} to {fmt(edges[b + 1], 3)}'
                    f'{f"; {kept_counts[b]} kept" if kept_counts[b] else ""}</title></rect>')
        if kept_counts[b]:
            bars.append(f'<rect class="h-kept" x="{x:.1f}" y="{H - pad - h_kept:.1f}" width="{bw - 1:.1f}" '
                        f'height="{h_kept:.1f}"/>')
    return (f'<svg class="histogram" viewBox="0 0 {W} {H}" role="img" data-testid="logit-histogram" '
            f'aria-label="Histogram of all {z.size} logits (log count); {int(dist.kept.sum())} tokens are kept">'
            f'{"".join(bars)}<text x="{pad}" y="{H - 6}" font-size="11">{fmt(edges[0], 3)}</text>'
            f'<text x="{W - pad}" y="{H - 6}" font-size="11" text-anchor="end">{fmt(edges[-1], 3)}</text>'
            f'<text x="{W / 2}" y="{H - 6}" font-size="11" text-anchor="middle">logit</text>'
            f'<text x="{pad}" y="14" font-size="11">tokens (log scale) · orange = kept</text></svg>')


def render(dist: Distribution, sampled: int | None, vocab, *, focus: int | None = None,
           final: np.ndarray | None = None, unembed_row: np.ndarray | None = None, last_token: str = "",
           top_n: int = TOP_N, popovers: dict | None = None, config=None) -> View:
    """The output section. ``vocab[i]`` is token i's display string."""
    logits = np.asarray(dist.logits)
    V = logits.size
    for name in ("scaled", "full_probs", "kept", "probs"):
        if np.asarray(getattr(dist, name)).shape != (V,):
            raise ValueError(f"distribution.{name} must have shape ({V},)")
    if sampled is not None and not 0 <= int(sampled) < V:
        raise ValueError(f"sampled token {sampled} is not in the vocabulary of {V}")
    focus = int(sampled if focus is None and sampled is not None else (focus if focus is not None else np.argmax(dist.probs)))
    if not 0 <= focus < V:
        raise ValueError(f"token {focus} is not in the vocabulary of {V}")
    if (final is None) != (unembed_row is None):
        raise ValueError("give both the final vector and the unembedding row, or neither")
    pops = popovers or {}
    heats = []
    top = [int(i) for i in dist.top(top_n)]
    if sampled is not None and int(sampled) not in top:
        top.append(int(sampled))
    n_kept = int(dist.kept.sum())
    p_max = float(max(dist.probs[top].max(), dist.full_probs[top].max())) or 1.0
    rows = []
    for rank, i in enumerate(top, 1):
        p = float(dist.probs[i])
        kept = bool(dist.kept[i])
        before = float(dist.full_probs[i])
        is_sampled = sampled is not None and i == int(sampled)
        cls = "prediction" + (" sampled" if is_sampled else "") + ("" if kept else " filtered") + (" focus" if i == focus else "")
        badge = '<span class="badge">sampled</span>' if is_sampled else ("" if kept else '<span class="badge dim">filtered</span>')
        if kept:
            bar = f'<span class="bar" style="width:{100 * p / p_max:.2f}%"></span>'
            shown, said = f"{fmt(p * 100, 3)}%", f"probability {fmt(p * 100, 4)} percent"
        else:  # cut by top-k/top-p: its pre-filter probability, faintly, instead of an empty 0% row
            bar = f'<span class="bar before" style="width:{100 * before / p_max:.2f}%"></span>'
            shown = f"cut · was {fmt(before * 100, 3)}%"
            said = f"cut by the filter, probability 0; {fmt(before * 100, 4)} percent before the filter"
        rows.append(
            f'<li class="{cls}" data-testid="prediction" data-token-id="{i}" data-prob="{exact(p)}" '
            f'data-prob-before="{exact(before)}" data-rank="{rank}"{" aria-current=true" if is_sampled else ""}>'
            # The visible text is the start of the name (WCAG 2.5.3, issue 16); the rest is for ears only.
            f'<button type="button" data-action="focus-token" data-token-id="{i}" aria-pressed="{str(i == focus).lower()}">'
            f'<span class="pred-token">{escape(_label(vocab, i))}</span> '
            f'<span class="bar-track">{bar}</span> '
            f'<span class="pred-prob">{shown}</span> {badge}<span class="visually-hidden"> ({said}). Explain it</span></button></li>')

    # The pipeline table: logits -> /T -> filter -> softmax for the shown tokens.
    T = dist.temperature
    t_text = "T = 0 (greedy)" if dist.greedy else f"T = {fmt(T, 3)}"
    table_rows = "".join(
        f'<tr{" class=filtered" if not dist.kept[i] else ""}><th scope="row">{escape(_label(vocab, i))}</th>'
        f'<td>{i}</td><td>{fmt(dist.logits[i], 5)}</td><td>{fmt(dist.scaled[i], 5)}</td>'
        f'<td>{"kept" if dist.kept[i] else "cut"}</td><td>{fmt(dist.full_probs[i], 4)}</td>'
        f'<td><strong>{fmt(dist.probs[i], 4)}</strong></td></tr>'
        for i in top[:12])
    filters = []
    if dist.greedy:
        filters.append("greedy: only the arg-max is kept")
    else:
        filters.append(f"top-k = {dist.top_k}" if dist.top_k else "top-k off")
        filters.append(f"top-p = {fmt(dist.top_p, 3)} (over all {V} tokens)" if dist.top_p < 1 else "top-p off")
    pipeline = (
        f'{scroll_box("From logits to probabilities")}<table class="numbers pipeline" data-testid="pipeline"><caption>From logits to '
        f'probabilities ({t_text}; {", ".join(filters)}; {n_kept} of {V} tokens kept)</caption><thead><tr>'
        f'<th>token</th><th>id</th><th>logit z</th><th>z / T</th><th>filter</th><th>softmax(z/T), all</th>'
        f'<th>p, sampled from</th></tr></thead><tbody>{table_rows}</tbody></table></div>')

    # The walk-through for one token.
    walk = []
    fl = escape(_label(vocab, focus))
    z_i = float(dist.logits[focus])
    if final is not None:
        final = np.asarray(final, dtype=np.float32)
        row = np.asarray(unembed_row, dtype=np.float32)
        if final.shape != row.shape or final.ndim != 1:
            raise ValueError(f"final vector {final.shape} and unembedding row {row.shape} must be equal 1-D shapes")
        prod = (final * row).astype(np.float32)
        for name, vec, title, scale in (("final", final, "ln_f of the last token", robust_scale(final)),
                                        ("row", row, f"wte row {focus}", robust_scale(row)),
                                        ("prod", prod, "their product, element by element", robust_scale(prod))):
            heat = signed_heat(f"out.{name}", title, vec[None, :], [title], scale)
            heats.append(heat)
            walk.append(f'<div class="strip"><span class="strip-label">{escape(title)}</span>{canvas_html(heat, title, 18)}</div>')
        dot = float(np.dot(final.astype(np.float64), row))
        walk.append(f'<p class="worked">1. Logit: z = ln_f · wte[{focus}] = '
                    + " + ".join(f"({fmt(a, 3)})({fmt(b, 3)})" for a, b in zip(final[:3], row[:3]))
                    + f' + … = <strong>{fmt(dot, 6)}</strong> <span class="muted">(trace logits: {fmt(z_i, 6)})</span></p>')
    else:
        walk.append(f'<p class="worked">1. Logit: z = <strong>{fmt(z_i, 6)}</strong></p>')
    order = np.argsort(-dist.logits, kind="stable")
    rank = int(np.nonzero(order == focus)[0][0]) + 1
    if dist.greedy:
        walk.append(f'<p class="worked">2. Temperature 0 is greedy: no division. Rank {rank} by logit; '
                    f'{"it is the arg-max, so p = 1" if dist.kept[focus] else "only the arg-max is kept, so p = 0"}.</p>')
    else:
        walk.append(f'<p class="worked">2. Divide by the temperature: {fmt(z_i, 6)} / {fmt(T, 4)} = '
                    f'<strong>{fmt(dist.scaled[focus], 6)}</strong></p>')
        reasons = [f"rank {rank} of {V} by logit"]
        if dist.top_k:
            reasons.append(f"{'within' if rank <= dist.top_k else 'outside'} the top {dist.top_k}")
        if dist.top_p < 1:
            before = float(np.sort(dist.full_probs)[::-1][: rank - 1].sum(dtype=np.float64))
            reasons.append(f"probability mass before it {fmt(before, 4)} {'<' if before < dist.top_p else '≥'} top-p {fmt(dist.top_p, 3)}")
        walk.append(f'<p class="worked">3. Filter: {"; ".join(reasons)} → <strong>{"kept" if dist.kept[focus] else "cut (p = 0)"}</strong>.</p>')
        kept_scaled = dist.scaled[dist.kept].astype(np.float64)
        m = float(kept_scaled.max())
        total = float(np.exp(kept_scaled - m).sum())
        if dist.kept[focus]:
            e = float(np.exp(float(dist.scaled[focus]) - m))
            walk.append(f'<p class="worked">4. Softmax over the {n_kept} kept tokens: max = {fmt(m, 5)}, '
                        f'Σ e^(s − max) = {fmt(total, 6)}; p = e^({fmt(float(dist.scaled[focus]) - m, 5)}) / {fmt(total, 6)} = '
                        f'<strong>{fmt(e / total, 6)}</strong> <span class="muted">(shown: {fmt(dist.probs[focus], 6)})</span></p>')
        else:
            walk.append('<p class="worked">4. A cut token gets probability 0: it is not in the softmax.</p>')
    for pop in pops.values():
        heats.extend(pop.heats)
    sampled_html = ""
    if sampled is not None:
        sampled_html = (f'<p class="sampled-line" data-testid="sampled">Sampled next token: '
                        f'<strong class="tok-text">{escape(_label(vocab, sampled))}</strong> '
                        f'(id {int(sampled)}, p = {fmt(dist.probs[int(sampled)], 4)}). '
                        f'<span class="muted">Generate appends it; Sample again draws another.</span></p>')
    html = f"""
<h2>Output: the next token</h2>
<p>After the last block, <code>ln_f</code> normalizes the last token ({escape(token_label(last_token))}) and the
product with the token embedding <code>wte</code> gives one logit per vocabulary entry.
{pops["wte"].button if "wte" in pops else ""}</p>
{"".join(pop.html for pop in pops.values())}
{sampled_html}
<ol class="predictions" aria-label="The {len(top)} most likely next tokens" data-tour="predictions">{"".join(rows)}</ol>
<details class="pipeline-details" open data-tour="pipeline"><summary>Logits → temperature → top-k/top-p → softmax</summary>
{pipeline}{histogram(dist)}</details>
<section class="walkthrough" data-testid="walkthrough" data-token-id="{focus}" data-tour="walkthrough" aria-label="How one probability is computed">
<h3>How ‘{fl}’ gets its probability</h3><p class="muted small">Click any row above to explain that token. Each strip has its own colour scale; hover for values.</p>
{"".join(walk)}</section>
{math_panel("output", config, 0) if config is not None else ""}
"""
    return View(html, heats)
