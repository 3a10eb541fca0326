"""The experiments' and factors' lab (app/lab.py, issue 16 x16) under CPython: the local lab and
the remote one (the real ModelHost behind the fake worker of test_worker_protocol.py, every
array crossing as bytes) give the same objects with the same bytes (0 tolerance: the same
functions on the same float32 params in the same order); names outside the whitelist are
refused on both sides; a failure in the worker and a Stop reach the panel as sentences.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from glassbox import experiments as ex
from glassbox import factors as gf
from glassbox import model as glassbox_model
from glassbox import reference

from app import lab as labs
from app import protocol
from app.explainer import Explainer
from test_experiments_panel import UI
from test_worker_protocol import CONFIG, IDS, PARAMS, FakeWorker, loop, run  # noqa: F401  (loop: a fixture)

ROOT = Path(__file__).resolve().parents[1]


def dictionary(config, factors=12, seed=3) -> gf.Dictionary:
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((config.n_embd, factors)).astype(np.float32)
    phi /= np.linalg.norm(phi, axis=0)
    S = config.n_layer + 1
    return gf.Dictionary(phi=phi, scale=np.full(S, 2.0, np.float32), importance=np.ones((S, factors), np.float32),
                         contexts=np.zeros((factors, S, 1, 3), np.uint16), context_act=np.zeros((factors, S, 1), np.float32),
                         klass=np.zeros(factors, np.uint8), meta={"lambda": 0.05})


def bench(loads: list | None = None) -> labs.Bench:
    d = dictionary(CONFIG)

    async def load():
        if loads is not None:
            loads.append(1)
        return d

    return labs.Bench(PARAMS, CONFIG, load, weight=lambda name: PARAMS[name])


def remote(loads=None) -> tuple[FakeWorker, labs.RemoteLab]:
    fake = FakeWorker()
    fake.host.lab = bench(loads)
    return fake, labs.RemoteLab(fake.page)


IDS2 = [int(i) for i in IDS]
CORRUPT = [9, 17, 3, 80, 41, 2, 61]
CALLS = [("target", {}), ("lens", {"k": 3}), ("ablate", {"heads": [[0, 1], [2, 0]], "mean": True, "target": 7, "k": 4}),
         ("sweep", {"target": 7, "mean": False}), ("patching", {"corrupt": CORRUPT, "target": 7}),
         ("attribution", {"target": 7}), ("trace", {}), ("code", {"stream": 2, "position": 4}),
         ("occlusion", {"stream": 1, "position": 3, "factor": 0})]


def flat(result) -> list:
    """Every number of a lab result, in order (dataclasses, tuples, traces), with dtypes."""
    if isinstance(result, tuple | list):
        return [x for r in result for x in flat(r)]
    if hasattr(result, "tensors"):
        return [result.ids.tolist(), result.start, sorted(result.tensors)] + flat([result.tensors[n] for n in sorted(result.tensors)])
    if hasattr(result, "__dataclass_fields__"):
        return flat([getattr(result, f) for f in result.__dataclass_fields__ if not f.startswith("_")])
    if isinstance(result, np.ndarray):
        return [result.dtype.str, result.shape, result.tobytes()]
    return [result]


@pytest.mark.parametrize("name,args", CALLS, ids=[c[0] for c in CALLS])
def test_local_and_remote_give_the_same_bytes(name, args):
    local = labs.LocalLab(bench())
    fake, lab = remote()
    want = run(local.call(name, ids=IDS2, **args))
    got = run(lab.call(name, ids=IDS2, **args))
    assert flat(got) == flat(want)
    assert [h["op"] for h in fake.to_worker] == ["lab"] and fake.host.lab.calls == 1
    assert fake.host.describe()["lab_calls"] == 1


@pytest.mark.parametrize("name", ["wte.weight", "h.1.mlp.c_fc.weight"])
def test_a_weight_map_crosses_whole(name):
    """issue 16: a weight popover's map computed by the worker's lab is the map the page would
    draw from the same matrix (views.weights.weight_heat), to the byte, pixels included."""
    from app.views import weights as weight_views

    fake, lab = remote()
    got = run(lab.call("weight_map", weight=name, title="T"))
    want = weight_views.weight_heat(f"w.{name}", "T", PARAMS[name])
    assert isinstance(got, weight_views.WeightHeat) and fake.host.lab.calls == 1
    assert (got.key, got.title, got.row_spans, got.col_spans, got.scale, got.source_shape, got.stats) == \
           (want.key, want.title, want.row_spans, want.col_spans, want.scale, want.source_shape, want.stats)
    for a, b in ((got.values, want.values), (got.mean, want.mean), (got.rgba, want.rgba)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    with pytest.raises(labs.LabError, match="no weight 'wpe.bias'"):
        run(lab.call("weight_map", weight="wpe.bias", title="T"))
    with pytest.raises(labs.LabError, match="ln_f.bias is not a matrix"):
        run(lab.call("weight_map", weight="ln_f.bias", title="T"))
    with pytest.raises(labs.LabError, match="no weights to draw"):
        run(labs.LocalLab(labs.Bench(PARAMS, CONFIG)).call("weight_map", weight=name, title="T"))


def test_the_lab_computes_what_glassbox_computes():
    """The seam adds nothing: each function is glassbox's on a full reference trace."""
    trace = reference.forward(PARAMS, CONFIG, IDS)
    fake, lab = remote()
    lens = run(lab.call("lens", ids=IDS2, k=3))
    want = ex.logit_lens(PARAMS, CONFIG, trace, 3)
    np.testing.assert_array_equal(lens.ids, want.ids)
    np.testing.assert_array_equal(lens.probs, want.probs)
    kl, dlogp = run(lab.call("sweep", ids=IDS2, target=7, mean=True))
    np.testing.assert_array_equal(kl, ex.sweep(PARAMS, CONFIG, trace, 7, mean=True)[0])
    corrupt = reference.forward(PARAMS, CONFIG, np.array(CORRUPT))
    p = run(lab.call("patching", ids=IDS2, corrupt=CORRUPT, target=7))
    np.testing.assert_array_equal(p.streams, ex.patching(PARAMS, CONFIG, trace, corrupt, 7).streams)
    d = dictionary(CONFIG)
    code = run(lab.call("code", ids=IDS2, stream=2, position=4))
    np.testing.assert_array_equal(code.code, gf.code_position(d, trace, 2, 4).code)
    values, _ = run(lab.call("occlusion", ids=IDS2, stream=1, position=3, factor=0))
    forward = lambda ids: reference.forward(PARAMS, CONFIG, ids)  # noqa: E731
    np.testing.assert_allclose(values, gf.occlusion(d, forward, IDS, 1, 3, 0), atol=1e-12)
    assert run(lab.call("target", ids=IDS2)) == int(np.argmax(ex.clean_logits(PARAMS, CONFIG, trace)))


