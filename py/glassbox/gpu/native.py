"""Native WebGPU through wgpu-py (wgpu-native): the backend for the CLI, the tests and bench.

``wgpu`` is imported inside the functions, so importing this module never needs it.
The device is requested with WebGPU's default limits (``backend.DEFAULT_LIMITS``) so that a
kernel or a binding that would not run on a phone fails here too, not only in the field.

wgpu-py 0.32 does not implement ``device.lost`` (its promise raises NotImplementedError, and
wgpu-native's device-lost callback only logs, without saying which device). So a loss is
detected where it bites: after a failed call, ``is_lost`` probes the device (an empty command
encoder no longer finishes on a lost one), and the engine raises
:class:`~glassbox.gpu.backend.DeviceLostError`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import numpy as np

from .backend import (BUFFER_USAGES, DEFAULT_LIMITS, MAP_READ, AdapterInfo, Backend, Buffer, Copy, Dispatch,
                      EncoderNames, GPUUnavailableError, bind_group_entries, encode, layout_entries, plan_limits,
                      timestamps_ns)

NAMES = EncoderNames("begin_compute_pass", "end", "set_pipeline", "set_bind_group", "dispatch_workgroups",
                     "copy_buffer_to_buffer")


def _looks_lost(error: Exception) -> bool:
    return "lost" in str(error).lower()


class NativeBackend(Backend):
    """wgpu-py adapter + device; build with ``await NativeBackend.create()``."""

    def __init__(self, adapter: Any, device: Any):
        super().__init__()
        import wgpu

        self.adapter = adapter
        self.device = device
        raw = dict(adapter.info)
        self.info = AdapterInfo(
            backend=f"wgpu-native (wgpu-py {wgpu.__version__})",
            vendor=str(raw.get("vendor", "")),
            architecture=str(raw.get("architecture", "")),
            device=str(raw.get("device", "")),
            description=str(raw.get("description", "")),
            adapter_type=str(raw.get("adapter_type", "")),
            backend_type=str(raw.get("backend_type", "")),
        )
        self.limits = plan_limits({key: device.limits[key.replace("_", "-")] for key in DEFAULT_LIMITS})
        self.features = set(device.features)
        self.shader_features, self.subgroup_min_size = self._shader_variants(raw)

    def _shader_variants(self, raw: dict) -> tuple[frozenset[str], int]:
        """Issue 15, matmul: which kernels.SHADER_FEATURES naga compiles here (probed: wgpu-py
        does not list WGSL language features), and the smallest subgroup size."""
        found = set()
        probe = ("@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n"
                 "@compute @workgroup_size(1) fn main() { o[0] = bitcast<u32>(unpack4xI8(o[1]).x); }")
        try:
            self.device.create_shader_module(code=probe)
            found.add("packed4x8")
        except Exception:
            pass
        # wgpu-native's feature is "subgroup"; naga takes subgroup built-ins without "enable".
        size = int(raw.get("subgroup_min_size", raw.get("stackgroup_min_size", 0)) or 0)
        if "subgroup" in self.features and size:
            found.add("subgroups")
        return frozenset(found), size if "subgroups" in found else 0

    @classmethod
    async def create(cls, power_preference: str = "high-performance",
                     optional_features: Sequence[str] = ("subgroup",)) -> "NativeBackend":
        """Request an adapter and a device with WebGPU's default limits.

        ``optional_features`` are requested only where the adapter has them.
        Raises GPUUnavailableError when wgpu-py or an adapter is missing or a device is refused.
        """
        try:
            import wgpu
        except ImportError as e:
            raise GPUUnavailableError(f"wgpu-py is not installed ({e}); pip install wgpu", "no-webgpu") from None
        try:
            adapter = await wgpu.gpu.request_adapter_async(power_preference=power_preference)
        except Exception as e:  # wgpu-py raises RuntimeError when no adapter exists
            raise GPUUnavailableError(f"no WebGPU adapter: {e}") from None
        if adapter is None:
            raise GPUUnavailableError("no WebGPU adapter")
        features = [f for f in optional_features if f in adapter.features]
        limits = {key.replace("_", "-"): value for key, value in DEFAULT_LIMITS.items()
                  if not key.startswith("min_")}
        try:
            device = await adapter.request_device_async(required_features=features, required_limits=limits)
        except Exception as e:
            raise GPUUnavailableError(f"the adapter refused a device: {e}", "device-refused") from None
        return cls(adapter, device)

    # ----- objects

    def create_buffer(self, size: int, usage: str, label: str = "") -> Buffer:
        handle = self.device.create_buffer(size=size, usage=BUFFER_USAGES[usage], label=label)
        return Buffer(handle, size, self._next_serial(), label)

    def write_buffer(self, buffer: Buffer, data: np.ndarray, offset: int = 0) -> None:
        self.device.queue.write_buffer(buffer.handle, offset, np.ascontiguousarray(data))

    def create_layout(self, kinds: Sequence[str]) -> Any:
        group = self.device.create_bind_group_layout(entries=layout_entries(kinds))
        return {"group": group, "pipeline": self.device.create_pipeline_layout(bind_group_layouts=[group])}

    def create_bind_group(self, layout: Any, buffers: Sequence[tuple[Buffer, int, int]]) -> Any:
        return self.device.create_bind_group(layout=layout["group"], entries=bind_group_entries(buffers))

    def submit(self, commands: Sequence[Dispatch | Copy]) -> None:
        encoder = self.device.create_command_encoder()
        encode(encoder, commands, NAMES)
        self.device.queue.submit([encoder.finish()])

    async def submit_timed(self, commands: Sequence[Dispatch | Copy]) -> list[float]:
        """Each dispatch in its own compute pass with timestamps at its start and end; the
        resolved ticks times the queue's timestamp period (wgpu-native's raw ticks) -> ns."""
        if not self.can_time:
            return await super().submit_timed(commands)
        import wgpu

        dispatches = sum(isinstance(c, Dispatch) for c in commands)
        count = max(2 * dispatches, 2)
        queries = self.device.create_query_set(type=wgpu.QueryType.timestamp, count=count)
        resolved = self.device.create_buffer(size=8 * count, usage=wgpu.BufferUsage.QUERY_RESOLVE
                                             | wgpu.BufferUsage.COPY_SRC)
        readback = self.create_buffer(8 * count, "readback", "timestamps")
        encoder = self.device.create_command_encoder()
        encode(encoder, commands, NAMES, timed=lambda begin, i: begin(timestamp_writes={
            "query_set": queries, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1}))
        encoder.resolve_query_set(queries, 0, count, resolved, 0)
        encoder.copy_buffer_to_buffer(resolved, 0, readback.handle, 0, 8 * count)
        self.device.queue.submit([encoder.finish()])
        (raw,) = await self.read([(readback, 0, 8 * count)])
        return timestamps_ns(raw, dispatches, self._timestamp_period())

    def _timestamp_period(self) -> float:
        """Nanoseconds per timestamp tick (wgpuQueueGetTimestampPeriod; 1.0 if unreachable)."""
        try:
            from wgpu.backends.wgpu_native._ffi import lib

            return float(lib.wgpuQueueGetTimestampPeriod(self.device.queue._internal))
        except Exception:
            return 1.0

    # ----- waiting

    async def create_pipeline(self, code: str, entry: str, constants: dict, layout: Any, label: str = "") -> Any:
        module = self.device.create_shader_module(code=code, label=label)
        return await self.device.create_compute_pipeline_async(
            layout=layout["pipeline"], label=label,
            compute={"module": module, "entry_point": entry, "constants": dict(constants)})

    async def read(self, regions: Sequence[tuple[Buffer, int, int]]) -> list[memoryview]:
        distinct = list({b.serial: b for b, _, _ in regions}.values())
        await asyncio.gather(*(b.handle.map_async(MAP_READ) for b in distinct))
        out = [b.handle.read_mapped(offset, size, copy=True) for b, offset, size in regions]
        for b in distinct:
            b.handle.unmap()
        return out

    def is_lost(self, error: Exception | None = None) -> bool:
        """After a failed call (``error``), also probes the device: an empty command encoder
        no longer finishes once it is lost."""
        if self._lost is None and error is not None:
            try:
                self.device.create_command_encoder().finish()
            except Exception as e:
                if _looks_lost(e):
                    self._lost = str(e).strip().splitlines()[-1]
            if self._lost is None and _looks_lost(error):
                self._lost = str(error).strip().splitlines()[-1]
        return self._lost is not None

    def destroy(self) -> None:
        if self._lost is None:
            self._lost = "destroyed"
        self.device.destroy()


# ----- synchronous conveniences for the CLI (never used in the browser)

_LOOP: asyncio.AbstractEventLoop | None = None


def run_sync(coroutine):
    """Run a coroutine to completion on this module's own event loop (CLI, bench)."""
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(coroutine)


def adapter_available() -> bool:
    """True when wgpu-py is installed and finds an adapter."""
    try:
        import wgpu
        return wgpu.gpu.request_adapter_sync(power_preference="high-performance") is not None
    except Exception:
        return False


async def create_engine(checkpoint, optional_features: Sequence[str] = (), **engine_options):
    """NativeBackend + Engine for a checkpoint (``optional_features`` e.g. 'timestamp-query'
    for Engine.profile, where the adapter has them)."""
    from .engine import Engine

    backend = await NativeBackend.create(optional_features=optional_features)
    return await Engine.create(backend, checkpoint, **engine_options)


def create_engine_sync(checkpoint, **engine_options):
    return run_sync(create_engine(checkpoint, **engine_options))
