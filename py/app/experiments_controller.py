"""Experiments panel: its state and actions (issue 14). No ``js`` import.

Owned by the Explainer (``explainer.experiments``), which tells it when the tokens change
(``tokens_changed``) and hands it every ``exp-*`` action (``handle``). It draws through the
explainer's ``ui`` (one ``show`` of the whole panel per change) and computes with
``glassbox.experiments`` on the numpy reference: the trace it uses is the explainer's when that
one is a complete numpy trace, else one numpy forward of the same tokens (light mode keeps only
some tensors; a WebGPU trace would differ from the command line in the last digits).

Experiments run on demand (a button each); their results belong to the tokens they ran on and
are dropped when the tokens change. The chosen heads, ablation mode, corrupted prompt and target
token (when it was chosen by hand) are kept.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time

import numpy as np

from glassbox import experiments as ex
from glassbox import reference
from glassbox.model import InputError
from glassbox.trace import all_names

from .views import experiments as view
from .views.common import View

LENS_TOP = 5
ABLATION_TOP = 5
YIELD_SECONDS = 0.1  # a long experiment hands control back to the page this often


class ExperimentsController:
    def __init__(self, explainer):
        self.x = explainer
        self.trace = None  # the numpy trace the experiments use (for self.ids)
        self.ids: tuple[int, ...] = ()
        self.target: int | None = None  # chosen by hand; None = the clean top token
        self.heads: list[tuple[int, int]] = []
        self.mean = False
        self.corrupt_text = ""
        self.runs = 0
        self.status = ""
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

    def tokens_changed(self) -> None:
        """The explainer has a new trace: drop results that belonged to the old tokens, redraw."""
        ids = tuple(int(i) for i in self.x.ids)
        if ids != self.ids:
            self.ids, self.trace = ids, None
            self._clear()
        self.render()

    def numpy_trace(self):
        """The full numpy trace of the current tokens (reused from the explainer when it is one)."""
        if self.trace is None:
            trace = self.x.trace
            complete = trace is not None and getattr(self.x.runner, "name", "") == "numpy" and all(
                name in trace for name in all_names(self.config))
            if not (complete and tuple(int(i) for i in trace.ids) == self.ids):
                trace = reference.forward(self.params, self.config, np.array(self.ids, dtype=np.int64))
            self.trace = trace
        return self.trace

    def clean_logits(self) -> np.ndarray:
        return ex.clean_logits(self.params, self.config, self.numpy_trace())

    def current_target(self) -> int:
        """The chosen token, else the clean top token. Before any experiment has run the live
        run's logits give it, so drawing the panel never runs the model again."""
        if self.target is not None:
            return self.target
        if self.trace is None and self.x.trace is not None and "logits" in self.x.trace:
            return int(np.argmax(self.x.trace.logits[-1]))
        return int(np.argmax(self.clean_logits()))

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
    def run_lens(self) -> None:
        self.lens = ex.logit_lens(self.params, self.config, self.numpy_trace(), LENS_TOP)
        self.lens_cell = None

    def run_ablation(self) -> None:
        if not self.heads:
            self.ablation = None
            return
        trace = self.numpy_trace()
        before = self.clean_logits()
        after = ex.ablate(self.params, self.config, trace, self.heads, self.mean)
        self.ablation = (ex.effect(before, after, self.current_target()), *ex.top_tokens(before, ABLATION_TOP),
                         *ex.top_tokens(after, ABLATION_TOP))

    def run_sweep(self):
        """A generator (as run_patching and _rerun_computed): _compute yields to the page between steps."""
        self.sweep = yield from ex.sweep_steps(self.params, self.config, self.numpy_trace(), self.current_target(),
                                               self.mean)

    def run_patching(self):
        self.patching, self.corrupt_tokens, self.patch_message = None, None, ""
        text = self.corrupt_text.strip() and self.corrupt_text
        if not text:
            self.patch_message = "Type a corrupted prompt first (the same number of tokens as the text above)."
            return
        ids = self.x.model.prompt(text).ids
        if ids.size != len(self.ids):
            self.patch_message = (f"The prompts differ in length: the clean one has {len(self.ids)} tokens, the "
                                  f"corrupted one {ids.size}. Patching needs the same number of tokens.")
            return
        corrupt = reference.forward(self.params, self.config, ids)
        self.patching = yield from ex.patching_steps(self.params, self.config, self.numpy_trace(), corrupt,
                                                     self.current_target())
        self.corrupt_tokens = self.x.model.tokenizer.display(ids)

    def run_attribution(self) -> None:
        self.attribution = ex.attribution(self.params, self.config, self.numpy_trace(), self.current_target())

    def _rerun_computed(self):
        """After the target or the ablation mode changed: recompute what is on screen."""
        self.run_ablation()
        if self.sweep is not None:
            yield from self.run_sweep()
        if self.patching is not None:
            yield from self.run_patching()
        if self.attribution is not None:
            self.run_attribution()

    def _set_mean(self, value: str):
        self.mean = value == "mean"
        yield from self._rerun_computed()

    def _set_target(self, token: int):
        if not 0 <= token < self.config.vocab_size:
            raise ValueError(f"token id {token} is outside the vocabulary")
        self.target = token
        yield from self._rerun_computed()

    async def _compute(self, label: str, work) -> None:
        """Say what runs, let the page paint, compute, redraw once. ``work`` may be a generator
        function yielding (done, total): the page gets control back (and a progress count) about
        every YIELD_SECONDS, so a long sweep or patching grid does not freeze it."""
        self.status = f"{label}…"
        self.render()
        await asyncio.sleep(0)
        try:
            steps = work()
            if inspect.isgenerator(steps):
                last = time.perf_counter()
                for done, total in steps:
                    if time.perf_counter() - last > YIELD_SECONDS:
                        self.x.ui.set_text("exp-status", f"{label}… {done} of {total} re-runs")
                        await asyncio.sleep(0)
                        last = time.perf_counter()
            self.status = ""
        except InputError as exc:
            self.status = str(exc)
        except ValueError as exc:
            self.status = f"The experiment cannot run: {exc}"
        except Exception as exc:  # noqa: BLE001  (shown in the panel; the page stays usable)
            self.status = f"Something went wrong: {type(exc).__name__}: {exc}"
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
            "exp-head": ("Ablating", lambda: (self._toggle(int(data["layer"]), int(data["head"])), self.run_ablation())),
            "exp-clear-heads": ("Clearing", lambda: (self.heads.clear(), self.run_ablation())),
            "exp-mean": ("Ablating", lambda: self._set_mean(value)),
            "exp-sweep": ("Ablating each head alone", self.run_sweep),
            "exp-patch": ("Patching", self.run_patching),
            "exp-attribute": ("Attributing the logit", self.run_attribution),
            "exp-target": ("Recomputing for the new target", lambda: self._set_target(int(data["tokenId"]))),
        }.get(action)
        if work is None:
            raise ValueError(f"unknown experiments action {action!r}")
        return self.x.spawn(self._compute(*work))

    def _toggle(self, layer: int, head: int) -> None:
        if not (0 <= layer < self.config.n_layer and 0 <= head < self.config.n_head):
            raise ValueError(f"head {layer}.{head} does not exist")
        if (layer, head) in self.heads:
            self.heads.remove((layer, head))
        else:
            self.heads = sorted(self.heads + [(layer, head)])

    def _download_trace(self) -> None:
        trace = self.numpy_trace()
        meta = {"backend": "numpy (page)", "model": self.x.model.name, "config": json.dumps(self.config.to_dict()),
                "text": self.x.model.tokenizer.decode(list(self.ids))}
        self.x.ui.download("glassbox-trace.safetensors", trace.to_safetensors(meta), "application/octet-stream")

