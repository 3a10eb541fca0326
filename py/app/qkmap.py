"""The query/key map's controller (issue 12): state and actions, no ``js``.

It draws through two objects: ``ui`` (the explainer's Binding: ``show`` a slot's HTML,
``set_text``, ``set_attr``, tooltips) and ``dom`` (``qk_dom.QKDom``: paint a canvas from an
RGBA buffer, write the lines' SVG, read canvas sizes). ``fetch(url) -> bytes`` reads the
model folder's ``qk.json``, corpus and precomputed maps (each checked against its sha256).

Data: the corpus's q/k/att come from the page's runner (``runner()`` returns the explainer's
current one): its ``tensors(ids, names)`` (runner.py's contract) runs each sentence from an
empty cache of its own on WebGPU or numpy, whichever runs the model, one sentence at a time
with a progress line, computed once per model and kept; a runner without ``tensors`` (light
mode) leaves them to the numpy reference blocks (``glassbox.qk.sentence_qk``). The user's
text's q/k/att come from the explainer's Trace, or from the reference blocks when the trace
lacks them. Coordinates of all heads are recomputed when the text, projection or alignment
options change (``coords``); colour, search, zoom and clicks only repaint.

PCA runs on the GPU when the runner runs on WebGPU (``gpu_pca``: ``glassbox.gpu.qk_pca`` on the
runner's engine's backend, every head in one dispatch per kernel); otherwise, or when that
fails (said in the status line), on numpy (``glassbox.qk.project``). Both give the same
coordinates within float32 rounding (tests/gpu/test_qk_pca.py).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from glassbox import qk

from .views import qk as view
from .views.common import View, token_label

MATRIX_PX = {True: 132, False: 96}  # head canvas size: up to 36 heads / more
SINGLE_PX = 560
ZOOM_STEP = 1.5
HOVER_PX = 9


def runner_backend(runner) -> str:
    """"webgpu" or "numpy": where a runner runs the model now (its status, else its name)."""
    status = getattr(runner, "status", None)
    return getattr(status, "backend", None) or getattr(runner, "name", None) or "numpy"


class QKMap:
    def __init__(self, ui, dom, model, base_url: str, fetch, slot: str = "qk", runner=None):
        self.ui, self.dom, self.model, self.base_url, self.fetch, self.slot = ui, dom, model, base_url, fetch, slot
        self.runner = runner or (lambda: None)  # () -> the explainer's current runner (or None)
        self._gpu_pca = None  # (backend, glassbox.gpu.qk_pca.QKPCA) while the runner is on WebGPU
        self._points = asyncio.Lock()  # placing the text and reprojecting take turns (each awaits the worker)
        self.pca_backend = "numpy"  # where the last PCA ran: "webgpu" or "numpy"
        self.config = model.config
        self.method, self.colour, self.translate, self.scale = "pca", "kind", True, False
        self.by_norm, self.search = False, ""
        self.layer = self.head = 0
        self.zoom, self.centre = 1.0, None
        self.corpus: qk.Corpus | None = None
        self.fixed: qk.Projections | None = None
        self.corpus_set: qk.QKSet | None = None
        self.user_set: qk.QKSet | None = None
        self.data: qk.QKSet | None = None
        self.labels: list[str] = []
        self.xy: dict[tuple[int, int], np.ndarray] = {}
        self.focus: int | None = None  # clicked point (map index)
        self.building = False
        self._updating = False
        self.draws = 0
        self.error = ""
        self.timings: dict[str, float] = {}
        self._trace = None
        self._placed = None  # the trace whose text the map shows (placed once)
        self.on_select = None  # (layer, head) -> None: a head clicked in the matrix (the explainer follows)

    # ----- frame -------------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.data is not None

    def mount(self) -> None:
        self.ui.show(self.slot, View(view.intro(None, None, self.error)))

    def status(self, text: str) -> None:
        self.ui.set_text("testid:qk-status", text)

    def methods(self) -> list[str]:
        return ["pca"] + [m for m in ("tsne", "umap") if self.fixed is not None and m in self.fixed.methods]

    def render(self) -> None:
        """The whole section (after a build or a projection change), then every canvas."""
        L, H = self.config.n_layer, self.config.n_head
        n = len(self.corpus.sentences) if self.corpus else None
        head = view.intro(n, self.corpus_set.n_tokens if self.corpus_set else None, self.error, self.built)
        body = ""
        if self.built:
            body = (view.controls(self.method, self.methods(), self.colour, self.translate, self.scale, self.by_norm, self.search)
                    + view.legend(self.colour) + '<div class="qk-body">'
                    + view.matrix(L, H, MATRIX_PX[L * H <= 36], (self.layer, self.head))
                    + view.single(self.layer, self.head, SINGLE_PX, self.method) + "</div>")
        self.ui.show(self.slot, View(head + body))
        if self.built:
            self.paint_all()
            self.draws += 1  # tests wait on data-draws / data-points
            self.ui.set_attr("testid:qk-matrix", "data-points", str(2 * self.data.n_tokens))
            self.ui.set_attr("testid:qk-matrix", "data-draws", str(self.draws))

    # ----- building --------------------------------------------------------------------------------
    async def build(self) -> None:
        if self.building:
            return
        self.building, self.error = True, ""
        try:
            started = time.perf_counter()
            if self.corpus_set is None:
                await self._load_corpus()
            self.timings["corpus_s"] = time.perf_counter() - started
            current = self._trace
            await self._set_user(current)
            self._placed = current
            self.render()
            self.status(self._summary())
        except Exception as exc:  # noqa: BLE001  (shown on the page)
            self.error = f"The map could not be built: {type(exc).__name__}: {exc}"
            self.render()
        finally:
            self.building = False
        if self.built and self._trace is not self._placed:  # a newer text came while it was built
            await self.on_trace(self._trace)

    async def _load_corpus(self) -> None:
        self.status("Fetching the corpus…")
        side = qk.parse_sidecar(await self.fetch(self.base_url + qk.SIDECAR))
        self.corpus = qk.parse_corpus(side, await self.fetch(self.base_url + side["corpus"]["file"]))
        if side.get("projections"):
            self.fixed = qk.parse_projections(side, await self.fetch(self.base_url + side["projections"]["file"]))
        params, ids = self.model.params, self.corpus.ids
        runner = self.runner()
        tensors = getattr(runner, "tensors", None)
        names = qk.qk_names(self.config.n_layer)
        parts = []
        for i, sentence in enumerate(ids):
            if i % 8 == 0:
                where = runner_backend(runner) if tensors else "numpy"
                self.status(f"Running the model ({where}) on corpus sentence {i + 1} of {len(ids)}…")
                await asyncio.sleep(0)
            if tensors is not None:
                parts.append(qk.from_tensors(await tensors(sentence, names), self.config.n_layer))
            else:
                parts.append(qk.sentence_qk(params, self.config, sentence))
        self.timings["corpus_backend"] = runner_backend(runner) if tensors else "numpy"
        data = qk.stack(parts)
        data.token_id = np.concatenate(ids)
        self.corpus_set = data

    async def _set_user(self, trace) -> None:
        """Join the user's text onto the corpus and recompute every head's coordinates; placing
        and reprojecting (coords) take turns, so the points and their coordinates always match."""
        if self.corpus_set is None:
            return
        async with self._points:
            await self._place(trace)

    async def _place(self, trace) -> None:
        """_set_user's work: the text's q/k (the trace's, else the runner's), the joined set and
        its coordinates, swapped in at the end."""
        started = time.perf_counter()
        if trace is not None:
            try:
                parts = [qk.from_trace(trace)]
            except (ValueError, KeyError):  # a partial trace (light mode, the model worker's: issue 16)
                tensors = getattr(self.runner(), "tensors", None)
                if tensors is not None and trace.start == 0:  # s16: the runner's (the worker's), not this thread
                    names = qk.qk_names(self.config.n_layer)
                    parts = [qk.from_tensors(await tensors(trace.ids, names), self.config.n_layer)]
                else:
                    parts = [qk.sentence_qk(self.model.params, self.config, trace.ids)]
            user = qk.stack(parts)
            user.token_id = np.asarray(trace.ids, dtype=np.int64)
        else:
            user = self.user_set
        data = qk.join(self.corpus_set, user) if user is not None else self.corpus_set
        self.timings["user_s"] = time.perf_counter() - started
        xy = await self._project(data)
        # Swapped in together, after the last await: a draw meanwhile (the reader picked another
        # layer, which links the map) shows the previous points whole, never half of each.
        self.user_set, self.data, self.xy, self.focus = user, data, xy, None
        self.labels = self.model.tokenizer.display(data.token_id.tolist())

    def gpu_pca(self):
        """The GPU PCA on the runner's WebGPU device, or None when the runner is not on WebGPU."""
        runner = self.runner()
        if runner_backend(runner) != "webgpu":
            return None
        remote = getattr(runner, "qk_pca", None)
        if remote is not None:  # issue 16: the model worker's device computes it
            return remote
        engine = getattr(runner, "engine", None)
        if engine is None:
            return None
        if self._gpu_pca is None or self._gpu_pca[0] is not engine.backend:
            from glassbox.gpu.qk_pca import QKPCA

            self._gpu_pca = (engine.backend, QKPCA(engine.backend))
        return self._gpu_pca[1]

    async def coords(self) -> None:
        """Every head's coordinates of the points shown (after a projection change)."""
        async with self._points:
            self.xy = await self._project(self.data)

    async def _project(self, data: qk.QKSet) -> dict[tuple[int, int], np.ndarray]:
        """Every head's 2-D coordinates of ``data``: {(layer, head): [2P, 2]}. Assigns nothing
        that a draw reads (it awaits the worker's GPU or yields between layers)."""
        started = time.perf_counter()
        n_corpus = self.corpus_set.n_tokens
        self.pca_backend = "numpy"
        L, H = self.config.n_layer, self.config.n_head
        pca = self.gpu_pca() if self.method == "pca" else None
        if pca is not None:
            try:
                xy = await pca.project(qk.all_head_points(data, self.translate, self.scale))
                self.pca_backend = "webgpu"
                self.timings["project_s"] = time.perf_counter() - started
                return {(layer, head): xy[layer * H + head] for layer in range(L) for head in range(H)}
            except Exception as exc:  # noqa: BLE001  (a lost device: numpy computes the same map)
                self._gpu_pca = None
                self.error = f"PCA on WebGPU failed ({type(exc).__name__}: {exc}); numpy computed it."
        out = {}
        for layer in range(L):
            for head in range(H):
                out[layer, head] = qk.project(data, layer, head, self.method, self.translate, self.scale,
                                              fixed=self.fixed, n_corpus=n_corpus)
            await asyncio.sleep(0)
        self.timings["project_s"] = time.perf_counter() - started
        return out

    def _summary(self) -> str:
        t = self.timings
        where = f" on {self.pca_backend}" if self.method == "pca" else ""
        return (f"{self.data.n_sentences} sentences, {self.data.n_tokens} tokens, {2 * self.data.n_tokens} points per head; "
                f"corpus q/k on {t.get('corpus_backend', 'numpy')}; projection{where} {t.get('project_s', 0) * 1000:.0f} ms, "
                f"drawing {t.get('paint_s', 0) * 1000:.0f} ms.")

    async def on_trace(self, trace) -> None:
        """The explainer has a new trace: place its text among the corpus (when the map is
        built). Traces arriving while one is being placed coalesce: only the latest is drawn."""
        self._trace = trace
        if not self.built or self.building or self._updating or trace is self._placed:
            return
        self._updating = True
        try:
            while True:
                current = self._trace
                await self._set_user(current)
                self._placed = current
                if self._trace is current:
                    break
            self.render()
            self.status(self._summary())
        finally:
            self._updating = False

    def link(self, layer: int, head: int) -> None:
        """The explainer chose a layer/head: show it large."""
        if (layer, head) != (self.layer, self.head):
            self.layer, self.head, self.zoom, self.centre, self.focus = layer, head, 1.0, None, None
            if self.built:
                self.render()

    # ----- drawing ---------------------------------------------------------------------------------
    def user_mask(self) -> np.ndarray:
        P = self.data.n_tokens
        u = self.data.sentence >= len(self.corpus.sentences)
        return np.concatenate([u, u]) if P else np.zeros(0, bool)

    def match_mask(self) -> np.ndarray | None:
        term = self.search.strip().lower()
        if not term:
            return None
        hit = np.array([t.strip().lower() == term for t in self.labels])
        return np.concatenate([hit, hit])

    def _norms(self, layer: int, head: int) -> np.ndarray:
        q, k = self.data.head(layer, head)
        return np.linalg.norm(qk.head_points(self.data, layer, head, qk.fit_alignment(q, k, self.translate, self.scale)), axis=1)

    def head_rgba(self, layer: int, head: int, px: int, frame: view.Frame | None = None, size=3,
                  selected=None, focus=None) -> np.ndarray:
        xy = self.xy[layer, head]
        frame = frame or view.Frame.fit(xy, px, px)
        colours = view.point_colours(self.colour, self.data.n_tokens, np.concatenate([self.data.position] * 2),
                                     self.labels + self.labels, self._norms(layer, head) if self.colour == "norm" else None)
        pxs, pys = frame.pixels(xy)
        layers = view.head_layers(colours, self.user_mask(), self.match_mask(), size, selected, focus)
        return view.raster(px, px, pxs, pys, layers)

    def paint_all(self) -> None:
        started = time.perf_counter()
        L, H = self.config.n_layer, self.config.n_head
        px = MATRIX_PX[L * H <= 36]
        match = self.match_mask()
        size = 2 if px < 120 else 3
        for layer in range(L):
            for head in range(H):
                sel = f'[data-testid="qk-head"][data-layer="{layer}"][data-head="{head}"]'
                self.dom.paint(sel, self.head_rgba(layer, head, px, size=size))
                self.ui.set_attr(f"qk-head:{layer}.{head}", "data-highlighted", str(0 if match is None else int(match.sum())))
        self.timings["paint_s"] = time.perf_counter() - started
        self.paint_single()
        count = "" if match is None else f"{int(match.sum()) // 2} tokens match, highlighted in every head"
        self.ui.set_text("testid:qk-search-count", count)

    def single_frame(self) -> view.Frame:
        return view.Frame.fit(self.xy[self.layer, self.head], SINGLE_PX, SINGLE_PX, self.zoom, self.centre)

    def paint_single(self) -> None:
        frame = self.single_frame()
        size = view.norm_sizes(self._norms(self.layer, self.head)) if self.by_norm else 4
        selected = None
        if self.focus is not None:
            s = self.data.sentence[self.focus % self.data.n_tokens]
            selected = np.concatenate([self.data.sentence == s] * 2)
        self.dom.paint("#qk-canvas", self.head_rgba(self.layer, self.head, SINGLE_PX, frame, size, selected, self.focus))
        self.dom.set_lines(self._lines(frame))

    def _lines(self, frame: view.Frame) -> str:
        if self.focus is None:
            self.ui.set_attr("testid:qk-lines", "data-focus", "")
            return ""
        P = self.data.n_tokens
        j, is_query = self.focus % P, self.focus < P
        rows, weights = self.attention(j, is_query)
        px, py = frame.pixels(self.xy[self.layer, self.head])
        targets = []
        for r, w in zip(rows, weights):
            if w >= 0.01:
                other = P + r if is_query else r
                targets.append((px[other], py[other], float(w), f"{token_label(self.labels[r])}: {w:.4f}"))
        s = int(self.data.sentence[j])
        source = "your text" if s >= len(self.corpus.sentences) else f"corpus sentence {s + 1}"
        labels = [token_label(self.labels[r]) for r in rows]
        self.ui.show("qk-sentence", View(view.sentence_html(labels, weights, int(self.data.position[j]),
                                                            "q" if is_query else "k", source)))
        self.ui.set_attr("testid:qk-lines", "data-focus", str(self.focus))
        return view.lines_svg(px[self.focus], py[self.focus], targets, is_query)

    def attention(self, j: int, is_query: bool) -> tuple[np.ndarray, np.ndarray]:
        """Token rows of j's sentence and the real weights: j's query over them, or (for a key)
        every query's weight on j."""
        layer, head = self.layer, self.head
        if is_query:
            return qk.attention_of(self.data, j, layer, head)
        s = int(self.data.sentence[j])
        rows = self.data.sentence_rows(s)
        return rows, np.asarray(self.data.att[s][layer, head][:, int(self.data.position[j])], dtype=np.float64)

    # ----- pointer and keys on the large canvas -----------------------------------------------------
    def nearest(self, x: float, y: float) -> int | None:
        """The drawn point nearest canvas pixel (x, y), within HOVER_PX."""
        px, py = self.single_frame().pixels(self.xy[self.layer, self.head])
        d2 = (px - x) ** 2 + (py - y) ** 2
        i = int(np.argmin(d2))
        return i if d2[i] <= HOVER_PX ** 2 else None

    def describe(self, i: int) -> str:
        P = self.data.n_tokens
        j = i % P
        s = int(self.data.sentence[j])
        where = "your text" if s >= len(self.corpus.sentences) else f"corpus sentence {s + 1}"
        kind = "query" if i < P else "key"
        return f"{kind} of ‘{token_label(self.labels[j])}’ — {where}, position {int(self.data.position[j])}"

    def hover(self, x: float, y: float, client_x: float, client_y: float) -> None:
        i = self.nearest(x, y) if self.built else None
        if i is None:
            self.ui.hide_tooltip()
        else:
            self.ui.show_tooltip(self.describe(i), client_x, client_y)

    def click(self, x: float, y: float) -> None:
        if not self.built:
            return
        self.focus = self.nearest(x, y)
        self.paint_single()

    def pan(self, dx: float, dy: float) -> None:
        """Move the view by (dx, dy) canvas pixels."""
        f = self.single_frame()
        self.centre = (f.cx - dx / f.scale, f.cy + dy / f.scale)
        self.paint_single()

    def zoom_at(self, factor: float, x: float | None = None, y: float | None = None) -> None:
        f = self.single_frame()
        x = SINGLE_PX / 2 if x is None else x
        y = SINGLE_PX / 2 if y is None else y
        dx, dy = f.data(x, y)
        new_zoom = min(max(self.zoom * factor, 0.25), 200.0)
        factor = new_zoom / self.zoom
        self.zoom = new_zoom
        # keep the data point under (x, y) where it is
        self.centre = (dx - (dx - f.cx) / factor, dy - (dy - f.cy) / factor)
        self.paint_single()

    def key(self, key: str) -> bool:
        steps = {"ArrowLeft": (40, 0), "ArrowRight": (-40, 0), "ArrowUp": (0, 40), "ArrowDown": (0, -40)}
        if key in steps:
            self.pan(*steps[key])
        elif key in ("+", "="):
            self.zoom_at(ZOOM_STEP)
        elif key in ("-", "_"):
            self.zoom_at(1 / ZOOM_STEP)
        elif key == "0":
            self.zoom, self.centre = 1.0, None
            self.paint_single()
        else:
            return False
        return True

    # ----- actions from the page -----------------------------------------------------------------
    ACTIONS = ("qk-build", "qk-colour", "qk-head", "qk-method", "qk-reset", "qk-scale", "qk-search", "qk-size",
               "qk-translate", "qk-zoom-in", "qk-zoom-out")

    def handle(self, action: str, value: str = "", data: dict | None = None):
        data = data or {}
        if action == "qk-build":
            return asyncio.ensure_future(self.build())
        if not self.built:
            return None
        if action in ("qk-method", "qk-translate", "qk-scale"):
            if action == "qk-method":
                if value not in self.methods():
                    raise ValueError(f"no {value} map for this model")
                self.method = value
                if value != "pca":
                    self.translate, self.scale = self.fixed.translate, self.fixed.scale
            elif action == "qk-translate":
                self.translate = not self.translate
            else:
                self.scale = not self.scale
            return asyncio.ensure_future(self._reproject())
        if action == "qk-colour":
            self.colour = value if value in dict(view.COLOURS) else "kind"
            self.render()
        elif action == "qk-search":
            self.search = value
            self.paint_all()
        elif action == "qk-size":
            self.by_norm = not self.by_norm
            self.ui.set_attr("qk-size", "aria-pressed", str(self.by_norm).lower())
            self.paint_single()
        elif action == "qk-head":
            layer, head = int(data["layer"]), int(data["head"])
            self.link(layer, head)
            if self.on_select is not None:
                self.on_select(layer, head)
        elif action == "qk-zoom-in":
            self.zoom_at(ZOOM_STEP)
        elif action == "qk-zoom-out":
            self.zoom_at(1 / ZOOM_STEP)
        elif action == "qk-reset":
            self.zoom, self.centre = 1.0, None
            self.paint_single()
        return None

    async def _reproject(self) -> None:
        self.status("Projecting every head…")
        await asyncio.sleep(0)
        await self.coords()
        self.focus = None
        self.render()
        self.status(self._summary())
