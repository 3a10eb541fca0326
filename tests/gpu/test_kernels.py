"""Each WGSL kernel against the numpy function it must match, on random inputs (lavapipe in CI).

Tolerances are atol + rtol*|numpy|. float32 eps is 6e-8; every kernel sums in a different
order than numpy (tree reductions, tiles), so the bound is a few eps times the size of the
sum's terms: chosen per kernel below, about 10x the largest error measured on lavapipe.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from glassbox import quant, reference
from glassbox.gpu import kernels as K
from gpu_helpers import assert_close
from kernel_runner import KernelRunner


@pytest.fixture(scope="module")
def runner(backend):
    return KernelRunner(backend)


def _quantized(w: np.ndarray, scheme: str):
    q, scale = quant.quantize(w, scheme)
    return q, scale, quant.dequantize(q, scale, scheme)


def _assert_outputs(label: str, out: dict, pre, want, tol: dict) -> None:
    """A matmul's out against want, and its pre (STORE_PRE) against pre unless that is None."""
    if pre is not None:
        assert_close(label + " pre", out["pre"], pre, **tol)
    assert_close(label, out["out"], want, **tol)


# ----- the shader files themselves

@pytest.mark.parametrize("kernel", K.KERNELS, ids=lambda k: k.name)
def test_bindings_and_header_match(kernel, backend):
    source = kernel.source()
    assert K.declared_bindings(source) == list(kernel.bindings), "Python binds in a different order than the shader"
    header = source.split("\n\n")[0]
    assert header.startswith(f"// {kernel.name}.wgsl"), "the header names the file"
    named = [word for word in header.replace(",", " ").split() if word.startswith("glassbox.reference.")]
    assert named, "the header names the numpy function it matches"
    for ref in named:
        assert hasattr(reference, ref.split(".")[2].rstrip(".")), f"{ref} does not exist"
    storage = sum(kind != "uniform" for kind in kernel.kinds)
    assert storage <= 8, "WebGPU's default limit is 8 storage buffers per stage"
    backend.device.create_shader_module(code=source)  # valid WGSL on its own


# ----- embedding

@pytest.mark.parametrize("scheme", ["none", "int8", "q4"])
def test_embedding(runner, run, rng, scheme):
    V, C, D, N, start = 50, 16, 64, 5, 3
    q_te, s_te, wte = _quantized(rng.standard_normal((V, D)).astype(np.float32), scheme)
    q_pe, s_pe, wpe = _quantized(rng.standard_normal((C, D)).astype(np.float32), scheme)
    ids = np.array([0, 49, 20, 21, 7], dtype=np.uint32)
    v0, vc = 20, 30  # a chunk holding rows 20..49: tokens 0 and 7 belong to another chunk
    out = run(runner.run(K.EMBEDDING, K.embedding_launch(N, D),
                         {"D": D, "SCHEME": K.SCHEME_CODES[scheme], "V0": v0, "VC": vc},
                         {"ids": ids, "wte": q_te[v0:v0 + vc], "wte_scale": None if s_te is None else s_te[v0:v0 + vc],
                          "wpe": q_pe, "wpe_scale": s_pe},
                         {"tok_emb": (N, D), "pos_emb": (N, D), "emb": (N, D)}, params=(N, start + N, start)))
    mine = (ids >= v0) & (ids < v0 + vc)
    tok, pos = wte[ids], wpe[start:start + N]
    # Same float32 products and one addition as numpy: exact.
    np.testing.assert_array_equal(out["tok_emb"][mine], tok[mine])
    np.testing.assert_array_equal(out["pos_emb"][mine], pos[mine])
    np.testing.assert_array_equal(out["emb"][mine], (tok + pos)[mine])
    assert not out["emb"][~mine].any(), "a dispatch wrote tokens of another vocabulary chunk"


# ----- layer norm

