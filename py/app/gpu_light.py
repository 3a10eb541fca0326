"""issue 15 (items 3): the backend the reader picks, and light mode on WebGPU.

No ``js`` import (tests/test_gpu_light.py runs it under CPython with a fake engine); the page
hands in the browser's objects. main.py builds the page's runner with ONE call:

    runner = await attach_backend(app, explainer, make_engine, search, stored)

which wraps the explainer's numpy runner (``make_runner``): full mode gets
gpu_runner.WebGPURunner, light mode ``GPULightRunner``; both fall back to their numpy runner
on any GPU error, with the reason on the page.

**Light mode on WebGPU** (``GPULightRunner``): the q4 checkpoint is uploaded as it is (the
engine's kernels dequantize q4 blocks), and each run reads back only what light mode keeps
(``lightmode.light_capture``: the viewed layer, every layer's [N, D] summaries, the
embeddings, ln_f) and the LAST logits row alone (issue 15 item 4: WebGPURunner's partial path,
``forward_top`` then ``read_last_rows``, without keep=True: the engine keeps the logits in
place anyway, and nothing else of the run stays on the phone's GPU); the trace's
``logits_start`` is N - 1, as for the model worker's partial traces (the page reads the last
row only: the sampler, the experiments' target). When the reader picks another layer, the map controller
awaits ``fetch_layer``: one more forward on the GPU that reads back that layer's tensors only,
which replace the previous layer's (so one layer's attention grids are held at a time, as in
numpy light mode). Any failure there (device lost, a refused buffer) computes the layer with
numpy instead and says so. Which backend: a real adapter runs WebGPU; a software adapter
(SwiftShader, llvmpipe, a fallback adapter) runs whichever the start-up calibration finds
faster, as in full mode; the engine refuses a model over the device's limits (a phone's
128 MiB bindings) and numpy light mode runs it, with that reason.

**The reader's switch** (``switch_target``, ``choose_backend``, ``switch``): when both
backends are possible (numpy always; WebGPU when the browser has an adapter that gave a
device, or that the start-up calibration or ``?backend=numpy`` set aside), the backend card
offers "Run on numpy instead" / "Run on WebGPU instead". The choice swaps the runner's
backend for the session, reruns the shown tokens, and says in the reason that the reader
chose it (cause ``chosen``). It is remembered for the visit in ``sessionStorage``
(``BACKEND_KEY``): a reload in the same tab runs the chosen backend; a ``?backend=`` in the
address wins over it at load, and the switch rewrites that parameter so the two never
disagree. Switching to numpy parks the WebGPU engine (its weights stay uploaded, its
pipelines compiled), so switching back costs no new device.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable


from . import lightmode
from .gpu_runner import Status, WebGPURunner, adapter_name, asked_backend
from .runner import ReferenceRunner

BACKEND_KEY = "glassbox-backend"  # sessionStorage: the reader's choice for this visit
# Causes after which WebGPU cannot come back by a click (gpu_runner's table).
NO_WEBGPU = ("no-webgpu", "no-adapter", "device-refused", "engine-failed", "starting")


# ----- light mode on WebGPU -----------------------------------------------------------------

class _NumpyLight(lightmode.LightRunner):
    """lightmode.LightRunner capturing the layer its GPU runner wants (not its own last one)."""

    def __init__(self, params, config, wanted: Callable[[], int]):
        super().__init__(params, config)
        self._wanted = wanted

    @property
    def layer(self) -> int:
        return self._wanted()


class GPULightRunner(WebGPURunner):
    """Light mode's runner on a GPU Engine (see the module docstring); numpy light mode
    (lightmode.LightRunner) wherever WebGPU cannot run. ``run`` alone: generating a token
    re-runs the sequence, as in numpy light mode."""

    def __init__(self, make_engine, params, config, *, on_status=None, calibrate: bool = False):
        self.wanted = 0  # the layer the views show (set by view_layer / fetch_layer)
        super().__init__(make_engine, _NumpyLight(params, config, lambda: self.wanted),
                         capture=lightmode.light_capture(0), on_status=on_status, calibrate=calibrate,
                         partial=True)
        self.params = params
        self.fetches = 0  # layers read from the GPU after a run (tests)

    keep_runs = False  # issue 15 (lr15): a light run keeps nothing on the GPU (no keep=True)

    @property
    def name(self) -> str:
        return "WebGPU, light mode" if self.last == "webgpu" else "numpy, light mode"

    @property
    def layer(self) -> int:
        return self.wanted

    def aim(self, layer: int) -> None:
        """The layer the next run reads back (the model worker's host says which, issue 16)."""
        self.wanted = int(layer)

    async def run(self, ids) -> lightmode.LayerTrace:
        self.capture = lightmode.light_capture(self.wanted)
        self.viewed = self.wanted  # the partial path's layer (WebGPURunner._gpu)
        trace = await super().run(ids)
        if isinstance(trace, lightmode.LayerTrace):  # numpy light mode computed it
            return trace
        return lightmode.LayerTrace(trace, self.params, self.wanted)

    def truncate(self, n: int) -> None:
        """Nothing is cached between runs (no ``extend``): only the positions are kept."""
        self.ids = self.ids[:max(0, min(int(n), self.ids.size))]

    def view_layer(self, trace: lightmode.LayerTrace, layer: int) -> None:
        """The synchronous path (lightmode.LightRunner's): numpy computes ``layer``'s tensors
        when ``trace`` lacks them. The map controller awaits ``fetch_layer`` instead."""
        self.wanted = int(layer)
        trace.view_layer(layer)

    async def fetch_layer(self, trace: lightmode.LayerTrace, layer: int) -> str:
        """Make ``trace`` hold ``layer``'s tensors, read from the GPU (one forward that reads
        back that layer alone: gpu_runner.WebGPURunner.fetch_layer); numpy computes them when
        WebGPU cannot. Returns the backend that did ("webgpu", "numpy", or "" when the trace
        held the layer already)."""
        self.wanted = int(layer)
        if trace.viewed == layer:
            return ""
        done = await super().fetch_layer(trace, layer)
        self.fetches += done == "webgpu"
        return done


# ----- one constructor ----------------------------------------------------------------------

def make_runner(numpy_runner, make_engine: Callable[[], Awaitable] | None, *,
                on_status: Callable[[Status], None] | None = None, calibrate: bool = True, partial: bool = False):
    """The page's runner around the explainer's numpy runner: a WebGPURunner (full mode,
    ``ReferenceRunner``) or a GPULightRunner (light mode, ``lightmode.LightRunner``); the
    numpy runner itself when ``make_engine`` is None. ``calibrate``: time both backends at
    start on a software adapter. ``partial``: full mode reads back partial traces (the model
    worker's, issue 16; gpu_runner's docstring)."""
    if make_engine is None:
        return numpy_runner
    if isinstance(numpy_runner, lightmode.LightRunner):
        runner = GPULightRunner(make_engine, numpy_runner.params, numpy_runner.config, on_status=on_status,
                                calibrate=calibrate)
        runner.numpy.step = numpy_runner.step  # issue 16: progress and Stop checks (the worker's hook)
        return runner
    if isinstance(numpy_runner, ReferenceRunner):
        return WebGPURunner(make_engine, numpy_runner, on_status=on_status, calibrate=calibrate, partial=partial)
    raise TypeError(f"no WebGPU runner for {type(numpy_runner).__name__}")


# ----- the reader's switch --------------------------------------------------------------------

def switch_target(status: Status, has_adapter: bool) -> str:
    """The backend the card offers to switch to ("numpy", "webgpu"), or "" when only one can run."""
    if status.backend == "webgpu":
        return "numpy"
    if has_adapter and status.cause not in NO_WEBGPU:
        return "webgpu"
    return ""


def remembered_backend(search: str, stored: str | None) -> tuple[str | None, str]:
    """(backend or None for automatic, where it comes from: "url", "visit" or ""): the
    address's ``?backend=`` wins over this visit's stored choice (BACKEND_KEY)."""
    asked = asked_backend(search)
    if asked is not None:
        return asked, "url"
    if stored in ("numpy", "webgpu"):
        return stored, "visit"
    return None, ""


def parked(runner) -> object | None:
    """The WebGPU engine a switch to numpy set aside (None when there is none)."""
    return getattr(runner, "_parked_engine", None)


async def choose_backend(runner: WebGPURunner, backend: str) -> Status:
    """Run ``backend`` from the next run on, because the reader chose it (cause "chosen").

    numpy: the WebGPU engine is parked (kept, not destroyed), no device is asked for again.
    webgpu: the parked engine comes back, else a new device and engine; when that fails the
    status says why and numpy keeps running."""
    if backend not in ("numpy", "webgpu"):
        raise ValueError(f"unknown backend {backend!r}; expected numpy or webgpu")
    own = getattr(runner, "choose_backend", None)
    if own is not None:  # the model worker's runner (issue 16): its own runner chooses there
        return await own(backend)
    runner.numpy.cache = None  # the next run starts a new sequence on either side
    runner.ids = runner.ids[:0]
    runner.where = "numpy"
    if backend == "numpy":
        if runner.engine is not None:
            runner._parked_engine = runner.engine
        runner.engine, runner.cache, runner._retry, runner._asked_numpy = None, None, False, True
        runner._say("numpy", "chosen", "numpy runs the model because you chose it (Run on numpy instead); "
                                       "this tab remembers the choice for the visit.")
        return runner.status
    runner._asked_numpy = False
    engine, runner._parked_engine = parked(runner), None
    if engine is not None and not engine.backend.lost:
        runner.engine, runner.cache = engine, engine.new_cache()
    elif not await runner._new_engine():
        return runner.status
    runner._retry = False
    runner._say("webgpu", "chosen", f"WebGPU runs the model on {adapter_name(runner.engine)} because you chose it "
                                    "(Run on WebGPU instead); this tab remembers the choice for the visit.")
    return runner.status


async def switch(explainer, runner: WebGPURunner, backend: str, remember: Callable[[str], None] = lambda b: None,
                 wait_s: float = 0.05) -> Status:
    """The card's button: wait for a run in progress, choose ``backend``, remember it
    (``remember(backend)``: sessionStorage and the address), and run the current text again
    (the run controller's ``submit``: a generated token not yet kept is dropped, as by Run)."""
    while explainer.run.busy:
        await asyncio.sleep(wait_s)
    status = await choose_backend(runner, backend)
    remember(status.backend)
    await explainer.run.submit()
    return status


async def attach_backend(app, explainer, make_engine, search: str, stored: str | None = None,
                         calibrate: bool = True):
    """The page's boot step (main.py): put a WebGPU runner in front of the explainer's numpy
    runner (full or light mode), start it as the address or this visit's choice says, and
    keep the backend card (``app.set_backend``, with its switch) in step. Returns the runner."""
    from .webgpu import AdapterInfo

    runner = None

    def show(status: Status) -> None:
        if status.backend == "webgpu" and app.adapter is None:  # the probe missed it; a device came
            i = runner.engine.backend.info
            app.adapter = AdapterInfo(i.vendor, i.architecture, i.device, i.description, False)
        app.set_backend(status.backend, status.reason, status.cause,
                        switch=switch_target(status, app.adapter is not None or parked(runner) is not None))

    runner = make_runner(explainer.runner, make_engine, on_status=show, calibrate=calibrate)
    choice, by = remembered_backend(search, stored)
    if by == "visit":
        await choose_backend(runner, choice)
    else:
        await runner.start(choice)
    explainer.runner = runner
    return runner


def remember_in(window) -> Callable[[str], None]:
    """remember(backend) for the page: sessionStorage[BACKEND_KEY], and ``?backend=`` rewritten
    in the address (history.replaceState) when the address has one, so a reload agrees."""

    def remember(backend: str) -> None:
        try:
            window.sessionStorage.setItem(BACKEND_KEY, backend)
        except Exception:  # noqa: BLE001  (storage disabled: the choice lasts until a reload)
            pass
        url = window.URL.new(window.location.href)
        if url.searchParams.has("backend"):
            url.searchParams.set("backend", backend)
            window.history.replaceState(window.history.state, "", url.href)

    return remember


def bind_switch(explainer, runner: WebGPURunner, slot, window, create_proxy) -> object:
    """One click listener on the backend card's slot (``slot``: the status chip's
    [data-slot=app], re-rendered at every status): a click (tap, Enter or Space on the
    button) on [data-backend-switch] runs ``switch``; the new card's button gets the focus
    back. Returns the proxy (keep it alive)."""
    remember = remember_in(window)

    async def go(backend: str) -> None:
        try:
            await switch(explainer, runner, backend, remember)
        except Exception as exc:  # noqa: BLE001  (shown beside the input; the page stays usable)
            explainer.fail(exc)
        button = slot.querySelector("[data-backend-switch]")
        if button is not None:
            button.focus()

    def on_click(event) -> None:
        button = event.target.closest("[data-backend-switch]")
        if button is None or button.disabled:
            return
        button.disabled = True
        button.setAttribute("aria-busy", "true")
        explainer.spawn(go(str(button.getAttribute("data-backend-switch"))))

    proxy = create_proxy(on_click)
    slot.addEventListener("click", proxy)
    return proxy


# ----- numpy's int8 kernel, loaded when numpy needs it ------------------------------------------

def kernel_first(scheme: str, adapter, choice: str | None) -> bool:
    """Whether numpy's int8 SIMD kernel (app/kernel.py) must be loaded before the first run.

    It multiplies int8 weights only: q4 (light mode) and float32 models never need it. An int8
    model needs it first where numpy may run the first run or must be timed: no adapter,
    numpy asked for (address or this visit's choice), or a software adapter (the start-up
    calibration times numpy with it). A real adapter, or ?backend=webgpu, runs WebGPU first:
    the kernel then loads after the first run (``use_kernel`` spawned), off the path to the
    first prediction; numpy's other users (experiments, the factors, the Q/K map, a device
    loss) meanwhile multiply float32 weights, with the same numbers within float32 rounding."""
    from glassbox.gpu.backend import software_adapter

    if scheme != "int8":
        return False
    if choice == "numpy" or adapter is None:
        return True
    if choice == "webgpu":
        return False
    return software_adapter(adapter)


async def use_kernel(app, model, load_kernel, explainer=None) -> None:
    """Load the kernel (``load_kernel()`` -> (kernel or None, note)) and, when it loads, let
    numpy keep the int8 weights (model.keep_quantized); with an ``explainer`` (the kernel came
    after it was built), its numpy users follow: explainer.params and the numpy runner's."""
    kernel, app.kernel_note = await load_kernel()
    if kernel is None:
        return
    model.keep_quantized(kernel)
    if explainer is not None:
        explainer.params = model.params
        numpy = getattr(explainer.runner, "numpy", explainer.runner)
        if getattr(numpy, "params", None) is not None:
            numpy.params = model.params
