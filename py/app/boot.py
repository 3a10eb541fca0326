"""Boot: the start-up sequence (numpy, the WebGPU probe, the model) and the page state it
leaves; it holds what the boot found (adapter, backend, versions, the explainer). It talks
to the page only through a Page-like object."""

from __future__ import annotations

import traceback
from typing import Awaitable, Callable

from .views import adapter as adapter_view
from .webgpu import AdapterInfo

STATES = ("loading", "busy", "ready", "error")
BACKENDS = ("webgpu", "numpy")


class Boot:
    """Boots Glassbox: imports numpy and the core package, picks the compute backend.

    ``page`` offers set_state, set_backend, progress, fail and show (see dom.Page);
    ``probe`` is an async callable returning the WebGPU AdapterInfo, or None without one;
    ``start``, if given, is awaited with the app as the last boot step before 'ready' (main.py
    loads the model and the explainer there).
    """

    def __init__(self, page, probe: Callable[[], Awaitable[AdapterInfo | None]],
                 start: Callable[["Boot"], Awaitable[None]] | None = None):
        self.page = page
        self.probe = probe
        self.start = start
        self.adapter: AdapterInfo | None = None
        self.backend: str | None = None
        self.versions: dict[str, str] = {}
        self.kernel_note = ""  # issue 15: how numpy multiplies (app/kernel.py), set by main.py
        self.kernel_task = None  # p15: the kernel's load after the first run, where it is deferred
        self.worker = None  # issue 16: the model worker (app/worker_client.ModelWorker), set by main.py
        self.worker_note = ""  # issue 16: why the model runs on the main thread, when it does

    async def boot(self) -> bool:
        """Run the start-up steps; True when the page reached 'ready', False on error."""
        try:
            self.page.progress("Importing numpy and Glassbox", 0.92)
            import numpy
            import glassbox

            self.versions = {"numpy": numpy.__version__, "glassbox": glassbox.__version__}
            self.page.progress("Looking for a WebGPU adapter", 0.96)
            self.adapter = await self.probe()
            self.backend = "webgpu" if self.adapter is not None else "numpy"
            self.page.set_backend(self.backend)
            self.page.show("app", adapter_view.render(self.adapter, self.backend, self.versions))
            if self.start is not None:
                await self.start(self)
        except Exception as exc:  # noqa: BLE001  (any boot failure must reach the page)
            self.page.fail(f"Start-up failed: {type(exc).__name__}: {exc}", traceback.format_exc())
            return False
        self.page.progress("Ready", 1.0)
        self.page.set_state("ready")
        return True

    def set_backend(self, backend: str, reason: str = "", cause: str = "", switch: str = "") -> None:
        """The backend that runs the model now, and why in words (the backend card's
        data-testid="backend-reason"); the WebGPU runner calls it whenever that changes.
        ``switch``: the other backend the reader may pick (issue 15, app/gpu_light.py)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        self.backend = backend
        if self.worker_note and reason:  # issue 16: no worker, and why
            reason = f"{reason} {self.worker_note}"
        self.page.set_backend(backend)
        self.page.show("app", adapter_view.render(self.adapter, backend, self.versions, reason, cause, switch))
