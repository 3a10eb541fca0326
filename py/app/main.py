"""Entry point: index.html runs ``from app.main import main; await main()`` under PyScript."""

from __future__ import annotations

import json

import js  # noqa: F401  (Pyodide's browser globals: document, window, navigator)
from pyodide.ffi import create_proxy

from glassbox import weights

from .binding import Binding
from .console import Console, run_code
from .controller import App
from .dom import Page
from .webgpu import probe_adapter


async def model_url() -> str:
    """weights/<name>/ of ?model=<name>, else the default that weights/index.json names
    (real GPT-2 when a user converted it there, else the committed small model)."""
    from .loader import fetch_bytes  # imported once boot has shown its progress

    name = js.URLSearchParams.new(js.location.search).get("model")
    if not name:
        index = json.loads(await fetch_bytes("./weights/" + weights.INDEX))
        name = index["default"]
    if not all(ch.isalnum() or ch in "-_." for ch in name) or name.startswith("."):
        raise ValueError(f"?model={name!r} is not a model folder name")
    return f"./weights/{name}/"


async def main() -> App:
    """Boot the app on this page and return it (kept alive by the page's proxies)."""
    page = Page(js.document, js.window.glassboxShell)
    console = Console()

    async def start(app: App) -> None:
        """Load the model, draw the explainer and run it on the first example."""
        from .device import DeviceMode
        from .explainer import Explainer
        from .loader import load_model

        # Light or full mode (py/app/device.py): which weights, and the light runner if any.
        mode = await DeviceMode.choose(page, app.adapter, await model_url())
        model = await load_model(mode.model_url, mode.progress)
        page.progress("Preparing the explainer", 0.99)
        binding = Binding(page)
        explainer = Explainer(binding, model, runner=mode.runner(model), namespace=console.namespace,
                              run_code=run_code)
        explainer.mount()
        binding.attach(explainer)
        from .qk_dom import attach_qk  # issue 12: the query/key map

        attach_qk(explainer, binding, mode.model_url)
        app.explainer = explainer
        # WebGPU when an adapter and a device answer in time, else numpy; the page says why.
        from pyodide.ffi import to_js

        from .gpu_runner import attach_webgpu

        page.progress("Starting WebGPU", 0.99)
        await attach_webgpu(app, explainer, js.navigator, to_js, js.Object.fromEntries, js.location.search)
        await explainer.start()

    app = App(page, probe=lambda: probe_adapter(js.navigator), start=start)
    console.namespace["app"] = app
    # window.glassbox_py(code) in web/shell.js calls this; the proxy lives as long as the page.
    js.window.glassbox_py_json = create_proxy(console.run_json)
    await app.boot()
    return app
