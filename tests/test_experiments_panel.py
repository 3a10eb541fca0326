"""The Experiments panel's controller and view (app/experiments_controller.py, app/views/experiments.py)
under CPython with a fake page, on the committed default model weights/mini.

Its numbers must be exactly glassbox.experiments' on the same tokens (the same float32 numpy
code runs here), so equality is checked exactly where the computation path is the same.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from glassbox import experiments as ex
from glassbox import model as glassbox_model
from glassbox import safetensors
from glassbox.trace import all_names

from app.explainer import Explainer
from app.views import experiments as view

ROOT = Path(__file__).resolve().parents[1]
CLEAN, CORRUPT = "The Eiffel Tower is in", "The Colosseum is in"


class UI:
    """The few page calls the explainer and the panel make, recorded."""

    def __init__(self):
        self.slots, self.attrs, self.files = {}, {}, {}

    def show_frame(self, html):
        self.frame = html

    def show(self, slot, view_):
        self.slots[slot] = view_.html

    def set_attr(self, selector, name, value):
        self.attrs[(selector, name)] = value

    def download(self, name, data, mime):
        self.files[name] = (data, mime)

    def __getattr__(self, name):  # everything else the explainer calls: ignored
        return lambda *args, **kwargs: False


@pytest.fixture(scope="module")
def model():
    return glassbox_model.load(str(ROOT / "weights" / "mini"), str(ROOT / "vendor" / "gpt2"))


def test_panel_runs_every_experiment(model):
    ui = UI()
    explainer = Explainer(ui, model, seed=0, namespace={})
    explainer.mount()
    assert 'data-slot="experiments"' in ui.frame

    async def act(action, value="", **data):
        task = explainer.handle(action, value, {k: str(v) for k, v in data.items()})
        if task is not None:
            await task
        return ui.slots["experiments"]

    async def go():
        await explainer.run.submit(CLEAN)
        html = ui.slots["experiments"]
        assert 'data-testid="exp-lens-run"' in html and "exp-lens-cell" not in html
        exp = explainer.experiments
        assert exp.lab.where == "page" and exp.lab.bench.calls == 0  # drawing the panel ran nothing
        trace = exp.lab.bench.trace(explainer.ids)
        assert trace is explainer.trace  # the numpy runner's full trace is reused, not recomputed
        P, C, n = model.params, model.config, explainer.ids.size
        target = int(np.argmax(ex.clean_logits(P, C, trace)))

        html = await act("exp-lens")
        lens = ex.logit_lens(P, C, trace, 5)
        np.testing.assert_array_equal(exp.lens.ids, lens.ids)
        cells = re.findall(r'data-testid="exp-lens-cell" data-token-id="(\d+)"', html)
        assert [int(c) for c in cells] == lens.ids[:, :, 0].ravel().tolist() and len(cells) == (C.n_layer + 1) * n
        html = await act("exp-lens-cell", stream=2, position=1)
        assert 'data-testid="exp-lens-detail"' in html and "Stream 2, position 1" in html

        await act("exp-head", layer=3, head=2)
        await act("exp-head", layer=0, head=1)
        html = await act("exp-head", layer=1, head=1)
        html = await act("exp-head", layer=1, head=1)  # toggled off again
        assert exp.heads == [(0, 1), (3, 2)] and html.count('aria-pressed="true" aria-label="ablate') == 2
        want = ex.effect(ex.clean_logits(P, C, trace), ex.ablate(P, C, trace, [(0, 1), (3, 2)]), target)
        assert exp.ablation[0] == want
        assert f'data-kl="{want.kl:.9g}"' in html
        await act("exp-mean", "mean")
        assert exp.mean and exp.ablation[0].kl == ex.effect(
            ex.clean_logits(P, C, trace), ex.ablate(P, C, trace, [(0, 1), (3, 2)], mean=True), target).kl
        html = await act("exp-sweep")
        kl, d = ex.sweep(P, C, trace, target, mean=True)
        np.testing.assert_array_equal(exp.sweep[0], kl)
        assert html.count('data-testid="exp-sweep-cell"') == C.n_layer * C.n_head

        await act("exp-corrupt", "The cat")
        html = await act("exp-patch")
        assert exp.patching is None and "The prompts differ in length" in html and f"clean one has {n} tokens, the corrupted one 2" in html
        await act("exp-corrupt", CORRUPT)
        html = await act("exp-patch")
        corrupt = model.forward(model.prompt(CORRUPT).ids)
        want = ex.patching(P, C, trace, corrupt, target)
        np.testing.assert_array_equal(exp.patching.streams, want.streams)
        assert html.count('data-testid=exp-patch-cell') == (C.n_layer + 1) * n

        html = await act("exp-attribute")
        a = ex.attribution(P, C, trace, target)
        np.testing.assert_array_equal(exp.attribution.values, a.values)
        assert html.count('data-testid="exp-dla-row"') == len(a.names)

        other = int(exp.lens.ids[-1, -1, 1])  # a new target recomputes what is on screen
        html = await act("exp-target", tokenId=other)
        assert exp.attribution.token == other and exp.patching.target == other and exp.ablation[0].target == other

        for table in ("lens", "ablation", "sweep", "patch", "patch-heads", "attribution"):
            await act("exp-csv", table=table)
        text = ui.files["sweep.csv"][0].decode()
        assert text.splitlines()[0] == "layer,head,kl,dlogp" and len(text.splitlines()) == 1 + C.n_layer * C.n_head
        assert ui.files["logit-lens.csv"][0].decode().count("\r\n") == 1 + (C.n_layer + 1) * n * 5
        await act("exp-download-trace")
        data, mime = ui.files["glassbox-trace.safetensors"]
        tensors, meta = safetensors.load_with_metadata(data)
        assert set(tensors) == set(all_names(C)) | {"logits", "ids"} and meta["text"] == CLEAN
        np.testing.assert_array_equal(tensors["h.2.att"], trace["h.2.att"])

        await explainer.run.submit("Once upon a time")  # new tokens: results dropped, settings kept
        html = ui.slots["experiments"]
        assert exp.lens is None and exp.patching is None and exp.heads == [(0, 1), (3, 2)]
        assert "exp-lens-cell" not in html and exp.corrupt_text == CORRUPT
        with pytest.raises(ValueError, match="no lens table"):
            view.csv(exp.panel(), "lens")

    asyncio.run(go())


def test_settings_and_numbers_change_together(model):
    """A head toggled (or a new target) recomputes in the lab, awaited: a draw meanwhile (a lens
    cell clicked) shows the previous heads with the previous numbers, and a failed recompute
    changes neither."""
    ui = UI()
    explainer = Explainer(ui, model, seed=0, namespace={})
    explainer.mount()
    exp = explainer.experiments
    gate = asyncio.Event()

    async def go():
        await explainer.run.submit(CLEAN)
        await explainer.handle("exp-lens", "", {})
        await explainer.handle("exp-head", "", {"layer": "1", "head": "2"})
        before = (list(exp.heads), exp.ablation)
        plain = exp.call

        async def gated(name, **args):
            await gate.wait()
            return await plain(name, **args)

        exp.call = gated
        toggling = explainer.handle("exp-head", "", {"layer": "3", "head": "0"})
        for _ in range(20):
            await asyncio.sleep(0)
        explainer.handle("exp-lens-cell", "", {"stream": "1", "position": "0"})  # draws now
        html = ui.slots["experiments"]
        assert (exp.heads, exp.ablation) == before and "1 head(s) off" in html
        assert html.count('aria-pressed="true" aria-label="ablate') == 1
        gate.set()
        await toggling
        assert exp.heads == [(1, 2), (3, 0)] and "2 head(s) off" in ui.slots["experiments"]
        P, C = model.params, model.config
        trace = exp.lab.bench.trace(explainer.ids)
        want = ex.effect(ex.clean_logits(P, C, trace), ex.ablate(P, C, trace, [(1, 2), (3, 0)]), exp.current_target())
        assert exp.ablation[0] == want

        async def failing(name, **args):
            raise ValueError("the lab is gone")

        exp.call = failing
        await explainer.handle("exp-target", "", {"tokenId": "11"})
        assert exp.target is None and exp.ablation[0] == want and "the lab is gone" in ui.slots["experiments"]

    asyncio.run(go())
