"""app.gpu_light (issue 15): light mode's runner on a GPU engine, the one runner constructor,
and the reader's backend switch, under CPython with a fake engine.

The fake engine computes with glassbox.reference (the same numpy the fallback runs), so a
GPU trace and a numpy trace must agree exactly here; what is tested is which tensors each
run reads back, which backend ran, the layer fetched after a run, the fallbacks and the
statuses. The real engine's numbers (q4 kernels against numpy) are checked on native
WebGPU in tests/gpu/test_gpu_runner.py and in the page by tests/e2e/test_backend_switch.py.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app import lightmode
from app.gpu_light import (BACKEND_KEY, GPULightRunner, choose_backend, make_runner, remembered_backend,
                           switch, switch_target)
from app.gpu_runner import Status, WebGPURunner
from app.runner import ReferenceRunner
from app.views import adapter as adapter_view
from app.webgpu import AdapterInfo
from glassbox import reference
from glassbox.config import GPTConfig
from glassbox.gpu.backend import DeviceLostError, GPUError
from glassbox.gpu.engine import capture_predicate
from glassbox.weights import random_params

CONFIG = GPTConfig(n_layer=3, n_head=2, n_embd=32, n_positions=16, vocab_size=50)
IDS = np.array([3, 14, 15, 9, 26], dtype=np.int64)


@pytest.fixture(scope="module")
def params():
    return random_params(CONFIG, seed=7)


class FakeInfo:
    def __init__(self, software: bool):
        self.vendor, self.architecture, self.device = "fake", "", ""
        self.description = "SwiftShader Device" if software else "Fake GPU 9000"
        self.fallback = False


class FakeBackend:
    def __init__(self, software: bool):
        self.info = FakeInfo(software)
        self.lost = None
        self.destroyed = False

    def destroy(self):
        self.destroyed = True
        self.lost = "destroyed"


class FakeCache:
    length = 0

    def reset(self):
        self.length = 0


class FakeEngine:
    """Engine.forward's contract on numpy: which names were read back is recorded."""

    def __init__(self, params, software=False, fail=None, config=CONFIG):
        self.params, self.backend, self.fail, self.config = params, FakeBackend(software), fail, config
        self.reads: list[list[str]] = []

    def new_cache(self):
        return FakeCache()

    async def forward(self, ids, cache=None, capture=None):
        if self.fail is not None:
            raise self.fail
        trace = reference.forward(self.params, self.config, np.asarray(ids), capture=capture_predicate(capture))
        self.reads.append(list(trace.tensors))
        return trace

    async def forward_top(self, ids, cache=None, capture="none", k=64, keep=False):
        """Engine.forward_top's contract: no logits read back unless ``capture`` asks (the top
        itself is not used by the runners); the logits stay for read_last_rows either way (the
        engine keeps them in place, WRITTEN_ONCE); ``keep`` is recorded (``kept``)."""
        if self.fail is not None:
            raise self.fail
        want = capture_predicate(capture)
        trace = reference.forward(self.params, self.config, np.asarray(ids), capture=want)
        self.logits, self.kept = trace.tensors["logits"], keep
        if not want("logits"):
            del trace.tensors["logits"]
        self.reads.append(list(trace.tensors))
        if cache is not None:
            cache.length += len(ids)
        return None, trace

    async def read_last_rows(self, name="logits", rows=1):
        """Engine.read_last_rows: the last rows of the last forward's logits (recorded)."""
        self.reads.append([f"{name}[-{rows}:]"])
        return self.logits[-rows:].copy()


def factory(params, **options):
    made: list[FakeEngine] = []

    async def make():
        made.append(FakeEngine(params, **options))
        return made[-1]

    return make, made


def light(params, software=False, calibrate=False, **options):
    make, made = factory(params, software=software, **options)
    statuses: list[Status] = []
    runner = make_runner(lightmode.LightRunner(params, CONFIG), make, on_status=statuses.append, calibrate=calibrate)
    return runner, made, statuses


