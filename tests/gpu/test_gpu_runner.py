"""app.gpu_runner.WebGPURunner on native WebGPU: the explainer's runner on the GPU engine.

The same class runs in the page on navigator.gpu (tests/e2e/test_webgpu_page.py); here it gets
wgpu-native devices, so the KV-cache joins, the numpy fallback on device loss and the
recovery are checked tensor by tensor against the numpy reference.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app import runner as runners
from app.gpu_runner import Status, WebGPURunner, asked_backend
from glassbox import reference
from glassbox.gpu import Engine, GPUError
from glassbox.gpu.backend import GPUUnavailableError, time_limited
from gpu_helpers import SMALL, assert_close, random_checkpoint

# Same bound as test_engine.py's whole forward on the small model (measured ~2e-6).
TOL = dict(atol=3e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def checkpoint(small_params):
    return random_checkpoint(SMALL, "int8", params=small_params)


@pytest.fixture
def make(run, checkpoint):
    """make(**options) -> (runner, statuses): a WebGPURunner on fresh native devices."""
    from glassbox.gpu.native import NativeBackend

    def build(factory=None, **options):
        async def new_engine():
            return await Engine.create(await NativeBackend.create(), checkpoint)

        statuses: list[Status] = []
        fallback = runners.ReferenceRunner(checkpoint.dequantized(), SMALL)
        runner = WebGPURunner(factory or new_engine, fallback, on_status=statuses.append, **options)
        run(runner.start())
        return runner, statuses

    return build


def full(checkpoint, ids):
    return reference.forward(checkpoint.dequantized(), SMALL, np.asarray(ids))


def compare(label, got, want):
    assert list(got.tensors) == list(want.tensors), label
    assert np.array_equal(got.ids, want.ids) and got.start == want.start
    for name, expected in want.tensors.items():
        have = got[name]
        if name.endswith("masked"):
            hidden = expected == reference.MASK_VALUE
            np.testing.assert_array_equal(have == reference.MASK_VALUE, hidden, err_msg=f"{label} {name}")
            have, expected = have[~hidden], expected[~hidden]
        assert_close(f"{label} {name}", have, expected, **TOL)


IDS = [5, 77, 123, 9, 250, 31]


def test_run_extend_and_join_equal_a_full_numpy_forward(run, make, checkpoint):
    runner, statuses = make()
    assert statuses[-1].backend == "webgpu" and statuses[-1].cause == "ok"
    trace = run(runner.run(IDS[:4]))
    assert runner.name == "webgpu" and runner.where == "webgpu"
    for token in IDS[4:]:
        trace = runners.append_rows(trace, run(runner.extend([token])))
        assert runner.name == "webgpu"
    compare("run+extend", trace, full(checkpoint, IDS))
    # Discard the last token, extend with another: the cache forgot it.
    runner.truncate(5)
    trace = runners.append_rows(runners.truncate_rows(trace, 5), run(runner.extend([42])))
    compare("truncate+extend", trace, full(checkpoint, IDS[:5] + [42]))
    assert runner.numpy.cache.length == 6  # the host mirror of the keys and values follows


def test_device_lost_mid_generation_numpy_continues_then_webgpu_returns(run, make, checkpoint):
    runner, statuses = make()
    trace = run(runner.run(IDS[:4]))
    assert runner.destroy_device_for_test()
    trace = runners.append_rows(trace, run(runner.extend([IDS[4]])))
    assert runner.name == "numpy" and runner.engine is None
    assert statuses[-1].backend == "numpy" and statuses[-1].cause == "device-lost"
    assert "lost" in statuses[-1].reason and "numpy" in statuses[-1].reason
    compare("after loss", trace, full(checkpoint, IDS[:5]))
    # The next step asks for a new device, refills its cache and runs on it again.
    trace = runners.append_rows(trace, run(runner.extend([IDS[5]])))
    assert runner.name == "webgpu" and statuses[-1].cause == "recovered"
    compare("recovered", trace, full(checkpoint, IDS))
    assert runner.losses == 1


def test_device_lost_before_a_run_and_without_the_host_mirror(run, make, checkpoint):
    runner, statuses = make()
    run(runner.run(IDS[:3]))
    runner.destroy_device_for_test()
    trace = run(runner.run(IDS[:4]))  # this run falls back; the next one gets a device
    assert runner.name == "numpy" and statuses[-1].cause == "device-lost"
    compare("run after loss", trace, full(checkpoint, IDS[:4]))
    trace = run(runner.run(IDS[:4]))
    assert runner.name == "webgpu" and statuses[-1].cause == "recovered"
    # Without the mirrored keys/values numpy rebuilds its cache from the ids.
    runner.numpy.cache = None
    runner.destroy_device_for_test()
    trace = runners.append_rows(trace, run(runner.extend(IDS[4:6])))
    assert runner.name == "numpy"
    compare("rebuilt cache", trace, full(checkpoint, IDS))


def test_a_refused_new_device_keeps_numpy_and_later_runs_retry(run, make, checkpoint):
    from glassbox.gpu.native import NativeBackend

    refuse = {"now": False}

    async def factory():
        if refuse["now"]:
            raise GPUUnavailableError("adapter.requestDevice() did not answer within 10 s", "device-refused")
        return await Engine.create(await NativeBackend.create(), checkpoint)

    runner, statuses = make(factory)
    trace = run(runner.run(IDS[:3]))
    refuse["now"] = True
    runner.destroy_device_for_test()
    for token in IDS[3:5]:  # the loss, then one refused retry, then numpy without retrying
        trace = runners.append_rows(trace, run(runner.extend([token])))
        assert runner.name == "numpy"
    assert statuses[-1].cause == "device-refused" and "lost earlier" in statuses[-1].reason
    compare("refused", trace, full(checkpoint, IDS[:5]))
    refuse["now"] = False
    run(runner.run(IDS))
    assert runner.name == "webgpu" and statuses[-1].cause == "recovered"


def test_capture_one_layer_has_no_extend(run, make):
    runner, _ = make(capture=1)
    assert not hasattr(runner, "extend")
    trace = run(runner.run(IDS))
    assert "h.1.att" in trace and "h.0.att" not in trace and "logits" in trace
    runner.capture = None
    assert hasattr(runner, "extend")


def test_engine_errors_fall_back_for_that_run(run, make, checkpoint):
    runner, statuses = make()
    real = runner.engine.forward

    async def refuse(*args, **kwargs):
        raise GPUError("logits needs 999 bytes for this run, over the 1-byte limit: use fewer tokens")

    runner.engine.forward = refuse
    trace = run(runner.run(IDS))
    assert runner.name == "numpy" and statuses[-1].cause == "gpu-error" and runner.engine is not None
    compare("gpu-error", trace, full(checkpoint, IDS))
    runner.engine.forward = real
    run(runner.run(IDS))
    assert runner.name == "webgpu" and statuses[-1].cause == "ok"


@pytest.mark.parametrize("error, cause", [
    (GPUUnavailableError("this browser has no WebGPU (navigator.gpu is missing)", "no-webgpu"), "no-webgpu"),
    (GPUUnavailableError("the browser found no WebGPU adapter", "no-adapter"), "no-adapter"),
    (GPUUnavailableError("the adapter refused a device: OperationError", "device-refused"), "device-refused"),
    (GPUError("attention needs 20000 bytes of workgroup memory"), "engine-failed"),
])
def test_start_says_why_numpy_runs(run, make, checkpoint, error, cause):
    async def factory():
        raise error

    runner, statuses = make(factory)
    assert [s.cause for s in statuses] == [cause] and statuses[0].backend == "numpy"
    assert str(error) in statuses[0].reason
    compare("numpy", run(runner.run(IDS)), full(checkpoint, IDS))
    assert runner.name == "numpy"
    run(runner.run(IDS))  # no loss happened: no new device is asked for
    assert runner.engine is None and len(statuses) == 1


def test_asked_numpy_never_makes_a_device(run, checkpoint):
    async def factory():
        raise AssertionError("no device may be requested")

    statuses = []
    runner = WebGPURunner(factory, runners.ReferenceRunner(checkpoint.dequantized(), SMALL), on_status=statuses.append)
    run(runner.start(asked_backend("?model=mini&backend=numpy")))
    assert statuses == [Status("numpy", "asked", statuses[0].reason)] and "?backend=numpy" in statuses[0].reason
    assert asked_backend("") is None and asked_backend("?backend=webgpu") == "webgpu"
    with pytest.raises(ValueError):
        asked_backend("?backend=cuda")


def test_requests_that_never_answer_are_time_limited(run):
    async def never():
        await asyncio.Event().wait()

    with pytest.raises(GPUUnavailableError, match="did not answer within 0.05 s") as caught:
        run(time_limited(never(), 0.05, "adapter.requestDevice()", "device-refused"))
    assert caught.value.cause == "device-refused"


@pytest.mark.parametrize("rowwise,splitk", [(0, 0), (4, 0), (4, 4)])
def test_decode_steps_with_either_matmul_entry_equal_numpy(run, backend, checkpoint, rowwise, splitk):
    # Decode's matmuls: matmul.wgsl's tiled entry (rowwise_max_tokens=0, splitk_max_tokens=0),
    # its rowwise entry, or matmul_splitk.wgsl (issue 15, matmul), each against numpy.
    engine = run(Engine.create(backend, checkpoint, rowwise_max_tokens=rowwise, splitk_max_tokens=splitk))
    cache = engine.new_cache()
    run(engine.forward(IDS[:3], cache=cache, capture="logits"))
    step = run(engine.forward(IDS[3:4], cache=cache))
    ref_cache = reference.KVCache(SMALL)
    reference.forward(checkpoint.dequantized(), SMALL, np.array(IDS[:3]), cache=ref_cache)
    want = reference.forward(checkpoint.dequantized(), SMALL, np.array(IDS[3:4]), cache=ref_cache)
    compare(f"decode rowwise<={rowwise} splitk<={splitk}", step, want)


def test_software_adapter_calibration_keeps_the_faster_backend(make, run, checkpoint):
    # issue 15: lavapipe is a software adapter, so a calibrating runner times both backends
    # at start and keeps the faster (no timing is asserted: only that the choice follows
    # the times it measured and says so), and the model then runs on it as usual.
    from app.gpu_runner import software_adapter
    from app.webgpu import AdapterInfo

    runner, statuses = make(calibrate=True)
    times = runner.calibration
    assert times is not None and set(times) == {"webgpu", "numpy"}, statuses
    faster = min(times, key=times.get)
    assert runner.status.backend == faster and "start-up check" in runner.status.reason
    assert runner.status.cause == ("ok" if faster == "webgpu" else "calibrated")
    assert (runner.engine is None) == (faster == "numpy")
    ids = [5, 17, 3]
    compare("calibrated", run(runner.run(ids)), full(checkpoint, ids))

    uncalibrated, _ = make()
    assert uncalibrated.calibration is None and uncalibrated.status.cause == "ok"
    assert software_adapter(AdapterInfo("google", "swiftshader", "", "", False))
    assert software_adapter(AdapterInfo("", "", "", "", True))
    assert not software_adapter(AdapterInfo("nvidia", "ampere", "", "NVIDIA H100", False))
    # the engine's fusion default asks the same question of the core's AdapterInfo (one test)
    from glassbox.gpu import Engine
    from glassbox.gpu.backend import AdapterInfo as CoreInfo

    assert software_adapter(CoreInfo("wgpu-native", "", "", "", "unnamed", adapter_type="CPU"))
    assert not software_adapter(CoreInfo("wgpu-native", "nvidia", "", "NVIDIA H200", "", adapter_type="DiscreteGPU"))
    assert software_adapter(runner.engine.backend.info if runner.engine else uncalibrated.engine.backend.info)
    assert Engine.default_fuse_ln(uncalibrated.engine.backend) is False  # lavapipe: not fused


def test_tensors_reads_only_the_names_and_leaves_the_sequence_alone(run, make, checkpoint):
    """Issue 12: tensors(ids, names) runs from an empty cache of its own on the GPU: the
    named tensors equal numpy's, and the explainer's sequence continues as if nothing ran."""
    runner, _ = make()
    trace = run(runner.run(IDS[:4]))
    names = ["h.0.q", "h.1.k", "h.1.att"]
    got = run(runner.tensors([9, 8, 7, 6, 5], names))
    assert list(got) == names and runner.engine is not None
    want = full(checkpoint, [9, 8, 7, 6, 5])
    for name in names:
        assert_close(f"tensors {name}", got[name], want[name], **TOL)
    trace = runners.append_rows(trace, run(runner.extend(IDS[4:])))
    compare("tensors then extend", trace, full(checkpoint, IDS))
    with pytest.raises(ValueError, match="h.9.q"):
        run(runner.tensors([1, 2], ["h.9.q"]))


# ----- issue 16: partial traces (what the model worker's WebGPU runner reads back) -------------

def compare_partial(label, got, want):
    """compare() for partial traces, whose tensors a fetch adds in another order."""
    assert set(got.tensors) == set(want.tensors), label
    compare(label, got, type(want)(want.config, want.ids, want.start, {n: want.tensors[n] for n in got.tensors}))


def test_partial_runs_read_back_one_layer_and_fetch_others_from_the_gpu(run, make, checkpoint):
    """A partial run holds the globals, every layer's summaries and the viewed layer; another
    layer comes from what the GPU kept (read_layer) or, after a step, from one forward of that
    layer from the engine's own cache — within the engine's tolerance of numpy, and the KV
    cache the runner extends is untouched (later steps still join to a full forward)."""
    from glassbox.trace import LAYER_NAMES, LayerTrace, layer_name

    runner, _ = make(partial=True)
    runner.aim(1)
    heard = []

    async def step(label, fraction):  # the worker's progress hook (protocol.ModelHost.step)
        heard.append((label, fraction))

    runner.numpy.step = step
    trace = run(runner.run(IDS[:4]))
    assert heard == [(f"WebGPU: all {SMALL.n_layer} blocks submitted at once", 0.0)]
    assert isinstance(trace, LayerTrace) and trace.viewed == 1 and "h.0.att" not in trace.tensors
    assert runner.readbacks[-1][0] == "run" and trace.logits.shape == (1, SMALL.vocab_size)
    assert trace.logits_start == 3  # the last row alone left the GPU (read_last_rows)
    compare_partial("partial run", trace, LayerTrace.select(full(checkpoint, IDS[:4]), 1, last_logits=True))
    assert run(runner.fetch_layer(trace, 0)) == "webgpu" and runner.readbacks[-1][0] == "read_layer"
    compare_partial("read_layer", trace, LayerTrace.select(full(checkpoint, IDS[:4]), 0, last_logits=True))
    for token in IDS[4:]:
        step = run(runner.extend([token]))
        assert step.viewed == 0 and step.ids.size == 1
        trace = runners.append_rows(trace, step)
    want = full(checkpoint, IDS)
    compare_partial("partial run + steps", trace, LayerTrace.select(want, 0, last_logits=True))
    assert run(runner.fetch_layer(trace, 1)) == "webgpu" and runner.readbacks[-1][0] == "layer forward"
    for short in LAYER_NAMES:
        name = layer_name(1, short)
        have, expected = trace[name], want[name]
        if short == "masked":
            hidden = expected == reference.MASK_VALUE
            have, expected = have[~hidden], expected[~hidden]
        assert_close(name, have, expected, **TOL)
    trace = runners.append_rows(trace, run(runner.extend([42])))  # the cache was not disturbed
    assert trace.viewed == 1
    compare_partial("after a fetch", trace, LayerTrace.select(full(checkpoint, IDS + [42]), 1, last_logits=True))


def test_read_last_rows_equals_the_last_rows_of_the_logits(run, make):
    """Engine.read_last_rows (issue 16): after a forward_top that read back no logits, the last
    rows come from the GPU alone and equal those of a forward that read them all (same kernels:
    both without attention stages, so exactly)."""
    runner, _ = make()
    engine = runner.engine
    want = run(engine.forward(IDS, capture="logits")).logits
    np.testing.assert_array_equal(run(engine.read_last_rows("logits", 2)), want[-2:])  # already read
    top, trace = run(engine.forward_top(IDS, capture="none", k=1))
    assert "logits" not in trace.tensors
    np.testing.assert_array_equal(run(engine.read_last_rows("logits", 1)), want[-1:])
    np.testing.assert_array_equal(run(engine.read_last_rows("logits", 3)), want[-3:])


def test_a_partial_runner_recovers_after_a_device_loss(run, make, checkpoint):
    """The worker's runner (partial=True): numpy takes the step after a loss, the next step
    refills a new device's cache and runs on WebGPU again, joined to a full forward."""
    from glassbox.trace import LayerTrace

    runner, statuses = make(partial=True)
    trace = run(runner.run(IDS[:4]))
    assert runner.destroy_device_for_test()
    trace = runners.append_rows(trace, run(runner.extend([IDS[4]])))
    assert runner.name == "numpy"
    trace = runners.append_rows(trace, run(runner.extend([IDS[5]])))
    assert runner.name == "webgpu" and statuses[-1].cause == "recovered"
    compare_partial("recovered", trace, LayerTrace.select(full(checkpoint, IDS), 0, last_logits=True))
