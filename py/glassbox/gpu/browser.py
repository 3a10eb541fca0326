"""In-browser WebGPU: the page's ``navigator.gpu`` driven through Pyodide's FFI.

glassbox never imports ``js``, ``pyodide`` or ``pyscript``: the app hands in the
``navigator.gpu`` proxy and two helpers, so this module stays importable (and its logic
readable) in CPython too::

    from pyodide.ffi import to_js
    import js
    backend = await BrowserBackend.create(js.navigator.gpu, to_js, js.Object.fromEntries)

``to_js`` turns descriptors into JS values; ``object_from_entries`` (``Object.fromEntries``)
makes dicts plain JS objects, which WebGPU descriptors must be (to_js's default is a Map).
Pyodide awaits JS promises directly, so every waiting call is a plain ``await``. Device loss
arrives through the ``device.lost`` promise and is reported by ``lost`` / ``check``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

import numpy as np

from .backend import (BUFFER_USAGES, DEFAULT_LIMITS, MAP_READ, AdapterInfo, Backend, Buffer, Dispatch,
                      GPUUnavailableError, bind_group_entries, layout_entries, plan_limits, time_limited)
# DEFAULT_LIMITS' keys as GPUSupportedLimits names.
_JS_LIMITS = {key: "".join(w if i == 0 else w.capitalize() for i, w in enumerate(key.split("_")))
              for key in DEFAULT_LIMITS}


def _text(obj: Any, name: str) -> str:
    value = getattr(obj, name, None)
    return "" if value is None else str(value)


def _shader_variants(gpu: Any, features: set[str], info: Any) -> tuple[frozenset[str], int]:
    """Issue 15, matmul: the kernels.SHADER_FEATURES this page's WebGPU compiles, and the
    adapter's smallest subgroup (GPUAdapterInfo.subgroupMinSize; 0 where unknown)."""
    found = set()
    language = getattr(gpu, "wgslLanguageFeatures", None)
    has = getattr(language, "has", None)
    if has is not None and has("packed_4x8_integer_dot_product"):
        found.add("packed4x8")
    size = int(getattr(info, "subgroupMinSize", 0) or 0)
    if "subgroups" in features and size >= 4:
        found |= {"subgroups", "subgroups-enable"}
    return frozenset(found), size if "subgroups" in found else 0


