"""The engine's host side (issue 15): kept tensors read later, top-k on the GPU and sampling
from it, replayed plans, per-dispatch timestamps — each against numpy on lavapipe.

Kept tensors and the GPU top-k come from the same kernels as a full capture, so they are
compared for exact equality with it (not within a tolerance); the full capture itself is held
to numpy by test_engine.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from glassbox import reference, sampling
from glassbox.errors import OptionsError
from glassbox.gpu import Engine, GPUError
from glassbox.gpu import kernels as K
from glassbox.gpu import sampler
from glassbox.gpu.backend import Copy, Dispatch
from glassbox.gpu.engine import LAYER_SOURCES, Top, capture_predicate
from glassbox.trace import all_names
from gpu_helpers import SMALL

IDS = [3, 141, 59, 265, 35, 89, 79]


def assert_same(got, want, names) -> None:
    assert list(got.tensors) == list(names)
    for name in names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# ----- read back only what is shown; keep the rest on the GPU

@pytest.mark.parametrize("capture", [1, "none", "logits"])
def test_read_layer_equals_a_full_capture(small_engine, run, capture):
    engine, _ = small_engine("int8")
    full = run(engine.forward(IDS))
    shown = run(engine.forward(IDS, capture=capture, keep=True))
    if capture == 1:
        assert set(shown.tensors) == {n for n in all_names(SMALL) if not n.startswith("h.0.")}
    for layer in range(SMALL.n_layer):
        got = run(engine.read_layer(layer))
        assert_same(got, full, [n for n in all_names(SMALL) if n.startswith(f"h.{layer}.")])
    assert_same(run(engine.read_kept(None)), full, all_names(SMALL))


def test_read_layer_after_decode_steps(small_engine, run):
    """A prompt then decode steps with the KV cache: each step keeps its own tensors (T grows),
    and any other forward replaces what was kept."""
    engine, _ = small_engine("q4")
    kept, full = engine.new_cache(), engine.new_cache()
    run(engine.forward(IDS[:4], cache=full))
    run(engine.forward(IDS[:4], cache=kept, capture="none", keep=True))
    for token in IDS[4:]:
        want = run(engine.forward([token], cache=full))
        run(engine.forward([token], cache=kept, capture="logits", keep=True))
        got = run(engine.read_layer(1))
        assert got["h.1.att"].shape == (SMALL.n_head, 1, kept.length)
        assert_same(got, want, [n for n in all_names(SMALL) if n.startswith("h.1.")])
    run(engine.forward([1], cache=engine.new_cache(), capture="logits"))
    with pytest.raises(GPUError, match="not kept"):
        run(engine.read_layer(1))


def test_without_keep_only_the_unwritten_tensors_stay(small_engine, run):
    engine, _ = small_engine("int8")
    # Without captured attention stages every layer runs the fast attention kernels (issue 15,
    # attention), whose sums differ from attention.wgsl's in the last bits: compare like with like.
    full = run(engine.forward(IDS, capture=lambda n: n in ("tok_emb", "ln_f", "logits")))
    run(engine.forward(IDS, capture="none"))
    assert_same(run(engine.read_kept(lambda n: n in ("tok_emb", "ln_f", "logits"))), full,
                ["tok_emb", "ln_f", "logits"])
    with pytest.raises(GPUError, match="h.0.ln_1.mean was not kept"):
        run(engine.read_layer(0))
    with pytest.raises(ValueError, match="layer must be"):
        run(engine.read_layer(SMALL.n_layer))


def test_keep_limit_is_a_clear_error(backend, run, small_params):
    from gpu_helpers import random_checkpoint

    engine = run(Engine.create(backend, random_checkpoint(SMALL, "int8", params=small_params), keep_limit=1000))
    with pytest.raises(GPUError, match="keep=True would hold .* over the 0 MiB limit"):
        run(engine.forward(IDS, capture="none", keep=True))
    run(engine.forward(IDS, capture=0))  # the engine still works


def test_readback_per_forward(small_engine, run):
    """What one forward copies: a one-layer capture reads that layer, the globals and the
    end; keep=True adds GPU-to-GPU copies only for tensors a later layer overwrites."""
    engine, _ = small_engine("int8")
    roles = len(set(LAYER_SOURCES.values()))  # 18 buffers per layer
    counts = {}
    for capture, keep in ((None, False), (1, False), (1, True), ("none", True)):
        names = [n for n in all_names(SMALL) if n == "logits" or capture_predicate(capture)(n)]
        copies = sorted({engine._source(n) for n in names})
        plan = run(engine._plan(len(IDS), len(IDS), engine._own_cache or engine.new_cache(), copies, keep))
        readback = [c for c in plan.commands if isinstance(c, Copy) and c.dst.label.startswith("readback")]
        kept = [c for c in plan.commands if isinstance(c, Copy) and c.dst.label.startswith("storage")]
        counts[(capture, keep)] = (len(readback), len(kept))
    L = SMALL.n_layer
    assert counts[(None, False)] == (3 + L * roles + 4, 0)
    assert counts[(1, False)] == (3 + roles + 4, 0)
    # keep: layers 0..L-2 and emb are copied out (the last layer stays in place); layer 1 is read.
    assert counts[(1, True)] == (3 + roles + 4, (L - 1) * roles)
    assert counts[("none", True)] == (0 + 1, 1 + (L - 1) * roles)  # the logits; emb + layer 0 kept


def test_forward_layers_stops_after_the_last_layer_asked_for(small_engine, run):
    """issue 12: the Q/K map's corpus forward reads q, k and att and stops there — no ln_f, no
    logits [N, V] — with the same numbers as a full forward (the same kernels: stages captured)."""
    engine, _ = small_engine("int8")
    qk = [n for n in all_names(SMALL) if n.split(".")[-1] in ("q", "k", "att")]
    full = run(engine.forward(IDS, capture=lambda n: n in qk))
    got = run(engine.forward_layers(IDS, lambda n: n in qk))
    assert_same(got, full, qk)
    dispatches = lambda: sum(isinstance(c, Dispatch) for c in engine.last_plan.commands)  # noqa: E731
    everything = dispatches()
    run(engine.forward_layers(IDS, lambda n: n == "h.0.q"))
    assert set(run(engine.read_kept(lambda n: n == "h.0.q")).tensors) == {"h.0.q"}
    first_layer = dispatches()
    assert first_layer < everything // SMALL.n_layer + 3  # layer 0 and the embedding, nothing after
    with pytest.raises(GPUError, match="logits was not kept"):
        run(engine.read_kept("logits"))
    # a final tensor asked for: the whole forward, and only what was asked is read back (no
    # stage captured: the fast attention kernels, so compared with a forward that runs them too)
    picked = lambda n: n in ("h.1.k", "logits")  # noqa: E731
    tail = run(engine.forward_layers(IDS, picked))
    assert_same(tail, run(engine.forward(IDS, capture=picked)), ["h.1.k", "logits"])
    again = run(engine.forward(IDS, capture=lambda n: n in qk))  # later forwards unaffected
    assert_same(again, full, qk + ["logits"])


# ----- top-k on the GPU

def run_top_k(backend, run, rows: np.ndarray, k: int) -> np.ndarray:
    """top_k.wgsl on the last row of ``rows`` [N, V] -> the top buffer's u32 words [2k+1]."""
    n, V = rows.shape
    layout = backend.create_layout(K.TOP_K.kinds)
    params = backend.create_buffer(16, "uniform")
    backend.write_buffer(params, K.params_array(n, n, 0))
    logits = backend.create_buffer(rows.nbytes, "storage")
    backend.write_buffer(logits, rows.astype(np.float32))
    words = K.top_k_words(k)
    top = backend.create_buffer(4 * words, "storage")
    readback = backend.create_buffer(4 * words, "readback")
    group = backend.create_bind_group(layout, [(b, 0, b.size) for b in (params, logits, top)])
    entry, extra, grid = K.top_k_launch(k)
    pipeline = run(backend.create_pipeline(K.TOP_K.source(), entry, {"V": V, **extra}, layout, "top_k"))
    backend.submit([Dispatch(pipeline, group, grid), Copy(top, 0, readback, 0, 4 * words)])
    (raw,) = run(backend.read([(readback, 0, 4 * words)]))
    return np.frombuffer(raw, dtype=np.uint32).copy()


