"""Quantized weights that the numpy reference multiplies without a float32 copy of the model.

A :class:`QuantizedMatrix` stands in for a float32 ``[out, in]`` matrix in the parameters
``reference.forward`` takes (``Checkpoint.linear_params``): ``reference.linear`` calls its
``linear(x)``, the embedding reads rows through ``m[ids]``, and ``np.asarray(m)`` gives the
whole float32 matrix (the weight views). It keeps the stored int8 or q4 bytes, so the
browser's numpy fallback holds 1 byte (int8) or about half a byte (q4) per weight, not 4.

``linear(x)`` computes ``x @ dequantize(q, scale).T`` [N, in] -> [N, out] in one of two ways:

* with a ``kernel`` (int8 only, ``in`` a multiple of 16): the WebAssembly SIMD matmul of
  ``wasm/linear_i8.c``, called on the arrays' own memory (``LinearKernel``); the row scale is
  applied once after each dot product.
* otherwise: ``BLOCK_ROWS`` output rows at a time, each block dequantized exactly as
  ``quant.dequantize`` does and multiplied with ``np.einsum("ni,oi->no")`` (in Pyodide's numpy,
  which has no BLAS, that is about twice as fast as ``@``; a block also keeps the
  temporaries small: 32-bit wasm caps einsum's iterator, so the 64-token LM head in one
  piece fails).

Both differ from ``reference.linear`` on the float32 matrix only in summation order (a few
float32 ulps of each dot product; tests/test_qlinear.py states the tolerance).
"""

from __future__ import annotations

import ctypes

import numpy as np

from . import quant

BLOCK_ROWS = 256  # output rows per dequantized block (768 inputs: 0.75 MiB of float32)
SCRATCH_FLOATS = 1 << 15  # the kernel's work space: a block of rows in float32 (128 KiB)


class LinearKernel:
    """``glassbox_linear_i8`` of a loaded ``wasm/linear_i8`` build, called through ctypes.

    In Pyodide the library is an Emscripten side module that ``ctypes.CDLL`` links into the
    interpreter's own WebAssembly memory, so ``arr.ctypes.data`` is the address the kernel
    reads: no copies. (Natively a C build of the same source works the same way.)
    """

    def __init__(self, path: str):
        self.path = path
        self._fn = ctypes.CDLL(path).glassbox_linear_i8
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 3 + [ctypes.c_void_p, ctypes.c_int]
        self._scratch = np.empty(SCRATCH_FLOATS, dtype=np.float32)

    def usable(self, q: np.ndarray) -> bool:
        return q.dtype == np.int8 and q.ndim == 2 and q.shape[1] % 16 == 0 and q.shape[1] <= SCRATCH_FLOATS

    def linear_i8(self, x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """x float32 [N, in], q int8 [out, in], scale float32 [out] -> float32 [N, out]."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, out = x.shape[0], q.shape[0]
        y = np.empty((n, out), dtype=np.float32)
        if n == 0:
            return y
        rc = self._fn(y.ctypes.data, x.ctypes.data, q.ctypes.data, scale.ctypes.data, n, q.shape[1], out,
                      self._scratch.ctypes.data, self._scratch.size)
        if rc != 0:
            raise ValueError(f"linear_i8 refused shapes x {x.shape}, q {q.shape} (code {rc})")
        return y


class QuantizedMatrix:
    """A stored matrix [out, in] (int8 or q4, see quant.py) used as the float32 matrix it encodes."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, q: np.ndarray, scale: np.ndarray, scheme: str, kernel: LinearKernel | None = None):
        if scheme not in ("int8", "q4"):
            raise ValueError(f"QuantizedMatrix holds int8 or q4 weights, not {scheme!r}")
        self.q = np.ascontiguousarray(q)
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.scheme = scheme
        n_in = self.q.shape[1] * (2 if scheme == "q4" else 1)
        self.shape = (int(self.q.shape[0]), int(n_in))
        self.kernel = kernel if kernel is not None and scheme == "int8" and kernel.usable(self.q) else None

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes

    def rows(self, index) -> np.ndarray:
        """float32 rows (an int array or a slice of the first axis), as dequantize would give."""
        return quant.dequantize(self.q[index], self.scale[index], self.scheme)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, tuple):
            return self.rows(index[0])[(slice(None),) + index[1:]]
        if isinstance(index, (int, np.integer)):
            return self.rows([index])[0]
        return self.rows(index)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        full = self.rows(slice(None))
        return full if dtype is None else full.astype(dtype)

    def linear(self, x: np.ndarray) -> np.ndarray:
        """x @ W.T for the float32 W this encodes. [N, in] -> [N, out]"""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.shape[1]:
            raise ValueError(f"linear: x of shape {x.shape} does not fit a weight of shape {self.shape}")
        if self.kernel is not None:
            return self.kernel.linear_i8(x, self.q, self.scale)
        out = np.empty((x.shape[0], self.shape[0]), dtype=np.float32)
        for first in range(0, self.shape[0], BLOCK_ROWS):
            block = self.rows(slice(first, first + BLOCK_ROWS))
            out[:, first:first + block.shape[0]] = np.einsum("ni,oi->no", x, block)
        return out
