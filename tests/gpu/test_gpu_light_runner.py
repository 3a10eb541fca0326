"""app.gpu_light.GPULightRunner on native WebGPU (issue 15): light mode's runner with the q4
weights on the GPU equals numpy light mode (lightmode.LightRunner on the dequantized q4
weights), for the run and for a layer read from the GPU afterwards. A light run reads back
the last logits row only (issue 15 item 4) and keeps nothing else of the run on the GPU.

Tolerance: test_gpu_runner's (the engine's whole-forward bound on this small model,
3e-5 + 1e-4*|ref|; measured ~2e-6), since the same kernels compute the same forward.
"""

from __future__ import annotations

import numpy as np
import pytest

from app import lightmode
from app.gpu_light import GPULightRunner, make_runner
from glassbox.gpu.engine import WRITTEN_ONCE, GPUError
from glassbox.trace import LAYER_NAMES, SUMMARY_NAMES, layer_name
from gpu_helpers import SMALL, random_checkpoint
from test_gpu_runner import compare  # the same tensors, in the same order, within its TOL


def last_row(trace):
    """numpy light mode's trace with its logits cut to the last row (what the GPU reads back)."""
    cut = lightmode.LayerTrace(trace, None, trace.viewed)
    cut.tensors = {n: (v[-1:] if n == "logits" else v) for n, v in trace.tensors.items()}
    cut.logits_start = trace.ids.size - 1
    return cut

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
    assert isinstance(trace, lightmode.LayerTrace) and trace.viewed == 0
    # issue 15 item 4: the last logits row alone came back, and nothing was kept for later.
    n, V = len(IDS), SMALL.vocab_size
    assert trace.logits.shape == (1, V) and trace.logits_start == n - 1
    what, count, nbytes = runner.readbacks[-1]
    assert what == "run" and count == len(trace.tensors)
    assert nbytes == sum(v.nbytes for v in trace.tensors.values())
    assert runner._kept_ids is None and {role for _, role in runner.engine._last.kept} <= WRITTEN_ONCE
    with pytest.raises(GPUError, match="was not kept"):  # no keep=True: the blocks' tensors are gone
        run(runner.engine.read_layer(1))
    numpy = lightmode.LightRunner(params, SMALL)
    want = run(numpy.run(IDS))
    assert want.logits.shape == (n, V)  # numpy light mode is unchanged: every row
    # the same tensors as numpy light mode's, less the n - 1 first logits rows
    assert nbytes == sum(v.nbytes for v in want.tensors.values()) - 4 * (n - 1) * V
    compare("light run q4", trace, last_row(want))
    np.testing.assert_array_equal(np.argmax(trace.logits[-1]), np.argmax(want.logits[-1]))
    assert run(runner.fetch_layer(trace, 1)) == "webgpu" and runner.readbacks[-1][0] == "layer forward"
    assert runner.readbacks[-1][1] == len(LAYER_NAMES) - len(SUMMARY_NAMES)  # that layer alone, no logits
    numpy.view_layer(want, 1)
    compare("light layer fetched q4", trace, last_row(want))
    assert all(layer_name(1, name) in trace.tensors for name in LAYER_NAMES)
    assert all(layer_name(0, name) in trace.tensors for name in SUMMARY_NAMES)
    runner.engine.backend.destroy()