@pytest.mark.parametrize("D", [96, 768])
def test_layer_norm(runner, run, rng, D):
    N = 6
    # Rows with a large mean and small spread: a one-pass E[x^2] - E[x]^2 variance would lose
    # most of its digits here; the two-pass kernel must not.
    x = (100 + 0.5 * rng.standard_normal((N, D))).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
    b = (0.1 * rng.standard_normal(D)).astype(np.float32)
    out = run(runner.run(K.LAYER_NORM, K.layer_norm_launch(N), {"D": D, "EPS": 1e-5},
                         {"x": x, "weight": w, "bias": b}, {"out": (N, D), "mean": (N,), "var_": (N,)},
                         params=(N, N, 0)))
    mean, var = reference.layer_norm_stats(x)
    # Sums of D <= 768 terms in another order: relative error ~ sqrt(D) eps ~ 2e-6 of the
    # terms; the mean (100) sets the scale of the first pass, (x - mean)^2 of the second.
    assert_close(f"layer_norm D={D} mean", out["mean"], mean, atol=0, rtol=2e-6)
    assert_close(f"layer_norm D={D} var", out["var_"], var, atol=1e-6, rtol=1e-4)
    assert_close(f"layer_norm D={D} out", out["out"], reference.layer_norm(x, w, b, 1e-5), atol=1e-4, rtol=1e-4)


# ----- matmul

MATMUL_CASES = [(1, "rowwise"), (2, "rowwise"), (3, "rowwise"), (5, "tiled"), (7, "tiled"), (33, "tiled"),
                (64, "tiled"), (65, "tiled")]


@pytest.mark.parametrize("scheme", ["none", "int8", "q4"])
@pytest.mark.parametrize("n,entry", MATMUL_CASES)
@pytest.mark.parametrize("epilogue", ["none", "gelu", "residual"])
def test_matmul(runner, run, rng, scheme, n, entry, epilogue):
    IN, OUT = 96, 100  # OUT not a multiple of the 64-wide tile or the 4-row workgroup
    q, scale, w = _quantized((0.2 * rng.standard_normal((OUT, IN))).astype(np.float32), scheme)
    x = rng.standard_normal((n, IN)).astype(np.float32)
    bias = rng.standard_normal(OUT).astype(np.float32)
    res = rng.standard_normal((n, OUT)).astype(np.float32)
    code = {"none": K.EPILOGUE_NONE, "gelu": K.EPILOGUE_GELU, "residual": K.EPILOGUE_RESIDUAL}[epilogue]
    launch = K.matmul_launch(n, OUT)
    assert launch[0] == entry
    out = run(runner.run(K.MATMUL, launch,
                         {"IN": IN, "OUT": OUT, "SCHEME": K.SCHEME_CODES[scheme], "EPILOGUE": code,
                          "STORE_PRE": code != K.EPILOGUE_NONE},
                         {"x": x, "res": res, "w": q, "scale": scale, "bias": bias},
                         {"pre": (n, OUT) if code else (0,), "out": (n, OUT)}, params=(n, n, 0)))
    pre = reference.linear(x, w, bias)
    want = {"none": pre, "gelu": reference.gelu(pre), "residual": res + pre}[epilogue]
    # Dot products of IN = 96 terms of size ~|x||w| ~ 0.2: a few eps * sqrt(96) * 0.2 ~ 1e-6.
    tol = dict(atol=1e-5, rtol=1e-5)
    label = f"matmul {entry} {scheme} N={n} {epilogue}"
    _assert_outputs(label, out, pre if code else None, want, tol)


# ----- matmul_splitk (issue 15, matmul): decode's split-K GEMV, two passes

def _splitk_variants(backend):
    """Every shader variant this adapter compiles: plain, unpack4xI8, subgroup shuffles."""
    have = backend.shader_features
    variants = [frozenset()]
    variants += [frozenset({f}) for f in ("packed4x8", "subgroups") if f in have]
    return variants


def _splitk_lanes(features, backend) -> int:
    return min(K.SPLITK_LANES, backend.subgroup_min_size) if "subgroups" in features else K.SPLITK_LANES


