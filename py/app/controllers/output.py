"""The output view's controller: probabilities, the walk-through's token."""

from __future__ import annotations

from ..views import output
from .base import Controller


class OutputController(Controller):
    name = "output"
    slot = "output"
    actions = {"focus-token": lambda c, value, data: c.focus_token(int(data["tokenId"]))}

    def __init__(self, explainer):
        super().__init__(explainer)
        self.focus: int | None = None  # the walk-through's token; None = the sampled one

    def focus_token(self, token_id: int) -> None:
        self.focus = int(token_id)
        self.render()

    def view(self):
        ex = self.ex
        if ex.trace is None or ex.dist is None:
            return None
        D, V = ex.config.n_embd, ex.config.vocab_size
        focus = ex.sampled if self.focus is None else self.focus
        pops = {"wte": ex.popover("pop-wte", "Weights: wte (unembedding)", "wte.weight (token embedding, used as the unembedding)",
                                  "wte.weight", f"ln_f of the last token [1×{D}] · wteᵀ [{D}×{V}] → logits [1×{V}]")}
        return output.render(ex.dist, ex.sampled, ex.vocab, focus=focus, final=ex.trace["ln_f"][-1],
                             unembed_row=ex.model.checkpoint.row("wte.weight", focus), last_token=ex.tokens[-1], popovers=pops,
                             config=ex.config)