def _rows(kind: str, V: int, rng) -> np.ndarray:
    """[3, V] logits; the last row is the one selected from."""
    rows = rng.standard_normal((3, V)).astype(np.float32) * 4
    last = rows[-1]
    if kind == "ties":  # ties inside the top and at its border; a tie at the maximum
        last[rng.integers(0, V, V // 8)] = np.float32(2.5)
        last[V // 2] = last.max()
    elif kind == "flat":  # every logit equal: the k lowest ids, in order
        last[:] = np.float32(-1.25)
    elif kind == "close":  # keys sharing their first three bytes: the radix's last pass decides
        last[:] = np.float32(7.0) + np.float32(1e-6) * rng.integers(0, 300, V).astype(np.float32)
    elif kind == "signs":  # +-0 (equal in numpy), negatives only, tiny and huge magnitudes
        last[:] = -np.abs(last)
        last[rng.integers(0, V, 40)] = np.float32(-0.0)
        last[rng.integers(0, V, 40)] = np.float32(0.0)
        last[rng.integers(0, V, 5)] = np.float32(3e38)
        last[rng.integers(0, V, 5)] = np.float32(1e-40)
    return rows


@pytest.mark.parametrize("kind", ["normal", "ties", "flat", "close", "signs"])
@pytest.mark.parametrize("V, k", [(50257, 64), (1000, 64), (300, 17), (40, 64)])
def test_top_k_kernel_equals_numpy(backend, run, rng, V, k, kind):
    rows = _rows(kind, V, rng)
    last = rows[-1]
    words = run_top_k(backend, run, rows, k)
    values, ids = reference.top_k(last, k)
    count = min(k, V)
    np.testing.assert_array_equal(words[k:k + count], ids)
    np.testing.assert_array_equal(words[:count].view(np.float32), values)
    assert (words[k + count:2 * k] == 0xFFFFFFFF).all() and words[2 * k] == 0
    assert ids[0] == np.argmax(last)


def test_top_k_kernel_skips_nonfinite(backend, run, rng):
    row = rng.standard_normal((1, 5000)).astype(np.float32)
    row[0, [7, 4000]] = np.nan
    row[0, 123] = np.inf
    row[0, 124] = -np.inf
    words = run_top_k(backend, run, row, 8)
    assert words[16] == 4
    finite = np.where(np.isfinite(row[0]), row[0], -np.inf)
    np.testing.assert_array_equal(words[8:16], reference.top_k(finite, 8)[1])
    few = np.full((1, 300), np.nan, np.float32)  # fewer finite logits than k
    few[0, [9, 3, 200]] = [1.0, 2.0, 1.0]
    words = run_top_k(backend, run, few, 8)
    assert words[8:11].tolist() == [3, 9, 200] and (words[11:16] == 0xFFFFFFFF).all() and words[16] == 297


@pytest.mark.parametrize("scheme", ["int8", "q4"])
def test_forward_top_equals_the_logits_top(small_engine, run, scheme):
    engine, _ = small_engine(scheme)
    cache_a, cache_b = engine.new_cache(), engine.new_cache()
    for step in (IDS, [7], [250]):
        # capture="logits": the same (fast) attention kernels as forward_top's run
        full = run(engine.forward(step, cache=cache_a, capture="logits"))
        top, trace = run(engine.forward_top(step, cache=cache_b, k=32))
        assert list(trace.tensors) == []
        values, ids = reference.top_k(full.logits[-1], 32)
        np.testing.assert_array_equal(top.ids, ids)
        np.testing.assert_array_equal(top.values, values)
        assert top.nonfinite == 0
        # The whole row is still on the GPU for a fallback, read without recomputing.
        np.testing.assert_array_equal(run(engine.read_kept("logits")).logits, full.logits)
    top, trace = run(engine.forward_top(IDS, capture=1))
    assert "logits" in trace and "h.1.att" in trace and "h.0.att" not in trace


# ----- sampling from the top, exactly as glassbox.sampling on the full row

SETTINGS = [(0.0, 0, 1.0), (0.0005, 3, 0.5), (0.7, 5, 1.0), (1.3, 40, 0.9), (1.0, 63, 1.0), (0.5, 1, 0.3)]


@pytest.mark.parametrize("temperature, top_k, top_p", SETTINGS)
def test_sample_from_top_reproduces_sampling(rng, temperature, top_k, top_p):
    V, k = 2000, 64
    for trial in range(20):
        row = (rng.standard_normal(V) * (1 + trial % 4)).astype(np.float32)
        values, ids = reference.top_k(row, k)
        top = Top(values, ids.astype(np.int64), 0, V)
        mine, theirs = np.random.default_rng(trial), np.random.default_rng(trial)
        got = sampler.sample_from_top(top, temperature, top_k, top_p, mine)
        want = sampling.sample(sampling.distribution(row, temperature, top_k, top_p), theirs)
        assert got == want, (trial, got, want)
        assert mine.random() == theirs.random(), "the generators drew differently"


def test_sample_from_top_refuses_what_it_cannot_decide(rng):
    V, k = 500, 8
    row = rng.standard_normal(V).astype(np.float32)
    top = Top(*[a for a in reference.top_k(row, k)], 0, V)
    assert not sampler.exact_on_top(1.0, 0, 1.0, k) and not sampler.exact_on_top(1.0, k, 1.0, k)
    g = np.random.default_rng(0)
    assert sampler.sample_from_top(top, 1.0, 0, 1.0, g) is None  # top-k off: needs the full row
    assert sampler.sample_from_top(top, 1.0, 8, 1.0, g) is None  # top-k = k: ties past the read
    tied = row.copy()
    tied[np.argsort(-row)[3:12]] = tied.max() - 1  # threshold tie running past the k read
    top = Top(*reference.top_k(tied, k), 0, V)
    assert sampler.sample_from_top(top, 1.0, 5, 1.0, g) is None
    assert sampler.sample_from_top(Top(top.values, top.ids, 1, V), 0.0, 0, 1.0, g) is None
    assert g.random() == np.random.default_rng(0).random(), "a refusal drew from the generator"
    with pytest.raises(OptionsError, match="temperature"):
        sampler.exact_on_top(-1.0, 0, 1.0)


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, 0, 1.0), (0.9, 20, 0.95), (1.0, 0, 1.0)])
def test_gpu_generate_equals_full_logits_sampling(small_engine, run, temperature, top_k, top_p):
    """sampler.generate (top-k read back; full row where not exact) draws the same tokens as
    sampling on the whole logits row the engine reads back."""
    engine, _ = small_engine("int8")
    got = run(sampler.generate(engine, IDS, 12, temperature, top_k, top_p, np.random.default_rng(5), k=32))
    rng = np.random.default_rng(5)
    want = run(engine.generate(IDS, 12, lambda logits: sampling.sample(
        sampling.distribution(logits, temperature, top_k, top_p), rng)))
    assert got == want and len(got) == 12


