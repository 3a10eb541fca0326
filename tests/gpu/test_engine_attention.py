"""Issue 15, attention: the engine's per-layer choice of attention kernel, whole forward
against numpy. A layer whose stages (scores/scaled/masked/att) are captured runs attention.wgsl;
the others run flash_attention.wgsl (more than K.DECODE_MAX_TOKENS tokens) or
attention_decode.wgsl (split over keys). All must give the reference's trace, and a KV-cached
decode through the new kernels must equal a full recompute.

Tolerance: test_engine's SMALL_TOL (3e-5 + 1e-4*|ref|, ~10x the measured error).
"""

from __future__ import annotations

import numpy as np
import pytest

from glassbox import reference
from glassbox.gpu import kernels as K
from glassbox.gpu.engine import STAGES
from glassbox.trace import all_names, capture_layer
from gpu_helpers import SMALL, assert_close
from test_engine import SMALL_TOL, compare_trace


def _no_stages(name: str) -> bool:
    return not name.endswith(STAGES)


def _attention_kernels(engine) -> list[str]:
    """The attention kernel names of the engine's newest plan, in dispatch order."""
    names = {id(pipeline): key[0] for key, pipeline in engine._pipelines.items()}
    plan = list(engine._plans.values())[-1]
    return [names[id(cmd.pipeline)] for cmd in plan.commands
            if names.get(id(getattr(cmd, "pipeline", None)), "").startswith(("attention", "flash"))]


@pytest.mark.parametrize("start,n", [(0, 1), (0, 4), (0, 5), (0, 23), (6, 1), (6, 3), (6, 17), (30, 2)])
def test_forward_without_stages_matches_numpy(small_engine, run, rng, start, n):
    """Every tensor but the four stages, read back from every layer, with and without a cache."""
    engine, checkpoint = small_engine("int8")
    params = checkpoint.dequantized()
    ids = rng.integers(0, SMALL.vocab_size, start + n)
    gpu_cache, ref_cache = engine.new_cache(), reference.KVCache(SMALL)
    if start:
        run(engine.forward(ids[:start], cache=gpu_cache, capture="logits"))
        reference.forward(params, SMALL, ids[:start], cache=ref_cache)
    gpu = run(engine.forward(ids[start:], cache=gpu_cache, capture=_no_stages))
    kind = "attention_decode" if n <= K.DECODE_MAX_TOKENS else "flash_attention"
    per_layer = 2 if kind == "attention_decode" else 1  # split + combine
    assert _attention_kernels(engine) == [kind] * (per_layer * SMALL.n_layer)
    ref = reference.forward(params, SMALL, ids[start:], cache=ref_cache, capture=_no_stages)
    assert not any(name.endswith(STAGES) for name in gpu.tensors)
    compare_trace(f"no-stages start={start} N={n}", gpu, ref, **SMALL_TOL)


@pytest.mark.parametrize("n", [1, 9])
def test_viewed_layer_keeps_the_stage_kernel(small_engine, run, rng, n):
    """capture=layer: that layer runs attention.wgsl (its stages are shown), the other the new kernel."""
    engine, checkpoint = small_engine("none")
    ids = rng.integers(0, SMALL.vocab_size, n)
    for layer in range(SMALL.n_layer):
        gpu = run(engine.forward(ids, capture=layer))
        new = "attention_decode" if n <= K.DECODE_MAX_TOKENS else "flash_attention"
        want = [[new] * (2 if new == "attention_decode" else 1) if l != layer else ["attention"]
                for l in range(SMALL.n_layer)]
        assert _attention_kernels(engine) == [k for ks in want for k in ks]
        ref = reference.forward(checkpoint.dequantized(), SMALL, ids, capture=capture_layer(layer))
        compare_trace(f"viewed layer {layer} N={n}", gpu, ref, **SMALL_TOL)


def test_cached_decode_equals_full_recompute(small_engine, run, rng):
    """Prefill by flash, decode by the split kernel (one token, then three), flash again with a
    cache: the logits equal one uncached forward of the whole sequence with every stage
    captured (attention.wgsl only), row by row, up to the full context."""
    engine, _ = small_engine("q4")
    sequence = rng.integers(0, SMALL.vocab_size, SMALL.n_positions)
    cache = engine.new_cache()
    parts, pos = [], 0
    for size in (7, 1, 1, 3, 1, 6, *[1] * 13):
        parts.append(run(engine.forward(sequence[pos:pos + size], cache=cache, capture="logits")).logits)
        pos += size
    assert pos == cache.length == SMALL.n_positions
    full = run(engine.forward(sequence, capture="all"))
    assert list(full.tensors) == all_names(SMALL)
    assert_close("decoded vs full logits", np.concatenate(parts), full.logits, **SMALL_TOL)


