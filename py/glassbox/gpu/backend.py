"""The platform layer under the GPU engine: one small WebGPU interface, two implementations.

``native.NativeBackend`` drives wgpu-py (wgpu-native); ``browser.BrowserBackend`` drives the
page's ``navigator.gpu`` through Pyodide's FFI. The engine (``engine.py``) only talks to
:class:`Backend`, so the same Python code path runs in both places.

Every call that can wait is a coroutine: requesting the adapter and device (the factories),
compiling pipelines and reading buffers back. The others only enqueue work or create an
object and return at once, as their WebGPU counterparts do, so they are plain methods.

Standard library + numpy only: no ``wgpu``, ``js`` or ``pyscript`` import here.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


class GPUError(RuntimeError):
    """Base of the GPU engine's errors: catch this to fall back to the numpy path."""


class GPUUnavailableError(GPUError):
    """No WebGPU, no adapter, or the adapter refused a device.

    ``cause`` says which, for people and for the page's choice of backend: "no-webgpu" (no
    navigator.gpu / no wgpu-py), "no-adapter" (none found, or requestAdapter did not answer in
    time) or "device-refused" (requestDevice failed or did not answer in time).
    """

    CAUSES = ("no-webgpu", "no-adapter", "device-refused")

    def __init__(self, message: str, cause: str = "no-adapter"):
        if cause not in self.CAUSES:
            raise ValueError(f"unknown cause {cause!r}; expected one of {self.CAUSES}")
        super().__init__(message)
        self.cause = cause


class DeviceLostError(GPUError):
    """The device was lost (driver reset, tab backgrounded, destroy()).

    Everything created from it is gone: make a new backend and engine, or fall back to numpy.
    """


async def time_limited(awaitable, seconds: float | None, what: str, cause: str):
    """``await awaitable``, or GPUUnavailableError(cause) if it has not answered in ``seconds``
    (None: no limit). Adapter and device requests can stay pending for ever on a broken driver;
    nothing in Glassbox waits on them without a limit."""

    async def wait():
        return await awaitable

    if seconds is None:
        return await wait()
    try:
        return await asyncio.wait_for(wait(), seconds)
    except asyncio.TimeoutError:
        raise GPUUnavailableError(f"{what} did not answer within {seconds:g} s", cause) from None


# The WebGPU spec's default limits: what every conforming device (phones included) grants
# without asking. The engine plans within these even where the adapter offers more.
DEFAULT_LIMITS = {
    "max_storage_buffer_binding_size": 128 * 1024 * 1024,
    "max_buffer_size": 256 * 1024 * 1024,
    "max_storage_buffers_per_shader_stage": 8,
    "max_compute_workgroup_storage_size": 16 * 1024,
    "max_compute_workgroups_per_dimension": 65535,
    "min_storage_buffer_offset_alignment": 256,
}



def plan_limits(device_limits: dict[str, int]) -> dict[str, int]:
    """The limits the engine plans with: the device's, but never beyond WebGPU's defaults."""
    return {key: (max if key.startswith("min_") else min)(int(device_limits[key]), default)
            for key, default in DEFAULT_LIMITS.items()}


# GPUBufferUsage and GPUMapMode bits (identical in the WebGPU spec and wgpu-py).
USAGE_MAP_READ = 0x0001
USAGE_COPY_SRC = 0x0004
USAGE_COPY_DST = 0x0008
USAGE_UNIFORM = 0x0040
USAGE_STORAGE = 0x0080
USAGE_QUERY_RESOLVE = 0x0200
MAP_READ = 0x0001

BUFFER_USAGES = {
    "storage": USAGE_STORAGE | USAGE_COPY_DST | USAGE_COPY_SRC,
    "uniform": USAGE_UNIFORM | USAGE_COPY_DST,
    "readback": USAGE_MAP_READ | USAGE_COPY_DST,
}
# Binding kinds -> GPUBufferBindingType.
BINDING_TYPES = {"uniform": "uniform", "read": "read-only-storage", "read_write": "storage"}
SHADER_STAGE_COMPUTE = 4


def layout_entries(kinds: Sequence[str]) -> list[dict]:
    """GPUBindGroupLayoutEntry dicts (same keys in the JS API and wgpu-py) for buffer kinds."""
    return [{"binding": i, "visibility": SHADER_STAGE_COMPUTE, "buffer": {"type": BINDING_TYPES[kind]}}
            for i, kind in enumerate(kinds)]


