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

Replay (issue 15): every call from Python into JS costs a crossing of the FFI (about 5 us in
Pyodide), and a forward is ~4 calls per dispatch when encoded from Python. So each forward
plan is turned into a JS array once (:meth:`record`) and a small JS helper (:data:`REPLAY_JS`,
built with the page's ``Function`` constructor: no DOM, so it runs in a worker too) walks it:
the writes, the encoder, the passes and the submit are one call (:meth:`replay`), and the
readback is one more (all regions copied into one Uint8Array). ``calls`` counts the calls
into JS (method calls and to_js conversions) for the benchmark; ``use_replay = False`` goes
back to encoding command by command from Python.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

import numpy as np

from .backend import (BUFFER_USAGES, DEFAULT_LIMITS, MAP_READ, USAGE_COPY_SRC, USAGE_QUERY_RESOLVE, AdapterInfo,
                      Backend, Buffer, Dispatch, EncoderNames, GPUUnavailableError, bind_group_entries, encode,
                      layout_entries, plan_limits, time_limited, timestamps_ns)

NAMES = EncoderNames("beginComputePass", "end", "setPipeline", "setBindGroup", "dispatchWorkgroups",
                     "copyBufferToBuffer")

# The JS side of replay: the body of a function of no arguments returning the helpers.
# An op is [0, pipeline, bindGroup, x, y, z] (dispatch) or [1, src, srcOffset, dst, dstOffset,
# size] (copy); a write is [buffer, offset, Uint8Array].
REPLAY_JS = """
return {
  replay(device, ops, writes) {
    for (const [buffer, offset, data] of writes) device.queue.writeBuffer(buffer, offset, data);
    const encoder = device.createCommandEncoder();
    let pass = null, pipeline = null;
    for (const op of ops) {
      if (op[0] === 0) {
        if (pass === null) { pass = encoder.beginComputePass(); pipeline = null; }
        if (op[1] !== pipeline) { pass.setPipeline(op[1]); pipeline = op[1]; }
        pass.setBindGroup(0, op[2]);
        pass.dispatchWorkgroups(op[3], op[4], op[5]);
      } else {
        if (pass !== null) { pass.end(); pass = null; }
        encoder.copyBufferToBuffer(op[1], op[2], op[3], op[4], op[5]);
      }
    }
    if (pass !== null) pass.end();
    device.queue.submit([encoder.finish()]);
  },
  async read(buffers, regions) {
    await Promise.all(buffers.map((b) => b.mapAsync(GPUMapMode.READ)));
    let total = 0;
    for (const r of regions) total += r[2];
    const out = new Uint8Array(total);
    let at = 0;
    for (const [i, offset, size] of regions) {
      out.set(new Uint8Array(buffers[i].getMappedRange(offset, size)), at);
      at += size;
    }
    for (const b of buffers) b.unmap();
    return out;
  },
};
"""
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
        self.calls = 0  # calls into JS (issue 15): method calls and to_js conversions
        self._helpers = None
        self.use_replay = True
        try:  # Object.fromEntries.constructor is the realm's Function (window or worker)
            self._helpers = object_from_entries.constructor(REPLAY_JS)()
        except Exception:  # e.g. a CSP without 'unsafe-eval': encode from Python
            self.use_replay = False

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
        self.calls += 2

    def create_layout(self, kinds: Sequence[str]) -> Any:
        group = self.device.createBindGroupLayout(self._js({"entries": layout_entries(kinds)}))
        return {"group": group, "pipeline": self.device.createPipelineLayout(self._js({"bindGroupLayouts": [group]}))}

    def create_bind_group(self, layout: Any, buffers: Sequence[tuple[Buffer, int, int]]) -> Any:
        entries = bind_group_entries(buffers)
        return self.device.createBindGroup(self._js({"layout": layout["group"], "entries": entries}))

    def submit(self, commands) -> None:
        encoder = self.device.createCommandEncoder()
        calls = encode(encoder, commands, NAMES)
        self.device.queue.submit(self._js([encoder.finish()]))
        self.calls += calls + 4  # + createCommandEncoder, finish, to_js, submit

    def record(self, commands) -> Any:
        """The commands as a JS array of ops for :data:`REPLAY_JS` (one to_js, once per plan)."""
        if not self.use_replay:
            return super().record(commands)
        ops = [[0, c.pipeline, c.bind_group, *c.workgroups] if isinstance(c, Dispatch)
               else [1, c.src.handle, c.src_offset, c.dst.handle, c.dst_offset, c.size] for c in commands]
        self.calls += 1
        return _Recording(list(commands), self._to_js(ops))

    def replay(self, recording, writes=()) -> None:
        """Writes, encoding and submit in one call into JS (two with the writes' to_js)."""
        if not isinstance(recording, _Recording):
            return super().replay(recording, writes)
        if not self.use_replay:
            return super().replay(recording.commands, writes)
        raw = [[buffer.handle, 0, memoryview(np.ascontiguousarray(data)).cast("B")] for buffer, data in writes]
        self._helpers.replay(self.device, recording.ops, self._to_js(raw))
        self.calls += 2

    async def submit_timed(self, commands) -> list[float]:
        """Each dispatch in its own compute pass with timestamp writes (GPU time in ns; Chrome
        quantizes to 100 us unless started with --enable-webgpu-developer-features)."""
        if not self.can_time:
            return await super().submit_timed(commands)
        dispatches = sum(isinstance(c, Dispatch) for c in commands)
        count = max(2 * dispatches, 2)
        queries = self.device.createQuerySet(self._js({"type": "timestamp", "count": count}))
        resolved = self.device.createBuffer(self._js({"size": 8 * count, "usage": USAGE_QUERY_RESOLVE | USAGE_COPY_SRC}))
        readback = self.create_buffer(8 * count, "readback", "timestamps")
        encoder = self.device.createCommandEncoder()
        encode(encoder, commands, NAMES, timed=lambda begin, i: begin(self._js({"timestampWrites": {
            "querySet": queries, "beginningOfPassWriteIndex": 2 * i, "endOfPassWriteIndex": 2 * i + 1}})))
        encoder.resolveQuerySet(queries, 0, count, resolved, 0)
        encoder.copyBufferToBuffer(resolved, 0, readback.handle, 0, 8 * count)
        self.device.queue.submit(self._js([encoder.finish()]))
        (raw,) = await self.read([(readback, 0, 8 * count)])
        queries.destroy()
        resolved.destroy()
        return timestamps_ns(raw, dispatches)

    # ----- waiting

    async def create_pipeline(self, code: str, entry: str, constants: dict, layout: Any, label: str = "") -> Any:
        module = self.device.createShaderModule(self._js({"code": code, "label": label}))
        descriptor = {"layout": layout["pipeline"], "label": label,
                      "compute": {"module": module, "entryPoint": entry,
                                  "constants": {k: float(v) for k, v in constants.items()}}}
        return await self.device.createComputePipelineAsync(self._js(descriptor))

    async def read(self, regions: Sequence[tuple[Buffer, int, int]]) -> list[memoryview]:
        distinct = list({b.serial: b for b, _, _ in regions}.values())
        if self.use_replay:  # one call: map all, copy every region into one array, unmap
            index = {b.serial: i for i, b in enumerate(distinct)}
            spans = [[index[b.serial], offset, size] for b, offset, size in regions]
            joined = (await self._helpers.read(self._js([b.handle for b in distinct]), self._js(spans))).to_memoryview()
            self.calls += 4  # to_js twice, read, to_memoryview
            out, at = [], 0
            for _, _, size in regions:
                out.append(joined[at:at + size])
                at += size
            return out
        await asyncio.gather(*(b.handle.mapAsync(MAP_READ) for b in distinct))
        out = [b.handle.getMappedRange(offset, size).to_memoryview() for b, offset, size in regions]
        for b in distinct:
            b.handle.unmap()
        self.calls += 2 * len(distinct) + 2 * len(regions)
        return out

    def destroy(self) -> None:
        if self._lost is None:
            self._lost = "destroyed"
        self.device.destroy()


class _Recording:
    """A recorded plan: the commands (for use_replay = False) and the JS array of ops."""

    __slots__ = ("commands", "ops")

    def __init__(self, commands: list, ops: Any):
        self.commands = commands
        self.ops = ops


async def create_engine(gpu: Any, to_js: Callable, object_from_entries: Any, checkpoint,
                        timeout: float | None = None, optional_features: Sequence[str] = ("timestamp-query",),
                        **engine_options):
    """BrowserBackend + Engine for a checkpoint (the page's one-call entry); ``timeout``
    limits the adapter and device requests. If the engine cannot be built (a GPUError: the
    model does not fit the limits), the device is destroyed before the error is raised."""
    from .engine import Engine

    backend = await BrowserBackend.create(gpu, to_js, object_from_entries, timeout=timeout,
                                          optional_features=optional_features)
    try:
        return await Engine.create(backend, checkpoint, **engine_options)
    except BaseException:
        backend.destroy()
        raise
