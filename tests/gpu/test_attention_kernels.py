"""Issue 15's attention kernels against the numpy reference (lavapipe in CI): flash-style
prefill (flash_attention.wgsl) and split-over-keys decode (attention_decode.wgsl), for many
(N, T, start), heads 1 / 4 / 12 and head sizes 20 / 32 / 64, both appending to the KV cache.

Tolerance of head_out: atol 1e-5 + rtol 1e-5, as attention.wgsl's. Each output is a convex
combination of values of size ~1 (N(0, 1) inputs) whose weights differ from numpy's by a few
float32 eps: the online softmax rescales by exp(m - m') per tile (or per split) instead of
subtracting the global max once, and sums in another order. The largest error measured on
lavapipe is printed in the session summary (``flash`` and ``decode`` lines).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from glassbox import reference
from glassbox.gpu import kernels as K
from gpu_helpers import assert_close
from kernel_runner import KernelRunner

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def runner(backend):
    return KernelRunner(backend)


def _inputs(rng, H, Kh, C, start, n):
    D = H * Kh
    qkv = rng.standard_normal((n, 3 * D)).astype(np.float32)
    k_cache = rng.standard_normal((C, D)).astype(np.float32)  # rows >= start: stale, never read
    v_cache = rng.standard_normal((C, D)).astype(np.float32)
    return qkv, k_cache, v_cache


def _want(qkv, k_cache, v_cache, H, start):
    """reference.attention's head_out, heads merged, for this run against cache rows < start."""
    q, k, v = (reference.split_heads(part, H) for part in np.split(qkv, 3, axis=-1))
    k_all = np.concatenate([reference.split_heads(k_cache[:start], H), k], axis=1)
    v_all = np.concatenate([reference.split_heads(v_cache[:start], H), v], axis=1)
    return reference.merge_heads(reference.attention(q, k_all, v_all)["head_out"])


def _constants(H, Kh):
    return {"H": H, "K": Kh, "SQRT_K": float(np.float32(math.sqrt(Kh)))}


def _check_append(name, got, qkv, old, start, n, part, D):
    """Cache rows start .. start+N hold this run's k (part 1) or v (part 2); the rest is kept."""
    got = got.reshape(-1, D)[:old.shape[0]]
    np.testing.assert_array_equal(got[:start], old[:start], err_msg=name)
    np.testing.assert_array_equal(got[start:start + n], qkv[:, part * D:(part + 1) * D], err_msg=name)
    np.testing.assert_array_equal(got[start + n:], old[start + n:], err_msg=name)


def run_flash(runner, run, qkv, k_cache, v_cache, H, Kh, start, tile=None):
    n = qkv.shape[0]
    D = H * Kh
    tile = tile or K.flash_tile(Kh, runner.backend.limits)
    return run(runner.run(K.FLASH_ATTENTION, K.flash_attention_launch(n, H, Kh, tile), _constants(H, Kh),
                          {"qkv": qkv, "k_cache": k_cache, "v_cache": v_cache}, {"out": (n, D)},
                          params=(n, start + n, start), readback=("k_cache", "v_cache")))


def run_decode(runner, run, qkv, k_cache, v_cache, H, Kh, start, splits=K.DECODE_SPLITS, min_keys=K.DECODE_MIN_KEYS):
    """The split pass, then the combine pass on its partials (two submits: the partials come
    back and go up again, which also checks their layout). The split grid is the engine's for
    T = start + n (K.decode_grid, issue 15, engine) and the partials start as NaN: a combine
    reading a split that did not run would return NaN."""
    n, C = qkv.shape[0], k_cache.shape[0]
    D = H * Kh
    split, combine = K.attention_decode_launches(n, H, C, splits, min_keys, t=start + n)
    assert split[2][0] == K.decode_grid(start + n, C, splits, min_keys)
    constants = _constants(H, Kh)
    size = K.decode_partials_floats(n, H, Kh, C, splits)
    first = run(runner.run(K.ATTENTION_DECODE, split, constants,
                           {"qkv": qkv, "k_cache": k_cache, "v_cache": v_cache,
                            "partials": np.full(size, np.nan, np.float32)}, {"out": (0,)},
                           params=(n, start + n, start), readback=("k_cache", "v_cache", "partials")))
    first["partials"] = first["partials"][:size]
    second = run(runner.run(K.ATTENTION_DECODE, combine, constants,
                            {"qkv": None, "k_cache": None, "v_cache": None, "partials": first["partials"]},
                            {"out": (n, D)}, params=(n, start + n, start)))
    return {**first, "out": second["out"]}


