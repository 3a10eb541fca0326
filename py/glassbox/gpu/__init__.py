"""GPT-2 on WebGPU: the platform layer (backend.py, native.py, browser.py) and the engine.

    backend = await NativeBackend.create()            # or BrowserBackend.create(navigator.gpu, ...)
    engine = await Engine.create(backend, checkpoint)
    trace = await engine.forward(ids, capture="logits")  # same Trace as reference.forward

Importing this package needs neither wgpu nor js: each backend module imports its platform
lazily, so the core stays importable everywhere.
"""

from .backend import AdapterInfo, Backend, DeviceLostError, GPUError, GPUUnavailableError
from .engine import Engine, GPUCache, capture_predicate

__all__ = ["AdapterInfo", "Backend", "DeviceLostError", "Engine", "GPUCache", "GPUError", "GPUUnavailableError",
           "capture_predicate"]
