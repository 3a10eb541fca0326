"""The model-worker protocol (app/protocol.py, issue 16) under CPython, with a fake worker.

The fake worker is the real worker-side ModelHost around a real runner (runner.ReferenceRunner),
with messages delivered asynchronously (loop.call_soon, as postMessage does) and every array
turned into a flat byte buffer on the way (as a transferred ArrayBuffer is): the page's
WorkerRunner and the host meet only through ``(head, arrays)`` messages whose head is JSON.
Traces are compared with glassbox.reference exactly (same functions, same order: 0 tolerance).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from glassbox import reference
from glassbox.config import GPTConfig
from glassbox.model import InputError
from glassbox.weights import random_params

from glassbox.trace import LAYER_NAMES, SUMMARY_NAMES, LayerTrace, layer_name

from app import protocol, runner as runners

CONFIG = GPTConfig(n_layer=3, n_head=2, n_embd=16, n_positions=32, vocab_size=97)
PARAMS = random_params(CONFIG, seed=16)
IDS = np.array([5, 17, 3, 88, 41, 2, 60], dtype=np.int64)


def wire(arrays) -> list[bytes]:
    """What crosses: one byte buffer per array (a transferred ArrayBuffer's contents)."""
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


class FakeWorker:
    """A WorkerRunner on the page and a ModelHost in the 'worker', on one event loop."""

    def __init__(self, runner_cls=runners.ReferenceRunner, params=PARAMS, config=CONFIG):
        self.loop = asyncio.get_event_loop()
        self.to_worker: list[dict] = []
        self.to_page: list[dict] = []
        self.steps: list[str] = []
        self.host = protocol.ModelHost(self._host_send, reference_params=params)
        self.host.runner = runner_cls(params, config, step=self.host.step)

        async def step(label, fraction):
            self.steps.append(label)

        self.page = protocol.WorkerRunner(self._page_send, config, step=step)

    def _page_send(self, head, arrays):
        head = json.loads(json.dumps(head))
        self.to_worker.append(head)
        self.loop.call_soon(self.host.handle, head, wire(arrays))

    def _host_send(self, head, arrays):
        head = json.loads(json.dumps(head))
        self.to_page.append(head)
        data = [np.frombuffer(b, dtype=np.uint8).copy() for b in wire(arrays)]
        self.loop.call_soon(self.page.receive, head, data)


def run(coro):
    return asyncio.get_event_loop().run_until_complete(coro)


@pytest.fixture(autouse=True)
def loop():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()


def assert_traces_equal(got, want, rtol=0.0):
    assert got.ids.tolist() == want.ids.tolist() and got.start == want.start
    assert set(got.tensors) == set(want.tensors)
    for name, value in want.tensors.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=rtol * 1e-2, err_msg=name)


def partial(full, layer: int = 0):
    """What a run through the worker brings back of ``full`` (issue 16): the globals, every
    layer's summaries, ``layer`` in full, the last logits row."""
    return LayerTrace.select(full, layer, last_logits=True)


def test_a_run_through_the_worker_is_the_reference_trace_tensor_for_tensor():
    fake = FakeWorker()
    got = run(fake.page.run(IDS))
    full = reference.forward(PARAMS, CONFIG, IDS)
    assert_traces_equal(got, partial(full))
    # One reply carries the partial trace: one buffer per tensor, their layout in the head.
    reply = [h for h in fake.to_page if h["op"] == "reply"][-1]
    assert reply["ok"] and len(reply["trace"]["names"]) == len(got.tensors)
    assert fake.page.name == "numpy"


def test_only_the_viewed_layer_and_the_summaries_cross():
    fake = FakeWorker()
    got = run(fake.page.run(IDS))
    assert isinstance(got, LayerTrace) and got.viewed == 0 and got.logits_start == IDS.size - 1
    assert got.logits.shape == (1, CONFIG.vocab_size)
    for layer in range(CONFIG.n_layer):
        for short in LAYER_NAMES:
            held = layer_name(layer, short) in got.tensors
            assert held == (layer == 0 or short in SUMMARY_NAMES), (layer, short)
    for name in ("tok_emb", "pos_emb", "emb", "ln_f", "ln_f.mean", "ln_f.var"):
        assert name in got.tensors
    with pytest.raises(KeyError, match=r"holds layer 1's tensors in full.*select_layer"):
        got["h.2.att"]
    sent = fake.host.sent[-1][1]
    assert sent == sum(v.nbytes for v in got.tensors.values())
    assert sent < reference.forward(PARAMS, CONFIG, IDS).to_safetensors({}).__len__() / 2


