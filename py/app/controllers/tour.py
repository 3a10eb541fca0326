"""The guided tour's controller: which step is shown; each step opens what it explains
(a detailed view, the derivation, a <details>, a weight popover) and points at it."""

from __future__ import annotations

from ..views import tour
from ..views.common import View
from .base import Controller


class TourController(Controller):
    name = "tour"
    slot = "tour"
    actions = {
        "tour-start": lambda c, value, data: c.go(0),
        "tour-next": lambda c, value, data: c.go((c.index or 0) + 1),
        "tour-prev": lambda c, value, data: c.go(max((c.index or 0) - 1, 0)),
        "tour-end": lambda c, value, data: c.go(None),
    }

    def __init__(self, explainer):
        super().__init__(explainer)
        self.index: int | None = None

    def go(self, index: int | None) -> None:
        ex = self.ex
        self.ui.hide_popovers()
        if index is None or not 0 <= index < len(tour.STEPS):
            self.index = None
            self.ui.show("tour", View(""))
            self.ui.highlight(None)
            return
        self.index = index
        step = tour.STEPS[index]
        for what in step.opens:
            kind, _, arg = what.partition(":")
            if kind == "view":
                ex.map.open_view(arg)
            elif kind == "derivation":
                if not ex.attention.deriv_open:
                    ex.attention.toggle_derivation(True)
            elif kind == "details":
                self.ui.open_details(f"anchor:{arg}")
            elif kind == "popover":
                self.ui.show_popover(f"first-popover:{arg}")
        self.ui.show("tour", View(tour.render(index, config=ex.config, n=int(ex.ids.size))))
        self.ui.show_popover("tour")
        self.ui.highlight(step.target)
        self.ui.focus("tour-next")