class BrowserBackend(Backend):
    """A GPUDevice of the page; build with ``await BrowserBackend.create(gpu, to_js, object_from_entries)``."""

    def __init__(self, adapter: Any, device: Any, info: AdapterInfo, to_js: Callable, object_from_entries: Any):
        super().__init__()
        self.adapter = adapter
        self.device = device
        self.info = info
        self._to_js = to_js
        self._entries = object_from_entries
        self.limits = plan_limits({key: int(getattr(device.limits, name)) for key, name in _JS_LIMITS.items()})
        self.features = {str(f) for f in device.features.values()} if hasattr(device.features, "values") else set()
        device.lost.then(self._on_lost)

    @classmethod
    async def create(cls, gpu: Any, to_js: Callable, object_from_entries: Any,
                     power_preference: str = "high-performance", optional_features: Sequence[str] = ("subgroups",),
                     timeout: float | None = None) -> "BrowserBackend":
        """Request an adapter and a device (default limits; ``optional_features`` only where
        the adapter has them). Raises GPUUnavailableError (its ``cause`` says which step failed)
        when there is no WebGPU, no adapter, or no device; ``timeout`` limits each request."""
        if gpu is None:
            raise GPUUnavailableError("this browser has no WebGPU (navigator.gpu is missing)", "no-webgpu")
        js = lambda value: to_js(value, dict_converter=object_from_entries)  # noqa: E731
        try:
            adapter = await time_limited(gpu.requestAdapter(js({"powerPreference": power_preference})), timeout,
                                         "navigator.gpu.requestAdapter()", "no-adapter")
        except GPUUnavailableError:
            raise
        except Exception as e:
            raise GPUUnavailableError(f"requestAdapter failed: {e}", "no-adapter") from None
        if adapter is None:
            raise GPUUnavailableError("the browser found no WebGPU adapter", "no-adapter")
        has = getattr(adapter.features, "has", None)
        features = [f for f in optional_features if has is not None and has(f)]
        try:
            device = await time_limited(adapter.requestDevice(js({"requiredFeatures": features})), timeout,
                                        "adapter.requestDevice()", "device-refused")
        except GPUUnavailableError:
            raise
        except Exception as e:
            raise GPUUnavailableError(f"the adapter refused a device: {e}", "device-refused") from None
        if device is None:
            raise GPUUnavailableError("the adapter refused a device", "device-refused")
        raw = getattr(adapter, "info", None)  # GPUAdapter.info (Chrome 127+)
        if raw is None and hasattr(adapter, "requestAdapterInfo"):
            raw = await adapter.requestAdapterInfo()
        info = AdapterInfo(backend="browser WebGPU", vendor=_text(raw, "vendor"),
                           architecture=_text(raw, "architecture"), device=_text(raw, "device"),
                           description=_text(raw, "description"))
        backend = cls(adapter, device, info, to_js, object_from_entries)
        backend.shader_features, backend.subgroup_min_size = _shader_variants(gpu, backend.features, raw)
        return backend

    def _js(self, value: Any) -> Any:
        return self._to_js(value, dict_converter=self._entries)

    def _on_lost(self, info: Any) -> None:
        reason, message = _text(info, "reason"), _text(info, "message")
        self._lost = ": ".join(part for part in (reason or "unknown", message) if part)

    def is_lost(self, error: Exception | None = None) -> bool:
        if self._lost is None and error is not None:
            text = str(error).lower()
            if "lost" in text or "destroyed" in text:
                self._lost = str(error).strip().splitlines()[-1]
        return self._lost is not None

    # ----- objects

    def create_buffer(self, size: int, usage: str, label: str = "") -> Buffer:
        handle = self.device.createBuffer(self._js({"size": size, "usage": BUFFER_USAGES[usage], "label": label}))
        return Buffer(handle, size, self._next_serial(), label)

    def write_buffer(self, buffer: Buffer, data: np.ndarray, offset: int = 0) -> None:
        raw = memoryview(np.ascontiguousarray(data)).cast("B")
        self.device.queue.writeBuffer(buffer.handle, offset, self._to_js(raw))

    def create_layout(self, kinds: Sequence[str]) -> Any:
        group = self.device.createBindGroupLayout(self._js({"entries": layout_entries(kinds)}))
        return {"group": group, "pipeline": self.device.createPipelineLayout(self._js({"bindGroupLayouts": [group]}))}

    def create_bind_group(self, layout: Any, buffers: Sequence[tuple[Buffer, int, int]]) -> Any:
        entries = bind_group_entries(buffers)
        return self.device.createBindGroup(self._js({"layout": layout["group"], "entries": entries}))

    def submit(self, commands) -> None:
        encoder = self.device.createCommandEncoder()
        compute = None
        pipeline = None
        for c in commands:
            if isinstance(c, Dispatch):
                if compute is None:
                    compute, pipeline = encoder.beginComputePass(), None
                if c.pipeline is not pipeline:
                    compute.setPipeline(c.pipeline)
                    pipeline = c.pipeline
                compute.setBindGroup(0, c.bind_group)
                compute.dispatchWorkgroups(*c.workgroups)
            else:
                if compute is not None:
                    compute.end()
                    compute = None
                encoder.copyBufferToBuffer(c.src.handle, c.src_offset, c.dst.handle, c.dst_offset, c.size)
        if compute is not None:
            compute.end()
        self.device.queue.submit(self._js([encoder.finish()]))

    # ----- waiting

    async def create_pipeline(self, code: str, entry: str, constants: dict, layout: Any, label: str = "") -> Any:
        module = self.device.createShaderModule(self._js({"code": code, "label": label}))
        descriptor = {"layout": layout["pipeline"], "label": label,
                      "compute": {"module": module, "entryPoint": entry,
                                  "constants": {k: float(v) for k, v in constants.items()}}}
        return await self.device.createComputePipelineAsync(self._js(descriptor))

    async def read(self, regions: Sequence[tuple[Buffer, int, int]]) -> list[memoryview]:
        distinct = list({b.serial: b for b, _, _ in regions}.values())
        await asyncio.gather(*(b.handle.mapAsync(MAP_READ) for b in distinct))
        out = [b.handle.getMappedRange(offset, size).to_memoryview() for b, offset, size in regions]
        for b in distinct:
            b.handle.unmap()
        return out

    def destroy(self) -> None:
        if self._lost is None:
            self._lost = "destroyed"
        self.device.destroy()


async def create_engine(gpu: Any, to_js: Callable, object_from_entries: Any, checkpoint,
                        timeout: float | None = None, **engine_options):
    """BrowserBackend + Engine for a checkpoint (the page's one-call entry); ``timeout``
    limits the adapter and device requests. If the engine cannot be built (a GPUError: the
    model does not fit the limits), the device is destroyed before the error is raised."""
    from .engine import Engine

    backend = await BrowserBackend.create(gpu, to_js, object_from_entries, timeout=timeout)
    try:
        return await Engine.create(backend, checkpoint, **engine_options)
    except BaseException:
        backend.destroy()
        raise
