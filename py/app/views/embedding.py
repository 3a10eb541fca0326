"""Embedding view: tokenization, token embedding + position embedding = the residual stream.

Every number comes from the trace: ``tok_emb`` (rows of wte picked by the ids), ``pos_emb``
(rows of wpe for positions start..start+N-1) and ``emb``, their sum. The three [N, D] heat
maps share one colour scale so the sum can be compared by eye; hovering (or arrow keys on a
focused map) reads any cell.

Byte-level tokens that only together make a character (an emoji, a CJK character: GPT-2's BPE
may cut its UTF-8 bytes over two or three tokens) are grouped (``common.char_groups``) and the
character is shown above them, with each token's bytes on hover.
"""

from __future__ import annotations

import functools

from html import escape

from glassbox.trace import Trace

from .common import (View, canvas_html, char_groups, check_shape, check_tokens, fmt, group_chips, legend_html, robust_scale,
                     signed_heat, tex, token_label)
from .mathtex import panel as math_panel

ROW_PX = 16
MAX_ROWS_SHOWN = 64  # taller maps scroll inside their box


def row_labels(tokens: list[str]) -> list[str]:
    """Tokens as hover labels: ‘␣fox’."""
    return [f"‘{token_label(t)}’" for t in tokens]


def labels_column(tokens: list[str], start: int = 0, row_px: int = ROW_PX) -> str:
    return _labels_column(tuple(tokens), start, row_px)


@functools.lru_cache(maxsize=16)
def _labels_column(tokens: tuple[str, ...], start: int, row_px: int) -> str:
    """labels_column, kept for the next call: a 256-token view asks for the same column a dozen
    times (issue 16)."""
    items = "".join(
        f'<li style="height:{row_px}px" title="position {start + i}">'
        f'<span class="pos">{start + i}</span> {escape(token_label(t))}</li>'
        for i, t in enumerate(tokens)
    )
    return f'<ol class="row-labels" aria-hidden="true">{items}</ol>'


def render(trace: Trace, tokens, token_bytes=None) -> View:
    """``token_bytes``: each token's bytes (``Tokenizer.token_bytes``), to group the tokens that
    split a character; None draws every token on its own."""
    D = trace.config.n_embd
    n = int(trace.ids.size)
    tokens = check_tokens(tokens, n)
    if token_bytes is not None and len(token_bytes) != n:
        raise ValueError(f"got bytes for {len(token_bytes)} tokens, the trace has {n}")
    tok = check_shape("tok_emb", trace["tok_emb"], (n, D))
    pos = check_shape("pos_emb", trace["pos_emb"], (n, D))
    emb = check_shape("emb", trace["emb"], (n, D))
    scale = max(robust_scale(tok), robust_scale(pos), robust_scale(emb))
    labels = row_labels(tokens)
    heats = [
        signed_heat("emb.tok_emb", "token embedding", tok, labels, scale),
        signed_heat("emb.pos_emb", "position embedding", pos, labels, scale),
        signed_heat("emb.emb", "embedding sum", emb, labels, scale),
    ]
    chips = [
        f'<li class="token" data-position="{trace.start + i}"><span class="tok-text">{escape(token_label(t))}</span>'
        f'<span class="tok-id">{int(tid)}</span></li>'
        for i, (t, tid) in enumerate(zip(tokens, trace.ids))
    ]
    chips = "".join(group_chips(chips, char_groups(token_bytes)) if token_bytes is not None else chips)
    # Worked example: the last token's first few dimensions, sum checked from the trace.
    last = n - 1
    dims = range(min(4, D))
    example = "".join(
        f"<tr><th scope='row'>dim {d}</th><td>{fmt(tok[last, d], 5)}</td><td>+</td>"
        f"<td>{fmt(pos[last, d], 5)}</td><td>=</td><td>{fmt(emb[last, d], 5)}</td></tr>"
        for d in dims
    )
    maps = "".join(
        f'<figure class="map"><figcaption>{title} <code>{name}</code> <span class="muted">[{n}×{D}]</span></figcaption>'
        f'<div class="map-body">{labels_column(tokens, trace.start)}{canvas_html(h, title, ROW_PX, ROW_PX * MAX_ROWS_SHOWN)}</div></figure>'
        + (f'<div class="op" aria-hidden="true">{op}</div>' if op else "")
        for h, title, name, op in (
            (heats[0], "Token embedding", "tok_emb = wte[ids]", "+"),
            (heats[1], "Position embedding", "pos_emb = wpe[positions]", "="),
            (heats[2], "Sum: the residual stream", "emb", ""),
        )
    )
    formula = tex(r"x_n^{(0)} = W_E[:, \mathrm{id}_n] + W_P[:, n]")
    html = f"""
<h2>Embedding: tokens to vectors</h2>
<p>The tokenizer cut the text into <strong>{n}</strong> tokens. Each token id picks a row of the
token embedding <code>wte</code> [{trace.config.vocab_size}×{D}]; each position picks a row of
<code>wpe</code> [{trace.config.n_positions}×{D}]. Their sum is the vector that enters block 1.</p>
<ol class="tokens" aria-label="Tokens and their ids">{chips}</ol>
<div class="legend-row">{legend_html(scale, note="one scale for all three maps (99.5th percentile of |x|); hover or focus a map and use the arrow keys to read values")}</div>
<div class="maps three" data-tour="embedding-maps">{maps}</div>
<details class="worked"><summary>Check the sum for ‘{escape(token_label(tokens[last]))}’ (position {trace.start + last})</summary>
<table class="numbers"><thead><tr><th></th><th>tok_emb</th><th></th><th>pos_emb</th><th></th><th>emb</th></tr></thead>
<tbody>{example}</tbody></table>
<p class="muted">{formula}</p></details>
{math_panel("embedding", trace.config, n)}
"""
    return View(html, heats)
