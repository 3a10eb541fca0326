"""The block view's controller (layer norm, MLP, residuals): the layer, the token shown."""

from __future__ import annotations

from ..views import block
from .base import Controller


class BlockController(Controller):
    name = "block"
    slot = "block"
    actions = {"block-token": lambda c, value, data: c.select_position(int(value))}

    def __init__(self, explainer):
        super().__init__(explainer)
        self.position: int | None = None  # the token shown; None = the last one

    def select_position(self, position: int) -> None:
        self.position = int(position)
        self.render()

    def view(self):
        ex = self.ex
        if ex.trace is None:
            return None
        l, D, F, N = ex.layer, ex.config.n_embd, ex.config.mlp_width, int(ex.ids.size)
        pops = {
            "c_fc": ex.popover(f"pop-{l}-c_fc", "Weights: c_fc", f"Layer {l + 1} mlp.c_fc.weight (MLP expansion)",
                               f"h.{l}.mlp.c_fc.weight", f"ln_2 [{N}×{D}] · Wᵀ [{D}×{F}] + b → mlp_fc [{N}×{F}]"),
            "c_proj": ex.popover(f"pop-{l}-mlp_c_proj", "Weights: mlp c_proj", f"Layer {l + 1} mlp.c_proj.weight (MLP projection)",
                                 f"h.{l}.mlp.c_proj.weight", f"mlp_gelu [{N}×{F}] · Wᵀ [{F}×{D}] + b → mlp_proj [{N}×{D}]"),
        }
        if self.position is not None and self.position >= N:
            self.position = None
        position = N - 1 if self.position is None else self.position
        return block.render(ex.trace, ex.tokens, l, position, pops) + ex.factors.strip(l + 1)  # + issue 13
