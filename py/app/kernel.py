"""Load the numpy fallback's WebAssembly SIMD matmul (wasm/linear_i8.so) into Pyodide.

    kernel, why = await load_kernel()   # qlinear.LinearKernel or None, and a sentence for people
    model.keep_quantized(kernel)        # numpy then multiplies the stored int8 weights with it

The file is an Emscripten side module built by ``make kernels`` (wasm/linear_i8.c). It is
fetched, written to Pyodide's file system and linked with ``ctypes.CDLL``, which makes it
share the interpreter's WebAssembly memory: numpy arrays are passed by address, never copied.
Before it is used, one small product is checked against numpy; if the file is missing (not
built), cannot be linked or disagrees, the page keeps numpy's own matmul and says why.
"""

from __future__ import annotations

import os
import time

import numpy as np

KERNEL_URL = "./wasm/linear_i8.so"
KERNEL_PATH = "/tmp/glassbox/linear_i8.so"
# A 5 x 32 x 7 product against numpy (float32, dot products of 32): a few ulps apart at most.
CHECK_TOLERANCE = 1e-5


def self_check(kernel) -> None:
    """Raise ValueError unless the kernel gives numpy's product on a small example."""
    from glassbox import quant

    rng = np.random.default_rng(15)
    w = rng.standard_normal((7, 32)).astype(np.float32)
    q, scale = quant.quantize_int8(w)
    for n in (5, 2):  # the blocked path (>= 4 tokens) and the direct one
        x = rng.standard_normal((n, 32)).astype(np.float32)
        want = x @ quant.dequantize_int8(q, scale).T
        got = kernel.linear_i8(x, q, scale)
        if not np.allclose(got, want, rtol=CHECK_TOLERANCE, atol=CHECK_TOLERANCE):
            raise ValueError(f"the kernel's product differs from numpy's by {np.abs(got - want).max():.3g}")


async def load_kernel(url: str = KERNEL_URL, path: str = KERNEL_PATH):
    """(LinearKernel, why) when the kernel loads and checks out, else (None, why)."""
    from glassbox.qlinear import LinearKernel

    from .loader import fetch_bytes

    started = time.perf_counter()
    try:
        data = await fetch_bytes(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        kernel = LinearKernel(path)
        self_check(kernel)
    except Exception as e:  # noqa: BLE001  (any failure: numpy's own matmul, and why)
        return None, f"numpy's own matmul (the WebAssembly SIMD kernel did not load: {type(e).__name__}: {e})"
    ms = (time.perf_counter() - started) * 1e3
    return kernel, f"int8 weights through the WebAssembly SIMD kernel ({len(data)} bytes, loaded and checked in {ms:.0f} ms)"