# ----- replay and timestamps

def test_record_and_replay_equal_submit(small_engine, run, backend):
    """The base Backend's record/replay (what wgpu-py uses) runs the plan; the page's JS replay
    is tested in tests/e2e/test_gpu_browser.py."""
    engine, _ = small_engine("int8")
    first = run(engine.forward(IDS, capture="logits"))
    again = run(engine.forward(IDS, capture="logits"))  # the cached plan's recording, replayed
    np.testing.assert_array_equal(first.logits, again.logits)


@pytest.fixture(scope="module")
def timed_backend(run, backend):
    from glassbox.gpu.native import NativeBackend

    if "timestamp-query" not in backend.adapter.features:
        pytest.skip(f"{backend.info.describe()} offers no 'timestamp-query'")
    be = run(NativeBackend.create(optional_features=("timestamp-query",)))
    yield be
    be.destroy()


def test_profile_times_every_dispatch(timed_backend, run, small_params):
    from gpu_helpers import random_checkpoint

    engine = run(Engine.create(timed_backend, random_checkpoint(SMALL, "int8", params=small_params)))
    cache = engine.new_cache()
    profile = run(engine.profile(IDS, cache=cache, top=16))
    dispatches = 1 + SMALL.n_layer * 7 + 1 + 1 + 1  # embedding, 7 per layer, ln_f, logits, top-k
    assert len(profile) == dispatches and cache.length == len(IDS)
    assert [label for label, _ in profile[:3]] == ["embedding.main", "layer_norm.main", "matmul.tiled [192x64]"]
    assert profile[-1][0] == "top_k.main"
    assert all(ns >= 0 for _, ns in profile) and sum(ns for _, ns in profile) > 0
    # The profiled run advanced the cache like a forward: a decode step continues it.
    top, _ = run(engine.forward_top([5], cache=cache, k=4))
    full = run(engine.forward(IDS + [5], capture="logits"))
    np.testing.assert_allclose(top.values, reference.top_k(full.logits[-1], 4)[0], atol=3e-5, rtol=1e-4)


def test_profile_needs_timestamps(small_engine, run, backend):
    engine, _ = small_engine("int8")
    if engine.backend.can_time:
        pytest.skip("the shared backend has timestamps")
    with pytest.raises(GPUError, match="timestamp-query"):
        run(engine.profile(IDS))