def test_fast_attention_off_runs_the_stage_kernel_everywhere(run, backend, small_params, rng):
    """Engine(fast_attention=False) (the benchmark's "old"): attention.wgsl in every layer,
    without stages, and the same logits as the new kernels."""
    from glassbox.gpu import Engine
    from gpu_helpers import random_checkpoint

    checkpoint = random_checkpoint(SMALL, "int8", params=small_params)
    old = run(Engine.create(backend, checkpoint, fast_attention=False))
    new = run(Engine.create(backend, checkpoint))
    for ids in (rng.integers(0, SMALL.vocab_size, 12), rng.integers(0, SMALL.vocab_size, 1)):
        got = run(old.forward(ids, capture=_no_stages))
        assert _attention_kernels(old) == ["attention"] * SMALL.n_layer
        ref = reference.forward(checkpoint.dequantized(), SMALL, ids, capture=_no_stages)
        compare_trace(f"fast_attention off N={ids.size}", got, ref, **SMALL_TOL)
        assert_close(f"fast_attention off vs on N={ids.size}", got.logits,
                     run(new.forward(ids, capture="logits")).logits, **SMALL_TOL)


def test_f16_kv_cache(run, backend, small_params, rng):
    """Engine(kv_cache='f16'): prefill, then KV-cached steps through every attention kernel
    (stages captured in one step). Against the f32 engine's uncached forward: the cache holds
    k and v rounded to f16 (relative error <= 2^-11 = 4.9e-4 each), so attention outputs move
    by up to ~5e-4 x |v|; on these weights the logits moved by 2e-5 (f32: 7e-7). Bound
    5e-4 + 5e-4*|ref|: the f16 rounding of values of size ~1, and a wrong row or index would
    still show as O(0.1).
    A device without shader-f16 is refused with a clear message."""
    from glassbox.gpu import Engine, GPUError
    from glassbox.gpu.native import NativeBackend
    from gpu_helpers import random_checkpoint

    checkpoint = random_checkpoint(SMALL, "int8", params=small_params)
    with pytest.raises(GPUError, match="shader-f16"):
        Engine(backend, checkpoint, kv_cache="f16")  # the session's device did not ask for it
    f16_backend = run(NativeBackend.create(optional_features=[K.F16_FEATURE]))
    if K.F16_FEATURE not in f16_backend.features:
        pytest.skip(f"the adapter lacks {K.F16_FEATURE}")
    engine = run(Engine.create(f16_backend, checkpoint, kv_cache="f16"))
    cache = engine.new_cache()
    assert cache.k[0].size == SMALL.n_positions * SMALL.n_embd * 2
    sequence = rng.integers(0, SMALL.vocab_size, 20)
    parts, pos = [], 0
    for size, capture in ((6, "logits"), (1, "logits"), (3, "logits"), (1, "all"), (9, "logits")):
        parts.append(run(engine.forward(sequence[pos:pos + size], cache=cache, capture=capture)).logits)
        pos += size
    f32 = run(Engine.create(backend, checkpoint))
    full = run(f32.forward(sequence, capture="logits")).logits
    assert_close("f16 kv cache logits vs f32", np.concatenate(parts), full, atol=5e-4, rtol=5e-4)
    assert_close("f16 kv cache, prompt logits (no cached keys read)", parts[0], full[:6], **SMALL_TOL)


def test_decode_grid_follows_t(run, backend, rng):
    """Issue 15, engine: decode plans are keyed by K.decode_grid's bucket of T, so the split
    pass launches 1, 2, 4 ... chunks per head as T grows (C = 128: chunks of 32 keys), one plan
    per bucket, and the steps across the buckets equal numpy's KV-cached decode."""
    from dataclasses import replace

    from glassbox.gpu import Engine
    from glassbox.gpu.backend import Dispatch
    from gpu_helpers import random_checkpoint, random_params

    config = replace(SMALL, n_positions=128)
    checkpoint = random_checkpoint(config, "int8", params=random_params(config, seed=2))
    engine = run(Engine.create(backend, checkpoint))
    params = checkpoint.dequantized()
    ids = rng.integers(0, config.vocab_size, 70)
    gpu_cache, ref_cache = engine.new_cache(), reference.KVCache(config)
    run(engine.forward(ids[:30], cache=gpu_cache, capture="logits"))
    reference.forward(params, config, ids[:30], cache=ref_cache)
    grids = {}
    for t in range(30, 70):
        got = run(engine.forward(ids[t:t + 1], cache=gpu_cache, capture="logits"))
        names = {id(pipeline): key for key, pipeline in engine._pipelines.items()}
        want = reference.forward(params, config, ids[t:t + 1], cache=ref_cache)
        assert_close(f"decode grid T={t + 1}", got.logits, want.logits, **SMALL_TOL)
        split = [cmd.workgroups for cmd in engine.last_plan.commands if isinstance(cmd, Dispatch)
                 and names[id(cmd.pipeline)][:2] == ("attention_decode", "split")]
        assert split and all(grid == (K.decode_grid(t + 1, 128), config.n_head, 1) for grid in split)
        grids[K.decode_grid(t + 1, 128)] = engine.last_plan
    assert sorted(grids) == [1, 2, 4]  # T = 31..32, 33..64, 65..70
    assert len({id(plan) for plan in grids.values()}) == 3
