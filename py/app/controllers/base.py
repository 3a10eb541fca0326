"""The base of every view controller (see controllers/__init__.py)."""

from __future__ import annotations

from typing import Callable

Action = Callable[..., object]  # (controller, value: str, data: dict) -> None or an asyncio.Task


class Controller:
    """One view's state and actions.

    ``name``: the key in ``explainer.parts`` (and in the explainer's attributes);
    ``slot``: the page slot its view fills (None when it draws no view of its own);
    ``actions``: page action -> function(controller, value, data).
    """

    name = ""
    slot: str | None = None
    actions: dict[str, Action] = {}

    def __init__(self, explainer):
        self.ex = explainer
        self.ui = explainer.ui

    def view(self):
        """This view's View for the current trace, or None when there is nothing to draw."""
        return None

    def render(self) -> None:
        if self.slot is None:
            return
        view = self.view()
        if view is not None:
            self.ui.show(self.slot, view)