def bind_group_entries(buffers: Sequence[tuple["Buffer", int, int]]) -> list[dict]:
    """GPUBindGroupEntry dicts: binding i -> (buffer, offset, size)."""
    return [{"binding": i, "resource": {"buffer": b.handle, "offset": offset, "size": size}}
            for i, (b, offset, size) in enumerate(buffers)]


@dataclass(frozen=True)
class AdapterInfo:
    """What the adapter says about itself (GPUAdapterInfo), plus which backend drives it."""

    backend: str  # "wgpu-native" or "browser"
    vendor: str
    architecture: str
    device: str
    description: str
    adapter_type: str = ""  # wgpu-native: "DiscreteGPU", "CPU", ...; "" in the browser
    backend_type: str = ""  # wgpu-native: "Vulkan", "Metal", ...; "" in the browser

    def describe(self) -> str:
        """One line for people and logs: 'wgpu-native: llvmpipe (...) [llvmpipe, CPU, Vulkan]'."""
        name = self.description or self.device or "unnamed adapter"
        if self.device and self.device not in name:
            name = f"{self.device} ({name})"
        tags = ", ".join(t for t in (self.vendor, self.architecture, self.adapter_type, self.backend_type) if t)
        return f"{self.backend}: {name}" + (f" [{tags}]" if tags else "")


SOFTWARE_ADAPTERS = ("swiftshader", "llvmpipe", "lavapipe", "softpipe", "warp")


def software_adapter(info) -> bool:
    """True for an adapter that runs on the CPU: flagged as a fallback adapter (the browser's
    GPUAdapterInfo) or of type "CPU" (wgpu-native), or named SwiftShader, llvmpipe/lavapipe,
    softpipe or WARP. ``info``: this module's AdapterInfo or the page's (app/webgpu.py)."""
    if getattr(info, "fallback", False) or getattr(info, "adapter_type", "") == "CPU":
        return True
    text = " ".join(str(getattr(info, k, "") or "") for k in ("vendor", "architecture", "device", "description"))
    return any(name in text.lower() for name in SOFTWARE_ADAPTERS)


@dataclass(frozen=True)
class Buffer:
    """A GPU buffer: the platform handle, its size in bytes and a serial unique per backend."""

    handle: Any
    size: int
    serial: int
    label: str = ""


@dataclass(frozen=True)
class Dispatch:
    """One compute dispatch: pipeline, bind group (group 0) and workgroup counts."""

    pipeline: Any
    bind_group: Any
    workgroups: tuple[int, int, int]


@dataclass(frozen=True)
class Copy:
    """copyBufferToBuffer; ends the current compute pass."""

    src: Buffer
    src_offset: int
    dst: Buffer
    dst_offset: int
    size: int


@dataclass(frozen=True)
class EncoderNames:
    """A platform's method names for encoding (wgpu-py snake_case, JS camelCase)."""

    begin_pass: str
    end: str
    set_pipeline: str
    set_bind_group: str
    dispatch: str
    copy: str


def encode(encoder: Any, commands: Sequence["Dispatch | Copy"], names: EncoderNames,
           timed: Any = None) -> int:
    """Encode commands into ``encoder``: consecutive dispatches share a compute pass (a copy
    ends it); with ``timed(begin, i)`` (calls ``begin`` with dispatch i's timestamp writes and
    returns the pass) each dispatch gets its own pass. Returns the calls made on encoder and
    passes."""
    compute, pipeline, calls, index = None, None, 0, 0
    for c in commands:
        if isinstance(c, Dispatch):
            if compute is None:
                begin = getattr(encoder, names.begin_pass)
                compute, pipeline = (begin() if timed is None else timed(begin, index)), None
                calls += 2  # begin, end
            if c.pipeline is not pipeline:
                getattr(compute, names.set_pipeline)(c.pipeline)
                pipeline = c.pipeline
                calls += 1
            getattr(compute, names.set_bind_group)(0, c.bind_group)
            getattr(compute, names.dispatch)(*c.workgroups)
            calls += 2
            index += 1
            if timed is not None:
                getattr(compute, names.end)()
                compute = None
        else:
            if compute is not None:
                getattr(compute, names.end)()
                compute = None
            getattr(encoder, names.copy)(c.src.handle, c.src_offset, c.dst.handle, c.dst_offset, c.size)
            calls += 1
    if compute is not None:
        getattr(compute, names.end)()
    return calls


