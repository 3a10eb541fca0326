"""Page: the DOM side of the app. Views hand it finished HTML strings, one write per view."""

from __future__ import annotations

from .boot import BACKENDS, STATES


class Page:
    """The page's root element, status/error panels (via web/shell.js) and view slots."""

    def __init__(self, document, shell):
        self.document = document
        self.root = document.documentElement
        self.shell = shell  # window.glassboxShell: one renderer of status and errors

    def set_state(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown page state {state!r}; expected one of {STATES}")
        self.shell.setState(state)

    def set_backend(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        self.root.dataset.backend = backend

    def progress(self, label: str, fraction: float | None = None, exact: bool = False) -> None:
        """The status line and bar; the bar only grows unless ``exact`` (one download's own
        progress, e.g. the model's bytes, may start again from 0)."""
        self.shell.progress(label, fraction, exact)

    def fail(self, message: str, details: str = "") -> None:
        self.shell.fail(message, details)

    def show(self, slot: str, html: str) -> None:
        """Replace the content of the element with data-slot=slot."""
        element = self.document.querySelector(f'[data-slot="{slot}"]')
        if element is None:
            raise ValueError(f"the page has no slot {slot!r}")
        element.innerHTML = html
