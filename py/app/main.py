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


def stored(key: str, storage: str = "localStorage") -> str | None:
    """A value the page kept in ``storage`` (or sessionStorage), None when absent or disabled."""
    try:
        return getattr(js, storage).getItem(key) or None
    except Exception:  # noqa: BLE001  (storage disabled)
        return None


def stored_prompt() -> str | None:
    """The prompt of the last visit (binding.store keeps it as the reader types)."""
    return stored("glassbox-prompt")


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
        # Light mode (s16) and Hub models (h16: the worker reads the converted folder from the store)
        # compute there too; the page computes only when the worker cannot.
        worker = ModelWorker.start()
        in_worker = worker.worker is not None
        if chooser.choice.is_hub:
            try:
                model = await chooser.load(mode)
            except Exception:
                if worker.worker is not None:  # issue 16 (h16): no Hub model, so no worker either
                    worker.worker.terminate()
                raise
        else:
            model = await load_model(mode.model_url, mode.progress)
        # issue 15: numpy multiplies the stored int8 weights with the WebAssembly SIMD kernel
        # (no float32 copy of the model); without the kernel it keeps float32 weights. q4
        # weights (light mode, phones) always stay stored: each product dequantizes block by
        # block, so GPT-2-small's shape needs a 228 MiB heap instead of 752 (bench/memory.md).
        # p15: the kernel loads before the first run only where numpy may run it first
        # (gpu_light.kernel_first); otherwise after the first run, in the background. With the
        # model worker (issue 16) this thread's numpy serves the experiments and panels, and
        # keeps the stored weights from the start (the kernel loads while the worker boots).
        from .gpu_light import BACKEND_KEY, bind_switch, kernel_first, remembered_backend, use_kernel
        from .kernel import load_kernel

        scheme = model.checkpoint.scheme
        choice = remembered_backend(js.location.search, stored(BACKEND_KEY, "sessionStorage"))[0]
        kernel_later = scheme == "int8" and not in_worker and not kernel_first(scheme, app.adapter, choice)
        if scheme == "q4":
            model.keep_quantized(None)
        elif scheme == "int8" and not kernel_later:
            await use_kernel(app, model, load_kernel)
        else:
            app.kernel_note = ("numpy's own matmul until the WebAssembly SIMD kernel loads, after the first run"
                               if kernel_later else "numpy's own matmul (float32 weights)")
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
        remembered = stored(BACKEND_KEY, "sessionStorage")
        # issue 16: light mode in the worker (s16); a Hub model's folder and the manifest this
        # thread verified (h16)
        from glassbox.weights import manifest_text

        hub = chooser.choice.is_hub
        runner = await worker.attach(app, explainer, chooser.url if hub else mode.model_url, mode.mode.light,
                                     js.location.search, remembered,
                                     hub_manifest=manifest_text(model.checkpoint.manifest) if hub else None)
        if runner is None:
            app.worker_note = worker.fallback_note()
            runner = await compute_here(app, explainer, remembered)
        # issue 15 (p15): the backend card's switch (remembered in sessionStorage for the visit),
        # for the worker's runner as for this thread's.
        app.backend_switch = bind_switch(explainer, runner, js.document.querySelector('[data-slot="app"]'), js.window,
                                         create_proxy)
        if runner.status.backend == "webgpu":
            page.progress("Running the model on WebGPU (the first run compiles its shaders)", 0.995)
        await explainer.start()
        if kernel_later:  # p15: off the path to the first prediction
            app.kernel_task = explainer.spawn(use_kernel(app, model, load_kernel, explainer))

    async def compute_here(app: Boot, explainer, remembered: str | None):
        """The model on this thread (no worker): WebGPU or numpy, as the page did before issue 16.
        Returns the runner."""
        # WebGPU when an adapter and a device answer in time, else numpy; the page says why.
        # issue 15 (p15): one call builds the runner for full and light mode (app/gpu_light.py),
        # and the backend card's switch (remembered in sessionStorage for the visit).
        from pyodide.ffi import to_js

        from .gpu_light import attach_backend
        from .gpu_runner import browser_engine

        page.progress("Starting WebGPU", 0.99)
        make_engine = browser_engine(js.navigator, to_js, js.Object.fromEntries, explainer.model.checkpoint)
        return await attach_backend(app, explainer, make_engine, js.location.search, remembered)

    app = Boot(page, probe=lambda: probe_adapter(js.navigator), start=start)
    console.namespace["app"] = app
    # window.glassbox_py(code) in web/shell.js calls this; the proxy lives as long as the page.
    js.window.glassbox_py_json = create_proxy(console.run_json)
    await app.boot()
    return app
