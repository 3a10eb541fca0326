"""Weight quantization: int8 per output channel and q4 per group, both symmetric.

Matrices are ``[out, in]`` (rows are output channels; see ``glassbox/__init__``).

int8: ``q`` int8 ``[out, in]`` in [-127, 127] and ``scale`` float32 ``[out]``;
      ``W ~= q * scale[:, None]`` with ``scale = max|W[o, :]| / 127``.
q4:   groups of ``G`` consecutive inputs (G divides ``in``). ``q`` uint8 ``[out, in/2]``: byte
      ``j`` holds element ``2j`` in its low nibble and ``2j+1`` in its high nibble, each
      nibble storing ``value + 8`` with value in [-7, 7]; ``scale`` float32 ``[out, in/G]``;
      ``W[o, i] ~= (nibble - 8) * scale[o, i // G]`` with ``scale = max|group| / 7``.

Both layouts let a GPU read a row as u32 words (4 int8 or 8 nibbles per word), so ``in`` must
be a multiple of 4 (int8) or of ``G`` and 8 (q4).
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("none", "int8", "q4")
DEFAULT_GROUP = 32


def _safe_scale(absmax: np.ndarray, levels: int) -> np.ndarray:
    """absmax / levels, with all-zero rows/groups given scale 1 so that q = 0 exactly."""
    scale = (absmax / np.float32(levels)).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[out, in] float -> q int8 [out, in], scale float32 [out]."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"int8 quantization takes a 2-D matrix, got shape {w.shape}")
    scale = _safe_scale(np.abs(w).max(axis=1), 127)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q int8 [out, in], scale [out] -> float32 [out, in]."""
    return (q.astype(np.float32) * scale.astype(np.float32)[:, None]).astype(np.float32)


def quantize_q4(w: np.ndarray, group: int = DEFAULT_GROUP) -> tuple[np.ndarray, np.ndarray]:
    """[out, in] float -> packed uint8 [out, in/2], scale float32 [out, in/group]."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"q4 quantization takes a 2-D matrix, got shape {w.shape}")
    n_out, n_in = w.shape
    if group % 8 or n_in % group:
        raise ValueError(f"q4 needs in ({n_in}) divisible by the group size {group}, itself a multiple of 8")
    groups = w.reshape(n_out, n_in // group, group)
    scale = _safe_scale(np.abs(groups).max(axis=2), 7)
    q = np.clip(np.rint(groups / scale[:, :, None]), -7, 7).astype(np.int16).reshape(n_out, n_in)
    nib = (q + 8).astype(np.uint8)
    packed = (nib[:, 0::2] | (nib[:, 1::2] << 4)).astype(np.uint8)
    return packed, scale


def dequantize_q4(packed: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """packed uint8 [out, in/2], scale [out, in/G] -> float32 [out, in]."""
    n_out, half = packed.shape
    nib = np.empty((n_out, 2 * half), dtype=np.int16)
    nib[:, 0::2] = packed & 0x0F
    nib[:, 1::2] = packed >> 4
    group = 2 * half // scale.shape[1]
    values = (nib - 8).astype(np.float32).reshape(n_out, scale.shape[1], group)
    return (values * scale.astype(np.float32)[:, :, None]).reshape(n_out, 2 * half).astype(np.float32)


def quantize(w: np.ndarray, scheme: str, group: int = DEFAULT_GROUP) -> tuple[np.ndarray, np.ndarray | None]:
    """Quantize one matrix with a scheme name; 'none' returns (float32 w, None)."""
    if scheme == "none":
        return np.asarray(w, dtype=np.float32), None
    if scheme == "int8":
        return quantize_int8(w)
    if scheme == "q4":
        return quantize_q4(w, group)
    raise ValueError(f"unknown quantization scheme {scheme!r}; expected one of {SCHEMES}")


def dequantize(q: np.ndarray, scale: np.ndarray | None, scheme: str) -> np.ndarray:
    """Inverse of :func:`quantize` (up to rounding)."""
    if scheme == "none":
        return np.asarray(q, dtype=np.float32)
    if scheme == "int8":
        return dequantize_int8(q, scale)
    if scheme == "q4":
        return dequantize_q4(q, scale)
    raise ValueError(f"unknown quantization scheme {scheme!r}; expected one of {SCHEMES}")
