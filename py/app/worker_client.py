"""The page's side of the model worker (issue 16): start web/model-worker.mjs, hand it the
model, and give the explainer a protocol.WorkerRunner that talks to it.

    worker = ModelWorker.start()                       # early: the worker boots while the page loads
    runner = await worker.attach(app, explainer, url, light)   # None: the page keeps its own runner

Each message is ``{head: JSON text, buffers: [ArrayBuffer, ...]}`` (protocol.py); tensors
come back as transferred ArrayBuffers, copied once into numpy arrays here. When the worker
cannot start (no module workers, a boot failure, a model that does not load there), ``attach``
returns None and the page's own main-thread runner computes, saying why in the backend reason.
"""

from __future__ import annotations

import asyncio

import js
from pyodide.ffi import create_proxy, to_js

from .protocol import WorkerRunner
from .transfer import incoming, outgoing

WORKER_URL = "./web/model-worker.mjs"
BOOT_TIMEOUT_S = 120.0  # booting a second Pyodide and loading the model there


class ModelWorker:
    def __init__(self, worker=None, error: str = ""):
        self.worker = worker
        self.error = error
        self.runner: WorkerRunner | None = None
        self.booted_ms: float | None = None
        self.ready: dict | None = None
        self._waiting: dict[str, asyncio.Future] = {}
        self._proxy = None
        self._early: list = []
        self.on_loading = None  # issue 16 (h16): the worker's model-load progress -> the page
        self.loading: dict | None = None  # its last "loading" message
        if worker is not None:
            self._proxy = create_proxy(self._on_message)
            worker.onmessage = self._proxy
            worker.onerror = create_proxy(self._on_error)

    @classmethod
    def start(cls, url: str = WORKER_URL) -> "ModelWorker":
        """The worker web/worker-start.js started as the page loaded (with the messages it sent
        since), else a new one (it boots Pyodide in parallel with the page's model download)."""
        early = getattr(js.window, "glassboxModelWorker", None)
        if early is not None:
            js.window.glassboxModelWorker = None
            if getattr(early, "worker", None) is None:
                return cls(error=f"the browser refused a module worker ({early.error})")
            adopted = cls(early.worker)
            for event in early.early:
                (adopted._on_error if getattr(event, "type", "") == "error" else adopted._on_message)(event)
            return adopted
        if getattr(js, "Worker", None) is None:
            return cls(error="this browser has no Web Workers")
        try:
            options = to_js({"type": "module", "name": "glassbox-model"}, dict_converter=js.Object.fromEntries)
            return cls(js.Worker.new(url, options))
        except Exception as exc:  # noqa: BLE001  (no module workers)
            return cls(error=f"the browser refused a module worker ({exc})")

    # ----- messages -------------------------------------------------------------------------
    def post(self, head: dict, arrays) -> None:
        self.worker.postMessage(*outgoing(head, arrays))

    def _on_message(self, event) -> None:
        head, arrays = incoming(event.data)
        op = head.get("op")
        if op in ("reply", "progress", "status"):
            if self.runner is not None:
                self.runner.receive(head, arrays)
            else:
                self._early.append((head, arrays))
            return
        if op == "booted":
            self.booted_ms = head["ms"]
        if op == "loading":  # issue 16 (h16)
            self.loading = head
            if self.on_loading is not None:
                self.on_loading(head)
            return
        waiting = self._waiting.pop(op, None)
        if op in ("boot-failed", "init-failed"):
            self.error = head.get("error", op)
            for future in list(self._waiting.values()) + ([waiting] if waiting else []):
                if not future.done():
                    future.set_exception(RuntimeError(self.error))
            self._waiting.clear()
        elif waiting is not None and not waiting.done():
            waiting.set_result(head)

    def _on_error(self, event) -> None:
        self.error = f"the worker failed: {getattr(event, 'message', '') or 'a script error'}"
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError(self.error))
        self._waiting.clear()

    def _expect(self, op: str) -> asyncio.Future:
        future = asyncio.get_event_loop().create_future()
        self._waiting[op] = future
        return future

    def fallback_note(self) -> str:
        """The sentence the backend reason adds when the page computes on its own thread."""
        why = self.error or "the worker did not start"
        return f"The model runs on the page's main thread ({why})."

    # ----- start-up --------------------------------------------------------------------------
    async def attach(self, app, explainer, model_url: str, light: bool, search: str, remembered: str | None = None,
                     timeout: float = BOOT_TIMEOUT_S, hub_manifest: str | None = None) -> WorkerRunner | None:
        """Hand the model to the worker and put a WorkerRunner in front of the explainer;
        None (and the page's runner stays) when the worker cannot run it. ``hub_manifest``
        (issue 16, h16): a Hub model's manifest as the page verified it; the worker reads the
        converted folder ``model_url`` from this browser's model store and checks it against
        that (app/hub_worker.py)."""
        if self.worker is None or self.error:
            return None
        booted = None if self.booted_ms is not None else self._expect("booted")
        ready = self._expect("ready")

        def show(head: dict) -> None:
            # issue 15 (p15): the card offers the other backend where the worker can run it
            from .gpu_light import switch_target
            from .gpu_runner import Status

            status = Status(head["backend"], head["cause"], head["reason"])
            app.set_backend(status.backend, status.reason, status.cause,
                            switch=switch_target(status, app.adapter is not None or bool(head.get("parked"))))

        runner = WorkerRunner(self.post, explainer.config, step=explainer.run.progress, on_status=show)
        self.runner = runner
        try:
            if booted is not None:
                await asyncio.wait_for(booted, timeout)
            # issue 16 (h16): "hub_manifest", and the worker's load progress on the page's bar
            self.on_loading = lambda head: app.page.progress(head["label"], head["fraction"], exact=True)
            self.post({"op": "init", "model_url": model_url, "root": str(js.URL.new("./", js.location.href).href),
                       "light": bool(light), "search": search, "remembered": remembered,
                       "hub_manifest": hub_manifest}, [])
            self.ready = await asyncio.wait_for(ready, timeout)
        except Exception as exc:  # noqa: BLE001  (boot failure, timeout: the page computes)
            self.on_loading = None
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            self.runner = None
            self.worker.terminate()
            return None
        self.on_loading = None
        for head, arrays in self._early:
            runner.receive(head, arrays)
        self._early.clear()
        explainer.runner = runner
        return runner
