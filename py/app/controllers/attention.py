"""The attention view's controller: the head, and the derivation player (eight stages shown
one after another; Step, Play/Pause, Replay, Show all; reduced motion shows them all)."""

from __future__ import annotations

import asyncio

from ..attention_lens import ACTIONS as LENS_ACTIONS, AttentionLens
from ..views import attention
from .base import Controller

STAGE_SECONDS = 1.6  # derivation playback: time per stage


class AttentionController(Controller):
    name = "attention"
    slot = "attention"
    actions = {
        "head": lambda c, value, data: c.select_head(int(data["head"]) if "head" in data else int(value) - 1),
        "derivation": lambda c, value, data: c.toggle_derivation(),
        "deriv-play": lambda c, value, data: c.play(),
        "deriv-step": lambda c, value, data: c.step(),
        "deriv-replay": lambda c, value, data: c.replay(),
        "deriv-all": lambda c, value, data: c.show_all_stages(),
        # issue 10 item 2: colour scale, zoomed window, lines view (state in attention_lens.py)
        **{name: (lambda c, value, data, name=name: c.lens_action(name, value, data)) for name in LENS_ACTIONS},
    }

    def __init__(self, explainer):
        super().__init__(explainer)
        self.head = 0
        self.deriv_open = False
        self.deriv_stage = 0
        self._player: asyncio.Task | None = None
        self.lens = AttentionLens()  # issue 10 item 2
        self._thumbs: tuple | None = None  # (trace, layer, scale, the heads' thumbnails)

    async def prepare(self) -> None:
        """issue 16: the heads' thumbnails, one head per turn for the page (on a 256-token input
        they were about half of the view's task), kept for ``view`` while trace, layer and
        colour scale stay the same."""
        ex = self.ex
        if ex.trace is None or self._thumbs_for() is not None:
            return
        trace, layer, scale = ex.trace, ex.layer, self.lens.scale
        try:
            steps = attention.head_thumbs(trace, ex.tokens, layer, scale)
            made = []
            for heat in steps:
                made.append(heat)
                await asyncio.sleep(0)
        except (KeyError, ValueError):
            return  # a layer not fetched yet or a bad input: view() says what is wrong
        self._thumbs = (trace, layer, scale, made)

    def _thumbs_for(self) -> list | None:
        """The kept thumbnails if they are the current trace's, layer's and scale's."""
        kept = self._thumbs
        ex = self.ex
        if kept is not None and kept[0] is ex.trace and kept[1] == ex.layer and kept[2] == self.lens.scale:
            return kept[3]
        return None

    def select_head(self, head: int) -> None:
        head = int(head)
        if not 0 <= head < self.ex.config.n_head:
            raise ValueError(f"head {head + 1} does not exist (the model has {self.ex.config.n_head})")
        self.head = head
        self.ui.set_value("head-select", str(head + 1))
        self.render()
        self.ex.link_qk()

    def view(self):
        ex = self.ex
        if ex.trace is None:
            return None
        l, D, N = ex.layer, ex.config.n_embd, int(ex.ids.size)
        pops = {
            "c_attn": ex.popover(f"pop-{l}-c_attn", "Weights: c_attn", f"Layer {l + 1} attn.c_attn.weight (QKV projection)",
                                 f"h.{l}.attn.c_attn.weight",
                                 f"ln_1 [{N}×{D}] · Wᵀ [{D}×{3 * D}] + b → [{N}×{3 * D}]: rows 0–{D - 1} of W make the queries, "
                                 f"{D}–{2 * D - 1} the keys, {2 * D}–{3 * D - 1} the values; each is split into {ex.config.n_head} heads"),
            "c_proj": ex.popover(f"pop-{l}-attn_c_proj", "Weights: attn c_proj", f"Layer {l + 1} attn.c_proj.weight (output projection)",
                                 f"h.{l}.attn.c_proj.weight", f"attn_concat [{N}×{D}] · Wᵀ [{D}×{D}] + b → attn_proj [{N}×{D}]"),
        }
        return attention.render(ex.trace, ex.tokens, l, self.head, derivation_open=self.deriv_open,
                                stage=self.deriv_stage, popovers=pops, lens=self.lens,
                                thumbs=self._thumbs_for()) + ex.factors.strip(l + 1)  # + issue 13

    def lens_action(self, action: str, value: str, data: dict) -> None:
        """issue 10 item 2: a lens action, then the part of the view it changed."""
        ex = self.ex
        if ex.trace is None:
            return
        part = self.lens.handle(action, value, data, int(ex.ids.size), ex.config.n_head, self.head)
        if part == "attention":
            self.render()
        elif part == "attention-matrix":
            self.ui.show(part, attention.window_view(ex.trace[f"h.{ex.layer}.att"][self.head], ex.tokens, ex.layer,
                                                      self.head, ex.trace.start, self.lens.origin, self.lens.scale))
        elif part == "bertviz":
            self.ui.show(part, attention.lines_view(ex.trace[f"h.{ex.layer}.att"], ex.tokens, ex.layer, self.head,
                                                     heads=self.lens.visible_heads(self.head), query=self.lens.query,
                                                     scale=self.lens.scale, start=ex.trace.start))

    # ----- the derivation player -------------------------------------------------------------
    @property
    def stages(self) -> int:
        return len(attention.STAGES)

    def toggle_derivation(self, open_: bool | None = None) -> None:
        self.deriv_open = (not self.deriv_open) if open_ is None else bool(open_)
        reduced = self.ui.reduced_motion()
        if self.deriv_open:
            self.deriv_stage = self.stages if reduced else 0
        self.render()
        if self.deriv_open and not reduced and self.deriv_stage < self.stages:
            self.play()
        elif not self.deriv_open:
            self.stop_player()

    def _show_stage(self) -> None:
        self.ui.set_attr("derivation", "data-stage", str(self.deriv_stage))
        self.ui.set_text("stage-count", f"{self.deriv_stage} of {self.stages} stages shown")
        if 0 < self.deriv_stage and (self.deriv_stage < self.stages or self._player is not None):  # issue 10 item 3: follow
            self.ui.reveal(f"testid:stage-{attention.STAGES[self.deriv_stage - 1][0]}")

    def _set_playing(self, playing: bool) -> None:
        self.ui.set_attr("deriv-play", "aria-pressed", "true" if playing else "false")
        self.ui.set_text("deriv-play", "Pause" if playing else "Play")

    def play(self) -> None:
        if self._player is not None and not self._player.done():
            self.stop_player()  # Play while playing pauses
            return
        if self.deriv_stage >= self.stages:
            self.deriv_stage = 0
        self.deriv_stage += 1  # the next stage shows at once; the rest follow on a timer
        self._show_stage()
        if self.deriv_stage < self.stages:
            self._set_playing(True)
            self._player = self.ex.spawn(self._play_loop())

    async def _play_loop(self) -> None:
        try:
            while self.deriv_stage < self.stages:
                await asyncio.sleep(STAGE_SECONDS)
                self.deriv_stage += 1
                self._show_stage()
        finally:
            self._set_playing(False)

    def stop_player(self) -> None:
        if self._player is not None and not self._player.done():
            self._player.cancel()
        self._player = None
        self._set_playing(False)

    def step(self) -> None:
        self.stop_player()
        self.deriv_stage = min(self.deriv_stage + 1, self.stages)
        self._show_stage()

    def replay(self) -> None:
        self.stop_player()
        self.deriv_stage = 0
        self._show_stage()
        if self.ui.reduced_motion():
            self.deriv_stage = self.stages
            self._show_stage()
        else:
            self.play()

    def show_all_stages(self) -> None:
        self.stop_player()
        self.deriv_stage = self.stages
        self._show_stage()