def numpy_light(params, ids, layer):
    runner = lightmode.LightRunner(params, CONFIG)
    trace = asyncio.run(runner.run(ids))
    runner.view_layer(trace, layer)
    return trace


def same(got, want):
    assert sorted(got.tensors) == sorted(want.tensors)
    for name, value in want.tensors.items():
        if name == "logits":  # a GPU light run reads back the rows from logits_start on (lr15)
            value = value[getattr(got, "logits_start", 0):]
        np.testing.assert_allclose(got[name], value, atol=1e-6, rtol=1e-6, err_msg=name)


def test_make_runner_wraps_each_mode_and_keeps_numpy_without_an_engine(params):
    full = ReferenceRunner(params, CONFIG)
    lite = lightmode.LightRunner(params, CONFIG)
    assert make_runner(full, None) is full and make_runner(lite, None) is lite
    assert type(make_runner(full, factory(params)[0])) is WebGPURunner
    assert type(make_runner(lite, factory(params)[0])) is GPULightRunner
    with pytest.raises(TypeError, match="no WebGPU runner"):
        make_runner(object(), factory(params)[0])


def test_light_runner_on_a_real_adapter_reads_back_only_the_viewed_layer(params):
    runner, made, statuses = light(params)
    asyncio.run(runner.start())
    assert statuses[-1].backend == "webgpu" and statuses[-1].cause == "ok"
    trace = asyncio.run(runner.run(IDS))
    assert runner.name == "WebGPU, light mode" and isinstance(trace, lightmode.LayerTrace)
    read = made[0].reads[-2]
    assert "h.0.att" in read and "h.1.att" not in read and "h.2.res_1" in read and "logits" not in read
    # issue 15 item 4 (lr15): the last logits row alone, and nothing kept on the GPU for later
    assert made[0].reads[-1] == ["logits[-1:]"] and made[0].kept is False
    assert trace.logits.shape == (1, CONFIG.vocab_size) and trace.logits_start == len(IDS) - 1
    assert runner.readbacks[-1][0] == "run"
    same(trace, numpy_light(params, IDS, 0))
    with pytest.raises(KeyError, match="light mode keeps layer 1"):
        trace["h.2.att"]
    # Another layer: one more GPU forward that reads back that layer only (not the summaries).
    assert asyncio.run(runner.fetch_layer(trace, 2)) == "webgpu"
    assert all(n.startswith("h.2.") for n in made[0].reads[-1] if n.startswith("h.")) and \
        "h.2.res_1" not in made[0].reads[-1] and runner.fetches == 1
    same(trace, numpy_light(params, IDS, 2))
    assert asyncio.run(runner.fetch_layer(trace, 2)) == "" and runner.fetches == 1
    # The next run captures the layer the reader views now.
    again = asyncio.run(runner.run(IDS[:3]))
    assert again.viewed == 2 and "h.2.att" in again and "h.0.att" not in again


@pytest.mark.parametrize("error, cause", [(DeviceLostError("gone"), "device-lost"), (GPUError("too big"), "gpu-error")])
def test_a_failed_layer_fetch_is_computed_by_numpy_and_said(params, error, cause):
    runner, made, statuses = light(params)
    asyncio.run(runner.start())
    trace = asyncio.run(runner.run(IDS))
    made[0].fail = error
    assert asyncio.run(runner.fetch_layer(trace, 1)) == "numpy"
    assert statuses[-1].backend == "numpy" and statuses[-1].cause == cause
    same(trace, numpy_light(params, IDS, 1))


def test_light_runner_falls_back_to_numpy_light_mode_when_the_engine_fails(params):
    runner, made, statuses = light(params, fail=GPUError("the model does not fit this device's limits"))
    asyncio.run(runner.start())
    runner.wanted = 1
    trace = asyncio.run(runner.run(IDS))  # the engine refuses: numpy light mode ran it
    assert runner.name == "numpy, light mode" and statuses[-1].cause == "gpu-error"
    assert "refused it" in statuses[-1].reason
    same(trace, numpy_light(params, IDS, 1))
    runner.truncate(2)  # no KV cache to cut: only the positions
    assert runner.ids.size == 2


