"""The embedding view's controller: it follows the trace, no actions of its own."""

from __future__ import annotations

from ..views import embedding
from .base import Controller


class EmbeddingController(Controller):
    name = "embedding"
    slot = "embedding"

    def view(self):
        ex = self.ex
        if ex.trace is None:
            return None
        token_bytes = [ex.model.tokenizer.token_bytes(i) for i in ex.ids]  # issue 10 item 7: group split characters
        return embedding.render(ex.trace, ex.tokens, token_bytes) + ex.factors.strip(0)  # + issue 13: factors of stream 0
