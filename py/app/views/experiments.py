"""Experiments view: logit lens, head ablation and sweep, activation patching, direct logit
attribution (the numbers come from ``glassbox.experiments``; the state from
``app.experiments_controller``).

One HTML string for the whole panel (one ``innerHTML``). Every grid is a table of buttons inside
its own scrolling box (a phone scrolls the grid, not the page); every cell has its exact value in
``title`` and ``aria-label``, and the lens cells open their top-5 list on click, tap or Enter.
Colours: probabilities and KL in viridis, signed numbers (Δ log p, recovered fraction) in the
blue-white-orange scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

import numpy as np

from glassbox import experiments as ex
from glassbox.config import GPTConfig

from .common import css_color, diverging, fmt, text_on, token_label, viridis

SLOT = "experiments"
TITLE = "Experiments: change the model, watch the consequence"


@dataclass
class Panel:
    """Everything the panel draws; None = not computed for these tokens yet."""

    config: GPTConfig
    tokens: list[str]
    vocab: object  # vocab[i] -> token i's display string
    target: int
    target_note: str
    lens: ex.Lens | None = None
    lens_cell: tuple[int, int] | None = None
    heads: list[tuple[int, int]] = field(default_factory=list)
    mean: bool = False
    ablation: tuple | None = None  # (Effect, before ids, before probs, after ids, after probs)
    sweep: tuple[np.ndarray, np.ndarray] | None = None  # KL [L, H], Δ log p [L, H]
    corrupt_text: str = ""
    corrupt_tokens: list[str] | None = None
    patching: ex.Patching | None = None
    patch_message: str = ""
    attribution: ex.Attribution | None = None
    status: str = ""


# ----- small pieces ----------------------------------------------------------------------------
def _tok(vocab, i) -> str:
    return escape(token_label(vocab[int(i)]))


def _target_button(vocab, i: int, text: str = "", current: int | None = None) -> str:
    pressed = "true" if current == int(i) else "false"
    return (f'<button type="button" class="exp-tok" data-action="exp-target" data-token-id="{int(i)}" '
            f'aria-pressed="{pressed}" title="make {_tok(vocab, i)} (id {int(i)}) the target token">'
            f'{_tok(vocab, i)}{text}</button>')


def _cell(bg, label: str, text: str, attrs: str = "", cls: str = "exp-cell") -> str:
    rgba = np.asarray(bg)
    return (f'<button type="button" class="{cls}" style="background:{css_color(rgba)};color:{text_on(rgba)}" '
            f'title="{escape(label)}" aria-label="{escape(label)}" {attrs}>{text}</button>')


def _scroll(inner: str, label: str, testid: str) -> str:
    return (f'<div class="exp-scroll" role="region" tabindex="0" aria-label="{escape(label)}" '
            f'data-testid="{testid}">{inner}</div>')


def _csv_button(table: str, what: str) -> str:
    return (f'<button type="button" class="exp-csv" data-action="exp-csv" data-table="{table}" '
            f'data-testid="exp-csv-{table}">CSV: {escape(what)}</button>')


def _stream_label(s: int) -> str:
    return "0 emb" if s == 0 else f"{s} after block {s - 1}"


def _head_grid(config: GPTConfig, cell) -> str:
    """An L x H table; cell(layer, head) -> one <button> HTML."""
    head = "".join(f'<th scope="col">head {h}</th>' for h in range(config.n_head))
    rows = "".join(f'<tr><th scope="row">layer {l}</th>{"".join(f"<td>{cell(l, h)}</td>" for h in range(config.n_head))}</tr>'
                   for l in range(config.n_layer))
    return f'<table class="exp-grid"><thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _top_list(vocab, ids, probs, current: int) -> str:
    return "<ol class='exp-top'>" + "".join(
        f'<li>{_target_button(vocab, i, current=current)} <span class="num">{fmt(p, 4)}</span></li>'
        for i, p in zip(ids, probs)) + "</ol>"


# ----- 1. logit lens -----------------------------------------------------------------------------
def lens_section(p: Panel) -> str:
    intro = ("<p class='muted small'>Each residual stream (row 0: after the embedding; row l: after block "
             "l&minus;1) through the final layer norm and the unembedding: the top token at each position, "
             "coloured by its probability. The last row is the model's own output. Click a cell for its top 5.</p>")
    button = '<button type="button" data-action="exp-lens" data-testid="exp-lens-run">Run the logit lens</button>'
    if p.lens is None:
        return f'<div class="exp-part" id="exp-lens"><h3>1. Logit lens</h3>{intro}{button}</div>'
    S, N, _ = p.lens.ids.shape
    head = "".join(f'<th scope="col"><span class="pos">{n}</span> {escape(token_label(t))}</th>' for n, t in enumerate(p.tokens))
    rows = []
    for s in range(S):
        cells = []
        for n in range(N):
            i, prob = int(p.lens.ids[s, n, 0]), float(p.lens.probs[s, n, 0])
            top5 = "; ".join(f"{token_label(p.vocab[int(j)])} {fmt(q, 3)}" for j, q in zip(p.lens.ids[s, n], p.lens.probs[s, n]))
            label = f"stream {s}, position {n}: {top5}"
            selected = p.lens_cell == (s, n)
            cells.append("<td>" + _cell(viridis(prob), label, _tok(p.vocab, i),
                                        f'data-action="exp-lens-cell" data-stream="{s}" data-position="{n}" '
                                        f'data-testid="exp-lens-cell" data-token-id="{i}" data-prob="{prob:.9g}" '
                                        f'aria-pressed="{"true" if selected else "false"}"') + "</td>")
        rows.append(f'<tr><th scope="row">{_stream_label(s)}</th>{"".join(cells)}</tr>')
    table = f'<table class="exp-grid"><thead><tr><th>stream</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    detail = ""
    if p.lens_cell is not None:
        s, n = p.lens_cell
        detail = (f'<div class="exp-detail" data-testid="exp-lens-detail"><h4>Stream {s}, position {n} '
                  f'({escape(token_label(p.tokens[n]))}): top {p.lens.ids.shape[2]}</h4>'
                  f'{_top_list(p.vocab, p.lens.ids[s, n], p.lens.probs[s, n], p.target)}</div>')
    return (f'<div class="exp-part" id="exp-lens"><h3>1. Logit lens</h3>{intro}'
            f'{_scroll(table, "Logit lens grid: streams by positions", "exp-lens-grid")}{detail}'
            f'<div class="actions">{_csv_button("lens", "logit lens")}</div></div>')


# ----- 2. ablation --------------------------------------------------------------------------------
def ablation_section(p: Panel) -> str:
    c = p.config
    how = ("mean: each head's output replaced by its mean over the positions of this input"
           if p.mean else "zero: the head's output set to 0 before the output projection c_proj")
    toggles = _head_grid(c, lambda l, h: (
        f'<button type="button" class="exp-head" data-action="exp-head" data-layer="{l}" data-head="{h}" '
        f'data-testid="exp-head" aria-pressed="{"true" if (l, h) in p.heads else "false"}" '
        f'aria-label="ablate head {l}.{h} (layer {l}, head {h})">{l}.{h}</button>'))
    mode = (f'<label>Ablation <select data-action="exp-mean" data-testid="exp-mean" id="exp-mean">'
            f'<option value="zero"{"" if p.mean else " selected"}>zero</option>'
            f'<option value="mean"{" selected" if p.mean else ""}>mean over positions</option></select></label>')
    parts = [f'<div class="exp-part" id="exp-ablation"><h3>2. Head ablation</h3>'
             f'<p class="muted small">Toggle heads off and the model re-runs from the first ablated layer '
             f'(the blocks before it do not change). Now: {escape(how)}.</p>',
             f'<div class="exp-row">{mode} <button type="button" data-action="exp-clear-heads">Clear</button> '
             f'<button type="button" data-action="exp-sweep" data-testid="exp-sweep-run">Sweep: each head alone</button></div>',
             _scroll(toggles, "Heads to ablate", "exp-head-grid")]
    if p.ablation is not None:
        e, bi, bp, ai, ap = p.ablation
        parts.append(
            f'<p data-testid="exp-ablation-summary" data-kl="{e.kl:.9g}" data-dlogp="{e.dlogp:.9g}">'
            f'{len(p.heads)} head(s) off: KL(before ‖ after) = <strong>{fmt(e.kl, 4)}</strong> nats; '
            f'log p of {_tok(p.vocab, e.target)}: {fmt(e.logp_before, 4)} → {fmt(e.logp_after, 4)} '
            f'(Δ <strong>{e.dlogp:+.4f}</strong>)</p>'
            f'<div class="exp-before-after" data-testid="exp-ablation-top"><div><h4>Before</h4>'
            f'{_top_list(p.vocab, bi, bp, p.target)}</div><div><h4>After</h4>'
            f'{_top_list(p.vocab, ai, ap, p.target)}</div></div>'
            f'<div class="actions">{_csv_button("ablation", "before/after")}</div>')
    if p.sweep is not None:
        kl, dlogp = p.sweep
        top = float(kl.max()) or 1.0
        grid = _head_grid(c, lambda l, h: _cell(
            viridis(kl[l, h] / top), f"layer {l} head {h}: KL {fmt(kl[l, h], 4)} nats, Δ log p {dlogp[l, h]:+.4f}",
            f'{fmt(kl[l, h], 2)}<small>{dlogp[l, h]:+.2f}</small>',
            f'data-testid="exp-sweep-cell" data-layer="{l}" data-head="{h}" data-kl="{kl[l, h]:.9g}" '
            f'data-action="exp-head"'))
        parts.append(f'<h4>Which heads matter: each head ablated alone</h4><p class="muted small">KL in nats '
                     f'(colour, 0 to {fmt(top, 3)}) over Δ log p of {_tok(p.vocab, p.target)}; click a cell to toggle that head.</p>'
                     + _scroll(grid, "Sweep: the effect of ablating each head", "exp-sweep-grid")
                     + f'<div class="actions">{_csv_button("sweep", "sweep")}</div>')
    return "".join(parts) + "</div>"


# ----- 3. patching ---------------------------------------------------------------------------------
def patching_section(p: Panel) -> str:
    n = len(p.tokens)
    parts = [f'<div class="exp-part" id="exp-patching"><h3>3. Activation patching</h3>'
             f'<p class="muted small">The current text is the clean prompt ({n} tokens). Type a corrupted prompt '
             f'of the same length; each cell copies one stream at one position (or one head\'s output at every '
             f'position) from the clean run into the corrupted run. Recovered = (log p − log p<sub>corrupted</sub>) / '
             f'(log p<sub>clean</sub> − log p<sub>corrupted</sub>) of {_tok(p.vocab, p.target)}: 1 brings the clean '
             f'prediction back, 0 changes nothing.</p>'
             f'<div class="exp-row"><label for="exp-corrupt">Corrupted prompt</label>'
             f'<input type="text" id="exp-corrupt" data-action="exp-corrupt" data-testid="exp-corrupt" '
             f'value="{escape(p.corrupt_text)}" spellcheck="false" autocomplete="off">'
             f'<button type="button" data-action="exp-patch" data-testid="exp-patch-run">Patch</button></div>']
    if p.patch_message:
        parts.append(f'<p class="input-error" role="alert" data-testid="exp-patch-message">{escape(p.patch_message)}</p>')
    r = p.patching
    if r is not None and p.corrupt_tokens is not None:
        rec, hrec = r.streams_recovered, r.heads_recovered
        head = "".join(f'<th scope="col"><span class="pos">{i}</span> {escape(token_label(a))}'
                       f'{"" if a == b else " / " + escape(token_label(b))}</th>'
                       for i, (a, b) in enumerate(zip(p.tokens, p.corrupt_tokens)))

        def cell(v, label, attrs):
            shown = "–" if np.isnan(v) else f"{v:.2f}"
            return _cell(diverging(0.0 if np.isnan(v) else v, 1.0), f"{label}: recovered {shown}", shown, attrs)

        rows = "".join(
            f'<tr><th scope="row">{_stream_label(s)}</th>'
            + "".join(f'<td>{cell(rec[s, i], f"stream {s} at position {i}", f"data-testid=exp-patch-cell data-value={r.streams[s, i]:.9g}")}</td>'
                      for i in range(rec.shape[1])) + "</tr>" for s in range(rec.shape[0]))
        table = f'<table class="exp-grid"><thead><tr><th>stream</th>{head}</tr></thead><tbody>{rows}</tbody></table>'
        heads = _head_grid(p.config, lambda l, h: cell(hrec[l, h], f"layer {l} head {h}", "data-testid=exp-patch-head"))
        parts.append(f'<p data-testid="exp-patch-summary">log p of {_tok(p.vocab, r.target)}: clean {fmt(r.logp_clean, 4)}, '
                     f'corrupted {fmt(r.logp_corrupt, 4)}.</p>'
                     + _scroll(table, "Patching grid: streams by positions", "exp-patch-grid")
                     + "<h4>One head's output patched at every position</h4>"
                     + _scroll(heads, "Patching grid: heads", "exp-patch-heads")
                     + f'<div class="actions">{_csv_button("patch", "streams")} {_csv_button("patch-heads", "heads")}</div>')
    return "".join(parts) + "</div>"


# ----- 4. direct logit attribution -----------------------------------------------------------------
def attribution_section(p: Panel) -> str:
    parts = [f'<div class="exp-part" id="exp-attribution"><h3>4. Direct logit attribution</h3>'
             f'<p class="muted small">The logit of {_tok(p.vocab, p.target)} at the last position split into what each '
             f'part of the residual stream writes: with the final layer norm\'s scale 1/σ of this position frozen '
             f'(σ from the run), ln_f is linear, so each part c contributes ((c − mean c)/σ)·(g ⊙ w<sub>token</sub>); '
             f'ln_f\'s bias adds b·w<sub>token</sub>. The bars sum to the logit.</p>'
             f'<button type="button" data-action="exp-attribute" data-testid="exp-attribute-run">Attribute</button>']
    a = p.attribution
    if a is not None:
        top = float(np.abs(a.values).max()) or 1.0
        rows = []
        for name, v in zip(a.names, a.values):
            width = abs(v) / top * 50
            side = f"left:50%;width:{width:.2f}%" if v >= 0 else f"left:{50 - width:.2f}%;width:{width:.2f}%"
            cls = "pos" if v >= 0 else "neg"
            rows.append(f'<div class="dla-row" data-testid="exp-dla-row" data-name="{escape(name)}" data-value="{v:.9g}">'
                        f'<span class="dla-name">{escape(name)}</span><span class="dla-track" aria-hidden="true">'
                        f'<span class="dla-bar {cls}" style="{side}"></span></span>'
                        f'<span class="dla-value num">{v:+.4f}</span></div>')
        parts.append(f'<p data-testid="exp-dla-summary" data-logit="{a.logit:.9g}" data-sum="{a.total:.9g}">Logit '
                     f'<strong>{fmt(a.logit, 6)}</strong>; the {len(a.names)} parts sum to <strong>{fmt(a.total, 6)}</strong>.</p>'
                     + _scroll(f'<div class="dla" role="list">{"".join(rows)}</div>', "Direct logit attribution bars",
                               "exp-dla")
                     + f'<div class="actions">{_csv_button("attribution", "attribution")}</div>')
    return "".join(parts) + "</div>"


def render(p: Panel) -> str:
    """The whole panel as one HTML string."""
    if p.lens is not None and p.lens.ids.shape[:2] != (p.config.n_layer + 1, len(p.tokens)):
        raise ValueError(f"the lens has shape {p.lens.ids.shape[:2]} for {len(p.tokens)} tokens")
    status = f'<p class="run-status" data-testid="exp-status" role="status" aria-live="polite">{escape(p.status)}</p>'
    head = (f'<h2>{escape(TITLE)}</h2><p class="muted">Computed with the numpy reference on the current {len(p.tokens)} '
            f'tokens: the same functions as <code>python -m glassbox lens | ablate | patch | attribute</code>. '
            f'Layers and heads are numbered from 0, as in the trace names.</p>'
            f'<p>Target token: {_target_button(p.vocab, p.target, current=p.target)} (id {p.target}; {escape(p.target_note)}). '
            f'Click any token in a list to make it the target.</p>'
            f'<div class="actions"><button type="button" data-action="exp-download-trace" data-testid="exp-download-trace">'
            f'Download the trace (.safetensors)</button></div>{status}')
    return head + lens_section(p) + ablation_section(p) + patching_section(p) + attribution_section(p)


# ----- CSV tables ------------------------------------------------------------------------------------
def csv(p: Panel, table: str) -> tuple[str, str]:
    """(file name, CSV text) of one experiment's table; ValueError if it has not run."""
    label = lambda i: p.vocab[int(i)]  # noqa: E731
    if table == "lens" and p.lens is not None:
        S, N, k = p.lens.ids.shape
        rows = [[s, ex.stream_name(s), n, p.tokens[n], r + 1, int(p.lens.ids[s, n, r]), label(p.lens.ids[s, n, r]),
                 float(p.lens.probs[s, n, r])] for s in range(S) for n in range(N) for r in range(k)]
        return "logit-lens.csv", ex.csv_table(["stream", "name", "position", "token", "rank", "id", "top_token", "prob"], rows)
    if table == "ablation" and p.ablation is not None:
        e, bi, bp, ai, ap = p.ablation
        rows = [["before", r + 1, int(i), label(i), float(q)] for r, (i, q) in enumerate(zip(bi, bp))]
        rows += [["after", r + 1, int(i), label(i), float(q)] for r, (i, q) in enumerate(zip(ai, ap))]
        rows.append(["kl", "", "", "", e.kl])
        rows.append(["dlogp", "", e.target, label(e.target), e.dlogp])
        heads = " ".join(f"{l}.{h}" for l, h in p.heads)
        return "ablation.csv", f"# heads {heads} ({'mean' if p.mean else 'zero'})\r\n" + ex.csv_table(
            ["run", "rank", "id", "token", "prob"], rows)
    if table == "sweep" and p.sweep is not None:
        kl, d = p.sweep
        rows = [[l, h, float(kl[l, h]), float(d[l, h])] for l in range(kl.shape[0]) for h in range(kl.shape[1])]
        return "sweep.csv", ex.csv_table(["layer", "head", "kl", "dlogp"], rows)
    if table == "patch" and p.patching is not None:
        r = p.patching
        rec = r.streams_recovered
        rows = [[s, ex.stream_name(s), n, float(r.streams[s, n]), float(rec[s, n])]
                for s in range(rec.shape[0]) for n in range(rec.shape[1])]
        return "patching-streams.csv", ex.csv_table(["stream", "name", "position", "logp", "recovered"], rows)
    if table == "patch-heads" and p.patching is not None:
        r = p.patching
        rec = r.heads_recovered
        rows = [[l, h, float(r.heads[l, h]), float(rec[l, h])] for l in range(rec.shape[0]) for h in range(rec.shape[1])]
        return "patching-heads.csv", ex.csv_table(["layer", "head", "logp", "recovered"], rows)
    if table == "attribution" and p.attribution is not None:
        a = p.attribution
        return "attribution.csv", ex.csv_table(["part", "contribution"], [[k, float(v)] for k, v in zip(a.names, a.values)])
    raise ValueError(f"no {table} table yet: run that experiment first")
