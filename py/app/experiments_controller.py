"""Experiments panel: its state and actions (issue 14). No ``js`` import.

Owned by the Explainer (``explainer.experiments``), which tells it when the tokens change
(``tokens_changed``) and hands it every ``exp-*`` action (``handle``). It draws through the
explainer's ``ui`` (one ``show`` of the whole panel per change) and only draws and reacts: the
numbers come from the lab (app/lab.py, issue 16 x16): ``glassbox.experiments`` on the numpy
reference, computed in the model worker when the model runs there, else on this thread (the
lab reuses the explainer's trace when that one is a complete numpy trace, else runs one numpy
forward of the same tokens: light mode keeps only some tensors; a WebGPU trace would differ from
the command line in the last digits).

Experiments run on demand (a button each); their results belong to the tokens they ran on and
are dropped when the tokens change. The chosen heads, ablation mode, corrupted prompt and target
token (when it was chosen by hand) are kept. In the worker, the Stop button (a WorkerRunner's
stop) and a new run (new tokens) end an experiment between two re-runs: the panel says so.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np

from glassbox.model import InputError

from . import lab as labs
from .protocol import Stopped
from .views import experiments as view
from .views.common import View

LENS_TOP = 5
ABLATION_TOP = 5
_SAME = object()  # _apply: this setting stays as it is
YIELD_SECONDS = labs.YIELD_SECONDS  # a long experiment hands control back to the page this often


class ExperimentsController:
    def __init__(self, explainer):
        self.x = explainer
        self.ids: tuple[int, ...] = ()
        self.target: int | None = None  # chosen by hand; None = the clean top token
        self.top: int | None = None  # the clean top token, once the lab said it
        self.heads: list[tuple[int, int]] = []
        self.mean = False
        self.corrupt_text = ""
        self.runs = 0
        self.status = ""
        self.label = ""
        self._lab = None
        self._clear()

    def _clear(self) -> None:
        self.lens = None
        self.lens_cell = None
        self.ablation = None
        self.sweep = None
        self.patching = None
        self.corrupt_tokens = None
        self.patch_message = ""
        self.attribution = None

    # ----- state ----------------------------------------------------------------------------------
    @property
    def params(self):
        return self.x.params

    @property
    def config(self):
        return self.x.config

    @property
    def lab(self) -> "labs.LocalLab | labs.RemoteLab":
        """Where the experiments compute: the model worker's lab, else this thread's."""
        self._lab = labs.attach(self._lab, self.x.runner, lambda: labs.Bench(self.params, self.config,
                                                                             reuse=self._reuse))
        return self._lab

    def _reuse(self, ids: tuple):
        """The explainer's trace when it is the numpy runner's trace of ``ids`` (a local lab)."""
        trace = self.x.trace
        if trace is None or getattr(self.x.runner, "name", "") != "numpy":
            return None
        return trace if tuple(int(i) for i in trace.ids) == ids else None

    def tokens_changed(self) -> None:
        """The explainer has a new trace: drop results that belonged to the old tokens, redraw."""
        ids = tuple(int(i) for i in self.x.ids)
        if ids != self.ids:
            self.ids, self.top = ids, None
            self._clear()
        self.render()

    def current_target(self) -> int:
        """The chosen token, else the clean top token. Before any experiment has run the live
        run's logits give it, so drawing the panel never runs the model again."""
        if self.target is not None:
            return self.target
        if self.top is None and self.x.trace is not None and "logits" in self.x.trace:
            return int(np.argmax(self.x.trace.logits[-1]))
        return int(self.top or 0)

    async def target_now(self, target=_SAME) -> int:
        """The target an experiment uses: ``target`` (by default the chosen one) when it is a
        token, else the numpy reference's top token."""
        target = self.target if target is _SAME else target
        if target is not None:
            return int(target)
        if self.top is None:
            self.top = await self.lab.call("target", ids=list(self.ids))
        return int(self.top)

    async def call(self, name: str, **args):
        """One lab function on the current tokens; a long one reports progress in the panel."""
        return await self.lab.call(name, self._progress, ids=list(self.ids), **args)

    async def _progress(self, done: int, total: int) -> None:
        self.x.ui.set_text("exp-status", f"{self.label}… {done} of {total} re-runs")
        await asyncio.sleep(0)

    def panel(self) -> view.Panel:
        note = "the model's most likely next token" if self.target is None else "chosen by hand"
        return view.Panel(self.config, list(self.x.tokens), self.x.vocab, self.current_target(), note,
                          lens=self.lens, lens_cell=self.lens_cell, heads=list(self.heads), mean=self.mean,
                          ablation=self.ablation, sweep=self.sweep, corrupt_text=self.corrupt_text,
                          corrupt_tokens=self.corrupt_tokens, patching=self.patching,
                          patch_message=self.patch_message, attribution=self.attribution, status=self.status)

    def render(self) -> None:
        if not self.ids:
            return
        self.x.ui.show(view.SLOT, View(view.render(self.panel())))
        self.x.ui.set_attr("experiments", "data-exp-runs", str(self.runs))

    # ----- experiments ------------------------------------------------------------------------------
    async def run_lens(self) -> None:
        self.lens = await self.call("lens", k=LENS_TOP)
        self.lens_cell = None

    async def run_sweep(self) -> None:
        self.sweep = await self.call("sweep", target=await self.target_now(), mean=self.mean)

    async def run_patching(self) -> None:
        self.patching, self.corrupt_tokens, self.patch_message = await self._patch(self.target_now)

    async def _patch(self, target) -> tuple:
        """(patching, corrupted tokens, message) for the typed corrupted prompt; ``target`` is
        awaited only when the prompt can be patched."""
        text = self.corrupt_text.strip() and self.corrupt_text
        if not text:
            return None, None, "Type a corrupted prompt first (the same number of tokens as the text above)."
        ids = self.x.model.prompt(text).ids
        if ids.size != len(self.ids):
            return None, None, (f"The prompts differ in length: the clean one has {len(self.ids)} tokens, the "
                                f"corrupted one {ids.size}. Patching needs the same number of tokens.")
        patching = await self.call("patching", corrupt=[int(i) for i in ids], target=await target())
        return patching, self.x.model.tokenizer.display(ids), ""

    async def run_attribution(self) -> None:
        self.attribution = await self.call("attribution", target=await self.target_now())

    async def _apply(self, *, heads=None, mean: bool | None = None, target=_SAME) -> None:
        """New settings (the heads off, the ablation mode, the target token) and what the panel
        shows recomputed for them. Settings and numbers are swapped in together after the last
        result came, so a draw meanwhile (a lens cell clicked, a CSV saved) shows the previous
        ones whole, never new labels over old numbers; a failure changes nothing."""
        heads = list(self.heads) if heads is None else heads
        mean = self.mean if mean is None else mean
        target = self.target if target is _SAME else target
        token = await self.target_now(target)
        new = {"heads": heads, "mean": mean, "target": target, "ablation": None}
        if heads:
            new["ablation"] = await self.call("ablate", heads=[list(h) for h in heads], mean=mean, target=token,
                                              k=ABLATION_TOP)
        if self.sweep is not None:
            new["sweep"] = await self.call("sweep", target=token, mean=mean)
        if self.patching is not None:
            new["patching"], new["corrupt_tokens"], new["patch_message"] = await self._patch(
                lambda: self.target_now(target))
        if self.attribution is not None:
            new["attribution"] = await self.call("attribution", target=token)
        for name, value in new.items():
            setattr(self, name, value)

    async def _set_mean(self, value: str) -> None:
        await self._apply(mean=value == "mean")

    async def _set_target(self, token: int) -> None:
        if not 0 <= token < self.config.vocab_size:
            raise ValueError(f"token id {token} is outside the vocabulary")
        await self._apply(target=token)

    async def _compute(self, label: str, work) -> None:
        """Say what runs, let the page paint, compute (``await work()``), draw once. A long
        sweep or patching grid reports ``done of total`` about every YIELD_SECONDS."""
        self.label, self.status, ids = label, f"{label}…", tuple(self.ids)
        # only the status line: the whole panel is drawn once, with the result (issue 16 x16:
        # drawing it is the page's longest task while an experiment computes in the worker)
        self.x.ui.set_text("exp-status", self.status)
        await asyncio.sleep(0)
        try:
            await work()
            self.status = ""
        except Stopped as exc:
            self.status = "Stopped." if str(exc) == "stopped" else f"{str(exc).capitalize()}."
        except InputError as exc:
            self.status = str(exc)
        except ValueError as exc:
            self.status = f"The experiment cannot run: {exc}"
        except Exception as exc:  # noqa: BLE001  (shown in the panel; the page stays usable)
            self.status = f"Something went wrong: {type(exc).__name__}: {exc}"
        if tuple(self.ids) != ids:  # new tokens came meanwhile: what was computed belonged to the old ones
            self._clear()
            self.status = ""
        self.runs += 1
        self.render()

    # ----- actions ---------------------------------------------------------------------------------
    ACTIONS = ("exp-corrupt", "exp-lens-cell", "exp-csv", "exp-download-trace", "exp-lens", "exp-head",
               "exp-clear-heads", "exp-mean", "exp-sweep", "exp-patch", "exp-attribute", "exp-target")

    def handle(self, action: str, value: str = "", data: dict | None = None):
        """One ``exp-*`` action; computing ones return the scheduled task."""
        data = data or {}
        if not self.ids:
            return None
        if action == "exp-corrupt":
            self.corrupt_text = value  # typed: stored only (Patch runs it)
            return None
        if action == "exp-lens-cell":
            self.lens_cell = (int(data["stream"]), int(data["position"]))
            self.render()
            return None
        if action == "exp-csv":
            name, text = view.csv(self.panel(), data.get("table", ""))
            self.x.ui.download(name, text.encode("utf-8"), "text/csv")
            return None
        if action == "exp-download-trace":
            return self.x.spawn(self._compute("Preparing the trace", self._download_trace))
        work = {
            "exp-lens": ("Running the logit lens", self.run_lens),
            "exp-head": ("Ablating", lambda: self._toggle(int(data["layer"]), int(data["head"]))),
            "exp-clear-heads": ("Clearing", self._clear_heads),
            "exp-mean": ("Ablating", lambda: self._set_mean(value)),
            "exp-sweep": ("Ablating each head alone", self.run_sweep),
            "exp-patch": ("Patching", self.run_patching),
            "exp-attribute": ("Attributing the logit", self.run_attribution),
            "exp-target": ("Recomputing for the new target", lambda: self._set_target(int(data["tokenId"]))),
        }.get(action)
        if work is None:
            raise ValueError(f"unknown experiments action {action!r}")
        return self.x.spawn(self._compute(*work))

    async def _toggle(self, layer: int, head: int) -> None:
        if not (0 <= layer < self.config.n_layer and 0 <= head < self.config.n_head):
            raise ValueError(f"head {layer}.{head} does not exist")
        heads = [h for h in self.heads if h != (layer, head)]
        await self._apply(heads=heads if len(heads) < len(self.heads) else sorted(heads + [(layer, head)]))

    async def _clear_heads(self) -> None:
        await self._apply(heads=[])

    async def _download_trace(self) -> None:
        trace = await self.call("trace")
        meta = {"backend": f"numpy ({self.lab.where})", "model": self.x.model.name, "config": json.dumps(self.config.to_dict()),
                "text": self.x.model.tokenizer.decode(list(self.ids))}
        self.x.ui.download("glassbox-trace.safetensors", trace.to_safetensors(meta), "application/octet-stream")

