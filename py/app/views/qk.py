"""The query/key map view (issue 12): HTML of the section and the scatter plots' pixels.

Pure numpy, no ``js``: ``raster`` turns one head's 2-D map into an RGBA buffer that the page
puts into its canvas with one ``putImageData`` (``app/qk_dom.py``). Point colours:

* query / key — queries green, keys pink (AttentionViz's colours);
* position, norm — viridis over the token's position in its sentence / the vector's norm rank;
* position mod 5, punctuation — five Okabe-Ito colours / orange for punctuation, grey else.

In every mode but query/key, keys are drawn in the same hue mixed 45% toward white, so the
two clouds stay apart. The user's tokens get a dark ring; search matches are drawn larger in
near-black over faded points; the clicked point's sentence is drawn larger with a ring.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from html import escape

import numpy as np

from .common import viridis

COLOURS = (("kind", "query / key"), ("position", "position"), ("mod5", "position mod 5"),
           ("punct", "punctuation"), ("norm", "norm"))
METHOD_NAMES = {"pca": "PCA (exact, live)", "tsne": "t-SNE (precomputed)", "umap": "UMAP (precomputed)"}
BG = (255, 255, 255, 255)
Q_RGBA, K_RGBA = (27, 158, 119, 255), (231, 41, 138, 255)
MOD5 = np.array([(230, 159, 0, 255), (86, 180, 233, 255), (0, 158, 115, 255), (0, 114, 178, 255),
                 (213, 94, 0, 255)], dtype=np.uint8)
PUNCT_RGBA, OTHER_RGBA = (213, 94, 0, 255), (160, 160, 160, 255)
RING_RGBA = (20, 20, 20, 255)
MATCH_RGBA = (10, 10, 10, 255)
PAD = 6


def is_punct(label: str) -> bool:
    s = label.strip()
    return bool(s) and all(c in string.punctuation or c in "“”‘’–—…" for c in s)


def point_colours(mode: str, P: int, position: np.ndarray, labels, norms: np.ndarray) -> np.ndarray:
    """[2P, 4] uint8 colours of one head's points (queries then keys)."""
    if mode == "kind":
        return np.concatenate([np.tile(np.array(Q_RGBA, np.uint8), (P, 1)), np.tile(np.array(K_RGBA, np.uint8), (P, 1))])
    if mode == "position":
        base = viridis(position / max(1, int(position.max())))
    elif mode == "mod5":
        base = MOD5[position % 5]
    elif mode == "punct":
        punct = np.array([is_punct(t) for t in labels])
        base = np.where(punct[:, None], np.array(PUNCT_RGBA, np.uint8), np.array(OTHER_RGBA, np.uint8))
    elif mode == "norm":
        rank = np.argsort(np.argsort(norms))
        rgba = viridis(rank / max(1, norms.size - 1))
        rgba[P:] = _fade(rgba[P:], 0.45)
        return rgba
    else:
        raise ValueError(f"unknown colouring {mode!r}")
    base = np.asarray(base, dtype=np.uint8)
    return np.concatenate([base, _fade(base, 0.45)])


def _fade(rgba: np.ndarray, amount: float) -> np.ndarray:
    out = rgba.astype(np.float32)
    out[..., :3] = out[..., :3] * (1 - amount) + 255 * amount
    return out.astype(np.uint8)


