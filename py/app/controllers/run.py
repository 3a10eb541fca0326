"""Running the model: the text, Run, the examples, Generate (one, continuously), Stop,
Keep/Discard, the busy state, the progress line and the status line.

While a run is in flight ``busy`` is True, the page is ``data-state="busy"``, every action
that would start another run is disabled (``run-buttons``) and Stop is enabled. The progress
line (``run-progress``) says what runs ("Block 3 of 12…", and the token count while
generating continuously); the status line (``run-status``) always describes what is shown.
"""

from __future__ import annotations

import asyncio
import time
import traceback

import numpy as np

from glassbox.model import InputError

from .. import runner as runners
from ..protocol import Stopped
from ..views import controls
from ..views.common import View, token_label
from .base import Controller

MAX_CONTINUOUS = 64  # tokens per "Generate continuously" (Stop ends it sooner)

PROGRESS_EVERY_S = 0.25  # progress repaints (each yields to the browser) at most this often


class RunController(Controller):
    name = "run"
    slot = "sequence"
    actions = {
        "run": lambda c, value, data: c.ex.spawn(c.submit(value)),
        "submit": lambda c, value, data: c.ex.spawn(c.submit(value)),
        "example": lambda c, value, data: c.example(int(data.get("index", 0))),
        "generate": lambda c, value, data: c.ex.spawn(c.generate_one()),
        "continuous": lambda c, value, data: c.stop() if c.generating else c.ex.spawn(c.generate_continuously()),
        "stop": lambda c, value, data: c.stop(),
        "accept": lambda c, value, data: c.accept(),
        "discard": lambda c, value, data: c.discard(),
        "prompt-edit": lambda c, value, data: c.remember(value),
    }

    def __init__(self, explainer):
        super().__init__(explainer)
        self.pending = False
        self.pending_prob: float | None = None
        self.undo = None
        self.busy = False
        self.generating = False
        self.stop_requested = False
        self.made = 0  # tokens made so far by the continuous generation in flight
        self.runs = 0
        self.last_run_s = 0.0
        self.booting = False
        self.steps = 0  # progress steps heard (issue 16: one per block; tests count them)
        self._turn = 0  # which begin() the page's busy state belongs to (Stop ends it at once)
        self._painted = -1e9  # when progress() last repainted (time.perf_counter)

    # ----- state shown on the page ----------------------------------------------------------
    async def progress(self, label: str, fraction: float) -> None:
        """The runner's step hook: what runs now, then a turn for the page. Repainted when a run
        starts and then at most once per PROGRESS_EVERY_S (issue 15: a repaint per layer cost
        ~0.4 s per short run); long runs still show each block as it comes."""
        self.steps += 1
        now = time.perf_counter()
        if now - self._painted < PROGRESS_EVERY_S:
            return
        self._painted = now
        what = f"{label}…"
        if self.generating:
            what = f"Generating continuously: {self.made} tokens so far. {what}"
        self.ui.set_text("run-progress", what)
        await asyncio.sleep(0)

    def status(self, text: str) -> None:
        self.ui.set_text("run-status", text)

    def ran_status(self) -> str:
        ex = self.ex
        return (f"Ran {ex.config.n_layer} blocks on {ex.ids.size} tokens in {self.last_run_s * 1000:.0f} ms "
                f"({ex.runner_name}).")

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.ui.set_prop("run-buttons", "disabled", busy)
        self.ui.set_prop("stop", "disabled", not busy)
        if busy:
            self.ui.set_text("run-progress", f"Running the model ({self.ex.runner_name})…")
        else:
            self.ui.set_text("run-progress", "")
        if not self.booting:
            self.ui.set_state("busy" if busy else "ready")

    def begin(self) -> bool:
        if self.busy:
            return False
        self._turn += 1
        self._set_busy(True)
        return True

    def end(self, turn: int | None = None) -> None:
        """Leave the busy state, unless Stop already did for this ``turn`` (issue 16)."""
        if turn is None or turn == self._turn:
            self._set_busy(False)

    async def timed(self, coro):
        self.runs += 1
        started = time.perf_counter()
        self._painted = -1e9  # the run's first step repaints the progress line
        result = await coro
        self.last_run_s = time.perf_counter() - started
        return result

    def fail(self, exc: BaseException) -> None:
        """Show a failure beside the input; input mistakes as themselves, anything else with its type."""
        ex = self.ex
        if isinstance(exc, InputError):
            ex.error = str(exc)
        elif isinstance(exc, ValueError):
            ex.error = f"The model cannot run this: {exc}"
        else:
            ex.error = f"Something went wrong: {type(exc).__name__}: {exc}"
            ex.console.log(traceback.format_exc())
        self.status(f"Not run: {ex.error}" if ex.trace is None else
                    f"The last run failed; showing the {ex.ids.size} tokens from before.")
        self.render()

    def view(self):
        ex = self.ex
        candidate = None
        if ex.sampled is not None and ex.dist is not None:
            candidate = (int(ex.sampled), ex.vocab[ex.sampled], float(ex.dist.probs[ex.sampled]))
        return View(controls.sequence(
            ex.tokens, ex.ids, ex.config.n_positions, dropped=ex.dropped, pending=self.pending,
            pending_prob=self.pending_prob, candidate=candidate, error=ex.error, generating=self.generating,
            token_bytes=[ex.model.tokenizer.token_bytes(i) for i in ex.ids]))

    # ----- actions ---------------------------------------------------------------------------
    def remember(self, text: str) -> None:
        """The prompt as typed: kept on this device so a reload shows it again."""
        self.ui.store("prompt", text)

    def example(self, index: int):
        text = self.ex.examples[index]
        self.ui.set_value("prompt", text)
        return self.ex.spawn(self.submit(text))

    async def submit(self, text: str | None = None) -> None:
        """Tokenize ``text`` (or the current text) and run the model on it."""
        if not self.begin():
            return
        ex, turn = self.ex, self._turn
        try:
            ex.attention.stop_player()
            text = ex.text if text is None else text
            ex.text = text
            self.remember(text)
            prompt = ex.model.prompt(text)
            trace = await self.timed(ex.runner.run(prompt.ids))
            await ex.hold_layer(trace)  # issue 16: a partial trace holds the layer shown
            ex.dropped = prompt.dropped
            ex.set_trace(trace)
            self.pending, self.undo, self.pending_prob = False, None, None
            ex.error = ""
            ex.block.position = None
            await ex.after_run()
            self.status(self.ran_status())
        except Stopped:
            pass  # issue 16: Stop has already put the page back (stop below)
        except Exception as exc:  # noqa: BLE001  (shown on the page; the app stays usable)
            self.fail(exc)
        finally:
            self.end(turn)

    async def _append(self, token: int) -> None:
        """Run the model on the sequence + ``token`` (KV cache when the runner has one)."""
        ex = self.ex
        if hasattr(ex.runner, "extend") and ex.trace is not None:
            step = await self.timed(ex.runner.extend(np.array([token], dtype=np.int64)))
            trace = runners.append_rows(ex.trace, step)
        else:
            trace = await self.timed(ex.runner.run(np.append(ex.ids, np.int64(token))))
        await ex.hold_layer(trace)  # issue 16: the reader may have picked another layer meanwhile
        ex.set_trace(trace)

    async def generate(self, light: bool = False) -> bool:
        """Append the sampled token, run, and mark it pending (keep or discard). True if added."""
        ex = self.ex
        if ex.trace is None or ex.sampled is None:
            return False
        if ex.ids.size >= ex.config.n_positions:
            ex.error = (f"The context is full ({ex.config.n_positions} tokens): the model cannot see more. "
                        "Shorten the text to generate further.")
            self.render()
            return False
        if self.pending:
            self.accept(render=False)
        token, prob = int(ex.sampled), float(ex.dist.probs[ex.sampled])
        undo = (ex.trace, ex.dist, ex.sampled, ex.text, ex.block.position)
        await self._append(token)
        self.undo, self.pending, self.pending_prob = undo, True, prob
        ex.error = ""
        await ex.after_run(light)
        self.status(f"Added ‘{token_label(ex.tokens[-1])}’ (p = {prob:.3g}). " + self.ran_status())
        return True

    async def generate_one(self) -> None:
        if not self.begin():
            return
        turn = self._turn
        try:
            self.ex.attention.stop_player()
            await self.generate()
        except Stopped:
            pass
        except Exception as exc:  # noqa: BLE001
            self.fail(exc)
        finally:
            self.end(turn)

    async def generate_continuously(self, limit: int = MAX_CONTINUOUS) -> None:
        """Generate and keep tokens until Stop, the context is full or ``limit`` tokens."""
        if not self.begin():
            return
        ex, turn = self.ex, self._turn
        self.generating, self.stop_requested, self.made = True, False, 0
        self.ui.set_attr("continuous", "aria-pressed", "true")
        try:
            ex.attention.stop_player()
            for _ in range(limit):
                self.ui.set_text("run-progress", f"Generating continuously: {self.made} of up to {limit} tokens "
                                                 f"so far…")
                if self.stop_requested or not await self.generate(light=True):
                    break
                self.made += 1
                self.accept(render=False)
                self.render()
                await asyncio.sleep(0)
        except Stopped:
            pass
        except Exception as exc:  # noqa: BLE001
            self.fail(exc)
        finally:
            if turn == self._turn:  # not ended by Stop already
                self.generating = False
                self.ui.set_attr("continuous", "aria-pressed", "false")
            try:
                # After a Stop (turn + 1) the views are drawn for the kept tokens; once a new run
                # has begun (turn + 2 or more) that run draws them itself.
                if ex.trace is not None and self._turn <= turn + 1:
                    await ex.render_all_async()
                    # Drawn again: the counter tests wait on moves on, also after a Stop that
                    # dropped the step in flight (issue 16).
                    self.ui.set_attr("explainer", "data-runs", str(self.runs))
                    self.status(f"Generated {self.made} token{'s' * (self.made != 1)}"
                                f"{' (stopped)' if self.stop_requested else ''}; "
                                f"showing {ex.ids.size} tokens. " + self.ran_status())
            finally:
                self.end(turn)

    def stop(self) -> None:
        """Stop: continuous generation ends after this token; with a runner that can abandon a
        request (the model worker, issue 16) the run in flight is dropped and the page is ready
        at once, still showing the last finished trace."""
        self.stop_requested = True
        abandon = getattr(self.ex.runner, "stop", None)
        if not self.busy or abandon is None:
            return
        abandon()
        self._turn += 1  # the stopped run's end() no longer applies
        if self.generating:
            self.generating = False
            self.ui.set_attr("continuous", "aria-pressed", "false")
        self._set_busy(False)
        self.status(f"Stopped: showing {self.ex.ids.size} tokens; the run in flight was dropped.")

    def accept(self, render: bool = True) -> None:
        """Keep the generated token: it becomes part of the text."""
        if not self.pending:
            return
        ex = self.ex
        self.pending, self.undo, self.pending_prob = False, None, None
        ex.text = ex.model.tokenizer.decode(ex.ids)
        self.ui.set_value("prompt", ex.text)
        self.remember(ex.text)
        if render:
            self.render()
            self.status(f"Kept it: showing {ex.ids.size} tokens.")

    def discard(self) -> None:
        """Drop the generated token and go back to the state before it (no model run)."""
        if not self.pending or self.undo is None or self.busy:
            return
        ex = self.ex
        trace, dist, sampled, text, position = self.undo
        dropped = token_label(ex.tokens[-1])
        if hasattr(ex.runner, "truncate"):
            ex.runner.truncate(int(trace.ids.size))
        ex.set_trace(trace)
        ex.dist, ex.sampled, ex.text, ex.block.position = dist, sampled, text, position
        self.pending, self.undo, self.pending_prob = False, None, None
        ex.output.focus = None
        ex.update_namespace()
        ex.render_all()
        self.status(f"Discarded ‘{dropped}’: showing the {ex.ids.size} tokens from before it (the model did not run).")
