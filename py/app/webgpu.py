"""Find a WebGPU adapter through the browser's ``navigator.gpu`` and say what it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdapterInfo:
    """What the browser tells about its adapter (GPUAdapterInfo); empty strings if hidden."""

    vendor: str
    architecture: str
    device: str
    description: str
    fallback: bool
    # adapter.limits, in bytes (0 where unknown): light mode (lightmode.py) reads them.
    max_storage_buffer_binding_size: int = 0
    max_buffer_size: int = 0

    @property
    def name(self) -> str:
        """A one-line name for people: the description, else the device, else vendor/arch."""
        if self.description:
            return self.description
        if self.device:
            return self.device
        return " ".join(part for part in (self.vendor, self.architecture) if part) or "unnamed adapter"


def _text(obj, name: str) -> str:
    value = getattr(obj, name, None)
    return "" if value is None else str(value)


async def probe_adapter(navigator, timeout: float = 10.0) -> AdapterInfo | None:
    """The default adapter's info, or None when the browser has no WebGPU or no adapter, or
    requestAdapter() does not answer within ``timeout`` seconds (the page must not hang;
    app/gpu_runner.py then says why numpy runs)."""
    from glassbox.gpu.backend import GPUUnavailableError, time_limited

    gpu = getattr(navigator, "gpu", None)
    if gpu is None:
        return None
    try:
        adapter = await time_limited(gpu.requestAdapter(), timeout, "requestAdapter()", "no-adapter")
    except GPUUnavailableError:
        return None
    if adapter is None:
        return None
    info = getattr(adapter, "info", None)  # GPUAdapter.info (Chrome 127+)
    if info is None:
        info = await adapter.requestAdapterInfo()  # older browsers
    fallback = getattr(info, "isFallbackAdapter", None)
    if fallback is None:
        fallback = getattr(adapter, "isFallbackAdapter", False)
    limits = getattr(adapter, "limits", None)
    return AdapterInfo(
        vendor=_text(info, "vendor"),
        architecture=_text(info, "architecture"),
        device=_text(info, "device"),
        description=_text(info, "description"),
        fallback=bool(fallback),
        max_storage_buffer_binding_size=_limit(limits, "maxStorageBufferBindingSize"),
        max_buffer_size=_limit(limits, "maxBufferSize"),
    )


def _limit(limits, name: str) -> int:
    try:
        return int(getattr(limits, name, 0) or 0)
    except (TypeError, ValueError):
        return 0