def test_fetch_layer_crosses_exactly_the_reference_layer_and_later_runs_bring_it():
    fake = FakeWorker()
    full = reference.forward(PARAMS, CONFIG, IDS)
    trace = run(fake.page.run(IDS))
    for layer in (2, 1, 2, 0):
        assert run(fake.page.fetch_layer(trace, layer)) == "worker"
        assert trace.viewed == layer and trace.holds(layer)
        assert_traces_equal(trace, partial(full, layer))  # exact: the worker's kept numpy trace
    assert run(fake.page.fetch_layer(trace, 0)) == "" and fake.page.fetches == 4
    run(fake.page.fetch_layer(trace, 1))
    again = run(fake.page.run(IDS[:5]))  # the next run brings the layer the reader views
    assert again.viewed == 1
    # (the logits are computed a few rows at a time: their last row sums in another order)
    assert_traces_equal(again, partial(reference.forward(PARAMS, CONFIG, IDS[:5]), 1), rtol=1e-5)
    with pytest.raises(ValueError, match="layer 4 does not exist"):
        run(fake.page.fetch_layer(trace, 3))


def test_progress_reaches_the_page_once_per_block():
    fake = FakeWorker()
    run(fake.page.run(IDS))
    run(asyncio.sleep(0))
    blocks = [s for s in fake.steps if s.startswith("Block ")]
    assert blocks == [f"Block {i + 1} of {CONFIG.n_layer}" for i in range(CONFIG.n_layer)]
    assert fake.page.progress_messages == len([h for h in fake.to_page if h["op"] == "progress"])