def test_the_dictionary_loads_once_where_the_lab_runs():
    loads = []
    fake, lab = remote(loads)
    run(lab.call("lens", ids=IDS2, k=1))
    assert loads == []  # the experiments never load it
    for position in (1, 2):
        run(lab.call("code", ids=IDS2, stream=0, position=position))
    assert loads == [1]


def test_unknown_names_and_bad_arguments_are_refused():
    fake, lab = remote()
    local = labs.LocalLab(bench())
    for call in (lab.call, local.call):
        with pytest.raises(labs.LabError, match="no lab function 'eval'"):
            run(call("eval", ids=IDS2))
    assert fake.to_worker == []  # refused on the page, no round trip
    # a page that sends one anyway: the worker refuses it too, by the same words
    with pytest.raises(labs.LabError, match="no lab function '__import__'"):
        run(fake.page.lab("__import__", {"ids": IDS2}))
    with pytest.raises(labs.LabError, match="head 9.0 does not exist"):
        run(lab.call("ablate", ids=IDS2, heads=[[9, 0]], mean=False, target=1))
    with pytest.raises(labs.LabError, match="unexpected keyword"):
        run(lab.call("lens", ids=IDS2, k=2, code="print(1)"))
    with pytest.raises(labs.LabError, match="token ids must lie"):
        run(lab.call("lens", ids=[0, CONFIG.vocab_size]))


