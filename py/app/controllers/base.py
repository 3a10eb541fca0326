"""The base of every view controller (see controllers/__init__.py)."""

from __future__ import annotations

import asyncio

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

    async def prepare(self) -> None:
        """Work ``view`` needs that can be done in steps, each with a turn for the page,
        before ``render_async`` calls it (issue 16); by default none."""

    def render(self) -> None:
        if self.slot is None:
            return
        view = self.view()
        if view is not None:
            self.ui.show(self.slot, view)

    async def render_async(self) -> None:
        """render, with a turn for the page between computing the view and drawing it: on a
        long input each half can take a good part of the 200 ms a task may last (issue 16)."""
        if self.slot is None or type(self).render is not Controller.render:
            self.render()  # a controller that draws more than its slot does it in one go
            return
        await self.render_slot_async()

    async def render_slot_async(self) -> None:
        """This view's slot in steps: prepare, the view, a turn, then its drawing."""
        await self.prepare()
        view = self.view()
        if view is not None:
            await asyncio.sleep(0)
            show = getattr(self.ui, "show_async", None)  # binding.Binding: in steps
            if show is not None:
                await show(self.slot, view)
            else:
                self.ui.show(self.slot, view)