@pytest.mark.parametrize("scheme", ["none", "int8", "q4"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("IN", [96, 640])  # one slice; several with a shorter last one (all schemes)
@pytest.mark.parametrize("epilogue", ["none", "gelu", "residual"])
def test_matmul_splitk(runner, run, rng, backend, scheme, n, IN, epilogue):
    OUT = 100  # not a multiple of the rows per workgroup or of the reduce workgroup
    q, scale, w = _quantized((0.2 * rng.standard_normal((OUT, IN))).astype(np.float32), scheme)
    x = rng.standard_normal((n, IN)).astype(np.float32)
    bias = rng.standard_normal(OUT).astype(np.float32)
    res = rng.standard_normal((n, OUT)).astype(np.float32)
    code = {"none": K.EPILOGUE_NONE, "gelu": K.EPILOGUE_GELU, "residual": K.EPILOGUE_RESIDUAL}[epilogue]
    assert K.splitk_fits(n, IN, scheme)
    pre = reference.linear(x, w, bias)
    want = {"none": pre, "gelu": reference.gelu(pre), "residual": res + pre}[epilogue]
    for features in _splitk_variants(backend):
        out = run(runner.run(K.MATMUL_SPLITK, K.splitk_launches(IN, OUT, scheme, _splitk_lanes(features, backend)),
                             {"IN": IN, "OUT": OUT, "SCHEME": K.SCHEME_CODES[scheme], "EPILOGUE": code,
                              "STORE_PRE": code != K.EPILOGUE_NONE},
                             {"x": x, "res": res, "w": q, "scale": scale, "bias": bias},
                             {"pre": (n, OUT) if code else (0,), "out": (n, OUT),
                              "part": (K.splitk_part_bytes(IN, OUT, scheme) // 4,)},
                             params=(n, n, 0), features=features))
        # Sums of IN <= 640 terms of size ~0.2 in another order (int8: q x summed, then one
        # multiply by the row scale): a few eps * sqrt(640) * 0.2 ~ 1e-6 < the 1e-5 bound.
        tol = dict(atol=1e-5, rtol=1e-5)
        label = f"matmul_splitk {scheme} N={n} IN={IN} {epilogue} {'+'.join(sorted(features)) or 'plain'}"
        _assert_outputs(label, out, pre if code else None, want, tol)


# ----- matmul_prefill (issue 15, matmul): 64 x 64 tiles from 16-byte weight loads

@pytest.mark.parametrize("scheme", ["none", "int8", "q4"])
@pytest.mark.parametrize("n", [17, 64, 65])
@pytest.mark.parametrize("IN", [96, 160])  # K-tiles of 32: full; a partial last tile (fp32 and int8)
@pytest.mark.parametrize("epilogue", ["none", "gelu", "residual"])
def test_matmul_prefill(runner, run, rng, backend, scheme, n, IN, epilogue):
    OUT = 100  # not a multiple of the 64-wide tile
    if not K.prefill_fits(n, IN, scheme):
        pytest.skip(f"{scheme} rows of {IN} are not in 16-byte blocks")
    q, scale, w = _quantized((0.2 * rng.standard_normal((OUT, IN))).astype(np.float32), scheme)
    x = rng.standard_normal((n, IN)).astype(np.float32)
    bias = rng.standard_normal(OUT).astype(np.float32)
    res = rng.standard_normal((n, OUT)).astype(np.float32)
    code = {"none": K.EPILOGUE_NONE, "gelu": K.EPILOGUE_GELU, "residual": K.EPILOGUE_RESIDUAL}[epilogue]
    pre = reference.linear(x, w, bias)
    want = {"none": pre, "gelu": reference.gelu(pre), "residual": res + pre}[epilogue]
    for features in [frozenset()] + ([frozenset({"packed4x8"})] if "packed4x8" in backend.shader_features else []):
        out = run(runner.run(K.MATMUL_PREFILL, K.prefill_launch(n, OUT),
                             {"IN": IN, "OUT": OUT, "SCHEME": K.SCHEME_CODES[scheme], "EPILOGUE": code,
                              "STORE_PRE": code != K.EPILOGUE_NONE},
                             {"x": x, "res": res, "w": q, "scale": scale, "bias": bias},
                             {"pre": (n, OUT) if code else (0,), "out": (n, OUT)}, params=(n, n, 0), features=features))
        tol = dict(atol=1e-5, rtol=1e-5)  # as test_matmul: sums of <= 160 terms of size ~0.2
        label = f"matmul_prefill {scheme} N={n} IN={IN} {epilogue} {'+'.join(sorted(features)) or 'plain'}"
        _assert_outputs(label, out, pre if code else None, want, tol)


def test_matmul_prefill_column_and_row_blocks(runner, run, rng):
    """The logits' form for a long prompt: a vocabulary chunk into columns [OFF, OFF + OUT)
    of [N, STRIDE], tokens [ROW0, ROW0 + ROWS) only (x bound from ROW0)."""
    IN, OUT, STRIDE, OFF, n, ROW0, ROWS = 64, 70, 200, 90, 100, 20, 70
    q, scale, w = _quantized(rng.standard_normal((OUT, IN)).astype(np.float32), "int8")
    x = rng.standard_normal((n, IN)).astype(np.float32)
    out = run(runner.run(K.MATMUL_PREFILL, K.prefill_launch(ROWS, OUT),
                         {"IN": IN, "OUT": OUT, "SCHEME": 1, "HAS_BIAS": False, "OUT_STRIDE": STRIDE,
                          "OUT_OFFSET": OFF, "ROW0": ROW0, "ROWS": ROWS},
                         {"x": x[ROW0:], "res": None, "w": q, "scale": scale, "bias": None},
                         {"pre": (0,), "out": (n - ROW0, STRIDE)}, params=(n, n, 0)))
    want = np.zeros((n - ROW0, STRIDE), np.float32)
    want[:ROWS, OFF:OFF + OUT] = reference.linear(x[ROW0:ROW0 + ROWS], w, None)
    assert_close("matmul_prefill blocks", out["out"], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 3])
def test_matmul_splitk_column_and_row_blocks(runner, run, rng, n):
    """The logits' form (a vocabulary chunk into columns [OFF, OFF + OUT) of [N, STRIDE]),
    and a token block (ROW0 = 1, ROWS = 2) of a 3-token run: nothing else is touched."""
    IN, OUT, STRIDE, OFF = 64, 70, 200, 90
    q, scale, w = _quantized(rng.standard_normal((OUT, IN)).astype(np.float32), "int8")
    x = rng.standard_normal((n, IN)).astype(np.float32)
    row0 = 1 if n > 1 else 0
    rows = min(n - row0, 2)
    out = run(runner.run(K.MATMUL_SPLITK, K.splitk_launches(IN, OUT, "int8"),
                         {"IN": IN, "OUT": OUT, "SCHEME": 1, "HAS_BIAS": False, "OUT_STRIDE": STRIDE,
                          "OUT_OFFSET": OFF, "ROW0": row0, "ROWS": 2},
                         {"x": x[row0:], "res": None, "w": q, "scale": scale, "bias": None},
                         {"pre": (0,), "out": (n - row0, STRIDE), "part": (K.splitk_part_bytes(IN, OUT, "int8") // 4,)},
                         params=(n, n, 0)))
    want = np.zeros((n - row0, STRIDE), np.float32)
    want[:rows, OFF:OFF + OUT] = reference.linear(x[row0:row0 + rows], w, None)
    assert_close(f"matmul_splitk blocks N={n}", out["out"], want, atol=1e-5, rtol=1e-5)


# ----- issue 15, engine: layer norm fused into the matmul's prologue (LN)

LN_CASES = [("splitk", n, IN) for n in (1, 2, 4) for IN in (96, 640)] + [
    ("prefill", n, IN) for n in (17, 65) for IN in (96, 160)]


@pytest.mark.parametrize("scheme", ["none", "int8", "q4"])
@pytest.mark.parametrize("kind,n,IN", LN_CASES)
@pytest.mark.parametrize("epilogue", ["none", "gelu"])
def test_matmul_layer_norm_prologue(runner, run, rng, backend, scheme, kind, n, IN, epilogue):
    """LN: x is the layer norm's input; the kernel normalizes it (weight, bias bound as res
    [2, IN]) and must equal numpy's linear(layer_norm(x)), as the two unfused dispatches do."""
    OUT = 100
    splitk = kind == "splitk"
    if not (K.splitk_fits(n, IN, scheme) if splitk else K.prefill_fits(n, IN, scheme)):
        pytest.skip(f"{scheme} rows of {IN} are not in 16-byte blocks")
    q, scale, w = _quantized((0.2 * rng.standard_normal((OUT, IN))).astype(np.float32), scheme)
    # Rows with an offset and their own spread, as the residual stream: a one-pass variance
    # would lose digits here, and a token given another token's statistics would show.
    spread = rng.uniform(0.5, 2, (n, 1))
    x = (5 + rng.standard_normal((n, 1)) + spread * rng.standard_normal((n, IN))).astype(np.float32)
    g = (1 + 0.1 * rng.standard_normal(IN)).astype(np.float32)
    b = (0.1 * rng.standard_normal(IN)).astype(np.float32)
    bias = rng.standard_normal(OUT).astype(np.float32)
    code = {"none": K.EPILOGUE_NONE, "gelu": K.EPILOGUE_GELU}[epilogue]
    pre = reference.linear(reference.layer_norm(x, g, b, 1e-5), w, bias)
    want = reference.gelu(pre) if code else pre
    constants = {"IN": IN, "OUT": OUT, "SCHEME": K.SCHEME_CODES[scheme], "EPILOGUE": code, "STORE_PRE": bool(code),
                 "LN": True, "EPS": 1e-5}
    inputs = {"x": x, "res": np.concatenate([g, b]), "w": q, "scale": scale, "bias": bias}
    outputs = {"pre": (n, OUT) if code else (0,), "out": (n, OUT)}
    variants = _splitk_variants(backend) if splitk else [frozenset()]
    for features in variants:
        if splitk:
            launch = K.splitk_launches(IN, OUT, scheme, _splitk_lanes(features, backend))
            outputs["part"] = (K.splitk_part_bytes(IN, OUT, scheme) // 4,)
        else:
            launch = K.prefill_launch(n, OUT)
        out = run(runner.run(K.MATMUL_SPLITK if splitk else K.MATMUL_PREFILL, launch, constants, inputs, outputs,
                             params=(n, n, 0), features=features))
        # layer_norm's output is O(1) with ~1e-6 relative error (test_layer_norm: sums of IN
        # terms in another order); the matmul then sums IN <= 640 of its products with
        # weights ~0.2: a few 1e-6 * sqrt(640) * 0.2 ~ 1e-5, bound 5e-5.
        tol = dict(atol=5e-5, rtol=5e-5)
        label = f"matmul_ln {kind} {scheme} N={n} IN={IN} {epilogue} {'+'.join(sorted(features)) or 'plain'}"
        _assert_outputs(label, out, pre if code else None, want, tol)


def test_shader_preprocess():
    src = "a\n// #if packed4x8\nb\n// #else\nc\n// #endif\nd\n"
    assert K.preprocess(src) == "a\nc\nd\n"
    assert K.preprocess(src, {"packed4x8"}) == "a\nb\nd\n"
    for bad in ("// #if nope\n// #endif\n", "// #if packed4x8\n", "// #else\n", "// #if subgroups\n// #if packed4x8\n"):
        with pytest.raises(ValueError):
            K.preprocess(bad)
    with pytest.raises(ValueError, match="unknown"):
        K.preprocess(src, {"fast"})
    # "// #include matmul_common" pastes the shared helpers in, with their own includes
    # (params), each file once per kernel that uses it.
    common = (K.SHADER_DIR / "matmul_common.wgsl").read_text(encoding="utf-8")
    params = (K.SHADER_DIR / "params.wgsl").read_text(encoding="utf-8")
    assert "// #include params\n" in common
    assert K.include("a\n// #include matmul_common\nb\n") == "a\n" + common.replace(
        "// #include params\n", params + "\n") + "\nb\n"
    assert K.include("// #include params\n// #include params\n") == params + "\n\n", "pasted once"
    for kernel in (K.MATMUL, K.MATMUL_SPLITK, K.MATMUL_PREFILL):
        assert kernel.source().count("fn finish(") == 1 and "\n// #include" not in kernel.source()
    # issue 15, engine: the Params uniform is declared once, in params.wgsl, for every kernel of
    # the forward; the attention kernels share attention_common.wgsl (bindings 0..3, key, value).
    for kernel in K.KERNELS:
        text = (K.SHADER_DIR / f"{kernel.name}.wgsl").read_text(encoding="utf-8")
        assert "struct Params" not in text and kernel.source().count("struct Params {") == 1
    for kernel in (K.ATTENTION, K.FLASH_ATTENTION, K.ATTENTION_DECODE):
        assert kernel.source().count("alias CacheT = f32;") == 1 and "// #include attention_common" in (
            K.SHADER_DIR / f"{kernel.name}.wgsl").read_text(encoding="utf-8")


@pytest.mark.parametrize("scheme", ["none", "int8"])
@pytest.mark.parametrize("n", [1, 5, 65])
def test_matmul_rows_not_in_16_byte_blocks(runner, run, rng, scheme, n):
    """IN = 40: not a multiple of the tiled entry's 16-input K-tile, nor of int8's 16-weight
    block, so matmul_splitk does not take int8 here and matmul.wgsl must (issue 15, matmul)."""
    IN, OUT = 40, 70
    assert K.splitk_fits(1, IN, "none") and not K.splitk_fits(1, IN, "int8")
    q, scale, w = _quantized((0.2 * rng.standard_normal((OUT, IN))).astype(np.float32), scheme)
    x = rng.standard_normal((n, IN)).astype(np.float32)
    bias = rng.standard_normal(OUT).astype(np.float32)
    out = run(runner.run(K.MATMUL, K.matmul_launch(n, OUT),
                         {"IN": IN, "OUT": OUT, "SCHEME": K.SCHEME_CODES[scheme]},
                         {"x": x, "res": None, "w": q, "scale": scale, "bias": bias},
                         {"pre": (0,), "out": (n, OUT)}, params=(n, n, 0)))
    assert_close(f"matmul IN=40 {scheme} N={n}", out["out"], reference.linear(x, w, bias), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [2, 40])
def test_matmul_column_and_row_blocks(runner, run, rng, n):
    """The logits' form: a vocabulary chunk written into columns [OFF, OFF + OUT) of a wider
    [N, STRIDE] output, for tokens [ROW0, ROW0 + ROWS) only; nothing else is touched."""
    IN, OUT, STRIDE, OFF, ROW0, ROWS = 64, 70, 200, 90, 0, 16
    q, scale, w = _quantized(rng.standard_normal((OUT, IN)).astype(np.float32), "int8")
    x = rng.standard_normal((n, IN)).astype(np.float32)
    rows = min(n, ROWS)
    out = run(runner.run(K.MATMUL, K.matmul_launch(rows, OUT),
                         {"IN": IN, "OUT": OUT, "SCHEME": 1, "HAS_BIAS": False, "OUT_STRIDE": STRIDE,
                          "OUT_OFFSET": OFF, "ROW0": ROW0, "ROWS": ROWS},
                         {"x": x, "res": None, "w": q, "scale": scale, "bias": None},
                         {"pre": (0,), "out": (n, STRIDE)}, params=(n, n, 0)))
    want = np.zeros((n, STRIDE), np.float32)
    want[:rows, OFF:OFF + OUT] = reference.linear(x[:rows], w, None)
    assert_close(f"matmul blocks N={n}", out["out"], want, atol=1e-5, rtol=1e-5)


def test_gelu_is_clamped_not_nan(runner, run):
    """Huge pre-activations: tanh's argument overflows unless clamped; GELU(u) is u or 0 there."""
    IN, OUT = 16, 8
    big = np.array([1e4, -1e4, 1e12, -1e12, 3e19, -3e19, 20.0, -20.0], np.float32)
    w = np.eye(OUT, IN, dtype=np.float32)  # out[o] = x[o]
    x = np.pad(big, (0, IN - OUT))[None, :]
    out = run(runner.run(K.MATMUL, K.matmul_launch(1, OUT),
                         {"IN": IN, "OUT": OUT, "SCHEME": 0, "HAS_BIAS": False, "EPILOGUE": K.EPILOGUE_GELU},
                         {"x": x, "res": None, "w": w, "scale": None, "bias": None},
                         {"pre": (0,), "out": (1, OUT)}, params=(1, 1, 0)))["out"][0]
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.where(big > 0, big, 0).astype(np.float32))


# ----- attention

@pytest.mark.parametrize("capture", [True, False])
@pytest.mark.parametrize("start,n", [(0, 7), (5, 3), (9, 1)])
def test_attention(runner, run, rng, capture, start, n):
    H, Kh, C = 3, 20, 16  # head size not a power of two
    D = H * Kh
    T = start + n
    qkv = rng.standard_normal((n, 3 * D)).astype(np.float32)
    k_cache = np.zeros((C, D), np.float32)
    v_cache = np.zeros((C, D), np.float32)
    k_cache[:start] = rng.standard_normal((start, D))
    v_cache[:start] = rng.standard_normal((start, D))
    stage = (H, n, T) if capture else (0,)
    out = run(runner.run(K.ATTENTION, K.attention_launch(n, H),
                         {"H": H, "K": Kh, "CTX": C, "SQRT_K": float(np.float32(math.sqrt(Kh))), "CAPTURE": capture},
                         {"qkv": qkv, "k_cache": k_cache, "v_cache": v_cache},
                         {"scores": stage, "scaled": stage, "masked": stage, "att": stage, "out": (n, D)},
                         params=(n, T, start)))
    q, k, v = (reference.split_heads(part, H) for part in np.split(qkv, 3, axis=-1))
    k_all = np.concatenate([reference.split_heads(k_cache[:start], H), k], axis=1)
    v_all = np.concatenate([reference.split_heads(v_cache[:start], H), v], axis=1)
    want = reference.attention(q, k_all, v_all)
    # Scores: K = 20 products of N(0,1) values (~4.5 in size): eps * 20 * 4.5 ~ 5e-6.
    if capture:
        assert_close(f"attention scores start={start} N={n}", out["scores"], want["scores"], atol=1e-5, rtol=1e-5)
        assert_close(f"attention scaled start={start} N={n}", out["scaled"], want["scaled"], atol=3e-6, rtol=1e-5)
        masked_cells = want["masked"] == reference.MASK_VALUE
        np.testing.assert_array_equal(out["masked"] == reference.MASK_VALUE, masked_cells)
        assert_close(f"attention masked start={start} N={n}", out["masked"][~masked_cells],
                     want["masked"][~masked_cells], atol=3e-6, rtol=1e-5)
        assert_close(f"attention att start={start} N={n}", out["att"], want["att"], atol=1e-6, rtol=1e-5)
        assert (out["att"][masked_cells] == 0).all()
    assert_close(f"attention head_out start={start} N={n} capture={capture}", out["out"],
                 reference.merge_heads(want["head_out"]), atol=1e-5, rtol=1e-5)


def test_attention_appends_to_the_cache(runner, run, rng, backend):
    """Rows start..start+N of the caches receive this run's k and v; earlier rows are kept."""
    H, Kh, C, start, n = 2, 16, 12, 4, 3
    D = H * Kh
    qkv = rng.standard_normal((n, 3 * D)).astype(np.float32)
    old = rng.standard_normal((C, D)).astype(np.float32)
    out = run(runner.run(K.ATTENTION, K.attention_launch(n, H),
                         {"H": H, "K": Kh, "CTX": C, "SQRT_K": 4.0, "CAPTURE": False},
                         {"qkv": qkv, "k_cache": old, "v_cache": old},
                         {"scores": (0,), "scaled": (0,), "masked": (0,), "att": (0,), "out": (n, D)},
                         params=(n, start + n, start), readback=("k_cache", "v_cache")))
    for name, part in (("k_cache", 1), ("v_cache", 2)):
        got = out[name].reshape(-1, D)[:C]
        np.testing.assert_array_equal(got[:start], old[:start])
        np.testing.assert_array_equal(got[start:start + n], qkv[:, part * D:(part + 1) * D])
        np.testing.assert_array_equal(got[start + n:], old[start + n:])
