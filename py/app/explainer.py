"""Explainer: the state behind the views and every user action. No ``js`` import.

It talks to the page through a ``ui`` object (``binding.Binding`` in the browser, a fake in
CPython tests) and to the model through a runner (``runner.py``): ``await runner.run(ids)``
returns the Trace of the whole displayed sequence. A runner that also has ``extend``/
``truncate`` (the numpy ReferenceRunner) lets Generate reuse the KV cache: only the new
token is computed and its rows are joined onto the trace (``runner.append_rows``), which
equals a full re-run because the model is causal. Without them (e.g. a GPU engine that only
offers ``run``) each generated token re-runs the whole sequence.

State: the token ids and their display strings, the Trace, the next-token Distribution and
the sampled token; the selected layer/head/token; sampling options; the derivation player
and the tour. Sampling-option changes rebuild the Distribution from ``trace.logits[-1]``
and draw again: they never run the model (``runs`` counts model runs; tests check it).
"""

from __future__ import annotations

import asyncio
import time
import traceback

import numpy as np

from glassbox.model import InputError
from glassbox.sampling import distribution, sample

from . import runner as runners
from .views import attention, block, controls, embedding, output, overview, tour
from .views import weights as weight_views
from .views.common import View, fmt

STAGE_SECONDS = 1.6  # derivation playback: time per stage
MAX_CONTINUOUS = 64  # tokens per "Generate continuously" (Stop ends it sooner)


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
                 namespace: dict | None = None, run_code=None):
        self.ui = ui
        self.model = model
        self.config = model.config
        self.params = model.params  # float32 weights for the popovers (the model runs through the runner)
        self.runner = runner or runners.ReferenceRunner(self.params, self.config, step=self._progress)
        self.examples = tuple(examples)
        self.vocab = VocabLabels(model.tokenizer)
        self.rng = np.random.default_rng(seed)
        self.temperature, self.top_k, self.top_p = 0.8, 0, 0.95
        self.text = self.examples[0]
        self.ids = np.zeros(0, dtype=np.int64)
        self.tokens: list[str] = []
        self.trace = None
        self.dist = None
        self.sampled: int | None = None
        self.dropped = 0
        self.pending = False
        self.pending_prob: float | None = None
        self.undo = None
        self.layer = 0
        self.head = 0
        self.position: int | None = None  # block view's token; None = the last one
        self.focus: int | None = None  # output walk-through token; None = the sampled one
        self.deriv_open = False
        self.deriv_stage = 0
        self._player: asyncio.Task | None = None
        self.tour_index: int | None = None
        self.busy = False
        self.generating = False
        self.stop_requested = False
        self.error = ""
        self.runs = 0
        self.last_run_s = 0.0
        self.namespace = namespace if namespace is not None else {}
        self.run_code = run_code
        self.console_log: list[str] = []
        self._weights: dict[str, weight_views.WeightHeat] = {}
        self._tasks: set[asyncio.Task] = set()
        self._booting = False
        self.qk = None  # issue 12: the query/key map (app/qkmap.py), attached by main.py

    # ----- start-up ---------------------------------------------------------------------
    def mount(self) -> None:
        """Write the frame (input card, bars, empty view slots, console)."""
        self.ui.show_frame(controls.frame(self.config, self.examples, self.text, self.temperature, self.top_k, self.top_p))
        self._update_namespace()

    async def start(self) -> None:
        """The first run, on the first example, as part of the page's boot (the boot owns
        the page state until it says 'ready')."""
        self._booting = True
        try:
            await self.submit(self.text)
        finally:
            self._booting = False

    # ----- running the model ------------------------------------------------------------
    async def _progress(self, label: str, fraction: float) -> None:
        self.ui.set_text('[data-testid="run-status"]', f"Running the model ({self.runner_name}): {label}…")
        await asyncio.sleep(0)

    @property
    def runner_name(self) -> str:
        return getattr(self.runner, "name", "runner")

    async def _timed(self, coro):
        self.runs += 1
        started = time.perf_counter()
        result = await coro
        self.last_run_s = time.perf_counter() - started
        return result

    def _begin(self) -> bool:
        if self.busy:
            return False
        self.busy = True
        if not self._booting:
            self.ui.set_state("busy")
        return True

    def _end(self) -> None:
        self.busy = False
        if not self._booting:
            self.ui.set_state("ready")

    def _fail(self, exc: BaseException) -> None:
        """Show a failure on the page; input mistakes as themselves, anything else with its type."""
        if isinstance(exc, InputError):
            self.error = str(exc)
        elif isinstance(exc, ValueError):
            self.error = f"The model cannot run this: {exc}"
        else:
            self.error = f"Something went wrong: {type(exc).__name__}: {exc}"
            self.console_log.append(traceback.format_exc())
            self.ui.set_text('[data-testid="console-output"]', "\n".join(self.console_log[-20:]))
        self.ui.set_text('[data-testid="run-status"]', "")
        self.render_sequence()

    async def submit(self, text: str | None = None) -> None:
        """Tokenize ``text`` (or the text box's) and run the model on it."""
        if not self._begin():
            return
        try:
            await self._stop_player()
            text = self.text if text is None else text
            self.text = text
            prompt = self.model.prompt(text)
            trace = await self._timed(self.runner.run(prompt.ids))
            self.ids, self.dropped = prompt.ids, prompt.dropped
            self._set_trace(trace)
            self.pending, self.undo, self.pending_prob = False, None, None
            self.error = ""
            self.position = None
            await self._after_run()
        except Exception as exc:  # noqa: BLE001  (shown on the page; the app stays usable)
            self._fail(exc)
        finally:
            self._end()

    def _set_trace(self, trace) -> None:
        self.trace = trace
        self.ids = np.asarray(trace.ids, dtype=np.int64)
        self.tokens = self.model.tokenizer.display(self.ids)
        if self.qk is not None:  # issue 12
            self._spawn(self.qk.on_trace(trace))

    async def _after_run(self, light: bool = False) -> None:
        """New distribution and sample, then the views, yielding to the page between them."""
        self.dist = distribution(self.trace.logits[-1], self.temperature, self.top_k, self.top_p)
        self.sampled = sample(self.dist, self.rng)
        self.focus = None
        if self.position is not None and self.position >= self.ids.size:
            self.position = None
        self.ui.set_text('[data-testid="run-status"]',
                         f"Ran {self.config.n_layer} blocks on {self.ids.size} tokens in "
                         f"{self.last_run_s * 1000:.0f} ms ({self.runner_name}).")
        self._update_namespace()
        if light:
            self.render_sequence(), self.render_output(), self.render_overview()
        else:
            await self.render_all_async()
        # A counter on the page that says a run has been drawn (tests wait on it).
        self.ui.set_attr('[data-testid="explainer"]', "data-runs", str(self.runs))

    async def _append(self, token: int) -> None:
        """Run the model on the sequence + ``token`` (KV cache when the runner has one)."""
        new_ids = np.append(self.ids, np.int64(token))
        if hasattr(self.runner, "extend") and self.trace is not None:
            step = await self._timed(self.runner.extend(np.array([token], dtype=np.int64)))
            trace = runners.append_rows(self.trace, step)
        else:
            trace = await self._timed(self.runner.run(new_ids))
        self._set_trace(trace)

    async def generate(self, light: bool = False) -> bool:
        """Append the sampled token, run, and mark it pending (keep or discard). True if added."""
        if self.trace is None or self.sampled is None:
            return False
        if self.ids.size >= self.config.n_positions:
            self.error = (f"The context is full ({self.config.n_positions} tokens): GPT-2 cannot see more. "
                          "Shorten the text to generate further.")
            self.render_sequence()
            return False
        if self.pending:
            self.accept(render=False)
        token, prob = int(self.sampled), float(self.dist.probs[self.sampled])
        undo = (self.trace, self.dist, self.sampled, self.text, self.position)
        await self._append(token)
        self.undo, self.pending, self.pending_prob = undo, True, prob
        self.error = ""
        await self._after_run(light)
        return True

    async def generate_one(self) -> None:
        if not self._begin():
            return
        try:
            await self._stop_player()
            await self.generate()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
        finally:
            self._end()

    async def generate_continuously(self, limit: int = MAX_CONTINUOUS) -> None:
        """Generate and keep tokens until Stop, the context is full or ``limit`` tokens."""
        if not self._begin():
            return
        self.generating, self.stop_requested = True, False
        self.ui.set_prop("#stop", "disabled", False)
        self.ui.set_attr("#continuous", "aria-pressed", "true")
        try:
            await self._stop_player()
            for _ in range(limit):
                if self.stop_requested or not await self.generate(light=True):
                    break
                self.accept(render=False)
                self.render_sequence()
                await asyncio.sleep(0)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
        finally:
            self.generating = False
            self.ui.set_prop("#stop", "disabled", True)
            self.ui.set_attr("#continuous", "aria-pressed", "false")
            try:
                if self.trace is not None:
                    await self.render_all_async()
            finally:
                self._end()

    def stop(self) -> None:
        self.stop_requested = True

    def accept(self, render: bool = True) -> None:
        """Keep the generated token: it becomes part of the text."""
        if not self.pending:
            return
        self.pending, self.undo, self.pending_prob = False, None, None
        self.text = self.model.tokenizer.decode(self.ids)
        self.ui.set_value("#prompt", self.text)
        if render:
            self.render_sequence()

    def discard(self) -> None:
        """Drop the generated token and go back to the state before it (no model run)."""
        if not self.pending or self.undo is None or self.busy:
            return
        trace, dist, sampled, text, position = self.undo
        if hasattr(self.runner, "truncate"):
            self.runner.truncate(int(trace.ids.size))
        self._set_trace(trace)
        self.dist, self.sampled, self.text, self.position = dist, sampled, text, position
        self.pending, self.undo, self.pending_prob = False, None, None
        self.focus = None
        self._update_namespace()
        self.render_all()

    # ----- sampling (never runs the model) ------------------------------------------------
    def set_sampling(self, temperature=None, top_k=None, top_p=None) -> None:
        t = self.temperature if temperature is None else float(temperature)
        k = self.top_k if top_k is None else int(float(top_k or 0))
        p = self.top_p if top_p is None else float(top_p)
        t = min(max(t, 0.0), 3.0) if np.isfinite(t) else self.temperature
        k = min(max(k, 0), self.config.vocab_size)
        p = min(max(p, 0.01), 1.0) if np.isfinite(p) else self.top_p
        self.temperature, self.top_k, self.top_p = t, k, p
        self.ui.set_text("#temperature-out", "0 (greedy)" if t == 0 else fmt(t, 3))
        self.ui.set_text("#top-k-out", str(k) if k else "off")
        self.ui.set_text("#top-p-out", fmt(p, 3) if p < 1 else "1 (off)")
        self.resample()

    def resample(self) -> None:
        if self.trace is None:
            return
        self.dist = distribution(self.trace.logits[-1], self.temperature, self.top_k, self.top_p)
        self.sampled = sample(self.dist, self.rng)
        self.focus = None
        self._update_namespace()
        self.render_sequence(), self.render_output(), self.render_overview()

    # ----- selection ----------------------------------------------------------------------
    def select_layer(self, layer: int) -> None:
        layer = int(layer)
        if not 0 <= layer < self.config.n_layer:
            raise ValueError(f"layer {layer + 1} does not exist (the model has {self.config.n_layer})")
        self.layer = layer
        self.ui.set_value("#layer-select", str(layer + 1))
        self.render_overview(), self.render_attention(), self.render_block()
        if self.qk is not None:  # issue 12
            self.qk.link(self.layer, self.head)

    def select_head(self, head: int) -> None:
        head = int(head)
        if not 0 <= head < self.config.n_head:
            raise ValueError(f"head {head + 1} does not exist (the model has {self.config.n_head})")
        self.head = head
        self.ui.set_value("#head-select", str(head + 1))
        self.render_attention()
        if self.qk is not None:  # issue 12
            self.qk.link(self.layer, self.head)

    def select_position(self, position: int) -> None:
        self.position = int(position)
        self.render_block()

    def focus_token(self, token_id: int) -> None:
        self.focus = int(token_id)
        self.render_output()

    # ----- rendering ------------------------------------------------------------------------
    async def render_all_async(self) -> None:
        """render_all, handing control back to the page after each view."""
        self.render_sequence()
        if self.trace is None:
            return
        for render in (self.render_overview, self.render_embedding, self.render_attention, self.render_block,
                       self.render_output):
            await asyncio.sleep(0)
            render()

    def render_all(self) -> None:
        self.render_sequence()
        if self.trace is None:
            return
        self.render_overview(), self.render_embedding(), self.render_attention(), self.render_block(), self.render_output()

    def render_sequence(self) -> None:
        candidate = None
        if self.sampled is not None and self.dist is not None:
            candidate = (int(self.sampled), self.vocab[self.sampled], float(self.dist.probs[self.sampled]))
        self.ui.show("sequence", View(controls.sequence(
            self.tokens, self.ids, self.config.n_positions, dropped=self.dropped, pending=self.pending,
            pending_prob=self.pending_prob, candidate=candidate, error=self.error, generating=self.generating)))

    def render_overview(self) -> None:
        if self.trace is not None:
            self.ui.show("overview", overview.render(self.trace, self.tokens, self.dist, self.vocab, self.layer))

    def render_embedding(self) -> None:
        if self.trace is not None:
            self.ui.show("embedding", embedding.render(self.trace, self.tokens))

    def _popover(self, pop_id: str, label: str, title: str, name: str, product: str) -> View:
        heat = self._weights.get(name)
        if heat is None:
            heat = self._weights[name] = weight_views.weight_heat(f"w.{name}", title, self.params[name])
        stored = f"stored as {self.model.checkpoint.scheme}, drawn dequantized to float32"
        return weight_views.popover(pop_id, label, title, heat, product, stored)

    def render_attention(self) -> None:
        if self.trace is None:
            return
        l, D, N = self.layer, self.config.n_embd, int(self.ids.size)
        pops = {
            "c_attn": self._popover(f"pop-{l}-c_attn", "Weights: c_attn", f"Layer {l + 1} attn.c_attn.weight (QKV projection)",
                                    f"h.{l}.attn.c_attn.weight",
                                    f"ln_1 [{N}×{D}] · Wᵀ [{D}×{3 * D}] + b → [{N}×{3 * D}]: rows 0–{D - 1} of W make the queries, "
                                    f"{D}–{2 * D - 1} the keys, {2 * D}–{3 * D - 1} the values; each is split into {self.config.n_head} heads"),
            "c_proj": self._popover(f"pop-{l}-attn_c_proj", "Weights: attn c_proj", f"Layer {l + 1} attn.c_proj.weight (output projection)",
                                    f"h.{l}.attn.c_proj.weight", f"attn_concat [{N}×{D}] · Wᵀ [{D}×{D}] + b → attn_proj [{N}×{D}]"),
        }
        self.ui.show("attention", attention.render(self.trace, self.tokens, self.layer, self.head,
                                                   derivation_open=self.deriv_open, stage=self.deriv_stage, popovers=pops))

    def render_block(self) -> None:
        if self.trace is None:
            return
        l, D, F, N = self.layer, self.config.n_embd, self.config.mlp_width, int(self.ids.size)
        pops = {
            "c_fc": self._popover(f"pop-{l}-c_fc", "Weights: c_fc", f"Layer {l + 1} mlp.c_fc.weight (MLP expansion)",
                                  f"h.{l}.mlp.c_fc.weight", f"ln_2 [{N}×{D}] · Wᵀ [{D}×{F}] + b → mlp_fc [{N}×{F}]"),
            "c_proj": self._popover(f"pop-{l}-mlp_c_proj", "Weights: mlp c_proj", f"Layer {l + 1} mlp.c_proj.weight (MLP projection)",
                                    f"h.{l}.mlp.c_proj.weight", f"mlp_gelu [{N}×{F}] · Wᵀ [{F}×{D}] + b → mlp_proj [{N}×{D}]"),
        }
        position = self.ids.size - 1 if self.position is None else self.position
        self.ui.show("block", block.render(self.trace, self.tokens, self.layer, position, pops))

    def render_output(self) -> None:
        if self.trace is None or self.dist is None:
            return
        D, V = self.config.n_embd, self.config.vocab_size
        focus = self.sampled if self.focus is None else self.focus
        pops = {"wte": self._popover("pop-wte", "Weights: wte (unembedding)", "wte.weight (token embedding, used as the unembedding)",
                                     "wte.weight", f"ln_f of the last token [1×{D}] · wteᵀ [{D}×{V}] → logits [1×{V}]")}
        self.ui.show("output", output.render(
            self.dist, self.sampled, self.vocab, focus=focus, final=self.trace["ln_f"][-1],
            unembed_row=self.params["wte.weight"][focus], last_token=self.tokens[-1], popovers=pops, config=self.config))

    # ----- the derivation player -------------------------------------------------------------
    def toggle_derivation(self, open_: bool | None = None) -> None:
        self.deriv_open = (not self.deriv_open) if open_ is None else bool(open_)
        reduced = self.ui.reduced_motion()
        if self.deriv_open:
            self.deriv_stage = len(attention.STAGES) if reduced else 0
        self.render_attention()
        if self.deriv_open and not reduced and self.deriv_stage < len(attention.STAGES):
            self.play()
        elif not self.deriv_open:
            self._cancel_player()

    def _show_stage(self) -> None:
        total = len(attention.STAGES)
        self.ui.set_attr("#derivation", "data-stage", str(self.deriv_stage))
        self.ui.set_text('[data-testid="stage-count"]', f"{self.deriv_stage} of {total} stages shown")

    def _set_playing(self, playing: bool) -> None:
        self.ui.set_attr("#deriv-play", "aria-pressed", "true" if playing else "false")
        self.ui.set_text("#deriv-play", "Pause" if playing else "Play")

    def play(self) -> None:
        if self._player is not None and not self._player.done():
            self._cancel_player()  # Play while playing pauses
            return
        if self.deriv_stage >= len(attention.STAGES):
            self.deriv_stage = 0
        self.deriv_stage += 1  # the next stage shows at once; the rest follow on a timer
        self._show_stage()
        if self.deriv_stage < len(attention.STAGES):
            self._set_playing(True)
            self._player = self._spawn(self._play_loop())

    async def _play_loop(self) -> None:
        try:
            while self.deriv_stage < len(attention.STAGES):
                await asyncio.sleep(STAGE_SECONDS)
                self.deriv_stage += 1
                self._show_stage()
        finally:
            self._set_playing(False)

    def _cancel_player(self) -> None:
        if self._player is not None and not self._player.done():
            self._player.cancel()
        self._player = None
        self._set_playing(False)

    async def _stop_player(self) -> None:
        self._cancel_player()

    def step(self) -> None:
        self._cancel_player()
        self.deriv_stage = min(self.deriv_stage + 1, len(attention.STAGES))
        self._show_stage()

    def replay(self) -> None:
        self._cancel_player()
        self.deriv_stage = 0
        self._show_stage()
        if self.ui.reduced_motion():
            self.deriv_stage = len(attention.STAGES)
            self._show_stage()
        else:
            self.play()

    def show_all_stages(self) -> None:
        self._cancel_player()
        self.deriv_stage = len(attention.STAGES)
        self._show_stage()

    # ----- the tour ---------------------------------------------------------------------------
    def tour_go(self, index: int | None) -> None:
        self.ui.hide_popovers()
        if index is None or not 0 <= index < len(tour.STEPS):
            self.tour_index = None
            self.ui.show("tour", View(""))
            self.ui.highlight(None)
            return
        self.tour_index = index
        step = tour.STEPS[index]
        for what in step.opens:
            if what == "derivation":
                if not self.deriv_open:
                    self.toggle_derivation(True)
            elif what.startswith("details:"):
                self.ui.open_details(what[len("details:"):])
            elif what.startswith("popover:first:"):
                self.ui.show_popover(what[len("popover:first:"):])
        self.ui.show("tour", View(tour.render(index)))
        self.ui.show_popover('[data-testid="tour"]')
        self.ui.highlight(step.target)
        self.ui.focus("#tour-next")

    # ----- console ------------------------------------------------------------------------------
    def _update_namespace(self) -> None:
        self.namespace.update(trace=self.trace, tokens=list(self.tokens), ids=self.ids, model=self.model,
                              dist=self.dist, np=np, explainer=self)

    async def console_run(self, code: str) -> str:
        if self.run_code is None:
            return ""
        self._update_namespace()
        try:
            value = await self.run_code(code, self.namespace)
            out = "" if value is None else _show(value)
        except Exception:  # noqa: BLE001  (a console shows errors, it does not raise them)
            lines = traceback.format_exc().strip().splitlines()
            out = "\n".join(lines[-4:])
        entry = f">>> {code}\n{out}".rstrip()
        self.console_log.append(entry)
        self.console_log = self.console_log[-40:]
        self.ui.set_text('[data-testid="console-output"]', "\n".join(self.console_log))
        return out

    def console_clear(self) -> None:
        self.console_log = []
        self.ui.set_text('[data-testid="console-output"]', "")

    # ----- events -------------------------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def handle(self, action: str, value: str = "", data: dict | None = None):
        """One user action from the page. Async work is scheduled; the task is returned."""
        data = data or {}
        if action.startswith("qk-") and self.qk is not None:  # issue 12
            return self.qk.handle(action, value, data)
        if action in ("run", "submit"):
            return self._spawn(self.submit(value))
        if action == "example":
            text = self.examples[int(data.get("index", 0))]
            self.ui.set_value("#prompt", text)
            return self._spawn(self.submit(text))
        if action == "generate":
            return self._spawn(self.generate_one())
        if action == "continuous":
            if self.generating:
                self.stop()
                return None
            return self._spawn(self.generate_continuously())
        if action == "stop":
            self.stop()
        elif action == "accept":
            self.accept()
        elif action == "discard":
            self.discard()
        elif action == "resample":
            self.resample()
        elif action == "temperature":
            self.set_sampling(temperature=value)
        elif action == "top-k":
            self.set_sampling(top_k=value or 0)
        elif action == "top-p":
            self.set_sampling(top_p=value)
        elif action == "layer":
            self.select_layer(int(data["layer"]) if "layer" in data else int(value) - 1)
        elif action == "head":
            self.select_head(int(data["head"]) if "head" in data else int(value) - 1)
        elif action == "block-token":
            self.select_position(int(value))
        elif action == "focus-token":
            self.focus_token(int(data["tokenId"]))
        elif action == "derivation":
            self.toggle_derivation()
        elif action == "deriv-play":
            self.play()
        elif action == "deriv-step":
            self.step()
        elif action == "deriv-replay":
            self.replay()
        elif action == "deriv-all":
            self.show_all_stages()
        elif action == "tour-start":
            self.tour_go(0)
        elif action == "tour-next":
            self.tour_go((self.tour_index or 0) + 1)
        elif action == "tour-prev":
            self.tour_go(max((self.tour_index or 0) - 1, 0))
        elif action == "tour-end":
            self.tour_go(None)
        elif action == "console-run":
            return self._spawn(self.console_run(value))
        elif action == "console-clear":
            self.console_clear()
        return None


def _show(value) -> str:
    """A console's answer: numpy arrays with their shape and dtype, the rest as repr."""
    if isinstance(value, np.ndarray):
        with np.printoptions(precision=4, threshold=200, edgeitems=3, linewidth=88):
            return f"array shape={value.shape} dtype={value.dtype}\n{value!r}"
    with np.printoptions(precision=4, threshold=200, edgeitems=3, linewidth=88):
        text = repr(value)
    return text if len(text) < 20000 else text[:20000] + " …"
