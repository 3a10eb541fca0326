"""The factors panel's state and actions (issue 13). No ``js`` import.

It belongs to an Explainer (``owner``): reads its trace, tokens, ids, vocabulary and model,
draws through its ``ui`` into the slot ``factors``. The dictionary is loaded lazily, the first
time the panel opens: most visits never open it, so the model's first prediction does not wait
for it (0.7 MiB, a tenth of the default model's 7.2 MiB; the storage line counts it).

Actions (``handle``): ``factors-open`` (data-stream, data-position), ``factors-stream``,
``factors-select`` (data-factor), ``factors-attribute`` (data-factor), ``factors-search``
(value), ``factors-close``. The panel only draws and reacts: codes and occlusion come from the
lab (app/lab.py, issue 16 x16), ``glassbox.factors.code_position`` and ``occlusion`` on the numpy
reference of the explainer's tokens (the command line's functions), computed in the model worker
when the model runs there (the worker reads the dictionary from the browser's cache, where this
page's download kept it: both interpreters then hold it, 0.7 MiB each for the default model),
else on this thread.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable


from glassbox import factors as gf

from . import lab as labs
from .views import factors as view
from .views.common import View

OCCLUSION_MAX = 64  # tokens: occlusion re-runs the model once per token up to the clicked one


class FactorsController:
    def __init__(self, owner, load: Callable[[], Awaitable[gf.Dictionary]] | None = None):
        self.owner = owner
        self._load = load or self._load_from_page
        self.dictionary: gf.Dictionary | None = None
        self.labels: list[str] | None = None
        self.open = False
        self.stream = 0
        self.position = 0
        self.coding: gf.Coding | None = None
        self.selected: int | None = None
        self.occlusion = None  # (factor, values [position+1], base activation)
        self.query = ""
        self.status = ""
        self._lab = None
        self._asked = 0  # codings asked for; only the latest is shown (_coded)

    @property
    def lab(self) -> "labs.LocalLab | labs.RemoteLab":
        """Where codes and occlusion compute: the model worker's lab, else this thread's."""
        o = self.owner
        self._lab = labs.attach(self._lab, o.runner, lambda: labs.Bench(o.params, o.config, self.ensure_dictionary))
        return self._lab

    async def code(self, stream: int, position: int) -> gf.Coding:
        return await self.lab.call("code", ids=[int(i) for i in self.owner.ids], stream=stream, position=position)

    async def _coded(self, stream: int, position: int) -> bool:
        """Code (stream, position) and show it, unless a later request (another click, a new
        run, Close) came meanwhile: the panel then keeps what it shows, whole — never a coding
        drawn under another token's label. True when it was shown."""
        self._asked += 1
        asked = self._asked
        try:
            await self.ensure_dictionary()
            coding, status = await self.code(stream, position), ""
        except Exception as exc:  # noqa: BLE001  (shown in the panel; the page stays usable)
            coding, status = None, f"The factors cannot be shown: {type(exc).__name__}: {exc}"
        if asked != self._asked:
            return False
        if (stream, position) != (self.stream, self.position):
            self.occlusion, self.selected = None, None
        self.stream, self.position, self.coding, self.status = stream, position, coding, status
        self.render()
        return True

    async def _load_from_page(self) -> gf.Dictionary:
        from .loader import load_dictionary

        model = self.owner.model
        return await load_dictionary(f"./weights/{model.name}/", model.checkpoint.manifest)

    # ----- actions ------------------------------------------------------------------------------
    ACTIONS = ("factors-open", "factors-stream", "factors-select", "factors-attribute", "factors-search",
               "factors-close")

    def handle(self, action: str, value: str = "", data: dict | None = None):
        data = data or {}
        if action == "factors-open":
            return self.owner.spawn(self.open_at(int(data["stream"]), int(data["position"])))
        if action == "factors-stream":
            return self.owner.spawn(self.open_at(int(data["stream"]), self.position))
        if action == "factors-select":
            self.selected = int(data["factor"])
            self.render()
        elif action == "factors-attribute":
            return self.owner.spawn(self.attribute(int(data["factor"])))
        elif action == "factors-search":
            self.query = value
            if self.dictionary is not None:
                self.owner.ui.show("factor-browser", view.browser(self.dictionary, self.owner.vocab, value, self.labels))
        elif action == "factors-close":
            self._asked += 1  # a coding in flight is not shown
            self.open, self.coding, self.occlusion, self.selected = False, None, None, None
            self.owner.ui.show("factors", view.intro(self.has_dictionary))
        return None

    async def ensure_dictionary(self) -> gf.Dictionary:
        if self.dictionary is None:
            self.status = "Downloading and checking the factors dictionary…"
            self.render()
            await asyncio.sleep(0)
            self.dictionary = await self._load()
            vocab = self.owner.vocab
            self.labels = [view.factor_label(self.dictionary, vocab, f) for f in range(self.dictionary.n_factors)]
        return self.dictionary

    async def open_at(self, stream: int, position: int) -> None:
        trace = self.owner.trace
        if trace is None:
            return
        self.open = True
        if self.coding is None:  # nothing drawn yet: the status lines name the token asked for
            self.stream, self.position = int(stream), int(position)
        self.owner.map.open_view("factors")  # the panel is a detailed view: open it in place
        if await self._coded(int(stream), int(position)):
            self.owner.ui.focus("factors-title")

    def refresh(self):
        """After a new run: recode the same layer and token (a task), or close when the token is gone."""
        if not self.open:
            self.owner.ui.show("factors", view.intro(self.has_dictionary))
            return
        if self.dictionary is None or self.owner.trace is None:
            return
        if self.position >= self.owner.ids.size:
            self.handle("factors-close")
            return
        self.occlusion = None
        return self.owner.spawn(self._coded(self.stream, self.position))

    async def attribute(self, factor: int) -> None:
        if self.dictionary is None or self.owner.trace is None:
            return
        if self.position + 1 > OCCLUSION_MAX:
            self.status = (f"Occlusion re-runs the model once per token; it is offered up to token "
                           f"{OCCLUSION_MAX - 1} (this is token {self.position}).")
            self.render()
            return
        self.owner.ui.set_text("run-status", f"Occlusion: re-running without each of "
                               f"{self.position + 1} tokens…")
        await asyncio.sleep(0)
        asked, stream, position = self._asked, self.stream, self.position

        async def progress(done: int, total: int) -> None:
            self.owner.ui.set_text("run-status", f"Occlusion: {done} of {total} re-runs…")
            await asyncio.sleep(0)

        try:
            values, base = await self.lab.call("occlusion", progress, ids=[int(i) for i in self.owner.ids],
                                               stream=stream, position=position, factor=factor)
            occlusion, status = (factor, values, base), ""
        except Exception as exc:  # noqa: BLE001  (shown in the panel)
            occlusion, status = None, f"Occlusion failed: {type(exc).__name__}: {exc}"
        self.owner.ui.set_text("run-status", "")
        if asked != self._asked:  # another token, a new run or Close came meanwhile: not this one's
            return
        self.occlusion, self.status = occlusion, status
        self.render()

    # ----- drawing ------------------------------------------------------------------------------
    def render(self) -> None:
        if not self.open:
            return
        o = self.owner
        self.owner.ui.show("factors", view.panel(
            status=self.status, d=self.dictionary if self.coding is not None else None, vocab=o.vocab,
            tokens=o.tokens, stream=self.stream, position=self.position, coding=self.coding,
            n_streams=gf.n_streams(o.config.n_layer), selected=self.selected, occlusion=self.occlusion,
            query=self.query, labels=self.labels))

    @property
    def has_dictionary(self) -> bool:
        return bool(gf.entries(getattr(self.owner.model.checkpoint, "manifest", {}) or {}))

    def strip(self, stream: int) -> View:
        """The token buttons a layer's view carries (see views/factors.token_strip)."""
        o = self.owner
        if o.trace is None or not self.has_dictionary:
            return View("")
        return View(view.token_strip(o.tokens, stream, int(o.trace.start)))
