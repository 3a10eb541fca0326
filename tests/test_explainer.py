"""The explainer under CPython: runner (KV cache joins), views (shapes, numbers, testids) and
the controller's flows with a fake page. The same code runs on the page in tests/e2e.

The model is a small random GPT-2 (D=16, 2 layers) with GPT-2's real vocabulary, so the
tokenizer and V=50257 are the real ones and everything runs in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from glassbox.config import GPTConfig
from glassbox.model import Model
from glassbox.sampling import distribution
from glassbox.tokenizer import Tokenizer
from glassbox.weights import Checkpoint, expected_shapes

from app import runner as runners
from app.console import run_code
from app.explainer import Explainer
from app.views import attention, block, embedding, mathtex, output, overview, tour, weights
from app.views.common import diverging, robust_scale, viridis
from app.views.controls import selector

VOCAB = Path(__file__).resolve().parents[1] / "vendor" / "gpt2"
CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=16, n_positions=24, vocab_size=50257)
# The joined (KV cache) trace and a full forward differ only in float32 summation order.
ATOL, RTOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def model() -> Model:
    if not (VOCAB / "encoder.json").exists():
        pytest.fail(f"GPT-2's vocabulary is missing from {VOCAB}: run `python3 tools/vendor.py`")
    rng = np.random.default_rng(1)
    params = {}
    for name, shape in expected_shapes(CONFIG).items():
        scale = 1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight" else 0.2
        base = 1.0 if scale == 1.0 else 0.0
        params[name] = (base + rng.standard_normal(shape) * (0.1 if base else scale)).astype(np.float32)
    checkpoint = Checkpoint(config=CONFIG, scheme="none", group=0, tensors=params)
    return Model(checkpoint, Tokenizer.from_folder(VOCAB), "random")


@pytest.fixture(scope="module")
def trace(model):
    return model.forward(model.prompt("The quick brown fox jumps over").ids)


def tokens_of(model, trace):
    return model.tokenizer.display(trace.ids)


# ----- runner ----------------------------------------------------------------------------------
def test_forward_async_equals_the_reference(model):
    ids = model.prompt("Once upon a time there was").ids
    want = model.forward(ids)
    got = asyncio.run(runners.forward_async(model.params, CONFIG, ids, logit_rows=2))
    assert got.names() == want.names()
    for name in want.names():
        np.testing.assert_array_equal(got[name], want[name]) if name != "logits" else \
            np.testing.assert_allclose(got[name], want[name], atol=1e-6, rtol=1e-6)


def test_kv_cache_steps_join_into_the_full_trace(model):
    ids = model.prompt("The quick brown fox jumps over the lazy dog").ids
    run = runners.ReferenceRunner(model.params, CONFIG)

    async def go():
        joined = await run.run(ids[:3])
        for i in range(3, ids.size):
            joined = runners.append_rows(joined, await run.extend(ids[i:i + 1]))
        return joined

    joined = asyncio.run(go())
    full = model.forward(ids)
    assert sorted(joined.names()) == sorted(full.names())
    for name in full.names():
        assert joined[name].shape == full[name].shape, name
        np.testing.assert_allclose(joined[name], full[name], atol=ATOL, rtol=RTOL, err_msg=name)
    assert run.cache.length == ids.size


def test_truncate_restores_the_shorter_trace_and_cache(model):
    ids = model.prompt("The quick brown fox jumps").ids
    run = runners.ReferenceRunner(model.params, CONFIG)
    full = asyncio.run(run.run(ids))
    short = runners.truncate_rows(full, 3)
    want = model.forward(ids[:3])
    for name in want.names():
        np.testing.assert_allclose(short[name], want[name], atol=ATOL, rtol=RTOL, err_msg=name)
    run.truncate(3)
    step = asyncio.run(run.extend(ids[3:4]))
    again = runners.append_rows(short, step)
    np.testing.assert_allclose(again.logits, model.forward(ids[:4]).logits, atol=ATOL, rtol=RTOL)
    with pytest.raises(ValueError):
        runners.truncate_rows(full, 0)
    with pytest.raises(ValueError):
        runners.append_rows(full, model.forward(ids[:1]))  # a step must start where the trace ends


# ----- views -----------------------------------------------------------------------------------
def test_colour_scales():
    assert tuple(viridis(0.0)[:3]) == (68, 1, 84)
    assert tuple(viridis(1.0)[:3]) == (253, 231, 37)
    assert tuple(diverging(0.0, 1.0)[:3]) == (0xF4, 0xF4, 0xF2)
    assert diverging(-5.0, 1.0)[2] > diverging(-5.0, 1.0)[0]  # negative: blue
    assert diverging(5.0, 1.0)[0] > diverging(5.0, 1.0)[2]  # positive: orange
    assert robust_scale(np.zeros(5)) == 1.0


def test_views_refuse_mismatched_inputs(model, trace):
    tokens = tokens_of(model, trace)
    with pytest.raises(ValueError):
        embedding.render(trace, tokens[:-1])
    with pytest.raises(ValueError):
        attention.render(trace, tokens, CONFIG.n_layer, 0)
    with pytest.raises(ValueError):
        block.render(trace, tokens, 0, len(tokens))
    broken = runners.truncate_rows(trace, trace.ids.size)
    broken["h.0.att"] = broken["h.0.att"][:, :-1]
    with pytest.raises(ValueError):
        attention.render(broken, tokens, 0, 0)
    dist = distribution(trace.logits[-1])
    with pytest.raises(ValueError):
        output.render(dist, CONFIG.vocab_size, tokens)
    with pytest.raises(ValueError):
        weights.downsample(np.zeros(3))


def test_attention_cells_carry_the_trace_values(model, trace):
    tokens = tokens_of(model, trace)
    view = attention.render(trace, tokens, 1, 1)
    cells = re.findall(r'data-testid="attention-cell" data-q="(\d+)" data-k="(\d+)" data-value="([^"]+)"( data-masked="true")?',
                       view.html)
    n = trace.ids.size
    assert len(cells) == n * n
    att = trace["h.1.att"][1]
    for q, k, value, masked in cells:
        q, k = int(q), int(k)
        assert float(value) == pytest.approx(float(att[q, k]), abs=1e-9, rel=1e-7)
        assert bool(masked) == (k > q)
    assert 'data-testid="derivation-toggle"' in view.html
    # The derivation's stages are built while it is open (a closed one costs nothing: issue 16).
    assert not any(f'data-testid="stage-{name}"' in view.html for name, *_ in attention.STAGES)
    opened = attention.render(trace, tokens, 1, 1, derivation_open=True)
    for name, *_ in attention.STAGES:
        assert f'data-testid="stage-{name}"' in opened.html


def test_heat_maps_describe_exact_values(model, trace):
    tokens = tokens_of(model, trace)
    view = embedding.render(trace, tokens)
    heats = {h.key: h for h in view.heats}
    assert set(heats) == {"emb.tok_emb", "emb.pos_emb", "emb.emb"}
    for key, name in (("emb.tok_emb", "tok_emb"), ("emb.emb", "emb")):
        heat = heats[key]
        assert heat.rgba.shape == trace[name].shape + (4,) and heat.rgba.dtype == np.uint8
        assert f'data-heat="{key}"' in view.html
        text = heat.describe(2, 5)
        assert "token 2" in text and "dim 5" in text
        assert float(text.rsplit("= ", 1)[1]) == pytest.approx(float(trace[name][2, 5]), rel=1e-4)


def test_block_view_shows_layer_norm_statistics(model, trace):
    tokens = tokens_of(model, trace)
    view = block.render(trace, tokens, 1, 2)
    means = [float(v) for v in re.findall(r'data-testid="ln_1-mean" data-value="([^"]+)"', view.html)]
    np.testing.assert_allclose(means, trace["h.1.ln_1.mean"], rtol=1e-6, atol=1e-9)
    assert len(re.findall(r"<circle", view.html)) == CONFIG.mlp_width
    np.testing.assert_array_equal(block.block_input(trace, 1), trace["h.0.res_2"])


def test_output_rows_are_the_distribution(model, trace):
    vocab = model.tokenizer.display(range(CONFIG.vocab_size))
    for t, k, p in ((1.0, 0, 1.0), (0.5, 10, 1.0), (1.5, 0, 0.3), (0.0, 0, 1.0)):
        dist = distribution(trace.logits[-1], t, k, p)
        sampled = int(np.argmax(dist.probs))
        view = output.render(dist, sampled, vocab, final=trace["ln_f"][-1],
                             unembed_row=model.params["wte.weight"][sampled], last_token="x", config=CONFIG)
        rows = re.findall(r'data-testid="prediction" data-token-id="(\d+)" data-prob="([^"]+)"', view.html)
        assert len(rows) >= 20
        for tid, prob in rows:
            assert float(prob) == pytest.approx(float(dist.probs[int(tid)]), rel=1e-7, abs=1e-12)
        assert [int(t) for t, _ in rows[:20]] == [int(i) for i in dist.top(20)]
        assert view.html.count('class="prediction sampled') == 1


def test_overview_and_math_and_tour(model, trace):
    tokens = tokens_of(model, trace)
    vocab = model.tokenizer.display(range(CONFIG.vocab_size))
    view = overview.render(trace, tokens, distribution(trace.logits[-1], top_k=3), vocab, 1)
    assert view.html.count('data-testid="sankey-block"') == CONFIG.n_layer
    assert view.html.count('class="ribbon"') >= trace.ids.size * (2 * CONFIG.n_layer + 2)
    assert view.html.count('class="node pred"') == 3  # top-k 3: the filtered tokens (0%) are not drawn
    assert 'class="node pred other"' not in view.html
    for section in ("overview", "embedding", "attention", "block", "output"):
        assert 'class="tex' in mathtex.panel(section, CONFIG, 5)
    assert "pre-norm" in mathtex.NOTATION
    assert 'data-testid="tour-next"' in tour.render(0, config=CONFIG, n=3)
    with pytest.raises(ValueError):
        tour.render(len(tour.STEPS), config=CONFIG, n=3)


def test_weight_downsampling_keeps_the_largest_magnitude():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((300, 70)).astype(np.float32)
    w[123, 45] = -50.0
    maxabs, mean, rows, cols = weights.downsample(w, 64, 32)
    assert maxabs.shape == (64, 32) == mean.shape
    assert rows[0][0] == 0 and rows[-1][1] == 299 and cols[-1][1] == 69
    for r, (r0, r1) in enumerate(rows):
        for c, (c0, c1) in enumerate(cols):
            block_ = w[r0:r1 + 1, c0:c1 + 1]
            assert maxabs[r, c] == block_.flat[np.argmax(np.abs(block_))]
            assert mean[r, c] == pytest.approx(float(block_.mean()), rel=1e-5, abs=1e-6)
    assert maxabs.min() == -50.0
    small = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(weights.downsample(small)[0], small)


# ----- the controller with a fake page ------------------------------------------------------------
class FakeUI:
    """The page as the controllers see it; every element name must be one the page knows."""

    def __init__(self):
        self.slots, self.states, self.values, self.texts, self.attrs = {}, [], {}, {}, {}
        self.stored, self.revealed, self.focused = {}, [], []
        self.reduced = False

    def show_frame(self, html):
        self.frame = html

    def show(self, slot, view):
        self.slots[slot] = view

    def set_state(self, state):
        self.states.append(state)

    def set_text(self, name, text):
        self.texts[selector(name) and name] = text

    def set_value(self, name, value):
        self.values[selector(name) and name] = value

    def set_attr(self, name, attr, value):
        self.attrs[(selector(name) and name, attr)] = value

    def set_prop(self, name, prop, value):
        self.attrs[(selector(name) and name, prop)] = value

    def reduced_motion(self):
        return self.reduced

    def hide_popovers(self):
        pass

    def open_details(self, name):
        selector(name)

    def show_popover(self, name):
        selector(name)

    def highlight(self, name):
        self.highlighted = name and selector(name) and name

    def focus(self, name):
        self.focused.append(selector(name) and name)

    def reveal(self, name):
        self.revealed.append(selector(name) and name)

    def scroll_to_end(self, name):
        selector(name)

    def store(self, key, value):
        self.stored[key] = value


def test_explainer_flow(model):
    ui = FakeUI()
    ex = Explainer(ui, model, seed=0, namespace={}, run_code=run_code)
    ex.mount()
    for testid in ("prompt", "generate", "temperature", "top-k", "top-p", "layer-select", "head-select",
                   "run-progress", "console-link", "open-all"):
        assert f'data-testid="{testid}"' in ui.frame
    assert ui.frame.count('data-testid="example"') >= 5
    run, att = ex.run, ex.attention

    async def go():
        await ex.start()
        assert ui.states == []  # the boot owns the page state during the first run
        assert {"sequence", "overview", "minimap", "embedding", "attention", "block", "output"} <= set(ui.slots)
        assert ui.stored["prompt"] == ex.text  # the prompt survives a reload
        n = ex.ids.size
        np.testing.assert_allclose(ex.trace.logits, model.forward(ex.ids).logits, atol=1e-5)
        runs = ex.runs
        ex.sampling.set(temperature=0)
        assert ex.runs == runs and ex.sampled == int(np.argmax(ex.trace.logits[-1]))
        assert "did not run" in ui.texts["run-status"]
        await run.generate_one()
        assert ui.states[-2:] == ["busy", "ready"]
        assert ex.ids.size == n + 1 and run.pending and ex.runs == runs + 1
        full = model.forward(ex.ids)
        np.testing.assert_allclose(ex.trace["h.1.att"], full["h.1.att"], atol=ATOL)
        run.discard()
        assert ex.ids.size == n and not run.pending and ex.runs == runs + 1
        assert "Discarded" in ui.texts["run-status"] and f"{n} tokens" in ui.texts["run-status"]
        await run.generate_one()
        run.accept()
        assert ui.values["prompt"] == model.tokenizer.decode(ex.ids)
        await run.generate_continuously(limit=3)
        assert ex.ids.size == n + 4 and not run.generating
        assert ui.attrs[("run-buttons", "disabled")] is False and ui.attrs[("stop", "disabled")] is True
        ex.handle("layer", "2"), ex.handle("head", "", {"head": "1"})
        assert ui.values["layer-select"] == "2" and ui.values["head-select"] == "2" and ex.layer == 1
        with pytest.raises(ValueError):
            ex.select_layer(CONFIG.n_layer)
        with pytest.raises(ValueError):
            ex.handle("no-such-action")
        ui.reduced = True
        att.toggle_derivation(True)
        assert att.deriv_stage == len(attention.STAGES)
        att.replay()
        assert att.deriv_stage == len(attention.STAGES)
        ui.reduced = False
        att.toggle_derivation(False)
        att.toggle_derivation(True)
        await asyncio.sleep(0)
        assert att.deriv_stage == 1
        att.step()
        assert att.deriv_stage == 2
        att.toggle_derivation(False)
        for i in range(len(tour.STEPS)):
            ex.tour.go(i)
            assert ui.highlighted == tour.STEPS[i].target
        ex.tour.go(None)
        out = await ex.console.run('trace["h.0.att"].shape')
        assert out == str((CONFIG.n_head, ex.ids.size, ex.ids.size))
        await run.submit("")
        assert "empty" in ex.error and ui.states[-1] == "ready"
        await run.submit("日本")  # each character's bytes split over two tokens: grouped under it
        html = ui.slots["sequence"].html
        assert html.count('data-testid="char-group"') == 2 and "日" in html and "本" in html
        await run.submit("x " * 40)  # longer than the context (24): cut, and said so
        assert ex.ids.size == CONFIG.n_positions and ex.dropped > 0
        assert await run.generate() is False and "context is full" in ex.error

    asyncio.run(go())


def test_busy_state_disables_the_run_actions(model):
    """While a run is in flight: run buttons disabled, Stop enabled, progress says what runs,
    and a second run is refused."""
    ui = FakeUI()
    seen = []

    class SlowRunner(runners.ReferenceRunner):
        async def run(self, ids):
            seen.append((ui.attrs.get(("run-buttons", "disabled")), ui.attrs.get(("stop", "disabled")),
                         ui.states[-1] if ui.states else None))
            before = ex.runs
            assert ex.handle("run", "another") is not None
            trace = await super().run(ids)
            assert ex.runs == before  # the second run was refused while this one ran
            return trace

    ex = Explainer(ui, model, seed=0, namespace={}, run_code=run_code)
    ex.runner = SlowRunner(ex.params, ex.config, step=ex.run.progress)
    ex.mount()

    async def go():
        await ex.run.submit("The function returns")
        await asyncio.sleep(0)
        assert seen == [(True, False, "busy")] and ex.runs == 1
        assert ui.attrs[("run-buttons", "disabled")] is False and ui.states[-1] == "ready"
        assert ui.texts["run-progress"] == "" and ui.texts["run-status"].startswith("Ran ")

    asyncio.run(go())
    progress = []
    ui.set_text = lambda name, text: progress.append(text) if name == "run-progress" else None
    asyncio.run(ex.run.submit("def f"))
    # The line is repainted when a run starts and then at most every PROGRESS_EVERY_S (issue 15).
    assert progress[1] == "Embedding…" and progress[-1] == "" and len(progress) <= 4
    from app.controllers import run as run_module

    run_module.PROGRESS_EVERY_S, saved = 0.0, run_module.PROGRESS_EVERY_S
    try:  # unthrottled, every block says where the run is
        progress.clear()
        asyncio.run(ex.run.submit("def f"))
    finally:
        run_module.PROGRESS_EVERY_S = saved
    assert f"Block {CONFIG.n_layer} of {CONFIG.n_layer}…" in progress and progress[-1] == ""


def test_map_opens_parts_and_every_action_has_a_controller(model):
    ui = FakeUI()
    ex = Explainer(ui, model, seed=0, namespace={}, run_code=run_code)
    ex.mount()
    asyncio.run(ex.start())
    html = ui.slots["overview"].html
    assert 'data-testid="model-map"' in html
    parts = set(re.findall(r'data-part="([^"]+)"', html))
    assert parts == {"tokens", "embedding", "output"} | {f"block-{b}-{p}" for b in range(CONFIG.n_layer)
                                                         for p in ("attention", "mlp")}
    for view in ("embedding", "attention", "block", "output"):
        assert f'data-action="close-view" data-view="{view}"' in ui.frame
    ex.handle("open-part", "", {"part": "block-1-mlp"})
    assert ex.layer == 1 and ex.map.open == ["block"] and ui.attrs[("view:block", "data-open")] == "true"
    assert ui.revealed[-1] == "view:block"
    assert 'data-part="block-1-mlp" aria-pressed="true"' in ui.slots["minimap"].html
    ex.handle("close-view", "", {"view": "block"})
    assert ex.map.open == [] and ui.revealed[-1] == "map"
    with pytest.raises(ValueError):
        ex.handle("open-part", "", {"part": f"block-{CONFIG.n_layer}-mlp"})
    ex.handle("open-all")
    assert set(ex.map.open) == {"embedding", "attention", "qk", "block", "factors", "output", "experiments"}
    # every data-action the page writes has a handler
    written = set(re.findall(r'data-action="([^"]+)"', ui.frame + "".join(v.html for v in ui.slots.values())))
    assert written <= set(ex.actions), written - set(ex.actions)


def test_console_prints_tracebacks_and_help(model):
    ui = FakeUI()
    ex = Explainer(ui, model, seed=0, namespace={}, run_code=run_code)
    ex.mount()
    asyncio.run(ex.start())
    out = asyncio.run(ex.console.run('print("x"); 1 + 1'))
    assert out == "x\n2"
    out = asyncio.run(ex.console.run("def f():\n    return 1 / 0\nf()"))
    assert out.startswith("Traceback") and "ZeroDivisionError" in out and "return 1 / 0" in out
    assert "console.py" not in out and "run_code" not in out  # the console's own frames left out
    assert asyncio.run(ex.console.run("len(trace.keys()) == len(trace)")) == "True"
    listing = asyncio.run(ex.console.run("help()"))
    for name in ("trace", "tokens", "ids", "model", "dist", "np", "explainer"):
        assert f"\n  {name} " in listing
    assert ex.console.entries[-1].startswith(">>> help()")

    class Proxy:  # like Pyodide's JsProxy types: __doc__ is a descriptor, not a string
        __doc__ = property(lambda self: "")

    ex.namespace["element"] = Proxy()
    assert "Live objects" in asyncio.run(ex.console.run("help()"))
    ex.console.clear()
    assert ui.texts["console-output"] == ""


def test_tour_is_a_textbook_with_the_models_sizes(model):
    assert len(tour.STEPS) >= 20
    html = tour.render(8, config=CONFIG, n=7)
    assert f"{CONFIG.n_head} heads of {CONFIG.head_size}" in html
    for step in tour.STEPS:
        selector(step.target)
        step.text.format(**tour.sizes(CONFIG, 5))  # every size it names exists
        for what in step.opens:
            kind, _, arg = what.partition(":")
            assert kind in ("view", "derivation", "details", "popover"), what


def test_boot_awaits_the_start_hook_before_ready():
    from app.boot import Boot

    class Page:
        def __init__(self):
            self.calls = []

        def progress(self, label, fraction=None):
            self.calls.append("progress")

        def set_backend(self, backend):
            pass

        def show(self, slot, html):
            pass

        def set_state(self, state):
            self.calls.append(state)

        def fail(self, message, details=""):
            self.calls.append(("fail", message))

    async def no_gpu():
        return None

    async def start(app):
        page.calls.append("start")

    page = Page()
    assert asyncio.run(Boot(page, no_gpu, start=start).boot())
    assert page.calls.index("start") < page.calls.index("ready")

    async def broken(app):
        raise RuntimeError("no weights")

    page = Page()
    assert not asyncio.run(Boot(page, no_gpu, start=broken).boot())
    assert ("fail", "Start-up failed: RuntimeError: no weights") in page.calls and "ready" not in page.calls


def test_light_mode_computes_a_layer_only_when_it_is_selected(model):
    from app import lightmode

    ui = FakeUI()
    ex = Explainer(ui, model, lightmode.LightRunner(model.params, model.config), seed=0, namespace={},
                   run_code=run_code)
    ex.mount()

    async def go():
        await ex.start()
        with pytest.raises(KeyError, match="not computed"):
            ex.trace["h.1.att"]  # reading never runs a block
        ex.handle("layer", "2")
        full = model.forward(ex.ids)
        np.testing.assert_allclose(ex.trace["h.1.att"], full["h.1.att"], atol=ATOL)
        await ex.run.generate_one()
        assert ex.trace.viewed == 1  # the new trace holds the layer shown
        ex.handle("layer", "1")
        ex.run.discard()  # back to the trace from before, which viewed layer 2: it follows the view
        assert ex.trace.viewed == 0 and "h.0.att" in ex.trace.tensors and "attention" in ui.slots

    asyncio.run(go())


def test_light_mode_on_webgpu_on_the_page_thread_holds_the_last_logits_row(model):
    """issue 15 item 4 (lr15): GPULightRunner reads back the last logits row only (logits_start
    N - 1); the page's own thread (no model worker) samples from it, fetches a layer, generates
    and discards a token. The engine is test_gpu_light's FakeEngine (Engine's forward_top /
    read_last_rows contract on numpy; tests/gpu/test_gpu_light_runner.py runs the real one)."""
    from app import lightmode
    from app.gpu_light import GPULightRunner, make_runner
    from test_gpu_light import FakeEngine

    async def make():
        return FakeEngine(model.params, config=model.config)

    runner = make_runner(lightmode.LightRunner(model.params, model.config), make, calibrate=False)
    assert isinstance(runner, GPULightRunner)
    ex = Explainer(FakeUI(), model, runner, seed=0, namespace={}, run_code=run_code)
    ex.mount()

    async def go():
        await runner.start("webgpu")
        await ex.start()
        n, V = len(ex.ids), model.config.vocab_size
        assert runner.last == "webgpu" and ex.trace.logits.shape == (1, V) and ex.trace.logits_start == n - 1
        full = model.forward(ex.ids)
        np.testing.assert_allclose(ex.dist.logits, full.logits[-1], atol=ATOL)
        await ex.select_layer(1)
        np.testing.assert_allclose(ex.trace["h.1.att"], full["h.1.att"], atol=ATOL)
        await ex.run.generate_one()
        assert ex.trace.viewed == 1 and ex.trace.logits_start == n and len(ex.ids) == n + 1
        np.testing.assert_allclose(ex.trace.logits[-1], model.forward(ex.ids).logits[-1], atol=ATOL)
        ex.run.discard()
        assert len(ex.ids) == n and ex.trace.logits_start == n - 1

    asyncio.run(go())


def test_a_new_view_is_a_controller_and_two_lines(model, monkeypatch):
    """The extension step other views follow: a view function, a controller, one line in
    explainer.CONTROLLERS and one in controls.SECTIONS."""
    from app import explainer as explainer_module
    from app.controllers import map as map_module
    from app.controllers.base import Controller
    from app.views import controls
    from app.views.common import View

    class NormsController(Controller):
        name = slot = "norms"
        actions = {"norms-scale": lambda c, value, data: c.set_scale(float(value))}
        scale = 1.0

        def set_scale(self, scale):
            self.scale = scale
            self.render()

        def view(self):
            if self.ex.trace is None:
                return None
            norms = np.linalg.norm(self.ex.trace["emb"], axis=-1) * self.scale
            return View(f'<p data-testid="norms">{" ".join(f"{v:.3f}" for v in norms)}</p>')

    monkeypatch.setattr(explainer_module, "CONTROLLERS", explainer_module.CONTROLLERS + (NormsController,))
    monkeypatch.setattr(controls, "SECTIONS", controls.SECTIONS + (("norms", "Vector lengths"),))
    monkeypatch.setattr(map_module, "VIEWS", tuple(slot for slot, _ in controls.SECTIONS))
    ui = FakeUI()
    ex = Explainer(ui, model, seed=0, namespace={}, run_code=run_code)
    ex.mount()
    assert 'id="view-norms"' in ui.frame and 'data-slot="norms"' in ui.frame
    asyncio.run(ex.start())
    assert 'data-testid="norms"' in ui.slots["norms"].html
    ex.handle("norms-scale", "2")
    assert ex.norms.scale == 2.0
    ex.map.open_view("norms")
    assert ui.attrs[("view:norms", "data-open")] == "true" and ui.revealed[-1] == "view:norms"


def test_the_layer_picked_last_is_shown_whichever_fetch_answers_last(model):
    """issue 16: a layer that is not held is fetched (awaited, from the model worker). The reader
    picks layer 2, then layer 1 before layer 2's tensors came: layer 2's late answer must not
    replace the layer picked last."""
    gates = {0: asyncio.Event(), 1: asyncio.Event()}

    class Fetching(runners.ReferenceRunner):
        fetched: list[int] = []

        async def fetch_layer(self, trace, layer):
            await gates[layer].wait()
            self.fetched.append(layer)
            return ""

    ui = FakeUI()
    ex = Explainer(ui, model, Fetching(model.params, model.config), seed=0, namespace={}, run_code=run_code)
    ex.mount()

    async def go():
        gates[0].set()
        await ex.start()
        late = ex.select_layer(1)
        early = ex.select_layer(0)
        await early
        assert ex.layer == 0
        gates[1].set()
        assert await late is False
        assert ex.layer == 0 and ex.runner.fetched == [0, 1]

    asyncio.run(go())
