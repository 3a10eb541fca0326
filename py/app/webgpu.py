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


async def probe_adapter(navigator) -> AdapterInfo | None:
    """The default adapter's info, or None when the browser has no WebGPU or no adapter."""
    gpu = getattr(navigator, "gpu", None)
    if gpu is None:
        return None
    adapter = await gpu.requestAdapter()
    if adapter is None:
        return None
    info = getattr(adapter, "info", None)  # GPUAdapter.info (Chrome 127+)
    if info is None:
        info = await adapter.requestAdapterInfo()  # older browsers
    fallback = getattr(info, "isFallbackAdapter", None)
    if fallback is None:
        fallback = getattr(adapter, "isFallbackAdapter", False)
    return AdapterInfo(
        vendor=_text(info, "vendor"),
        architecture=_text(info, "architecture"),
        device=_text(info, "device"),
        description=_text(info, "description"),
        fallback=bool(fallback),
    )
