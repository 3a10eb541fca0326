"""AttentionLens: the reader's choices in the attention view (issue 10), state plus actions.

No ``js``, no selectors: ``handle`` takes an action from the page and says which part of the
attention view to draw again ("attention": all of it, "attention-matrix": the whole matrix and
its zoomed window, "bertviz": the lines view), or None when nothing changed.

* colour scale of the matrices and lines: ``attention.SCALES`` (linear, per row, log);
* the zoomed window's origin (first query, first key), None = the last positions; a tap or
  click on the whole matrix moves it onto that cell;
* the lines view's visible heads (None = the selected head only; picking another head adds it
  to the toggled set, so the lines always start from the head being explained) and its query
  (None = the default: every query for short inputs, else the last token).
"""

from __future__ import annotations

from dataclasses import dataclass

from .views import attention

ACTIONS = ("attn-scale", "attn-select", "bv-head", "bv-token")


@dataclass
class AttentionLens:
    scale: str = "linear"
    origin: tuple[int, int] | None = None
    selected: tuple[int, int] | None = None  # (query, key) indices last picked on the matrix
    heads: frozenset[int] | None = None
    query: int | None = None
    toggled_at: int | None = None  # the selected head when heads were last toggled

    def visible_heads(self, head: int) -> frozenset[int] | None:
        """The lines view's heads when ``head`` is the selected one (None: just that head)."""
        if self.heads is None:
            return None
        return self.heads if head == self.toggled_at else self.heads | {head}

    def handle(self, action: str, value: str, data: dict, n: int, n_head: int, head: int) -> str | None:
        """One action; ``n`` tokens in the trace, ``n_head`` heads, ``head`` the selected one."""
        if action == "attn-scale":
            if value not in attention.SCALES:
                raise ValueError(f"unknown colour scale {value!r}; expected one of {tuple(attention.SCALES)}")
            self.scale = value
            return "attention"
        if action == "attn-select":
            q, k = (int(x) for x in value.split(","))
            if not (0 <= q < n and 0 <= k < n):
                raise ValueError(f"cell ({q}, {k}) is outside the {n}×{n} matrix")
            self.selected = (q, k)
            origin = attention.window_for(n, q, k, self.origin)
            if origin == attention.window_origin(n, self.origin):
                return None
            self.origin = origin
            return "attention-matrix"
        if action == "bv-head":
            h = int(data["head"])
            if not 0 <= h < n_head:
                raise ValueError(f"head {h + 1} does not exist (the model has {n_head})")
            shown = set(self.visible_heads(head) or {head})
            shown ^= {h}
            self.heads, self.toggled_at = frozenset(shown), head
            return "bertviz"
        if action == "bv-token":
            i = int(data.get("index", -1))
            self.query = i if 0 <= i < n else None
            return "bertviz"
        raise ValueError(f"unknown attention action {action!r}")
