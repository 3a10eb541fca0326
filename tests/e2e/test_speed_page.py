"""Issue 15 in the page: numpy multiplies the stored int8 weights with the WebAssembly SIMD
kernel (wasm/linear_i8.so), and on a software adapter (SwiftShader here) a calibrating
runner times both backends and keeps the faster.

Tolerance for the kernel's forward against float32 numpy in the same page: summation order
only (see tests/test_qlinear.py): atol 1e-5 + rtol 1e-4 per element, through weights/mini's 4
blocks (largest ratio printed). No timing is asserted: the calibration's choice must follow
the times it measured.
"""

from __future__ import annotations

SPEED = """
import js
import numpy as np
from pyodide.ffi import to_js
from app import gpu_runner, runner as runners
from glassbox import reference

async def speed_test():
    if app.kernel_task is not None:  # a WebGPU page loads it after the first run (p15)
        await app.kernel_task
    params = explainer.model.params
    w = params["h.0.mlp.c_fc.weight"]
    out = {"note": app.kernel_note, "kernel": [type(w).__name__, w.kernel is not None]}
    ids = np.arange(11) * 13
    got = reference.forward(params, explainer.config, ids)
    want = reference.forward(explainer.model.checkpoint.dequantized(), explainer.config, ids)
    out["worst"] = max(float((np.abs(got[n] - want[n]) / (1e-5 + 1e-4 * np.abs(want[n]))).max()) for n in want.names())
    make = gpu_runner.browser_engine(js.navigator, to_js, js.Object.fromEntries, explainer.model.checkpoint)
    runner = gpu_runner.WebGPURunner(make, runners.ReferenceRunner(params, explainer.config), calibrate=True)
    status = await runner.start()
    out["calibration"] = runner.calibration
    out["status"] = [status.backend, status.cause, status.reason]
    if runner.engine is not None:
        runner.engine.backend.destroy()
    return out

await speed_test()
"""


def test_kernel_runs_numpy_and_calibration_picks_the_faster(app):
    got = app.py(SPEED)
    assert got["kernel"] == ["QuantizedMatrix", True], got["note"]
    assert "WebAssembly SIMD kernel" in got["note"]
    print(f"\nkernel forward vs float32 numpy in the page: worst {got['worst']:.3f} x tolerance; "
          f"calibration on SwiftShader (ms): {got['calibration']}")
    assert got["worst"] <= 1
    times = got["calibration"]
    assert times is not None and set(times) == {"webgpu", "numpy"}, got["status"]
    faster = min(times, key=times.get)
    backend, cause, reason = got["status"]
    assert backend == faster and cause == ("ok" if faster == "webgpu" else "calibrated")
    assert "software" in reason and "start-up check" in reason
    if faster == "numpy":
        assert "?backend=webgpu" in reason