def test_light_runner_on_a_software_adapter_is_calibrated(params):
    runner, made, statuses = light(params, software=True, calibrate=True)
    asyncio.run(runner.start())
    assert set(runner.calibration) == {"webgpu", "numpy"}
    assert statuses[-1].cause in ("ok", "calibrated") and "start-up check" in statuses[-1].reason
    assert (statuses[-1].backend == "webgpu") == (runner.calibration["webgpu"] <= runner.calibration["numpy"])
    # The calibration read back light mode's tensors only.
    assert all("h.1.att" not in read for read in made[0].reads)


def test_the_switch_is_offered_only_when_both_backends_can_run():
    assert switch_target(Status("webgpu", "ok", ""), True) == "numpy"
    assert switch_target(Status("numpy", "calibrated", ""), True) == "webgpu"
    assert switch_target(Status("numpy", "asked", ""), True) == "webgpu"
    assert switch_target(Status("numpy", "chosen", ""), True) == "webgpu"
    assert switch_target(Status("numpy", "asked", ""), False) == ""
    for cause in ("no-webgpu", "no-adapter", "device-refused", "engine-failed"):
        assert switch_target(Status("numpy", cause, ""), True) == ""


def test_the_card_draws_the_switch_as_a_button():
    gpu = AdapterInfo("google", "swiftshader", "", "SwiftShader Device", True)
    html = adapter_view.render(gpu, "webgpu", {}, "WebGPU runs the model.", "ok", switch="numpy")
    assert '<button type="button"' in html and 'data-backend-switch="numpy"' in html
    assert "Run on numpy instead" in html
    assert "Run on WebGPU instead" in adapter_view.render(gpu, "numpy", {}, "why", "chosen", switch="webgpu")
    assert "data-backend-switch" not in adapter_view.render(gpu, "webgpu", {}, "why", "ok")
    with pytest.raises(ValueError, match="cannot offer a switch"):
        adapter_view.render(gpu, "webgpu", {}, "why", "ok", switch="webgpu")


def test_the_address_wins_over_the_visit_choice():
    assert remembered_backend("?backend=numpy", "webgpu") == ("numpy", "url")
    assert remembered_backend("", "numpy") == ("numpy", "visit")
    assert remembered_backend("?x=1", "junk") == (None, "")
    assert remembered_backend("", None) == (None, "")
    assert BACKEND_KEY == "glassbox-backend"


class FakeRun:
    """The explainer's run controller, as far as a switch uses it: ``submit`` runs the text's ids."""

    def __init__(self, explainer):
        self.ex, self.busy, self.runs = explainer, False, 0

    async def submit(self, text=None):
        if self.busy:
            return
        self.runs += 1
        self.ex.trace = await self.ex.runner.run(self.ex.ids)


class FakeExplainer:
    def __init__(self, runner):
        self.runner, self.ids, self.trace = runner, IDS, None
        self.run = FakeRun(self)


