"""Explainer: the session behind the views. No ``js`` import.

It holds what every view reads — the model, the runner, the token ids and their display
strings, the Trace, the next-token Distribution and the sampled token, the layer every view
follows — and one small controller per view (``controllers/``), each with its own state and
actions. ``handle(action, value, data)`` dispatches a page action through one table built
from the controllers' ``actions``.

It talks to the page through a ``ui`` object (``binding.Binding`` in the browser, a fake in
CPython tests) that names page elements by ``views/controls.ELEMENTS`` names, and to the
model through a runner (``runner.py``): ``await runner.run(ids)`` returns the Trace of the
whole displayed sequence. A runner that also has ``extend``/``truncate`` (the numpy
ReferenceRunner) lets Generate reuse the KV cache: only the new token is computed and its
rows are joined onto the trace (``runner.append_rows``), which equals a full re-run because
the model is causal. Sampling-option changes rebuild the Distribution from
``trace.logits[-1]`` and draw again: they never run the model (``runs`` counts model runs).

Adding a view: a view module (``views/<name>.py``), a controller (``controllers/<name>.py``),
one line in CONTROLLERS below and one in ``views/controls.SECTIONS`` (see controllers/__init__).
"""

from __future__ import annotations

import asyncio

import numpy as np

from glassbox.sampling import distribution, sample
from glassbox.trace import LayerTrace
from glassbox.weights import expected_shapes

from . import lab as labs
from . import runner as runners
from .controllers.attention import AttentionController
from .controllers.block import BlockController
from .controllers.console import ConsoleController
from .controllers.embedding import EmbeddingController
from .controllers.map import MapController
from .controllers.output import OutputController
from .controllers.run import RunController
from .controllers.sampling import SamplingController
from .controllers.tour import TourController
from .experiments_controller import ExperimentsController  # issue 14
from .factors import FactorsController  # issue 13
from .views import controls
from .views import weights as weight_views
from .views.common import View

# Every controller, in drawing order (a run redraws the views in this order).
CONTROLLERS = (RunController, MapController, EmbeddingController, AttentionController, BlockController,
               OutputController, SamplingController, TourController, ConsoleController)


