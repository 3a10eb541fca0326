"""The query/key map's controller (app/qkmap.py) and drawing (app/views/qk.py) in CPython,
with a fake page: every head drawn, search marks every head, a click draws the real
attention, the user's text joins the corpus, zoom keeps the point under the pointer."""

import asyncio
import json
import os

import numpy as np
import pytest

from app import runner as runners
from app.qkmap import QKMap
from app.views import qk as view
from glassbox import qk, reference, safetensors, weights
from glassbox.model import load

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


class FakeUI:
    def __init__(self):
        self.slots, self.texts, self.attrs = {}, {}, {}
        self.tip = None

    def show(self, slot, view_):
        self.slots[slot] = view_.html

    def set_text(self, selector, text):
        self.texts[selector] = text

    def set_attr(self, selector, name, value):
        self.attrs[selector, name] = value

    def show_tooltip(self, text, x, y):
        self.tip = text

    def hide_tooltip(self):
        self.tip = None


class FakeDom:
    def __init__(self):
        self.painted, self.lines = {}, ""

    def paint(self, selector, rgba):
        self.painted[selector] = rgba.copy()

    def set_lines(self, svg):
        self.lines = svg


@pytest.fixture(scope="module")
def model():
    return load(os.path.join(ROOT, "weights", "mini"), vocab_dir=os.path.join(ROOT, "vendor", "gpt2"))


def _files(model, texts, with_maps=True):
    """A model folder's qk files in memory: corpus of ``texts`` and random t-SNE maps."""
    sentences = [{"text": t, "ids": model.tokenizer.encode(t)} for t in texts]
    corpus = json.dumps({"tokens": sum(len(s["ids"]) for s in sentences), "sentences": sentences}).encode()
    P = sum(len(s["ids"]) for s in sentences)
    rng = np.random.default_rng(0)
    maps = safetensors.save({f"tsne.{l}.{h}": rng.normal(size=(2 * P, 2)).astype(np.float16)
                             for l in range(model.config.n_layer) for h in range(model.config.n_head)})
    side = {"format": qk.FORMAT, "format_version": qk.FORMAT_VERSION,
            "corpus": {"file": "c.json", "bytes": len(corpus), "sha256": weights.sha256_hex(corpus)}}
    if with_maps:
        side["projections"] = {"file": "p.st", "bytes": len(maps), "sha256": weights.sha256_hex(maps),
                               "methods": ["tsne"], "translate": True, "scale": False}
    return {"m/qk.json": json.dumps(side).encode(), "m/c.json": corpus, "m/p.st": maps}


def _built(model, text="The file is opened. The file is closed."):
    files = _files(model, ["A list is sorted.", "The file is read, then it is closed.", "Numbers are added."])

    async def fetch(url):
        return files[url]

    ui, dom = FakeUI(), FakeDom()
    m = QKMap(ui, dom, model, "m/", fetch)
    m.mount()
    trace = reference.forward(model.params, model.config, model.prompt(text).ids)
    asyncio.run(m.on_trace(trace))  # not built yet: only remembered
    asyncio.run(m.build())
    return m, ui, dom, trace


def test_build_draws_every_head_and_joins_the_text(model):
    m, ui, dom, trace = _built(model)
    assert not m.error, m.error
    L, H = model.config.n_layer, model.config.n_head
    heads = [k for k in dom.painted if 'data-testid="qk-head"' in k]
    assert len(heads) == L * H
    assert ui.slots["qk"].count('data-testid="qk-head"') == L * H
    assert m.data.n_sentences == 4 and m.data.n_tokens == m.corpus_set.n_tokens + trace.ids.size
    # the user's q/k are the trace's
    np.testing.assert_array_equal(m.data.q[2, 1, -trace.ids.size:], trace["h.2.q"][1])
    # the page's coordinates are glassbox.qk's on the same set
    np.testing.assert_allclose(m.xy[1, 2], qk.project(m.data, 1, 2), atol=1e-12)
    # queries and keys both drawn in their colours
    rgba = dom.painted['[data-testid="qk-head"][data-layer="0"][data-head="0"]']
    for colour in (view.Q_RGBA, view.K_RGBA):
        assert (rgba.reshape(-1, 4) == colour).all(1).any()


def test_gpt2_depth_draws_144_heads(model):
    """GPT-2's 12 layers x 12 heads (narrow random weights: the count is L x H, not the width)."""
    from glassbox.config import GPTConfig
    from glassbox.model import Model

    config = GPTConfig(n_layer=12, n_head=12, n_embd=96, n_positions=64, vocab_size=50257)
    m, ui, dom, _ = _built(Model(weights.random_checkpoint(config, "none", seed=1), model.tokenizer))
    assert not m.error, m.error
    assert ui.slots["qk"].count('data-testid="qk-head"') == 144
    assert len([k for k in dom.painted if 'data-testid="qk-head"' in k]) == 144 == len(m.xy)