@pytest.mark.parametrize("mode", ["full", "light"])
def test_the_switch_swaps_the_backend_reruns_and_remembers(params, mode):
    numpy_runner = ReferenceRunner(params, CONFIG) if mode == "full" else lightmode.LightRunner(params, CONFIG)
    make, made = factory(params)
    statuses: list[Status] = []
    runner = make_runner(numpy_runner, make, on_status=statuses.append)
    asyncio.run(runner.start())
    ex = FakeExplainer(runner)
    ex.trace = asyncio.run(runner.run(IDS))
    gpu_logits = ex.trace.logits.copy()
    kept: list[str] = []

    async def go(backend):
        return await switch(ex, runner, backend, kept.append)

    status = asyncio.run(go("numpy"))
    assert (status.backend, status.cause) == ("numpy", "chosen") and "you chose it" in status.reason
    assert kept == ["numpy"] and ex.run.runs == 1 and runner.last == "numpy"
    np.testing.assert_allclose(ex.trace.logits[-1], gpu_logits[-1], atol=1e-6)  # light WebGPU: the last row only
    assert not made[0].backend.destroyed  # parked, not destroyed
    asyncio.run(ex.runner.run(IDS))
    assert runner.last == "numpy"  # stays on numpy: no device is asked for again
    status = asyncio.run(go("webgpu"))
    assert (status.backend, status.cause) == ("webgpu", "chosen") and len(made) == 1  # the parked engine
    assert kept == ["numpy", "webgpu"] and runner.last == "webgpu" and ex.run.runs == 2
    assert [s.cause for s in statuses] == ["ok", "chosen", "chosen"]


def test_choosing_at_load_and_a_switch_that_finds_no_device(params):
    async def refuse():
        raise GPUError("no device today")

    statuses: list[Status] = []
    runner = make_runner(ReferenceRunner(params, CONFIG), refuse, on_status=statuses.append)
    asyncio.run(choose_backend(runner, "numpy"))  # this visit's stored choice, at load
    assert runner.status.cause == "chosen" and runner.engine is None
    asyncio.run(choose_backend(runner, "webgpu"))
    assert runner.status.backend == "numpy" and runner.status.cause == "engine-failed"
    with pytest.raises(ValueError, match="unknown backend"):
        asyncio.run(choose_backend(runner, "cuda"))


def test_a_switch_waits_for_the_run_in_progress(params):
    make, _ = factory(params)
    runner = make_runner(ReferenceRunner(params, CONFIG), make)
    ex = FakeExplainer(runner)

    async def scenario():
        await runner.start()
        ex.trace = await runner.run(IDS)
        ex.run.busy = True
        task = asyncio.ensure_future(switch(ex, runner, "numpy", wait_s=0.001))
        await asyncio.sleep(0.01)
        assert not task.done() and runner.status.backend == "webgpu"
        ex.run.busy = False
        return await task

    assert asyncio.run(scenario()).backend == "numpy" and ex.run.runs == 1


def test_the_int8_kernel_loads_first_only_where_numpy_may_run_first():
    from app.gpu_light import kernel_first

    real = AdapterInfo("nvidia", "hopper", "", "NVIDIA H200", False)
    software = AdapterInfo("google", "swiftshader", "", "SwiftShader Device", True)
    assert kernel_first("int8", None, None)  # no adapter: numpy runs
    assert kernel_first("int8", real, "numpy")  # asked for numpy
    assert kernel_first("int8", software, None)  # the calibration times numpy with the kernel
    assert not kernel_first("int8", real, None) and not kernel_first("int8", software, "webgpu")
    assert not kernel_first("q4", None, "numpy") and not kernel_first("none", None, None)  # int8 only


def test_a_kernel_loaded_later_reaches_the_explainers_numpy(params):
    from app.gpu_light import use_kernel

    class Model:
        params = "float32"

        def keep_quantized(self, kernel):
            self.params = ("quantized", kernel)

    class App:
        kernel_note = ""

    async def loads():
        return "K", "the kernel"

    async def fails():
        return None, "no kernel"

    app, model = App(), Model()
    runner = make_runner(ReferenceRunner("float32", CONFIG), factory(params)[0])
    ex = FakeExplainer(runner)
    ex.params = "float32"
    asyncio.run(use_kernel(app, model, fails, ex))
    assert app.kernel_note == "no kernel" and ex.params == "float32" and runner.numpy.params == "float32"
    asyncio.run(use_kernel(app, model, loads, ex))
    assert app.kernel_note == "the kernel" and ex.params == runner.numpy.params == ("quantized", "K")
