"""The explainer's model on WebGPU (glassbox.gpu.Engine), with numpy whenever WebGPU cannot run.

No ``js`` import: the page hands in an async engine factory (``browser_engine``), so this
module runs under CPython too (tests/gpu/test_gpu_runner.py drives it on wgpu-native).

    runner = WebGPURunner(make_engine, fallback=ReferenceRunner(...), on_status=show)
    await runner.start()              # first device, time-limited; says which backend and why
    trace = await runner.run(ids)     # Engine.forward, every tensor, KV cache on the GPU
    step = await runner.extend(ids)   # the new tokens' rows from the GPU KV cache
    runner.truncate(n)                # forget positions >= n (a discarded token)
    found = await runner.tensors(ids, ["h.0.q", "h.0.k"])  # issue 12: only these, own cache

``extend`` returns the same step trace as ``ReferenceRunner.extend`` (rows of the new tokens,
attention over every cached key), so the explainer joins it with ``runner.append_rows``
exactly as for numpy. It exists only while the runner captures every tensor (``capture``
None or "all"): a trace of one layer cannot be joined, and the explainer then re-runs the
sequence through ``run`` (it checks ``hasattr(runner, "extend")``).

**Partial traces** (issue 16, ``partial=True``; the model worker builds it so): ``run`` and
``extend`` read back only what a view shows — the embeddings, ln_f, the logits, every layer's
summaries (glassbox.trace.view_capture) and every tensor of the layer the reader views
(``aim(layer)``) — and return a glassbox.trace.LayerTrace. ``run`` keeps the rest of the run
on the GPU (``Engine.forward(keep=True)``; without it when the keep limit refuses);
``await fetch_layer(trace, layer)`` reads another layer with ``engine.read_layer`` when the
kept run is that trace's sequence, else runs the sequence once more from the engine's own
cache capturing that layer only (the KV cache the runner extends is untouched). Steps join
with ``runner.append_rows`` like full ones. Progress: ``step`` (the numpy runner's hook: in
the worker it reports to the page and checks Stop) is awaited once before the GPU work, with
fraction 0 — the engine records every block's commands once, replays them in one submit and
maps the readback once, so there is no truthful per-block point to report; the trace's
arrival is the end. (numpy runs report once per block.)

``capture`` takes what ``Engine.forward`` takes (None/"all", "logits", a layer number, or a
predicate such as ``lightmode.light_capture(layer)``) and applies from the next ``run``.

Which backend runs, and why (``status``: backend, reason for people, cause for code):

========================  =====================================================================
cause                     when
========================  =====================================================================
``ok``                    a WebGPU device runs the model
``asked``                 the address asks for numpy (``?backend=numpy``)
``calibrated``            a software adapter (SwiftShader, llvmpipe, a fallback adapter): a
                          start-up check timed both backends and numpy was faster (issue 15)
``no-webgpu``             the browser has no ``navigator.gpu``
``no-adapter``            ``requestAdapter()`` found none, failed, or did not answer in time
``device-refused``        ``requestDevice()`` failed or did not answer in time
``engine-failed``         the engine could not be built (the model does not fit the limits)
``device-lost``           the device was lost during a step: that step (and the rest of the
                          sequence, unless a new device comes up) ran on numpy
``gpu-error``             the engine refused this input (e.g. over a buffer limit): numpy ran it
``recovered``             a new device replaced a lost one
========================  =====================================================================

Device loss: a step whose submit or readback fails with ``DeviceLostError`` (or any failure
once the device reports itself lost) is computed again by numpy from the same KV cache: every
GPU step's keys and values are kept in the numpy runner's cache (they are in the trace
anyway), so numpy continues the sequence where the GPU stopped, with the same numbers up to
float32 rounding. The next call (``run`` or ``extend``) asks for a new device; when that
fails, every later ``run`` tries again (never a reload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np

from glassbox import reference
from glassbox.gpu.backend import DeviceLostError, GPUError, GPUUnavailableError, software_adapter
from glassbox.trace import LAYER_NAMES, LayerTrace, check_names, layer_name, layer_only, needs_layer, view_capture

GPU_TIMEOUT_S = 10.0  # for each of requestAdapter() and requestDevice()
CALIBRATION_TOKENS = 8  # the start-up check on a software adapter: one forward of this many tokens
BACKENDS = ("webgpu", "numpy")
_KV = ("k", "v")


@dataclass(frozen=True)
class Status:
    """Which backend runs the model now and why (``reason`` is shown on the page)."""

    backend: str  # "webgpu" or "numpy"
    cause: str  # see the module docstring
    reason: str


def asked_backend(search: str) -> str | None:
    """"numpy" or "webgpu" when the page's query string asks for it (?backend=numpy|webgpu),
    else None (auto: WebGPU, or on a software adapter whichever the start-up check finds faster)."""
    from urllib.parse import parse_qs

    value = parse_qs(search.lstrip("?")).get("backend", [""])[0].lower()
    if value in ("", "auto"):
        return None
    if value in ("webgpu", "gpu"):
        return "webgpu"
    if value == "numpy":
        return "numpy"
    raise ValueError(f"?backend={value!r}: expected numpy or webgpu")


def browser_engine(navigator, to_js, object_from_entries, checkpoint,
                   timeout: float = GPU_TIMEOUT_S) -> Callable[[], Awaitable]:
    """An async factory of Engines on the page's ``navigator.gpu`` (a new adapter and device
    each call), each request limited to ``timeout`` seconds."""
    from glassbox.gpu.browser import create_engine

    async def make():
        return await create_engine(getattr(navigator, "gpu", None), to_js, object_from_entries, checkpoint,
                                   timeout=timeout)

    return make


def adapter_name(engine) -> str:
    info = engine.backend.info
    return info.description or info.device or " ".join(p for p in (info.vendor, info.architecture) if p) \
        or "an unnamed adapter"


def unavailable_reason(error: GPUUnavailableError) -> str:
    if error.cause == "no-webgpu":
        return (f"numpy runs the model: {error}; WebGPU needs a recent browser and a secure context "
                "(https, or localhost).")
    if error.cause == "no-adapter":
        return f"numpy runs the model: WebGPU is there but no adapter was found ({error})."
    return f"numpy runs the model: the WebGPU adapter refused a device ({error})."


class WebGPURunner:
    """The explainer's runner on a GPU Engine; numpy (``fallback``) where WebGPU cannot run."""

    # issue 15 (lr15): partial runs keep the rest of the run on the GPU (keep=True) for
    # fetch_layer's read_layer; light mode (gpu_light.GPULightRunner) keeps nothing there.
    keep_runs = True

    def __init__(self, make_engine: Callable[[], Awaitable], fallback, *, capture=None,
                 on_status: Callable[[Status], None] | None = None, calibrate: bool = False,
                 partial: bool = False):
        self.make_engine = make_engine  # async () -> Engine; raises GPUUnavailableError / GPUError
        self.numpy = fallback  # a ReferenceRunner: run / extend / truncate, its cache public
        self.config = fallback.config
        self.capture = capture
        self.on_status = on_status or (lambda status: None)
        self.engine = None
        self.cache = None  # the engine's GPUCache
        self.ids = np.zeros(0, dtype=np.int64)  # the positions in the active cache
        self.where = "numpy"  # whose KV cache holds self.ids: "webgpu" or "numpy"
        self.last = "numpy"  # the backend that computed the last trace or step
        self.status = Status("numpy", "starting", "numpy runs the model until WebGPU is set up.")
        self.losses = 0
        self._retry = False  # ask for a new device at the next call (after a loss)
        self._asked_numpy = False
        self._sequence_capture = None  # the capture the current sequence's run used
        self.calibrate = calibrate  # on a software adapter, time both backends at start
        self.calibration: dict[str, float] | None = None  # ms per backend, when it ran
        self.partial = partial  # issue 16: read back what a view shows (see the module docstring)
        self.viewed = 0  # the layer read back in full (partial traces)
        self._kept_ids: np.ndarray | None = None  # the sequence the engine's keep=True run holds
        self.readbacks: list[tuple[str, int, int]] = []  # (what, tensors, bytes) per GPU read (bench)

    def aim(self, layer: int) -> None:
        """The layer partial traces hold in full from the next run or step (issue 16)."""
        self.viewed = int(layer)

    # ----- status ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The backend of the last trace ("webgpu" or "numpy"), shown in the run status."""
        return self.last

    def _say(self, backend: str, cause: str, reason: str) -> None:
        status = Status(backend, cause, reason)
        if status != self.status:
            self.status = status
            self.on_status(status)

    async def _new_engine(self) -> bool:
        """A new engine (and device); True on success. On failure the status says why."""
        self.engine, self.cache = None, None
        try:
            engine = await self.make_engine()
        except GPUUnavailableError as e:
            self._say("numpy", e.cause, unavailable_reason(e))
            return False
        except Exception as e:  # noqa: BLE001  (GPUError, or a JS error while uploading)
            self._say("numpy", "engine-failed",
                      f"numpy runs the model: the WebGPU engine could not be built ({type(e).__name__}: {e}).")
            return False
        self.engine, self.cache = engine, engine.new_cache()
        return True

    async def start(self, asked: str | None = None) -> Status:
        """Make the first engine (unless ``asked`` is "numpy"); return the status."""
        if asked == "numpy":
            self._asked_numpy = True
            self._say("numpy", "asked", "numpy runs the model because the address asks for it (?backend=numpy).")
            return self.status
        if await self._new_engine():
            if self.calibrate and asked != "webgpu" and software_adapter(self.engine.backend.info):
                await self._calibrate()
            else:
                self._say("webgpu", "ok", f"WebGPU runs the model on {adapter_name(self.engine)}.")
        return self.status

    async def _calibrate(self) -> None:
        """Software adapter: one CALIBRATION_TOKENS forward on each backend (WebGPU after a
        first run that compiles its pipelines); keep the faster, and say so with the times."""
        import time

        ids = (np.arange(CALIBRATION_TOKENS, dtype=np.int64) * 97) % self.config.vocab_size
        times = {}
        try:
            await self.engine.forward(ids, capture=self.capture)  # compiles the pipelines
            t0 = time.perf_counter()
            await self.engine.forward(ids, capture=self.capture)
            times["webgpu"] = (time.perf_counter() - t0) * 1e3
        except Exception as e:  # noqa: BLE001  (a device that fails here is lost for the page)
            self._lost(e)
            return
        t0 = time.perf_counter()
        await self.numpy.run(ids)
        times["numpy"] = (time.perf_counter() - t0) * 1e3
        self.calibration = times
        name = adapter_name(self.engine)
        measured = (f"a start-up check ran one forward of {CALIBRATION_TOKENS} tokens in {times['webgpu']:.0f} ms on "
                    f"WebGPU and {times['numpy']:.0f} ms on numpy")
        if times["webgpu"] <= times["numpy"]:
            self._say("webgpu", "ok", f"WebGPU runs the model on {name}, a software adapter: {measured}.")
            return
        self.engine.backend.destroy()
        self.engine, self.cache, self._asked_numpy = None, None, True
        self._say("numpy", "calibrated", f"numpy runs the model: {name} is a software WebGPU adapter and "
                                         f"{measured}. Add ?backend=webgpu to the address to run WebGPU anyway.")

    async def _recover(self) -> bool:
        """After a loss: a new device; True when WebGPU runs again."""
        self._retry = False
        if not await self._new_engine():
            self._say("numpy", self.status.cause,
                      f"{self.status.reason} The WebGPU device was lost earlier; the next run tries again.")
            return False
        self._say("webgpu", "recovered",
                  f"WebGPU runs the model on {adapter_name(self.engine)}, on a new device: the previous one "
                  f"was lost (lost {self.losses} time{'s' if self.losses != 1 else ''} so far).")
        return True

    def _lost(self, error: BaseException, cause: str = "device-lost") -> None:
        """The device failed: drop the engine (numpy takes over) and retry at the next call."""
        self.losses += 1
        backend = self.engine.backend if self.engine is not None else None
        why = (backend.lost if backend is not None else None) or f"{type(error).__name__}: {error}"
        if backend is not None:
            try:
                backend.destroy()
            except Exception:  # noqa: BLE001  (already gone)
                pass
        self.engine, self.cache, self._retry = None, None, True
        self._say("numpy", cause, f"The WebGPU device was lost ({why}). This step ran on numpy with the same "
                                  "weights; the next run asks for a new device.")

    # ----- capture ----------------------------------------------------------------------------
    def __getattr__(self, name: str):
        # ``extend`` (see the module docstring) is there only while every tensor is captured.
        numpy = self.__dict__.get("numpy")
        full = self.__dict__.get("capture") in (None, "all") or self.__dict__.get("partial")
        if name == "extend" and full and hasattr(numpy, "extend"):
            return self._extend
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def _keep_kv(self, trace, append: bool) -> None:
        """Mirror a GPU trace's keys and values into the numpy runner's cache, so numpy can
        continue the sequence if the device goes (None when the trace lacks them)."""
        names = [layer_name(layer, kv) for layer in range(self.config.n_layer) for kv in _KV]
        if not all(name in trace for name in names) or (append and self.numpy.cache is None):
            self.numpy.cache = None
            return
        if not append:
            self.numpy.cache = reference.KVCache(self.config)
        for layer in range(self.config.n_layer):
            self.numpy.cache.append(layer, trace[layer_name(layer, "k")], trace[layer_name(layer, "v")])

    async def _numpy_cache_for(self, ids: np.ndarray) -> None:
        """Make the numpy runner's cache hold exactly ``ids`` (when the GPU's mirror is missing):
        the blocks only, no logits."""
        cache = self.numpy.cache
        if cache is not None and cache.length == ids.size:
            return
        cache = reference.KVCache(self.config)
        if ids.size:
            params, ignore = self.numpy.params, (lambda *_: None)
            x = reference.embed(params, ids, 0, ignore)
            for layer in range(self.config.n_layer):
                x = reference.block(x, params, layer, self.config, cache, ignore)
        self.numpy.cache = cache

    # ----- the runner interface -----------------------------------------------------------------
    async def _progress(self, label: str, fraction: float) -> None:
        step = getattr(self.numpy, "step", None)
        if step is not None:
            await step(label, fraction)

    def _note(self, what: str, trace) -> None:
        self.readbacks = (self.readbacks + [(what, len(trace.tensors),
                                             int(sum(v.nbytes for v in trace.tensors.values())))])[-16:]

    async def _forward(self, ids: np.ndarray, capture, keep: bool):
        """The partial forward on the runner's cache: ``capture`` without the logits
        (``forward_top``: the logits [N, V] stay on the GPU), then their last row alone
        (``read_last_rows``); keep=True falls back to keep=False when the engine's keep limit
        refuses it (a layer is then run again when fetched)."""
        shown = lambda name: name != "logits" and capture(name)  # noqa: E731
        trace, kept = None, False
        if keep:
            try:
                _, trace = await self.engine.forward_top(ids, cache=self.cache, capture=shown, k=1, keep=True)
                kept = True
            except GPUError as e:
                if "keep=True" not in str(e):
                    raise
        if trace is None:
            _, trace = await self.engine.forward_top(ids, cache=self.cache, capture=shown, k=1)
        trace["logits"] = await self.engine.read_last_rows("logits", 1)
        return trace, kept

    async def _gpu(self, ids: np.ndarray, capture, keep: bool = False):
        """engine.forward on the GPU cache, or None (after saying why) when it failed."""
        self._kept_ids = None
        # issue 16: progress (and, in the worker, a Stop check) before the GPU work
        await self._progress(f"WebGPU: all {self.config.n_layer} blocks submitted at once", 0.0)
        try:
            if self.partial and callable(capture):  # a partial run or step (not a cache refill)
                trace, kept = await self._forward(ids, capture, keep)
                self._kept_ids = ids if kept and self.cache.length == ids.size else None
                self._note("run" if self.cache.length == ids.size else "step", trace)  # lr15: light runs keep=False
                partial = LayerTrace.select(trace, self.viewed)
                partial.logits_start = ids.size - 1  # the last row only (read_last_rows)
                return partial
            return await self.engine.forward(ids, cache=self.cache, capture=capture)
        except DeviceLostError as e:
            self._lost(e)
        except GPUError as e:  # this input does not fit; the device is fine
            self._say("numpy", "gpu-error", f"numpy ran this input: the WebGPU engine refused it ({e}).")
        except Exception as e:  # noqa: BLE001  (a failed submit: take the device for lost)
            self._lost(e)
        return None

    async def run(self, ids):
        """Every tensor (or ``capture``'s) of the sequence ``ids``; the caches now hold it."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.engine is None and not self._asked_numpy and (self._retry or self.losses):
            await self._recover()
        if self.engine is not None:
            self.cache.reset()
            if self.partial:
                trace = await self._gpu(ids, view_capture(self.viewed), keep=self.keep_runs)
            else:
                trace = await self._gpu(ids, self.capture)
            if trace is not None:
                if self.status.cause == "gpu-error":
                    self._say("webgpu", "ok", f"WebGPU runs the model on {adapter_name(self.engine)}.")
                self._keep_kv(trace, append=False)
                self.ids, self.where, self.last = ids, "webgpu", "webgpu"
                self._sequence_capture = self.capture
                return trace
        self.last = "numpy"
        trace = await self.numpy.run(ids)
        self.ids, self.where = ids, "numpy"
        self._sequence_capture = None  # numpy keeps everything
        return trace

    async def _extend(self, ids):
        """The step trace of ``ids`` after the cached positions (rows of the new tokens)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.where == "numpy" and self.engine is None and self._retry and not self._asked_numpy:
            if await self._recover():
                # The new device's cache: the sequence so far, logits only (numpy's cache stays).
                self.cache.reset()
                if await self._gpu(self.ids, "logits") is not None:
                    self.where = "webgpu"
        if self.where == "webgpu" and self.engine is not None:
            before = self.cache.length
            step = await self._gpu(ids, view_capture(self.viewed) if self.partial else self._sequence_capture)
            if step is not None:
                self._keep_kv(step, append=True)
                self.ids, self.last = np.concatenate([self.ids, ids]), "webgpu"
                return step
            if self.cache is not None:
                self.cache.length = before
            self.where = "numpy"
        self.last = "numpy"
        await self._numpy_cache_for(self.ids)
        step = await self.numpy.extend(ids)
        self.ids, self.where = np.concatenate([self.ids, ids]), "numpy"
        return step

    async def tensors(self, ids, names) -> dict[str, np.ndarray]:
        """Only the trace tensors ``names`` of ``ids`` (runner.py's contract, issue 12): the
        engine runs ``ids`` from position 0 in its own cache (``Engine.forward_layers``), up to
        the last layer a name needs and reading back only those tensors (no logits unless
        asked for), so the explainer's KV cache and sequence are untouched. numpy runs them
        when WebGPU does not (and, after a device loss here, the status says so as for ``run``)."""
        wanted = set(check_names(self.config, names))
        if self.engine is not None:
            self._kept_ids = None  # this forward replaces what the engine kept
            try:
                trace = await self.engine.forward_layers(np.asarray(ids, dtype=np.int64), wanted.__contains__)
                return {name: trace[name] for name in names}
            except DeviceLostError as e:
                self._lost(e)
            except GPUError:  # this input does not fit the engine; the device is fine
                pass
            except Exception as e:  # noqa: BLE001  (a failed submit: take the device for lost)
                self._lost(e)
        return await self.numpy.tensors(ids, names)

    async def fetch_layer(self, trace, layer: int) -> str:
        """Make a partial ``trace`` of the current sequence hold every tensor of ``layer``
        (issue 16; see the module docstring): read from what the GPU kept, else one forward
        of that layer only from the engine's own cache, else numpy. Returns the backend that
        did ("webgpu", "numpy"), or "" when the trace held the layer already."""
        layer = int(layer)
        if not needs_layer(trace, layer):
            self.viewed = layer
            return ""
        self.viewed = layer
        if trace.start != 0:
            raise ValueError("only a trace of a whole sequence can fetch another layer")
        ids = np.asarray(trace.ids, dtype=np.int64)
        if self.engine is not None:
            try:
                if self._kept_ids is not None and np.array_equal(self._kept_ids, ids):
                    fresh = await self.engine.read_layer(layer)
                    self._note("read_layer", fresh)
                else:
                    self._kept_ids = None
                    _, fresh = await self.engine.forward_top(ids, capture=layer_only(layer), k=1)  # own cache
                    self._note("layer forward", fresh)
                trace.set_layer(layer, fresh.tensors)
                return "webgpu"
            except DeviceLostError as e:
                self._lost(e)
            except GPUError as e:
                self._say("numpy", "gpu-error", f"numpy computed layer {layer + 1}: the WebGPU engine refused it ({e}).")
            except Exception as e:  # noqa: BLE001  (a failed submit: take the device for lost)
                self._lost(e)
        from . import runner as runners

        names = [layer_name(layer, n) for n in LAYER_NAMES]
        trace.set_layer(layer, await runners.tensors_async(self.numpy.params, self.config, ids, names))
        return "numpy"

    def truncate(self, n: int) -> None:
        """Keep the first n cached positions (after a discarded token)."""
        n = max(0, min(int(n), self.ids.size))
        self.ids = self.ids[:n]
        if self._kept_ids is not None and self._kept_ids.size > n:
            self._kept_ids = None
        if self.cache is not None:
            self.cache.length = min(self.cache.length, n)
        self.numpy.truncate(n)

    # ----- tests --------------------------------------------------------------------------------
    def destroy_device_for_test(self) -> bool:
        """Destroy the engine's device behind the engine's back (as a driver reset would);
        the next GPU step finds out. False when no device runs."""
        if self.engine is None:
            return False
        self.engine.backend.device.destroy()
        return True