def test_search_highlights_every_head(model):
    m, ui, dom, _ = _built(model)
    m.handle("qk-search", "file")
    n = sum(t.strip().lower() == "file" for t in m.labels)
    assert n >= 3
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            sel = f'[data-testid="qk-head"][data-layer="{layer}"][data-head="{head}"]'
            assert ui.attrs[f"qk-head:{layer}.{head}", "data-highlighted"] == str(2 * n)
            assert (dom.painted[sel].reshape(-1, 4) == view.MATCH_RGBA).all(1).any()


def test_click_on_a_query_draws_its_real_attention(model):
    m, ui, dom, trace = _built(model)
    m.link(1, 3)
    P = m.data.n_tokens
    j = P - 1  # the last token of the user's text
    frame = m.single_frame()
    px, py = frame.pixels(m.xy[1, 3])
    m.click(px[j], py[j])
    i = m.focus
    assert i is not None and m.nearest(px[j], py[j]) == i
    # the clicked point may be another at the same pixel; its lines are its own attention
    rows, w = m.attention(i % P, i < P)
    drawn = dom.lines.count('data-testid="qk-line"')
    assert drawn == int((w >= 0.01).sum()) and drawn > 0
    if i == j:
        np.testing.assert_allclose(w, trace["h.1.att"][3, -1], atol=1e-7)
    assert "your text" in ui.slots["qk-sentence"] or "corpus" in ui.slots["qk-sentence"]


def test_zoom_keeps_the_point_under_the_pointer_and_pan_moves(model):
    m, *_ = _built(model)
    f0 = m.single_frame()
    before = f0.data(100.0, 200.0)
    m.zoom_at(2.0, 100.0, 200.0)
    np.testing.assert_allclose(m.single_frame().data(100.0, 200.0), before, atol=1e-9)
    cx = m.single_frame().cx
    m.pan(10, 0)
    assert m.single_frame().cx < cx
    assert m.key("ArrowLeft") and not m.key("q")


def test_tsne_method_marks_placement_approximate_and_locks_options(model):
    m, ui, dom, _ = _built(model)
    asyncio.run(_handle(m, "qk-method", "tsne"))
    assert m.method == "tsne" and 'data-testid="qk-approx"' in ui.slots["qk"]
    assert 'id="qk-scale" data-action="qk-scale" data-testid="qk-scale" aria-pressed="false" disabled' in ui.slots["qk"]
    C = m.corpus_set.n_tokens
    np.testing.assert_allclose(m.xy[0, 0][:C], m.fixed.coords("tsne", 0, 0)[:C])


async def _handle(m, action, value=""):
    task = m.handle(action, value)
    if task is not None:
        await task


def test_no_maps_means_pca_only_and_bad_file_is_shown(model):
    files = _files(model, ["A list is sorted."], with_maps=False)
    files["m/c.json"] = files["m/c.json"].replace(b"sorted", b"sortex")

    async def fetch(url):
        return files[url]

    m = QKMap(FakeUI(), FakeDom(), model, "m/", fetch)
    asyncio.run(m.build())
    assert "sha256" in m.error and 'data-testid="qk-error"' in m.ui.slots["qk"]


def test_raster_draws_squares_in_order():
    buf = view.raster(10, 10, np.array([2.0, 2.0]), np.array([3.0, 3.0]),
                      [([0], (255, 0, 0, 255), 3), ([1], (0, 0, 255, 255), 1)])
    assert tuple(buf[3, 2]) == (0, 0, 255, 255) and tuple(buf[2, 1]) == (255, 0, 0, 255)
    assert tuple(buf[9, 9]) == view.BG


class CountingRunner(runners.ReferenceRunner):
    """The numpy runner, counting ``tensors`` calls (the map must run its corpus through it)."""

    calls = 0

    async def tensors(self, ids, names):
        self.calls += 1
        return await super().tensors(ids, names)


def test_runner_tensors_returns_only_the_names_and_never_touches_the_cache(model):
    runner = runners.ReferenceRunner(model.params, model.config)
    ids = model.tokenizer.encode("The file is opened. The file is closed.")
    asyncio.run(runner.run(ids[:4]))
    cache = runner.cache
    names = ["h.0.q", "h.0.k", "h.3.att"]
    got = asyncio.run(runner.tensors(ids, names))
    assert list(got) == names
    want = reference.forward(model.params, model.config, np.asarray(ids))
    for name in names:
        np.testing.assert_array_equal(got[name], want[name])
    assert runner.cache is cache and cache.length == 4
    assert asyncio.run(runner.tensors(ids, ["h.0.q"])).keys() == {"h.0.q"}
    np.testing.assert_array_equal(asyncio.run(runner.tensors(ids, ["logits"]))["logits"], want["logits"])
    with pytest.raises(ValueError, match="h.4.q"):  # 4 layers: 0..3
        asyncio.run(runner.tensors(ids, ["h.4.q"]))