class VocabLabels:
    """token id -> display string, decoded on first use (the views index it like a list)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __getitem__(self, i: int) -> str:
        i = int(i)
        if i not in self.cache:
            self.cache[i] = self.tokenizer.display([i])[0]
        return self.cache[i]

    def __len__(self) -> int:
        return self.tokenizer.vocab_size


class Explainer:
    def __init__(self, ui, model, runner=None, *, examples=controls.EXAMPLES, seed: int | None = None,
                 namespace: dict | None = None, run_code=None, text: str | None = None):
        self.ui = ui
        self.model = model
        self.config = model.config
        self.params = model.params  # float32 weights for the popovers (the model runs through the runner)
        self.examples = tuple(examples)
        self.vocab = VocabLabels(model.tokenizer)
        self.rng = np.random.default_rng(seed)
        self.text = text if text else self.examples[0]
        self.ids = np.zeros(0, dtype=np.int64)
        self.tokens: list[str] = []
        self.trace = None
        self.dist = None
        self.sampled: int | None = None
        self.dropped = 0
        self.error = ""
        self.layer = 0
        self.namespace = namespace if namespace is not None else {}
        self._weights: dict[str, weight_views.WeightHeat] = {}
        self._pending: dict[str, tuple[str, str, str]] = {}  # issue 16 (hw20): popovers not drawn yet
        self._lab = None  # where popover maps are computed (app/lab.py: the model worker's, or local)
        self._tasks: set[asyncio.Task] = set()
        self.parts = {}
        for cls in CONTROLLERS:
            controller = cls(self, run_code) if cls is ConsoleController else cls(self)
            self.parts[controller.name] = controller
        self.actions = {action: (controller, fn) for controller in self.parts.values()
                        for action, fn in controller.actions.items()}
        # issue 16 (hw20): a weight popover's map is computed when it first opens (binding.py)
        self.actions["weights-open"] = (self, lambda ex, value, data: ex.open_popover(value))
        self.runner = runner or runners.ReferenceRunner(self.params, self.config, step=self.run.progress)
        # Panels with a handle(action, value, data) of their own, their ACTIONS joined to the table:
        # experiments (issue 14), factors (issue 13), and the query/key map (issue 12, attached by
        # main.py through add_panel).
        self.experiments = self.add_panel(ExperimentsController(self))
        self.factors = self.add_panel(FactorsController(self))
        self.qk = None

    # The controllers by name (explainer.run, explainer.attention, ...).
    def __getattr__(self, name: str):
        parts = self.__dict__.get("parts")
        if parts is not None and name in parts:
            return parts[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # ----- start-up ---------------------------------------------------------------------
    def mount(self) -> None:
        """Write the frame (input card, map, bars, empty view slots, console)."""
        s = self.sampling
        self.ui.show_frame(controls.frame(self.config, self.examples, self.text, s.temperature, s.top_k, s.top_p))
        self.update_namespace()

    async def start(self) -> None:
        """The first run, on the first example, as part of the page's boot (the boot owns
        the page state until it says 'ready')."""
        self.run.booting = True
        try:
            await self.run.submit(self.text)
        finally:
            self.run.booting = False

    # ----- shared state -----------------------------------------------------------------
    @property
    def runner_name(self) -> str:
        return getattr(self.runner, "name", "runner")

    @property
    def runs(self) -> int:
        return self.run.runs

    async def hold_layer(self, trace, layer: int | None = None) -> None:
        """issue 16: make a partial trace (glassbox.trace.LayerTrace: the model worker's, light
        mode's on WebGPU) hold ``layer`` (the layer shown) before it is drawn, through the
        runner's ``await fetch_layer`` — nothing is computed on this thread. Repeated while the
        layer shown moves meanwhile (the reader picks another during generation)."""
        fetch = getattr(self.runner, "fetch_layer", None)
        for _ in range(8):
            want = self.layer if layer is None else layer
            if fetch is None or not isinstance(trace, LayerTrace) or trace.holds(want):
                return
            await fetch(trace, want)
        raise RuntimeError("the layer shown kept changing while its tensors were fetched")

    def set_trace(self, trace) -> None:
        prepare = getattr(self.runner, "view_layer", None)  # light mode: the trace must hold the layer shown
        if prepare is not None:
            prepare(trace, self.layer)
        self.trace = trace
        self.ids = np.asarray(trace.ids, dtype=np.int64)
        self.tokens = self.model.tokenizer.display(self.ids)
        self.experiments.tokens_changed()
        self.place_in_qk()

    def place_in_qk(self) -> None:
        """issue 12: the Q/K map places the current text among its corpus, only while its view
        is open (each placement is a forward and a PCA in the model worker, which a layer fetch
        would otherwise queue behind); opening the view places the latest text."""
        if self.qk is not None and self.trace is not None and "qk" in self.map.open:
            self.spawn(self.qk.on_trace(self.trace))

    def sample(self) -> None:
        """A new next-token distribution from the last logits row, and a token drawn from it."""
        s = self.sampling
        self.dist = distribution(self.trace.logits[-1], s.temperature, s.top_k, s.top_p)
        self.sampled = sample(self.dist, self.rng)
        self.output.focus = None

    async def after_run(self, light: bool = False) -> None:
        """New distribution and sample, then the views, yielding to the page between them."""
        self.sample()
        self.update_namespace()
        if light:  # issue 16: a turn for the page between views (no main-thread task over 200 ms)
            for controller in (self.run, self.output, self.map):
                await asyncio.sleep(0)
                await controller.render_async()
        else:
            await asyncio.sleep(0)
            await self.render_all_async()
        self.factors.refresh()
        # A counter on the page that says a run has been drawn (tests wait on it).
        self.ui.set_attr("explainer", "data-runs", str(self.runs))

    def popover(self, pop_id: str, label: str, title: str, name: str, product: str):
        """A weight popover. Its heat map is computed once per weight and kept, but only when
        the popover first opens (``open_popover``; issue 16, hw20): until then it is drawn
        without its map, so drawing a view never dequantizes a matrix."""
        heat = self._weights.get(name)
        if heat is None:
            self._pending[pop_id] = (title, name, product)
            return weight_views.lazy_popover(pop_id, label, title, product,
                                             tuple(expected_shapes(self.config)[name]))
        return weight_views.popover(pop_id, label, title, heat, product, self._stored_note())

    def _stored_note(self) -> str:
        return f"stored as {self.model.checkpoint.scheme}, drawn dequantized to float32"

    def _local_bench(self) -> "labs.Bench":
        # One matrix dequantized for its picture, not kept as float32 (issue 11).
        return labs.Bench(self.params, self.config, weight=self.model.checkpoint.dequantize)

    def open_popover(self, pop_id: str) -> asyncio.Task | None:
        """The popover ``pop_id`` is opening: if its map is not drawn yet, compute it where the
        model computes (the model worker's lab, else this thread) and fill it in. The task, or
        None when there is nothing to do."""
        pending = self._pending.pop(pop_id, None)
        if pending is None:
            return None
        return self.spawn(self._fill_popover(pop_id, *pending))

    async def _fill_popover(self, pop_id: str, title: str, name: str, product: str) -> None:
        heat = self._weights.get(name)
        if heat is None:
            shape = tuple(expected_shapes(self.config)[name])
            self.ui.fill_popover(pop_id, View(weight_views.computing_body(product, shape), []))
            self._lab = labs.attach(self._lab, self.runner, self._local_bench)
            try:
                heat = await self._lab.call("weight_map", weight=name, title=title)
            except Exception as exc:  # noqa: BLE001  (a stopped or failed worker: say so, open again to retry)
                self._pending[pop_id] = (title, name, product)
                self.ui.fill_popover(pop_id, View(weight_views.failed_body(product, shape, exc), []))
                return
            heat = self._weights.setdefault(name, heat)
        self._pending.pop(pop_id, None)  # a view drawn meanwhile put its popover back in the list
        self.ui.fill_popover(pop_id, View(
            weight_views.popover_body(title, heat, product, self._stored_note()), [heat]))

    def update_namespace(self) -> None:
        self.namespace.update(trace=self.trace, tokens=list(self.tokens), ids=self.ids, model=self.model,
                              dist=self.dist, np=np, explainer=self, help=self.console.help)

    # ----- drawing ----------------------------------------------------------------------
    def render_all(self) -> None:
        for controller in self.parts.values():
            if controller.slot not in (None, "tour"):
                controller.render()

    async def render_all_async(self) -> None:
        """render_all, handing control back to the page after each view."""
        for controller in self.parts.values():
            if controller.slot not in (None, "tour"):
                await controller.render_async()  # issue 16: a turn between the view and its drawing
                await asyncio.sleep(0)

    # ----- events -----------------------------------------------------------------------
    def add_panel(self, panel):
        """Join a panel's ACTIONS to the action table (each goes to ``panel.handle``); returns it."""
        for action in panel.ACTIONS:
            self.actions[action] = (panel, lambda p, value, data, a=action: p.handle(a, value, data))
        return panel

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def handle(self, action: str, value: str = "", data: dict | None = None):
        """One user action from the page. Async work is scheduled; the task is returned."""
        entry = self.actions.get(action)
        if entry is None:
            raise ValueError(f"no action {action!r}")
        controller, fn = entry
        result = fn(controller, value, data or {})
        return result if isinstance(result, asyncio.Future) else None

    def fail(self, exc: BaseException) -> None:
        """Show a failure on the page (the binding calls it for any exception in an event)."""
        self.run.fail(exc)

    _fail = fail  # the binding's name for it

    # Shortcuts kept for the console and the page tests.
    @property
    def tour_index(self) -> int | None:
        return self.tour.index

    def select_layer(self, layer: int):
        return self.map.select_layer(layer)  # a task in light mode on WebGPU (issue 15)

    def select_head(self, head: int) -> None:
        self.attention.select_head(head)

    def link_qk(self) -> None:
        """issue 12: the query/key map shows the layer and head the explainer shows."""
        if self.qk is not None:
            self.qk.link(self.layer, self.attention.head)