@dataclass
class Frame:
    """Data coordinates -> canvas pixels: fit the map's box, then zoom around a centre."""

    w: int
    h: int
    cx: float
    cy: float
    scale: float  # pixels per data unit

    @classmethod
    def fit(cls, xy: np.ndarray, w: int, h: int, zoom: float = 1.0, centre=None) -> "Frame":
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        span = np.maximum(hi - lo, 1e-12)
        scale = min((w - 2 * PAD) / span[0], (h - 2 * PAD) / span[1]) * zoom
        cx, cy = ((lo + hi) / 2) if centre is None else centre
        return cls(w, h, float(cx), float(cy), float(scale))

    def pixels(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px = self.w / 2 + (xy[:, 0] - self.cx) * self.scale
        py = self.h / 2 - (xy[:, 1] - self.cy) * self.scale
        return px, py

    def data(self, px: float, py: float) -> tuple[float, float]:
        return self.cx + (px - self.w / 2) / self.scale, self.cy - (py - self.h / 2) / self.scale


def raster(w: int, h: int, px: np.ndarray, py: np.ndarray, layers) -> np.ndarray:
    """Squares into an RGBA buffer [h, w, 4]; ``layers`` is a list of (indices, rgba [n, 4] or
    one colour, sizes [n] or one int), drawn in order (later on top)."""
    buf = np.empty((h, w, 4), dtype=np.uint8)
    buf[:] = BG
    flat = buf.view(np.uint32).reshape(-1)
    ix = np.floor(px).astype(np.int64)
    iy = np.floor(py).astype(np.int64)
    for idx, rgba, size in layers:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            continue
        colour = np.ascontiguousarray(np.broadcast_to(np.asarray(rgba, dtype=np.uint8), (idx.size, 4))).view(np.uint32).ravel()
        sizes = np.broadcast_to(np.asarray(size, dtype=np.int64), idx.shape)
        for s in np.unique(sizes):
            pick = sizes == s
            d = np.arange(s) - s // 2
            xs = ix[idx[pick]][:, None, None] + d[None, None, :]
            ys = iy[idx[pick]][:, None, None] + d[None, :, None]
            xs, ys = np.broadcast_arrays(xs, ys)
            cols = np.broadcast_to(colour[pick][:, None, None], xs.shape)
            ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            flat[(ys * w + xs)[ok]] = cols[ok]
    return buf


def head_layers(colours: np.ndarray, user: np.ndarray, match: np.ndarray | None, size: int | np.ndarray,
                selected: np.ndarray | None = None, focus: int | None = None):
    """Draw order of one head: corpus points, the user's (ringed), the clicked sentence,
    search matches on top. user, match, selected: boolean [2P]."""
    M = colours.shape[0]
    sizes = np.broadcast_to(np.asarray(size, dtype=np.int64), (M,))
    dim = match is not None or selected is not None
    base = _fade(colours, 0.7) if dim else colours
    # corpus points in a fixed shuffled order, so neither queries nor keys cover the other cloud
    order = np.random.default_rng(0).permutation(M)
    rest = order[~user[order]]
    layers = [(rest, base[rest], sizes[rest])]
    u = np.flatnonzero(user)
    layers += [(u, RING_RGBA, sizes[u] + 2), (u, base[u], sizes[u])]
    if selected is not None:
        s = np.flatnonzero(selected)
        layers += [(s, RING_RGBA, sizes[s] + 3), (s, colours[s], sizes[s] + 1)]
    if focus is not None:
        layers += [([focus], (255, 200, 0, 255), int(sizes[focus]) + 7), ([focus], RING_RGBA, int(sizes[focus]) + 3),
                   ([focus], colours[focus:focus + 1], int(sizes[focus]) + 1)]
    if match is not None:
        m = np.flatnonzero(match)
        layers += [(m, MATCH_RGBA, sizes[m] + 3)]
    return layers


def norm_sizes(norms: np.ndarray, lo: int = 2, hi: int = 7) -> np.ndarray:
    """Point size in pixels by norm rank (lo .. hi)."""
    rank = np.argsort(np.argsort(norms)) / max(1, norms.size - 1)
    return (lo + np.round(rank * (hi - lo))).astype(np.int64)


# ----- HTML ---------------------------------------------------------------------------------------
def _select(id_: str, action: str, label: str, options, current: str) -> str:
    opts = "".join(f'<option value="{v}"{" selected" if v == current else ""}>{escape(t)}</option>' for v, t in options)
    return (f'<label class="qk-field">{escape(label)} <select id="{id_}" data-action="{action}" '
            f'data-testid="{id_}">{opts}</select></label>')


def _toggle(id_: str, action: str, label: str, on: bool, disabled: bool = False, title: str = "") -> str:
    return (f'<button type="button" id="{id_}" data-action="{action}" data-testid="{id_}" aria-pressed="{str(on).lower()}"'
            f'{" disabled" if disabled else ""}{f" title={chr(34)}{escape(title)}{chr(34)}" if title else ""}>{escape(label)}</button>')


def intro(n_sentences: int | None, n_tokens: int | None, error: str = "", built: bool = False) -> str:
    size = f"{n_sentences} sentences, {n_tokens} tokens" if n_sentences else "a few hundred held-out sentences"
    err = f'<p class="error" role="alert" data-testid="qk-error">{escape(error)}</p>' if error else ""
    return f"""<h2>Queries and keys of every head</h2>
<p class="muted small">Every token's <b>query</b> and <b>key</b> vector of each head, for a corpus the model was not
trained on ({size}) plus your text, in one 2-D map per head (after AttentionViz). Keys are shifted so their centre
matches the queries' centre — this leaves every attention weight unchanged — so a query lies near the keys it
scores highly.</p>
{err}{"" if built else BUILD}<p class="muted small" data-testid="qk-status" role="status" aria-live="polite"></p>"""


BUILD = """<p><button type="button" class="primary" data-action="qk-build" data-testid="qk-build">Build the map</button>
<span class="muted small">runs the model (numpy) on the corpus once; cached for this model</span></p>"""


def controls(method: str, methods, colour: str, translate: bool, scale: bool, by_norm: bool, search: str) -> str:
    live = method == "pca"
    fixed_note = "" if live else "t-SNE/UMAP were precomputed with the keys translated and no scaling"
    return f"""<div class="qk-controls" role="group" aria-label="Map options">
{_select("qk-method", "qk-method", "Projection", [(m, METHOD_NAMES[m]) for m in methods], method)}
{_select("qk-colour", "qk-colour", "Colour by", COLOURS, colour)}
{_toggle("qk-translate", "qk-translate", "Translate keys", translate, not live, fixed_note)}
{_toggle("qk-scale", "qk-scale", "Scale q/k norms", scale, not live, fixed_note)}
{_toggle("qk-size", "qk-size", "Size by norm", by_norm)}
<label class="qk-field">Find a token <input type="search" id="qk-search" data-action="qk-search" data-testid="qk-search"
 value="{escape(search)}" autocomplete="off" spellcheck="false" placeholder="e.g. the"></label>
<span class="muted small" data-testid="qk-search-count" aria-live="polite"></span>
</div>"""


def legend(colour: str) -> str:
    if colour == "kind":
        items = [("query", Q_RGBA), ("key", K_RGBA)]
    elif colour == "mod5":
        items = [(f"pos mod 5 = {i}", tuple(c)) for i, c in enumerate(MOD5)]
    elif colour == "punct":
        items = [("punctuation", PUNCT_RGBA), ("other", OTHER_RGBA)]
    else:
        items = [("low", tuple(viridis(0.0))), ("high", tuple(viridis(1.0)))]
    dots = "".join(f'<span class="qk-key"><span class="qk-dot" style="background:rgb{tuple(int(v) for v in c[:3])}"></span>{escape(t)}</span>'
                   for t, c in items)
    keys = "" if colour == "kind" else '<span class="qk-key muted">keys: the paler shade</span>'
    return f'<p class="qk-legend small">{dots}{keys}<span class="qk-key"><span class="qk-dot ring"></span>your text</span></p>'


def matrix(L: int, H: int, px: int, selected: tuple[int, int]) -> str:
    cells = []
    for layer in range(L):
        for head in range(H):
            sel = (layer, head) == selected
            cells.append(f'<canvas class="qk-head{" selected" if sel else ""}" data-testid="qk-head" data-action="qk-head" '
                         f'data-layer="{layer}" data-head="{head}" width="{px}" height="{px}" role="button" tabindex="0" '
                         f'aria-pressed="{str(sel).lower()}" aria-label="Layer {layer + 1} head {head + 1}: open it large"></canvas>')
    cols = "".join(f'<span class="qk-colhead">head {h + 1}</span>' for h in range(H))
    rows = "".join(f'<span class="qk-rowhead">layer {l + 1}</span>' + "".join(cells[l * H:(l + 1) * H]) for l in range(L))
    return (f'<div class="qk-matrix" data-testid="qk-matrix" style="--qk-cols:{H}" aria-label="All {L * H} heads">'
            f'<span></span>{cols}{rows}</div>')


def single(layer: int, head: int, px: int, method: str) -> str:
    approx = "" if method == "pca" else (
        ' <span class="qk-approx" data-testid="qk-approx">your tokens are placed approximately: each at the mean '
        'position of its 5 nearest corpus points</span>')
    return f"""<div class="qk-single" data-testid="qk-single">
<h3><span>Layer <span data-testid="qk-single-layer">{layer + 1}</span>, head <span data-testid="qk-single-head">{head + 1}</span></span>
<span class="muted small">({escape(METHOD_NAMES[method])})</span>{approx}</h3>
<div class="qk-zoom" role="group" aria-label="Zoom">
<button type="button" data-action="qk-zoom-in" data-testid="qk-zoom-in" aria-label="Zoom in">+</button>
<button type="button" data-action="qk-zoom-out" data-testid="qk-zoom-out" aria-label="Zoom out">−</button>
<button type="button" data-action="qk-reset" data-testid="qk-reset">Reset view</button>
<span class="muted small">drag to pan, wheel to zoom; arrow keys pan, + and − zoom</span></div>
<div class="qk-stage"><canvas id="qk-canvas" data-testid="qk-canvas" width="{px}" height="{px}" tabindex="0"
 aria-label="Layer {layer + 1} head {head + 1}, large: click a point to see its attention"></canvas>
<svg class="qk-lines" data-testid="qk-lines" viewBox="0 0 {px} {px}" preserveAspectRatio="none" aria-hidden="true"></svg></div>
<div class="qk-sentence" data-slot="qk-sentence" data-testid="qk-sentence" aria-live="polite"><p class="muted small">Click a point: its sentence
appears here and lines join a query to the keys it attends to (the real attention weights; lines for weights ≥ 1%).</p></div>
</div>"""


def lines_svg(x0: float, y0: float, targets, query_side: bool) -> str:
    """SVG lines from (x0, y0) to each (x, y, weight, label)."""
    out = []
    for x, y, wgt, label in targets:
        colour = "#e7298a" if query_side else "#1b9e77"
        out.append(f'<line data-testid="qk-line" data-weight="{wgt:.6g}" x1="{x0:.1f}" y1="{y0:.1f}" x2="{x:.1f}" '
                   f'y2="{y:.1f}" stroke="{colour}" stroke-width="{0.6 + 5 * wgt:.2f}" stroke-opacity="{0.25 + 0.75 * wgt:.2f}">'
                   f'<title>{escape(label)}</title></line>')
    return "".join(out)


def sentence_html(labels, weights, focus: int, kind: str, source: str) -> str:
    """The clicked point's sentence, each token shaded by its attention weight."""
    parts = []
    for i, (t, w) in enumerate(zip(labels, weights)):
        cls = "qk-tok focus" if i == focus else "qk-tok"
        parts.append(f'<span class="{cls}" style="background:rgba(231,41,138,{0.85 * w:.3f})" '
                     f'title="weight {w:.4f}">{escape(t)}</span>')
    what = ("query: shading = how much it attends to each key" if kind == "q"
            else "key: shading = how much each query attends to it")
    return f'<p class="small"><b>{escape(source)}</b> — the {what}</p><p class="qk-tokens">{"".join(parts)}</p>'