def timestamps_ns(raw: memoryview, dispatches: int, period: float = 1.0) -> list[float]:
    """GPU time per dispatch from resolved timestamp pairs (u64 begin, end) times ns per tick."""
    ticks = np.frombuffer(raw, dtype=np.uint64)[:2 * dispatches].astype(np.float64)
    return list((ticks[1::2] - ticks[0::2]) * period)


class Backend(abc.ABC):
    """An adapter + device. Subclasses are built by their async ``create`` factory."""

    info: AdapterInfo
    limits: dict[str, int]  # DEFAULT_LIMITS' keys, each min(device limit, default)
    # Issue 15, matmul: shader variants this device compiles (kernels.SHADER_FEATURES) and
    # its smallest subgroup (0: unknown or no subgroups).
    shader_features: frozenset[str] = frozenset()
    subgroup_min_size: int = 0

    def __init__(self) -> None:
        self._serial = 0
        self._lost: str | None = None

    # ----- state

    @property
    def lost(self) -> str | None:
        """Why the device was lost, or None while it works."""
        return self._lost

    def is_lost(self, error: Exception | None = None) -> bool:
        """Whether the device is gone; ``error`` is a call's failure that may be the cause."""
        return self._lost is not None

    def check(self, error: Exception | None = None) -> None:
        """Raise DeviceLostError (from ``error``) if the device is gone."""
        if self.is_lost(error):
            raise DeviceLostError(f"the GPU device was lost ({self._lost}); create a new engine "
                                  "or use numpy") from error

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    # ----- objects (enqueue / create: return at once)

    @abc.abstractmethod
    def create_buffer(self, size: int, usage: str, label: str = "") -> Buffer:
        """A zeroed buffer; usage is one of BUFFER_USAGES' keys."""

    @abc.abstractmethod
    def write_buffer(self, buffer: Buffer, data: np.ndarray, offset: int = 0) -> None:
        """queue.writeBuffer with the bytes of a C-contiguous array (size a multiple of 4)."""

    @abc.abstractmethod
    def create_layout(self, kinds: Sequence[str]) -> Any:
        """A pipeline layout with one bind group of buffers, binding i of kind kinds[i]."""

    @abc.abstractmethod
    def create_bind_group(self, layout: Any, buffers: Sequence[tuple[Buffer, int, int]]) -> Any:
        """Bind group 0 of ``layout``: binding i -> (buffer, offset, size)."""

    @abc.abstractmethod
    def submit(self, commands: Sequence[Dispatch | Copy]) -> None:
        """Encode all commands in one command encoder (consecutive dispatches share a compute
        pass) and submit it once."""

    def record(self, commands: Sequence[Dispatch | Copy]) -> Any:
        """Prepare a command list that will be submitted many times (a forward plan); the
        result goes to :meth:`replay`. Here: the list itself (the browser prepares it in JS)."""
        return list(commands)

    def replay(self, recording: Any, writes: Sequence[tuple["Buffer", np.ndarray]] = ()) -> None:
        """queue.writeBuffer each (buffer, array) of ``writes`` at offset 0, then submit a
        :meth:`record`-ed command list."""
        for buffer, data in writes:
            self.write_buffer(buffer, data)
        self.submit(recording)

    # ----- profiling (issue 15, g15)

    @property
    def can_time(self) -> bool:
        """Whether the device has 'timestamp-query' (requested at creation) for submit_timed."""
        return "timestamp-query" in getattr(self, "features", ())

    async def submit_timed(self, commands: Sequence[Dispatch | Copy]) -> list[float]:
        """Submit like :meth:`submit`, each dispatch in its own compute pass with timestamps
        at its start and end; return the GPU time of each dispatch in nanoseconds (in the
        order of the dispatches). Needs :attr:`can_time`."""
        raise GPUError(f"{self.info.describe()} has no timestamp queries in this backend")

    # ----- waiting (coroutines)

    @abc.abstractmethod
    async def create_pipeline(self, code: str, entry: str, constants: dict[str, float | int | bool],
                              layout: Any, label: str = "") -> Any:
        """Compile a compute pipeline (createComputePipelineAsync)."""

    @abc.abstractmethod
    async def read(self, regions: Sequence[tuple[Buffer, int, int]]) -> list[memoryview]:
        """Map every distinct readback buffer once (all together), copy out the regions
        (buffer, offset, size) as writable memory, unmap."""

    @abc.abstractmethod
    def destroy(self) -> None:
        """Destroy the device; the backend reports itself lost afterwards."""
