"""Weight popovers computed when they first open (issue 16, hw20).

Drawing a view used to compute every weight popover's heat map at once: wte of GPT-2's
shape (50257 x 768) dequantized, downsampled and its 99.5th percentile taken, a 3.6 s
main-thread task in the first drawing after a Hub model loaded (bench/results.md, hw20).
Now a view draws the popover without its map, and the map is made when the popover opens
(binding.py's beforetoggle listener -> the "weights-open" action) — the same map, kept —
and where a model worker runs, the worker computes it (app/lab.py's weight_map): the page's
thread never dequantizes the matrix.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from glassbox.config import GPTConfig
from glassbox.model import Model
from glassbox.tokenizer import Tokenizer
from glassbox.weights import Checkpoint, expected_shapes, quantize_params

from app import lab as labs
from app import protocol
from app.explainer import Explainer
from app.views import weights as weight_views
from app.views.controls import selector

VOCAB = Path(__file__).resolve().parents[1] / "vendor" / "gpt2"
CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=16, n_positions=24, vocab_size=50257)


class UI:
    """The explainer's page, recording what it was asked to draw."""

    def __init__(self):
        self.slots, self.filled = {}, []

    def __getattr__(self, name):  # set_text, set_attr, focus...: nothing to record here
        if name.startswith("__") or name == "show_async":
            raise AttributeError(name)
        return lambda *args, **kw: None

    def show(self, slot, view):
        self.slots[slot] = view

    def show_popover(self, name):
        selector(name)

    def fill_popover(self, pop_id, view):
        self.filled.append((pop_id, view))


class Counting(Checkpoint):
    """A checkpoint that counts whole-matrix dequantizations."""

    def dequantize(self, name):
        self.calls.append(name)
        return super().dequantize(name)


@pytest.fixture(scope="module")
def model() -> Model:
    rng = np.random.default_rng(20)
    params = {name: (rng.standard_normal(shape) * 0.2).astype(np.float32) for name, shape in expected_shapes(CONFIG).items()}
    checkpoint = Counting(config=CONFIG, scheme="int8", group=0, tensors=quantize_params(params, CONFIG, "int8"))
    model = Model(checkpoint, Tokenizer.from_folder(VOCAB), "random")
    model.keep_quantized(None)  # as the page: numpy runs on the stored int8 matrices
    return model


def started(model) -> tuple[UI, Explainer]:
    """An explainer on ``model`` after its first run, and the page it drew on."""
    ui = UI()
    ex = Explainer(ui, model, seed=0, namespace={})
    ex.mount()
    asyncio.run(ex.start())
    return ui, ex


async def opened(ex, pop_id: str):
    """The reader opens popover ``pop_id``: the explainer's task, awaited."""
    task = ex.handle("weights-open", pop_id)
    assert task is not None
    await task


def test_a_view_draws_its_popovers_without_their_maps_until_one_opens(model):
    model.checkpoint.calls = []
    ui, ex = started(model)
    assert model.checkpoint.calls == []  # no matrix dequantized to draw the views
    output = ui.slots["output"]
    assert 'id="pop-wte"' in output.html and "data-lazy" in output.html and 'data-testid="weights-pending"' in output.html
    assert not [h for h in output.heats if h.key.startswith("w.")]
    assert "Stored [50257×16]" in output.html

    asyncio.run(opened(ex, "pop-wte"))
    assert model.checkpoint.calls == ["wte.weight"]
    [(pop_id, waiting), (pop_id, view)] = ui.filled
    assert pop_id == "pop-wte" and "computing the map" in waiting.html and not waiting.heats
    # The same map and text as the popover drawn with its map from the start.
    title = "wte.weight (token embedding, used as the unembedding)"
    eager = weight_views.weight_heat("w.wte.weight", title, model.checkpoint.dequantize("wte.weight"))
    [heat] = view.heats
    np.testing.assert_array_equal(heat.values, eager.values)
    np.testing.assert_array_equal(heat.mean, eager.mean)
    assert heat.scale == eager.scale and heat.stats == eager.stats
    full = weight_views.popover("pop-wte", "Weights: wte (unembedding)", title, eager,
                                view.html.split("</p>", 1)[0].removeprefix("<p>"),
                                "stored as int8, drawn dequantized to float32")
    assert view.html in full.html

    # Opened once: kept. Opening again computes nothing; the next drawing has the map.
    model.checkpoint.calls = []
    assert ex.handle("weights-open", "pop-wte") is None
    assert len(ui.filled) == 2
    ex.output.render()
    assert model.checkpoint.calls == [] and "data-lazy" not in ui.slots["output"].html
    assert [h.key for h in ui.slots["output"].heats if h.key.startswith("w.")] == ["w.wte.weight"]
    # Other popovers (the block view's) still wait for their own opening.
    assert "data-lazy" in ui.slots["block"].html


class Worker:
    """The model worker's runner as far as the lab goes: a lab on its own copy of the weights
    (app/lab.py's compute + encode, as worker.py answers a "lab" request), or a failure."""

    config = CONFIG

    def __init__(self, checkpoint, error: Exception | None = None):
        self.bench = labs.Bench({}, CONFIG, weight=checkpoint.dequantize)
        self.error, self.asked = error, []

    async def lab(self, name, args, progress=None):
        self.asked.append((name, args))
        if self.error is not None:
            raise self.error
        return await labs.compute(self.bench, name, args, labs._no_report)


def test_with_a_model_worker_the_worker_computes_the_map(model):
    model.checkpoint.calls = []
    ui, ex = started(model)
    worker_checkpoint = Counting(config=CONFIG, scheme="int8", group=0, tensors=model.checkpoint.tensors)
    worker_checkpoint.calls = []
    ex.runner = Worker(worker_checkpoint)
    asyncio.run(opened(ex, "pop-0-c_fc"))
    assert model.checkpoint.calls == [] and worker_checkpoint.calls == ["h.0.mlp.c_fc.weight"]
    [_, (pop_id, view)] = ui.filled
    [heat] = view.heats
    eager = weight_views.weight_heat("w.h.0.mlp.c_fc.weight", heat.title, model.checkpoint.dequantize("h.0.mlp.c_fc.weight"))
    assert pop_id == "pop-0-c_fc" and heat.rgba.tobytes() == eager.rgba.tobytes() and heat.stats == eager.stats
    assert "Stored [64×16]" in view.html and "99.5th percentile" in view.html


def test_a_failed_worker_says_so_in_the_popover_and_the_next_opening_retries(model):
    ui, ex = started(model)
    worker = Worker(model.checkpoint, error=protocol.Stopped("stopped"))
    ex.runner = worker
    asyncio.run(opened(ex, "pop-0-attn_c_proj"))
    [_, (pop_id, view)] = ui.filled
    assert pop_id == "pop-0-attn_c_proj" and not view.heats
    assert 'role="alert"' in view.html and "could not be computed (stopped)" in view.html
    worker.error = None
    asyncio.run(opened(ex, "pop-0-attn_c_proj"))
    [heat] = ui.filled[-1][1].heats
    assert heat.key == "w.h.0.attn.c_proj.weight" and len(worker.asked) == 2