CASES = [  # (H, K, C, start, N)
    (1, 32, 80, 0, 64), (4, 32, 80, 0, 64), (12, 64, 128, 0, 64), (12, 64, 128, 40, 64),
    (4, 32, 80, 16, 64), (1, 64, 40, 3, 17), (4, 20, 48, 5, 7), (12, 32, 40, 0, 33), (4, 32, 40, 39, 1),
]


@pytest.mark.parametrize("H,Kh,C,start,n", CASES)
def test_flash_attention(runner, run, rng, H, Kh, C, start, n):
    qkv, k_cache, v_cache = _inputs(rng, H, Kh, C, start, n)
    out = run_flash(runner, run, qkv, k_cache, v_cache, H, Kh, start)
    label = f"H={H} K={Kh} start={start} N={n}"
    assert_close(f"flash head_out {label}", out["out"], _want(qkv, k_cache, v_cache, H, start), **TOL)
    for name, part in (("k_cache", 1), ("v_cache", 2)):
        _check_append(f"flash {name} {label}", out[name], qkv, (k_cache, v_cache)[part - 1], start, n, part, H * Kh)


@pytest.mark.parametrize("tile", K.FLASH_TILES)
def test_flash_attention_every_tile(runner, run, rng, tile):
    """The smaller tiles (chosen for large head sizes) give the same result."""
    H, Kh, C, start, n = 2, 32, 64, 11, 29
    qkv, k_cache, v_cache = _inputs(rng, H, Kh, C, start, n)
    out = run_flash(runner, run, qkv, k_cache, v_cache, H, Kh, start, tile=tile)
    assert_close(f"flash head_out B={tile}", out["out"], _want(qkv, k_cache, v_cache, H, start), **TOL)


@pytest.mark.parametrize("min_keys", [1, 8, K.DECODE_MIN_KEYS])
def test_decode_every_length(runner, run, rng, min_keys):
    """N = 1 at every T = 1 .. C: with chunks of 1 key, 32 splits at T = 1 mostly empty and
    chunks of 2 keys at T = C; with chunks of 8+ or 32+ keys (the engine's), fewer splits."""
    H, Kh, C = 4, 32, 64
    for start in range(C):
        qkv, k_cache, v_cache = _inputs(rng, H, Kh, C, start, 1)
        out = run_decode(runner, run, qkv, k_cache, v_cache, H, Kh, start, min_keys=min_keys)
        assert_close(f"decode head_out T={start + 1}", out["out"], _want(qkv, k_cache, v_cache, H, start), **TOL)
        for name, part in (("k_cache", 1), ("v_cache", 2)):
            _check_append(f"decode {name} T={start + 1}", out[name], qkv, (k_cache, v_cache)[part - 1], start, 1,
                          part, H * Kh)


@pytest.mark.parametrize("H,Kh,C,start,n,splits,min_keys", [
    (12, 64, 1024, 63, 1, 32, 32), (12, 64, 1024, 255, 1, 32, 32), (12, 64, 1024, 1023, 1, 32, 32),
    (12, 64, 1024, 700, 4, 32, 32), (1, 64, 1024, 1000, 3, 32, 32), (4, 20, 48, 9, 2, 5, 1), (4, 32, 64, 30, 1, 1, 32),
    (2, 32, 200, 190, 2, 7, 3),
])
def test_decode_long_context(runner, run, rng, H, Kh, C, start, n, splits, min_keys):
    """GPT-2-small's shape (12 heads x 64, C = 1024) up to a full context, a few queries at
    once, odd split counts and chunk sizes, and a single split."""
    qkv, k_cache, v_cache = _inputs(rng, H, Kh, C, start, n)
    out = run_decode(runner, run, qkv, k_cache, v_cache, H, Kh, start, splits, min_keys)
    label = f"H={H} K={Kh} T={start + n} N={n} splits={splits} min_keys={min_keys}"
    assert_close(f"decode head_out {label}", out["out"], _want(qkv, k_cache, v_cache, H, start), **TOL)
    for name, part in (("k_cache", 1), ("v_cache", 2)):
        _check_append(f"decode {name} {label}", out[name], qkv, (k_cache, v_cache)[part - 1], start, n, part, H * Kh)