def test_corpus_runs_through_the_page_runner(model):
    files = _files(model, ["A list is sorted.", "Numbers are added."])

    async def fetch(url):
        return files[url]

    runner = CountingRunner(model.params, model.config)
    m = QKMap(FakeUI(), FakeDom(), model, "m/", fetch, runner=lambda: runner)
    asyncio.run(m.build())
    assert not m.error, m.error
    assert runner.calls == 2 and m.timings["corpus_backend"] == "numpy" and m.pca_backend == "numpy"
    want = qk.collect(model.params, model.config, m.corpus.ids)
    np.testing.assert_array_equal(m.corpus_set.q, want.q)
    np.testing.assert_array_equal(m.corpus_set.att[1], want.att[1])


class GatedGPURunner(runners.ReferenceRunner):
    """A runner on "webgpu" whose remote PCA (the model worker's, issue 16) answers only when
    the test opens its gate (numpy's PCA of the same points)."""

    name = "webgpu"

    def __init__(self, params, config):
        super().__init__(params, config)
        self.gate = asyncio.Event()
        self.gate.set()
        self.projections = 0

    @property
    def qk_pca(self):
        runner = self

        class Remote:
            async def project(self, points):
                await runner.gate.wait()
                runner.projections += 1
                return np.stack([qk.pca(p) for p in points])

        return Remote()


def test_a_layer_chosen_while_the_text_is_placed_draws_the_previous_points_whole(model):
    """Regression (stop 19's shared-page hang): placing new text awaits the worker's PCA; a layer
    chosen meanwhile links the map, which draws. It drew an emptied coordinate table (KeyError
    (0, 0), and the layer was never shown): the new points must replace the old all at once."""
    files = _files(model, ["A list is sorted.", "Numbers are added."])

    async def fetch(url):
        return files[url]

    runner = GatedGPURunner(model.params, model.config)
    ui, dom = FakeUI(), FakeDom()
    m = QKMap(ui, dom, model, "m/", fetch, runner=lambda: runner)
    m.mount()
    first = reference.forward(model.params, model.config, model.prompt("The file is opened.").ids)
    second = reference.forward(model.params, model.config, model.prompt("The file is read, then closed.").ids)

    async def scenario():
        await m.on_trace(first)
        await m.build()
        assert not m.error and m.pca_backend == "webgpu"
        before = m.data.n_tokens
        runner.gate.clear()
        placing = asyncio.ensure_future(m.on_trace(second))
        for _ in range(50):  # until the placement waits on the PCA
            await asyncio.sleep(0)
        assert not placing.done()
        m.link(1, 1)  # the reader picked another layer meanwhile: the map draws now
        assert m.data.n_tokens == before and len(m.xy) == model.config.n_layer * model.config.n_head
        rgba = dom.painted['[data-testid="qk-head"][data-layer="0"][data-head="0"]']
        assert (rgba.reshape(-1, 4) == view.Q_RGBA).all(1).any()
        runner.gate.set()
        await placing
        assert m.data.n_tokens == m.corpus_set.n_tokens + second.ids.size
        assert {v.shape[0] for v in m.xy.values()} == {2 * m.data.n_tokens}

    asyncio.run(scenario())
    assert runner.projections == 2


def test_placing_and_reprojecting_take_turns_and_a_text_sent_while_building_is_placed(model):
    """A projection change while the text is being placed (both await the worker's PCA) ends with
    coordinates of the joined points under the new options; a text that arrives while the map
    is built is placed after it."""
    files = _files(model, ["A list is sorted.", "Numbers are added."])

    async def fetch(url):
        return files[url]

    runner = GatedGPURunner(model.params, model.config)
    m = QKMap(FakeUI(), FakeDom(), model, "m/", fetch, runner=lambda: runner)
    m.mount()
    first, second, third = (reference.forward(model.params, model.config, model.prompt(t).ids)
                            for t in ("The file is opened.", "The file is read, then closed.", "Numbers are sorted."))

    async def scenario():
        await m.on_trace(first)
        runner.gate.clear()
        building = asyncio.ensure_future(m.build())
        for _ in range(50):
            await asyncio.sleep(0)
        await m.on_trace(second)  # while building: remembered
        runner.gate.set()
        await building
        assert m.data.n_tokens == m.corpus_set.n_tokens + second.ids.size
        runner.gate.clear()
        placing = asyncio.ensure_future(m.on_trace(third))
        for _ in range(50):
            await asyncio.sleep(0)
        reprojecting = m.handle("qk-translate")
        runner.gate.set()
        await placing
        await reprojecting
        assert m.data.n_tokens == m.corpus_set.n_tokens + third.ids.size and m.translate is False
        want = qk.all_head_points(m.data, m.translate, m.scale)
        H = model.config.n_head
        for (layer, head), xy in m.xy.items():
            np.testing.assert_allclose(xy, qk.pca(want[layer * H + head]), atol=1e-12)

    asyncio.run(scenario())
