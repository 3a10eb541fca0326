"""Entry point: index.html runs ``from app.main import main; await main()`` under PyScript."""

from __future__ import annotations

import js  # noqa: F401  (Pyodide's browser globals: document, window, navigator)
from pyodide.ffi import create_proxy

from .binding import Binding
from .console import Console, run_code
from .boot import Boot
from .dom import Page
from .views.controls import EXAMPLES
from .webgpu import probe_adapter


def model_examples(model) -> tuple[str, ...]:
    """The example prompts the model folder lists (manifest "examples"), else the general ones."""
    listed = model.checkpoint.manifest.get("examples") if model.checkpoint.manifest else None
    if isinstance(listed, list) and listed and all(isinstance(e, str) and e.strip() for e in listed):
        return tuple(listed)
    return EXAMPLES


def stored_prompt() -> str | None:
    """The prompt of the last visit (binding.store keeps it as the reader types)."""
    try:
        return js.localStorage.getItem("glassbox-prompt") or None
    except Exception:  # noqa: BLE001  (storage disabled)
        return None


async def main() -> Boot:
    """Boot the app on this page and return it (kept alive by the page's proxies)."""
    page = Page(js.document, js.window.glassboxShell)
    console = Console()

    async def start(app: Boot) -> None:
        """Load the model, draw the explainer and run it on the first example."""
        from .device import DeviceMode
        from .explainer import Explainer
        from .loader import load_model
        from .worker_client import ModelWorker

        # Issue 11: the model picker; ?model=hf:<repo> loads a Hub checkpoint (py/app/hub_loader.py).
        from . import picker
        from .hub_loader import ModelChooser

        chooser = await ModelChooser.open(page)
        # Light or full mode (py/app/device.py): which weights, and the light runner if any.
        mode = await DeviceMode.choose(page, app.adapter, chooser.url)
        chooser.light, chooser.why = mode.mode.light, picker.device_why(mode.mode)
        chooser.show()
        if chooser.choice.is_hub:
            mode.model = chooser.choice.spec
            mode.show()
        # issue 16: the model worker boots its own Pyodide while this thread loads the model
        # (hub models and light mode still compute on this thread: no second interpreter).
        in_worker = not (chooser.choice.is_hub or mode.mode.light)
        worker = ModelWorker.start() if in_worker else ModelWorker.unused(
            "light mode and Hub models do not use the worker yet")
        if chooser.choice.is_hub:
            model = await chooser.load(mode)
        else:
            model = await load_model(mode.model_url, mode.progress)
        # issue 15: numpy multiplies the stored int8 weights with the WebAssembly SIMD kernel
        # (no float32 copy of the model); without the kernel it keeps float32 weights. q4
        # weights (light mode, phones) always stay stored: each product dequantizes block by
        # block, so GPT-2-small's shape needs a 228 MiB heap instead of 752 (bench/memory.md).
        # With the model worker (issue 16) this thread's numpy serves the experiments and panels.
        from .kernel import load_kernel

        kernel, app.kernel_note = await load_kernel()
        if (kernel is not None and model.checkpoint.scheme == "int8") or model.checkpoint.scheme == "q4":
            model.keep_quantized(kernel)
        page.progress("Preparing the explainer", 0.99)
        binding = Binding(page)
        explainer = Explainer(binding, model, runner=mode.runner(model), namespace=console.namespace,
                              run_code=run_code, examples=model_examples(model), text=stored_prompt())
        explainer.mount()
        binding.attach(explainer)
        from .qk_dom import attach_qk  # issue 12: the query/key map

        attach_qk(explainer, binding, mode.model_url)
        app.explainer = explainer
        # issue 16: the model computes in the worker (py/app/worker.py builds its runner: WebGPU
        # or numpy); this thread keeps the stored weights for the views, experiments and panels.
        app.worker = worker
        page.progress("Starting the model worker", 0.99)
        if in_worker and await worker.attach(app, explainer, mode.model_url, False, js.location.search) is not None:
            await explainer.start()
            return
        app.worker_note = worker.fallback_note()
        await compute_here(app, explainer)
        await explainer.start()

    async def compute_here(app: Boot, explainer) -> None:
        """The model on this thread (no worker): WebGPU or numpy, as the page did before issue 16."""
        # WebGPU when an adapter and a device answer in time, else numpy; the page says why.
        from pyodide.ffi import to_js

        from .gpu_runner import attach_webgpu

        page.progress("Starting WebGPU", 0.99)
        await attach_webgpu(app, explainer, js.navigator, to_js, js.Object.fromEntries, js.location.search)

    app = Boot(page, probe=lambda: probe_adapter(js.navigator), start=start)
    console.namespace["app"] = app
    # window.glassbox_py(code) in web/shell.js calls this; the proxy lives as long as the page.
    js.window.glassbox_py_json = create_proxy(console.run_json)
    await app.boot()
    return app