def test_plans_fit_webgpu_default_limits():
    """GPT-2's head size 64 at C = 1024 (and the largest GPT-2, C = 1024 too) within 16 KiB."""
    from glassbox.gpu.backend import DEFAULT_LIMITS

    limit = DEFAULT_LIMITS["max_compute_workgroup_storage_size"]
    assert K.flash_tile(64, DEFAULT_LIMITS) == 16
    assert K.flash_workgroup_bytes(64, 16) <= limit
    assert K.decode_workgroup_bytes(64, 1024) <= limit
    assert K.decode_splits(1024) == {"SPLITS": 32, "MIN_KEYS": 32, "CHUNK": 32}
    assert K.decode_splits(16)["CHUNK"] == 16 and K.decode_splits(4096)["SPLITS"] == 128
    # issue 15, engine: the split grid grows with T in powers of two: 1 workgroup per (query,
    # head) up to T = 32 (one chunk of MIN_KEYS keys), 2 up to 64, ..., all 32 from T = 513.
    assert [K.decode_grid(t, 1024) for t in (1, 32, 33, 64, 65, 300, 512, 513, 992, 993, 1024)] == [
        1, 1, 2, 2, 4, 16, 16, 32, 32, 32, 32]
    assert K.flash_tile(128, DEFAULT_LIMITS) == 8  # a larger head still fits, with smaller tiles
    with pytest.raises(ValueError, match="head size"):
        K.flash_tile(1024, DEFAULT_LIMITS)


# ----- the f16 KV cache option (issue 15): every attention kernel, cache elements f16

class _F16Cache(K.Kernel):
    """A kernel whose source is its f16-cache variant (kernels.cache_variant)."""

    def source(self, features=frozenset()) -> str:
        return K.cache_variant(K.Kernel(self.name, self.bindings), True, features)


@pytest.fixture(scope="module")
def f16_backend(run, backend):
    """A second device on the same adapter, with shader-f16 where the adapter has it."""
    from glassbox.gpu.native import NativeBackend

    f16 = run(NativeBackend.create(optional_features=[K.F16_FEATURE]))
    if K.F16_FEATURE not in f16.features:
        pytest.skip(f"the adapter lacks {K.F16_FEATURE}")
    return f16


@pytest.fixture(scope="module")
def f16_runner(f16_backend):
    return KernelRunner(f16_backend)


@pytest.mark.parametrize("kernel", ["attention", "flash_attention", "attention_decode"])
@pytest.mark.parametrize("start,n", [(0, 9), (13, 1), (20, 3), (6, 26)])
def test_f16_cache(f16_runner, run, rng, kernel, start, n):
    """With the cache's rows rounded to f16 on the numpy side too, the f16 variant gives the
    f32 tolerance (the kernels convert to f32 on read and sum in f32); the rows it appends are
    f16(k) and f16(v) exactly."""
    H, Kh, C = 4, 32, 64
    D = H * Kh
    qkv, k32, v32 = _inputs(rng, H, Kh, C, start, n)
    k16, v16 = k32.astype(np.float16), v32.astype(np.float16)
    base = K.Kernel(kernel, getattr(K, {"attention": "ATTENTION", "flash_attention": "FLASH_ATTENTION",
                                        "attention_decode": "ATTENTION_DECODE"}[kernel]).bindings)
    f16 = _F16Cache(base.name, base.bindings)
    caches = {"qkv": qkv, "k_cache": k16, "v_cache": v16}
    params = (n, start + n, start)
    if kernel == "attention":
        out = run(f16_runner.run(f16, K.attention_launch(n, H), {**_constants(H, Kh), "CTX": C, "CAPTURE": False},
                                 caches, {"scores": (0,), "scaled": (0,), "masked": (0,), "att": (0,), "out": (n, D)},
                                 params=params, readback=("k_cache", "v_cache")))
    elif kernel == "flash_attention":
        out = run(f16_runner.run(f16, K.flash_attention_launch(n, H, Kh, 16), _constants(H, Kh), caches,
                                 {"out": (n, D)}, params=params, readback=("k_cache", "v_cache")))
    else:
        split, combine = K.attention_decode_launches(n, H, C, 8, 4)
        size = K.decode_partials_floats(n, H, Kh, C, 8)
        out = run(f16_runner.run(f16, split, _constants(H, Kh), caches, {"partials": (size,), "out": (0,)},
                                 params=params, readback=("k_cache", "v_cache")))
        out["out"] = run(f16_runner.run(f16, combine, _constants(H, Kh), {
            "qkv": None, "k_cache": None, "v_cache": None, "partials": out["partials"]}, {"out": (n, D)},
            params=params))["out"]
    want = _want(qkv, k16.astype(np.float32), v16.astype(np.float32), H, start)
    assert_close(f"f16-cache {kernel} head_out start={start} N={n}", out["out"], want, **TOL)
    for name, part, old in (("k_cache", 1, k16), ("v_cache", 2, v16)):
        got = out[name].view(np.float16)[:C * D].reshape(C, D)
        np.testing.assert_array_equal(got[:start], old[:start])
        np.testing.assert_array_equal(got[start:start + n], qkv[:, part * D:(part + 1) * D].astype(np.float16))
        np.testing.assert_array_equal(got[start + n:], old[start + n:])
