"""Issue 15, engine: ln_1 and ln_2 fused into the next matmul's prologue (matmul_common.wgsl LN).

With Engine(fuse_ln=True) (the default on GPUs, not on CPU adapters: Engine.default_fuse_ln),
a layer whose ln tensors (ln_1/ln_2 and their mean/var) are neither read back nor kept runs
no layer_norm.wgsl dispatch for them: c_attn and c_fc normalize the residual stream as they
stage it, where the matmul is matmul_splitk (decode) or matmul_prefill (17+ tokens). A layer
whose ln tensors are captured keeps the separate dispatch, so the views read them. Whole
forwards against numpy, with test_engine's SMALL_TOL (3e-5 + 1e-4*|ref|, ~10x the measured
error): the fused path must stay within the tolerance the unfused forward meets.
"""

from __future__ import annotations

import numpy as np
import pytest

from glassbox import reference
from glassbox.gpu.backend import Dispatch
from glassbox.trace import capture_layer
from gpu_helpers import SMALL, assert_close
from test_engine import SMALL_TOL, compare_trace


@pytest.fixture(scope="module")
def fused_engine(run, backend, small_params):
    """engine(scheme) -> (Engine(fuse_ln=True), Checkpoint): fused even on a CPU adapter, whose
    default is not to fuse (Engine.default_fuse_ln)."""
    from glassbox.gpu import Engine
    from gpu_helpers import random_checkpoint

    built = {}

    def get(scheme: str):
        if scheme not in built:
            checkpoint = random_checkpoint(SMALL, scheme, params=small_params)
            built[scheme] = (run(Engine.create(backend, checkpoint, fuse_ln=True)), checkpoint)
        return built[scheme]

    return get


def _kernels(engine) -> list[str]:
    """Kernel names (file stems) of the engine's last plan, in dispatch order."""
    names = {id(pipeline): key[0] for key, pipeline in engine._pipelines.items()}
    return [names[id(cmd.pipeline)] for cmd in engine.last_plan.commands if isinstance(cmd, Dispatch)]


@pytest.mark.parametrize("scheme", ["none", "int8", "q4"])
def test_nothing_captured_fuses_every_layer_and_matches_numpy(fused_engine, run, rng, scheme):
    """A 20-token prompt (matmul_prefill) then decode steps (matmul_splitk), logits only: one
    layer_norm dispatch per forward (ln_f), logits equal numpy's KV-cached forward."""
    engine, checkpoint = fused_engine(scheme)
    params = checkpoint.dequantized()
    gpu_cache, ref_cache = engine.new_cache(), reference.KVCache(SMALL)
    for part in (rng.integers(0, SMALL.vocab_size, 20), [7], [8, 9]):
        got = run(engine.forward(part, cache=gpu_cache, capture="logits"))
        kernels = _kernels(engine)
        assert kernels.count("layer_norm") == 1, kernels  # ln_f only
        assert kernels.count("matmul_prefill" if len(part) > 4 else "matmul_splitk") > 0
        want = reference.forward(params, SMALL, part, cache=ref_cache).logits
        assert_close(f"fused ln {scheme} N={len(part)} logits", got.logits, want, **SMALL_TOL)
    top, _ = run(engine.forward_top([3], cache=gpu_cache, k=5))
    assert _kernels(engine).count("layer_norm") == 1
    want = reference.forward(params, SMALL, [3], cache=ref_cache).logits[-1]
    np.testing.assert_allclose(top.values, reference.top_k(want, 5)[0], atol=3e-5, rtol=1e-4)


@pytest.mark.parametrize("n", [20, 1])
def test_a_captured_layer_keeps_its_ln_tensors(fused_engine, run, rng, n):
    """capture=1 (the page's viewed layer): layer 1's ln_1/ln_2 and statistics come back equal
    to numpy's while layer 0 runs fused; the whole captured trace matches numpy."""
    engine, checkpoint = fused_engine("int8")
    params = checkpoint.dequantized()
    prompt = rng.integers(0, SMALL.vocab_size, 6)
    gpu_cache, ref_cache = engine.new_cache(), reference.KVCache(SMALL)
    run(engine.forward(prompt, cache=gpu_cache, capture="logits"))
    reference.forward(params, SMALL, prompt, cache=ref_cache)
    ids = rng.integers(0, SMALL.vocab_size, n)
    got = run(engine.forward(ids, cache=gpu_cache, capture=1))
    assert _kernels(engine).count("layer_norm") == 3  # layer 1's two, ln_f
    want = reference.forward(params, SMALL, ids, cache=ref_cache, capture=capture_layer(1))
    for name in ("h.1.ln_1", "h.1.ln_1.mean", "h.1.ln_1.var", "h.1.ln_2", "h.1.ln_2.mean", "h.1.ln_2.var"):
        assert name in got.tensors
    compare_trace(f"layer 1 captured N={n}", got, want, **SMALL_TOL)
    # Only a layer's own ln tensors decide: capturing h.0.ln_2 alone unfuses ln_2 of layer 0.
    run(engine.forward(ids, capture=lambda name: name == "h.0.ln_2"))
    assert _kernels(engine).count("layer_norm") == 2


def test_fused_and_unfused_engines_agree(run, backend, rng, small_params):
    """fuse_ln=False (layer_norm.wgsl everywhere) and True give the same logits within the
    forward tolerance, and the fused plan has 2 L fewer dispatches; a CPU adapter (lavapipe in
    CI) does not fuse by default, a GPU does."""
    from glassbox.gpu import Engine
    from gpu_helpers import random_checkpoint

    checkpoint = random_checkpoint(SMALL, "int8", params=small_params)
    fused, plain = (run(Engine.create(backend, checkpoint, fuse_ln=fuse)) for fuse in (True, False))
    for ids in (rng.integers(0, SMALL.vocab_size, 30), rng.integers(0, SMALL.vocab_size, 2)):
        a = run(fused.forward(ids, capture="logits")).logits
        count = len(_kernels(fused))
        b = run(plain.forward(ids, capture="logits")).logits
        assert len(_kernels(plain)) == count + 2 * SMALL.n_layer
        assert_close(f"fused vs unfused N={len(ids)}", a, b, **SMALL_TOL)
    cpu = backend.info.adapter_type == "CPU" or "llvmpipe" in backend.info.describe().lower()
    assert run(Engine.create(backend, checkpoint)).fuse_ln is not cpu