def test_progress_and_stop_cross_for_a_long_sweep(monkeypatch):
    monkeypatch.setattr(labs, "YIELD_SECONDS", 0.0)  # report after every re-run
    fake, lab = remote()
    seen = []

    async def progress(done, total):
        seen.append((done, total))

    kl, _ = run(lab.call("sweep", progress, ids=IDS2, target=7, mean=False))
    total = CONFIG.n_layer * CONFIG.n_head
    assert seen and seen[-1][1] == total and all(0 < d <= total for d, _ in seen)
    assert fake.page.progress_messages == 0  # not the run's progress line

    seen.clear()
    fake.host.delay_s = 0.01

    async def stop_midway(done, total):
        seen.append(done)
        if len(seen) == 2:
            fake.page.stop()

    with pytest.raises(protocol.Stopped):
        run(lab.call("patching", stop_midway, ids=IDS2, corrupt=CORRUPT, target=7))
    run(asyncio.sleep(0.05))
    assert fake.host.lab.calls == 1  # the sweep only: the patching was abandoned in the worker
    assert len(seen) < (CONFIG.n_layer + 1) * len(IDS2)


@pytest.fixture(scope="module")
def mini():
    return glassbox_model.load(str(ROOT / "weights" / "mini"), str(ROOT / "vendor" / "gpt2"))


def test_the_panel_computes_in_the_worker_and_words_its_failures(mini):
    ui = UI()
    x = Explainer(ui, mini, seed=0, namespace={})
    x.mount()

    async def go():
        fake = FakeWorker(params=mini.params, config=mini.config)  # on this loop
        fake.host.lab = labs.Bench(mini.params, mini.config)
        await x.run.submit("The Eiffel Tower is in")
        x.runner = fake.page  # the model worker's runner from now on
        exp = x.experiments
        await x.handle("exp-lens")
        assert exp.lab.where == "worker" and fake.host.lab.calls == 1 and exp.status == ""
        want = ex.logit_lens(mini.params, mini.config, mini.forward(x.ids), 5)
        np.testing.assert_array_equal(exp.lens.ids, want.ids)
        fake.host.lab.params = {}  # the worker fails: it has lost its weights
        await x.handle("exp-attribute")
        assert exp.status.startswith("Something went wrong: WorkerError: the worker's target failed: KeyError: ")
        assert "target failed: KeyError" in ui.slots["experiments"]
        exp.target = 3
        await x.handle("exp-attribute")
        assert exp.status.startswith("Something went wrong: WorkerError: the worker's attribution failed")

    run(go())


def test_a_new_run_ends_the_experiment_that_computes(monkeypatch):
    """New tokens (a run or an extend sent to the worker) stop a long experiment between two
    re-runs, so the run does not wait behind it; the run then completes."""
    monkeypatch.setattr(labs, "YIELD_SECONDS", 0.0)
    fake, lab = remote()
    fake.host.delay_s = 0.001

    async def go():
        started = []

        async def progress(done, total):
            started.append(done)

        experiment = asyncio.ensure_future(lab.call("patching", progress, ids=IDS2, corrupt=CORRUPT, target=7))
        while not started:
            await asyncio.sleep(0.001)
        trace = await fake.page.run(IDS[:3])
        with pytest.raises(protocol.Stopped, match="a new run changed the tokens"):
            await experiment
        return trace

    trace = run(go())
    assert trace.ids.tolist() == IDS[:3].tolist() and fake.host.lab.calls == 0