def test_extend_and_truncate_join_to_a_full_run():
    fake = FakeWorker()
    local = runners.ReferenceRunner(PARAMS, CONFIG)  # the same steps without the worker
    fake.page.viewed = 2  # the reader views layer 3: only its tensors (and the summaries) cross
    trace, want = run(fake.page.run(IDS[:4])), run(local.run(IDS[:4]))
    for token in IDS[4:6]:
        step = run(fake.page.extend([token]))
        assert step.viewed == 2 and step.ids.size == 1 and "h.1.att" not in step.tensors
        trace = runners.append_rows(trace, step)
        want = runners.append_rows(want, run(local.extend([token])))
    # Equal up to one float32 ulp: append_rows' q_old @ k_new sees C-contiguous arrays after the
    # trip and strided views locally, and BLAS sums them in another order (seen: 6e-7 relative).
    assert_traces_equal(trace, partial(want, 2), rtol=2e-6)
    # ...and a full run up to float32 rounding (the cached products sum in another order).
    np.testing.assert_allclose(trace["h.2.att"], reference.forward(PARAMS, CONFIG, IDS[:6])["h.2.att"],
                               rtol=1e-5, atol=1e-6)
    # The worker joined the full trace itself: a fetched layer covers every position.
    run(fake.page.fetch_layer(trace, 0))
    assert_traces_equal(trace, partial(want, 0), rtol=2e-6)
    fake.page.truncate(5)  # a discarded token
    trace = runners.append_rows(runners.truncate_rows(trace, 5), run(fake.page.extend([IDS[6]])))
    want = reference.forward(PARAMS, CONFIG, np.append(IDS[:5], IDS[6]))
    np.testing.assert_allclose(trace.logits, want.logits[-1:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trace["h.0.scores"], want["h.0.scores"], rtol=1e-5, atol=1e-6)
    assert fake.host.cached == want.ids.tolist()


def test_changing_layer_during_generation_keeps_every_step_right():
    """The reader picks another layer while a step is in flight (continuous generation): the
    step comes back with the old layer, the fetch with the new one for the old positions; the
    explainer's hold_layer loop (here by hand) fetches again, and later steps join right."""
    fake = FakeWorker()
    trace = run(fake.page.run(IDS[:4]))

    async def race():
        step_task = asyncio.ensure_future(fake.page.extend([IDS[4]]))  # sent with layer 0
        fetch_task = asyncio.ensure_future(fake.page.fetch_layer(trace, 2))  # for the 4 old positions
        step = await step_task
        joined = runners.append_rows(trace, step)  # the step holds layer 1 (0-based 0) only
        await fetch_task
        return joined

    joined = run(race())
    assert fake.page.viewed == 2 and not joined.holds(2)
    run(fake.page.fetch_layer(joined, 2))  # what explainer.hold_layer does before drawing
    for token in IDS[5:7]:
        joined = runners.append_rows(joined, run(fake.page.extend([token])))
        assert joined.viewed == 2
    full = reference.forward(PARAMS, CONFIG, IDS)
    for short in LAYER_NAMES:
        name = layer_name(2, short)
        np.testing.assert_allclose(joined[name], full[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(joined.logits, full.logits[-1:], rtol=1e-5, atol=1e-6)


def test_light_mode_runs_in_the_worker():
    """numpy light mode (lightmode.LightRunner) behind the worker: runs bring the viewed layer,
    a fetch computes another one in the worker, equal to the reference."""
    from app import lightmode

    fake = FakeWorker(lightmode.LightRunner)
    full = reference.forward(PARAMS, CONFIG, IDS)
    trace = run(fake.page.run(IDS))
    assert trace.viewed == 0 and "h.1.att" not in trace.tensors
    np.testing.assert_allclose(trace.logits, full.logits[-1:], rtol=1e-5, atol=1e-6)  # logits in row chunks
    assert run(fake.page.fetch_layer(trace, 1)) == "worker"
    for short in LAYER_NAMES:
        name = layer_name(1, short)
        np.testing.assert_array_equal(trace[name], full[name], err_msg=name)
    assert fake.host.runner.layer == 1
    assert run(fake.page.run(IDS[:3])).viewed == 1
    assert not hasattr(fake.page, "view_layer"), "nothing computes a layer on the page"


def test_stop_answers_at_once_and_the_next_step_still_joins_correctly():
    fake = FakeWorker()
    trace = run(fake.page.run(IDS[:4]))

    async def stopped_step():
        task = asyncio.ensure_future(fake.page.extend([IDS[4]]))
        await asyncio.sleep(0)  # the request is on its way; the worker starts it
        await asyncio.sleep(0)
        assert fake.page.stop() == 1  # the page is free at once: the request fails now
        with pytest.raises(protocol.Stopped):
            await task
        for _ in range(20):  # let the worker notice the stop between blocks
            await asyncio.sleep(0)

    run(stopped_step())
    assert [h["op"] for h in fake.to_worker][-1] == "stop"
    assert fake.page.ids.tolist() == IDS[:4].tolist()  # the page's view of the cache did not move
    # The worker's cache is now unknown or ahead; the next extend brings it back first.
    trace = runners.append_rows(trace, run(fake.page.extend([IDS[5]])))
    want = reference.forward(PARAMS, CONFIG, np.append(IDS[:4], IDS[5]))
    np.testing.assert_allclose(trace.logits, want.logits[-1:], rtol=1e-5, atol=1e-6)
    run(fake.page.fetch_layer(trace, 2))
    np.testing.assert_allclose(trace["h.2.att"], want["h.2.att"], rtol=1e-5, atol=1e-6)


def test_a_stopped_request_is_dropped_in_the_worker_between_blocks():
    fake = FakeWorker()
    finished = []
    original = fake.host.runner.run

    async def watched(ids):
        out = await original(ids)
        finished.append(ids)
        return out

    fake.host.runner.run = watched

    async def go():
        task = asyncio.ensure_future(fake.page.run(IDS))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        fake.page.stop()
        with pytest.raises(protocol.Stopped):
            await task
        for _ in range(20):
            await asyncio.sleep(0)

    run(go())
    assert finished == []  # the forward raised Stopped at a block boundary
    replies = [h for h in fake.to_page if h["op"] == "reply"]
    assert replies and replies[-1]["kind"] == "Stopped"
    assert fake.host.cached is None


def test_tensors_returns_only_the_names_asked_from_an_empty_cache():
    fake = FakeWorker()
    run(fake.page.run(IDS[:3]))
    got = run(fake.page.tensors(IDS, ["h.1.q", "h.1.k"]))
    want = reference.forward(PARAMS, CONFIG, IDS)
    assert set(got) == {"h.1.q", "h.1.k"}
    np.testing.assert_array_equal(got["h.1.q"], want["h.1.q"])
    assert fake.host.cached == IDS[:3].tolist()  # the sequence's cache is untouched
    with pytest.raises(ValueError, match="not a trace tensor|no trace tensors named"):
        run(fake.page.tensors(IDS, ["h.9.q"]))


def test_errors_keep_their_kind_and_message():
    fake = FakeWorker()
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 97\)"):
        run(fake.page.run([5, 10_000]))
    fake.host.runner.cache, fake.host.cached = None, []
    with pytest.raises(ValueError, match="nothing is cached"):
        run(fake.page.extend([3]))

    async def broken(ids):
        raise RuntimeError("the device said no")

    fake.host.runner.run = broken
    with pytest.raises(protocol.WorkerError, match="the device said no"):
        run(fake.page.run(IDS))
    assert issubclass(protocol._KINDS["InputError"], InputError)


def test_status_messages_set_what_the_page_says():
    fake = FakeWorker()
    heard = []
    fake.page.on_status = heard.append
    fake.host.status("webgpu", "ok", "WebGPU runs the model on a test adapter.")
    run(asyncio.sleep(0))
    assert (fake.page.backend, fake.page.cause, fake.page.kind) == ("webgpu", "ok", "ReferenceRunner")
    assert heard[0]["reason"] == "WebGPU runs the model on a test adapter."
    about = run(fake.page.describe())
    assert about["kind"] == "ReferenceRunner" and about["cached"] == 0


def test_pack_and_unpack_round_trip_dtypes_and_shapes():
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([[1, 2]], dtype=np.int64),
               "c": np.zeros((2, 0, 4), dtype=np.float32)}
    layout, arrays = protocol.pack(tensors)
    back = protocol.unpack(json.loads(json.dumps(layout)), wire(arrays))
    for name, value in tensors.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        np.testing.assert_array_equal(back[name], value)


def test_a_stop_drops_computations_but_not_a_truncate_queued_behind_them():
    fake = FakeWorker()
    run(fake.page.run(IDS[:5]))

    async def go():
        task = asyncio.ensure_future(fake.page.extend([IDS[5]]))
        await asyncio.sleep(0)
        fake.page.truncate(4)  # queued behind the extend, then both are abandoned on the page
        fake.page.stop()
        with pytest.raises(protocol.Stopped):
            await task
        for _ in range(30):
            await asyncio.sleep(0)

    run(go())
    ops = [(h["op"], h.get("ok"), h.get("kind")) for h in fake.to_page if h["op"] == "reply"]
    assert ops[-2:] == [("reply", False, "Stopped"), ("reply", True, None)]  # extend dropped, truncate done
    assert fake.host.runner.cache.length == 4
    trace = run(fake.page.extend([IDS[6]]))  # the page's cache view (4 positions) and the worker's agree
    want = reference.forward(PARAMS, CONFIG, np.append(IDS[:4], IDS[6]))
    np.testing.assert_allclose(trace.logits, want.logits[-1:], rtol=1e-5, atol=1e-6)


def test_the_backend_switch_crosses_to_the_worker_runner():
    """The card's switch (issue 15, gpu_light.choose_backend) on the page's WorkerRunner asks the
    worker's runner to choose (issue 16): the status comes back, the next run starts a new
    sequence on the chosen backend, and switching back gives the parked engine's numbers."""
    import test_gpu_light as gl

    from app.gpu_light import choose_backend, make_runner

    params, ids = random_params(gl.CONFIG, seed=7), IDS % gl.CONFIG.vocab_size
    fake = FakeWorker()
    fake.page = protocol.WorkerRunner(fake._page_send, gl.CONFIG)
    make, made = gl.factory(params)
    fake.host.runner = make_runner(runners.ReferenceRunner(params, gl.CONFIG, step=fake.host.step), make)
    run(fake.host.runner.start())
    first = run(fake.page.run(ids))
    assert fake.to_page[-1]["backend"] == "webgpu" and fake.host.runner.status.cause == "ok"
    engines = len(made)
    status = run(choose_backend(fake.page, "numpy"))
    assert (status.backend, status.cause) == ("numpy", "chosen") and fake.page.status == status
    assert fake.page.ids.size == 0 and fake.host.cached is None
    on_numpy = run(fake.page.run(ids))
    assert fake.to_page[-1]["backend"] == "numpy"
    assert_traces_equal(on_numpy, partial(reference.forward(params, gl.CONFIG, ids)))
    status = run(choose_backend(fake.page, "webgpu"))
    assert status.backend == "webgpu" and len(made) == engines  # the parked engine came back
    assert_traces_equal(run(fake.page.run(ids)), first)
