"""The model worker's Python (issue 16): web/model-worker.mjs boots Pyodide and calls ``serve``.

It waits for the page's ``init`` (the model folder, light or full mode, the address's query
string), loads the model (the page has just stored its shards in the browser's cache, so this
reads them back: one download for both), builds the runner with ``make_runner`` (the one place
that decides which runner computes: WebGPU with its start-up calibration, or numpy with the
WebAssembly int8 kernel) and then answers the page through protocol.ModelHost.

Messages are ``{head: JSON text, buffers: [ArrayBuffer, ...]}``; each tensor travels as one
transferred ArrayBuffer (protocol.py).
"""

from __future__ import annotations

import asyncio
import time
import traceback

import js
from pyodide.ffi import create_proxy, to_js

from .protocol import ModelHost
from .transfer import incoming, outgoing

_state: dict = {}
WORKER_NOTE = "The model runs in a Web Worker, off the page's main thread."


def post(head: dict, arrays=()) -> None:
    """postMessage to the page, each array's bytes in its own transferred ArrayBuffer."""
    js.postMessage(*outgoing(head, arrays))


async def make_runner(model, light: bool, search: str, on_status, remembered: str | None = None):
    """The runner the worker computes with: gpu_light.make_runner, the one constructor the page
    uses too (issue 15), in front of numpy's runner (light mode: lightmode.LightRunner; full
    mode: the ReferenceRunner), started as the address's ``?backend=`` or this visit's choice
    (``remembered``, the page's sessionStorage) says; on a software adapter it calibrates.
    ``on_status(backend, cause, reason)`` hears every change of backend.
    """
    from . import lightmode
    from .gpu_light import choose_backend, make_runner as page_runner, remembered_backend
    from .gpu_runner import browser_engine
    from .runner import ReferenceRunner

    host = _state["host"]
    numpy = (lightmode.LightRunner(model.params, model.config, step=host.step) if light
             else ReferenceRunner(model.params, model.config, step=host.step))
    make = browser_engine(js.navigator, to_js, js.Object.fromEntries, model.checkpoint)
    # s16 (issue 16): the GPU reads back what a view shows; the page fetches other layers
    runner = page_runner(numpy, make, on_status=lambda s: on_status(s.backend, s.cause, s.reason), calibrate=True,
                         partial=True)
    choice, by = remembered_backend(search, remembered)
    if by == "visit":
        await choose_backend(runner, choice)
    else:
        await runner.start(choice)
    return runner


async def _init(head: dict) -> None:
    from .kernel import load_kernel
    from .loader import load_model

    from . import loader
    from .kernel import KERNEL_URL

    host: ModelHost = _state["host"]
    started = time.perf_counter()
    # The page's addresses, absolute: a worker resolves "./x" against web/model-worker.mjs.
    root = head["root"]
    loader.VOCAB_URL = str(js.URL.new(loader.VOCAB_URL, root).href)
    url = str(js.URL.new(head["model_url"], root).href)
    if head.get("hub_manifest"):
        # issue 16 (h16): a Hub model. The page has converted it into this browser's model store
        # and sends the manifest it verified; the worker reads the same files back from the
        # store (no second download) and checks each against that manifest (app/hub_worker.py).
        from .hub_worker import load_stored
        from .loader import BrowserStore

        model = await load_stored(url, head["hub_manifest"], await BrowserStore.open(), _loading(),
                                  vocab_url=loader.VOCAB_URL)
    else:
        model = await load_model(url, _loading())
    kernel, note = await load_kernel(str(js.URL.new(KERNEL_URL, root).href))
    if (kernel is not None and model.checkpoint.scheme == "int8") or model.checkpoint.scheme == "q4":
        model.keep_quantized(kernel)
    host.params = model.params
    host.lab = _bench(model, root)  # issue 16 (x16): the experiments' and factors' computations

    def on_status(backend: str, cause: str, reason: str) -> None:
        host.status(backend, cause, f"{reason} {WORKER_NOTE}")

    host.runner = await make_runner(model, bool(head.get("light")), head.get("search", ""), on_status,
                                    head.get("remembered"))
    status = getattr(host.runner, "status", None)
    if status is not None:  # the last word, also when it did not change from the first
        on_status(status.backend, status.cause, status.reason)
    post({"op": "ready", "ms": (time.perf_counter() - started) * 1e3, "kernel": note,
          "kind": type(host.runner).__name__})


def _loading(every_s: float = 0.1):
    """issue 16 (h16): loader.Progress -> "loading" messages (the page's progress bar), at most
    one per ``every_s`` and the last one always."""
    last = [0.0]

    def report(state) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s or state.done_shards == state.total_shards:
            last[0] = now
            post({"op": "loading", "label": f"Model worker: {state.label()}", "fraction": state.fraction})
    return report

def _bench(model, root: str):
    """issue 16 (x16): the lab (app/lab.py) on this worker's numpy reference parameters (the
    page's kind: int8 through the same kernel, so the numbers equal the page's and the command
    line's); the factors dictionary is read, when first needed, from the browser's cache where
    the page's download kept it (loader.load_dictionary checks its sha256 again)."""
    from .lab import Bench
    from .loader import load_dictionary

    base = str(js.URL.new(f"./weights/{model.name}/", root).href)
    return Bench(model.params, model.config, lambda: load_dictionary(base, model.checkpoint.manifest),
                 weight=model.checkpoint.dequantize)


def _on_message(event) -> None:
    head, arrays = incoming(event.data)
    if head.get("op") == "init":
        async def init():
            try:
                await _init(head)
            except Exception as exc:  # noqa: BLE001  (the page falls back to its own runner)
                post({"op": "init-failed", "error": f"{type(exc).__name__}: {exc}",
                      "trace": traceback.format_exc()})
        asyncio.ensure_future(init())
        return
    _state["host"].handle(head, arrays)


def serve(boot_ms: float = 0.0, files: int = 0) -> None:
    """Listen to the page (web/model-worker.mjs calls this once Python and the files are in)."""
    import pyodide_js

    _state["host"] = ModelHost(post)
    _state["host"].heap = lambda: int(pyodide_js._module.HEAPU8.length)
    _state["proxy"] = create_proxy(_on_message)
    js.self.onmessage = _state["proxy"]
    post({"op": "booted", "ms": float(boot_ms), "files": int(files)})
