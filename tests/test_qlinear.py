"""Stored int8/q4 weights used as float32 matrices (glassbox.qlinear), natively and in Pyodide
with the WebAssembly SIMD kernel (wasm/linear_i8.so, built by `make kernels`).

Tolerance: QuantizedMatrix.linear and the kernel compute the same products as
reference.linear on the dequantized float32 matrix, summed in another order (einsum over
blocks; the kernel in four interleaved partial sums with the row scale applied after the
sum). For float32 dot products of length <= 3072 that is a few ulps of the sum: we allow
atol 1e-5 + rtol 1e-4 of the reference (as tests/test_pyodide.py), while a wrong layout, a
missing scale or a dropped block gives errors of 1e-2 or more.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from glassbox import quant, reference, weights
from glassbox.config import GPTConfig
from glassbox.qlinear import BLOCK_ROWS, QuantizedMatrix

from test_pyodide import ROOT, run_pyodide

ATOL, RTOL = 1e-5, 1e-4
CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=300)
KERNEL = ROOT / "wasm" / "linear_i8.so"


def close(got, want) -> None:
    err = np.abs(np.asarray(got, np.float64) - want)
    assert (err <= ATOL + RTOL * np.abs(want)).all(), f"max error {err.max():.3g}"


@pytest.mark.parametrize("scheme", ["int8", "q4"])
def test_quantized_matrix_is_the_dequantized_matrix(scheme, rng):
    # More rows than one block, and a last block that is not full.
    w = rng.standard_normal((BLOCK_ROWS + 37, 64)).astype(np.float32)
    q, scale = quant.quantize(w, scheme)
    m = QuantizedMatrix(q, scale, scheme)
    full = quant.dequantize(q, scale, scheme)
    assert m.shape == full.shape and m.nbytes == q.nbytes + scale.nbytes
    assert np.array_equal(np.asarray(m), full)
    ids = np.array([0, 5, BLOCK_ROWS + 36, 5])
    assert np.array_equal(m[ids], full[ids]) and np.array_equal(m[3:9], full[3:9])
    assert np.array_equal(m[7], full[7]) and np.array_equal(m[2:4, 1], full[2:4, 1])
    for n in (1, 5):
        x = rng.standard_normal((n, 64)).astype(np.float32)
        close(reference.linear(x, m, None), reference.linear(x, full, None))
    with pytest.raises(ValueError, match="does not fit"):
        m.linear(np.zeros((2, 63), np.float32))


@pytest.mark.parametrize("scheme", ["int8", "q4"])
def test_forward_on_stored_weights_matches_float32(scheme, rng):
    checkpoint = weights.random_checkpoint(CONFIG, scheme, seed=3)
    ids = rng.integers(0, CONFIG.vocab_size, size=9)
    want = reference.forward(checkpoint.dequantized(), CONFIG, ids)
    got = reference.forward(checkpoint.linear_params(), CONFIG, ids)
    assert sorted(got.names()) == sorted(want.names())
    for name in want.names():
        close(got[name], want[name])


KERNEL_IN_PYODIDE = """
import json, sys
import numpy as np
from glassbox import quant, reference, weights
from glassbox.config import GPTConfig
from glassbox.qlinear import LinearKernel, QuantizedMatrix

kernel = LinearKernel("/wasm/linear_i8.so")
rng = np.random.default_rng(0)
products = {}
# Blocked path (n >= 4, with n % 4 leftovers, an odd row count, blocks of the scratch size)
# and the direct path (n < 4); in = 16 (one vector step) up to GPT-2's 3072.
for n, o, i in [(1, 7, 16), (3, 5, 48), (4, 9, 16), (9, 33, 96), (64, 101, 768), (2, 70, 3072), (5, 23, 3072)]:
    w = rng.standard_normal((o, i)).astype(np.float32)
    q, s = quant.quantize_int8(w)
    x = rng.standard_normal((n, i)).astype(np.float32)
    products[f"{n}x{o}x{i}"] = (kernel.linear_i8(x, q, s), x @ quant.dequantize_int8(q, s).T)
np.savez("/data/kernel.npz", **{k + "/got": v[0] for k, v in products.items()},
         **{k + "/want": v[1] for k, v in products.items()})
config = GPTConfig.from_dict(json.loads(sys.argv[1]))
checkpoint = weights.random_checkpoint(config, "int8", seed=3)
params = checkpoint.linear_params(kernel)
assert params["h.0.mlp.c_fc.weight"].kernel is kernel
trace = reference.forward(params, config, np.arange(9) * 7)
np.savez("/data/trace.npz", **trace.tensors)
print("ok")
"""


@pytest.mark.pyodide
def test_wasm_kernel_in_pyodide_matches_numpy(tmp_path):
    assert KERNEL.is_file(), "wasm/linear_i8.so is missing: run `make kernels` (make test does)"
    check = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tools" / "check_kernel.py"),
                            str(KERNEL)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    config = GPTConfig(n_layer=2, n_head=2, n_embd=48, n_positions=16, vocab_size=300)
    result = run_pyodide("--mount", f"{tmp_path}:/data", "--mount", f"{ROOT / 'wasm'}:/wasm", "-c",
                         KERNEL_IN_PYODIDE, json.dumps(config.to_dict()))
    assert result.returncode == 0, result.stderr
    products = np.load(tmp_path / "kernel.npz")
    for key in {k.split("/")[0] for k in products.files}:
        got, want = products[key + "/got"], products[key + "/want"]
        assert got.shape == want.shape, key
        err = np.abs(got.astype(np.float64) - want)
        assert (err <= ATOL + RTOL * np.abs(want).max()).all(), f"{key}: max error {err.max():.3g}"
    # The whole forward in Pyodide on the kernel against CPython's reference on float32 weights.
    want = reference.forward(weights.random_checkpoint(config, "int8", seed=3).dequantized(), config,
                             np.arange(9) * 7)
    got = np.load(tmp_path / "trace.npz")
    for name in want.names():
        close(got[name], want[name])
