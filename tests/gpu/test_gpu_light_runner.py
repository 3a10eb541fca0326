"""app.gpu_light.GPULightRunner on native WebGPU (issue 15): light mode's runner with the q4
weights on the GPU equals numpy light mode (lightmode.LightRunner on the dequantized q4
weights), for the run and for a layer read from the GPU afterwards.

Tolerance: test_gpu_runner's (the engine's whole-forward bound on this small model,
3e-5 + 1e-4*|ref|; measured ~2e-6), since the same kernels compute the same forward.
"""

from __future__ import annotations

from app import lightmode
from app.gpu_light import GPULightRunner, make_runner
from gpu_helpers import SMALL, random_checkpoint
from test_gpu_runner import compare  # the same tensors, in the same order, within its TOL

IDS = [5, 77, 123, 9, 250, 31, 2]


def test_light_mode_on_webgpu_q4_equals_numpy_light_mode(run, small_params):
    from glassbox.gpu import Engine
    from glassbox.gpu.native import NativeBackend

    checkpoint = random_checkpoint(SMALL, "q4", params=small_params)
    params = checkpoint.dequantized()

    async def new_engine():
        return await Engine.create(await NativeBackend.create(), checkpoint)

    runner = make_runner(lightmode.LightRunner(params, SMALL), new_engine)
    assert isinstance(runner, GPULightRunner)
    run(runner.start("webgpu"))
    assert runner.status.backend == "webgpu" and runner.engine.scheme == "q4"
    trace = run(runner.run(IDS))
    assert runner.name == "WebGPU, light mode"
    numpy = lightmode.LightRunner(params, SMALL)
    want = run(numpy.run(IDS))
    compare("light run q4", trace, want)
    assert run(runner.fetch_layer(trace, 1)) == "webgpu"
    numpy.view_layer(want, 1)
    compare("light layer fetched q4", trace, want)
    runner.engine.backend.destroy()
