"""Transformer factors: the residual stream as a sparse, non-negative mix of dictionary atoms.

After Yun, Chen, Olshausen and LeCun (2021), "Transformer visualization via dictionary
learning": one dictionary Φ [D, F] (F factors, unit-norm columns) is shared by every residual
stream of the model, and a hidden vector x [D] is explained by its sparse code a [F], a >= 0,

    a = argmin_{a >= 0}  ½‖x − Φa‖² + λ‖a‖₁

found here by FISTA (Beck and Teboulle 2009) with the constant step 1/L, L the largest
eigenvalue of ΦᵀΦ, and the non-negative soft threshold max(0, · − λ/L) as proximal step.

Residual streams are counted 0..L: stream 0 is ``emb`` (entering block 1), stream l is
``h.{l-1}.res_2`` (leaving block l). Pure numpy (no js), so the page and the command line run
the same code. Letters as in ``glassbox/__init__``, plus F here = the number of factors (not
the MLP width) and M = vectors coded together.

The dictionary lives in the model folder as ``dictionary.safetensors`` (Φ and per-factor
data, see :class:`Dictionary`) and ``dictionary.json`` (how it was learned), both listed under
``"dictionary"`` in ``manifest.json`` with bytes and sha256, verified before use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import safetensors
from .errors import OptionsError, WeightsError
from .weights import sha256_hex, verify_bytes
from .trace import Trace, layer_name

MANIFEST_KEY = "dictionary"  # manifest.json: {"tensors": {file, bytes, sha256}, "metadata": {...}}
CONTEXT_RADIUS = 10  # top contexts: the target token with 10 tokens either side
PAD = 65535  # token id slot outside the text in a stored context (uint16)
CLASSES = ("word-level", "sentence-level", "long-range")
MAX_ITER = 1000
TOL = 1e-7


class DictionaryError(WeightsError):
    """A dictionary file that is missing, damaged or does not fit the model: the message says which."""


# ----- residual streams ------------------------------------------------------------------------

def stream_name(stream: int) -> str:
    """Trace name of residual stream ``stream``: 0 -> 'emb', l -> 'h.{l-1}.res_2'."""
    return "emb" if stream == 0 else layer_name(stream - 1, "res_2")


def n_streams(n_layer: int) -> int:
    return n_layer + 1


def residual(trace: Trace, stream: int) -> np.ndarray:
    """The residual stream [N, D] of ``trace`` at ``stream`` (0..L), with a clear error outside."""
    count = n_streams(trace.config.n_layer)
    if not 0 <= stream < count:
        raise OptionsError(f"layer {stream} does not exist: residual streams are 0 (emb) to {count - 1}")
    return np.asarray(trace[stream_name(stream)])


# ----- sparse coding ------------------------------------------------------------------------------

def lipschitz(phi: np.ndarray) -> float:
    """L = the largest eigenvalue of ΦᵀΦ (= of ΦΦᵀ [D, D], the cheaper one)."""
    phi = np.asarray(phi, dtype=np.float64)
    return float(np.linalg.eigvalsh(phi @ phi.T)[-1])


def objective(phi: np.ndarray, x: np.ndarray, a: np.ndarray, lam: float) -> np.ndarray:
    """½‖x − Φa‖² + λ‖a‖₁ per row: x [M, D] (or [D]), a [M, F] (or [F])."""
    x64, a64 = np.asarray(x, dtype=np.float64), np.asarray(a, dtype=np.float64)
    r = x64 - a64 @ np.asarray(phi, dtype=np.float64).T
    return 0.5 * np.sum(r * r, axis=-1) + lam * np.sum(np.abs(a64), axis=-1)


def fista(phi: np.ndarray, x: np.ndarray, lam: float, *, max_iter: int = MAX_ITER, tol: float = TOL,
          L: float | None = None, dtype=np.float64) -> np.ndarray:
    """Non-negative sparse codes a [M, F] of rows x [M, D] (or a [F] of x [D]).

    FISTA on ½‖x − Φa‖² + λ‖a‖₁, a >= 0: from a = 0, momentum t_{k+1} = (1 + √(1 + 4t_k²))/2,
    y = a_k + (t_k − 1)/t_{k+1} (a_k − a_{k−1}), a_{k+1} = max(0, y − (Φy − x)ᵀΦ/L − λ/L).
    A row stops when its step ‖a_{k+1} − a_k‖ <= tol·‖a_{k+1}‖ (the other rows go on), or
    after max_iter steps. The gradient is taken as (yΦᵀ − x)Φ: 2DF per row, not F².
    """
    if lam < 0:
        raise OptionsError(f"lambda must be >= 0, got {lam}")
    phi = np.asarray(phi, dtype=dtype)
    single = np.ndim(x) == 1
    X = np.atleast_2d(np.asarray(x, dtype=dtype))
    if X.shape[1] != phi.shape[0]:
        raise OptionsError(f"vectors have width {X.shape[1]}, the dictionary {phi.shape[0]}")
    L = lipschitz(phi) if L is None else L
    phiT = np.ascontiguousarray(phi.T)
    step, shrink = dtype(1.0 / L), dtype(lam / L)
    out = np.zeros((X.shape[0], phi.shape[1]), dtype=dtype)
    live = np.arange(X.shape[0])  # rows still moving
    a, y, xs, t = out.copy(), out.copy(), X, 1.0
    for _ in range(max_iter):
        a_next = np.maximum(y - step * ((y @ phiT - xs) @ phi) - shrink, 0)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        delta = a_next - a
        y = a_next + dtype((t - 1.0) / t_next) * delta
        a, t = a_next, t_next
        moved = np.sqrt(np.sum(delta * delta, axis=1))
        done = moved <= tol * np.maximum(np.sqrt(np.sum(a * a, axis=1)), 1e-30)
        if done.any():
            out[live[done]] = a[done]
            keep = ~done
            live, a, y, xs = live[keep], a[keep], y[keep], xs[keep]
            if live.size == 0:
                break
    out[live] = a
    return out[0] if single else out


# ----- the dictionary -----------------------------------------------------------------------------

@dataclass
class Dictionary:
    """A learned dictionary and what each factor means.

    Tensors (``dictionary.safetensors``):
      phi         [D, F] float32, unit-norm columns (the factors)
      scale       [S] float32: each stream's mean ‖x‖ over the corpus; a vector of stream s is
                  coded as x / scale[s], so that every stream has mean norm 1 and one λ
                  fits all (the raw streams differ: ~1 for emb, ~20 after block 1 here)
      importance  [S, F] float32, S = L + 1 streams: mean activation of each factor per
                  stream over the corpus, each factor's curve divided by its maximum
      contexts    [F, S, C, 2R+1] uint16: top-activating contexts per factor and stream, token
                  ids with the target at index R (PAD outside the text)
      context_act [F, S, C] float32: the factor's activation at each context's target
      klass       [F] uint8: index into CLASSES
    ``meta``: ``dictionary.json`` (lambda, corpus, seed, R² per stream...).
    """

    phi: np.ndarray
    scale: np.ndarray
    importance: np.ndarray
    contexts: np.ndarray
    context_act: np.ndarray
    klass: np.ndarray
    meta: dict = field(default_factory=dict)
    _L: float | None = field(default=None, repr=False)

    @property
    def lam(self) -> float:
        return float(self.meta["lambda"])

    @property
    def n_factors(self) -> int:
        return int(self.phi.shape[1])

    @property
    def width(self) -> int:
        return int(self.phi.shape[0])

    @property
    def L(self) -> float:
        """The largest eigenvalue of ΦᵀΦ, computed once."""
        if self._L is None:
            self._L = lipschitz(self.phi)
        return self._L

    def code(self, x: np.ndarray, max_iter: int = MAX_ITER, tol: float = TOL) -> np.ndarray:
        """FISTA codes (float64) of x [D] or [M, D] under this dictionary's λ."""
        return fista(self.phi, x, self.lam, max_iter=max_iter, tol=tol, L=self.L)

    def class_name(self, factor: int) -> str:
        return CLASSES[int(self.klass[factor])]


def classify(importance: np.ndarray) -> np.ndarray:
    """Class index per factor from where its importance curve [S, F] peaks (S = L + 1 streams):
    peak stream p, position p/(S−1) in the network: <= 1/3 word-level, <= 2/3 sentence-level,
    else long-range (the paper's low / middle / high layers)."""
    S = importance.shape[0]
    where = np.argmax(importance, axis=0) / max(S - 1, 1)
    return np.where(where <= 1 / 3, 0, np.where(where <= 2 / 3, 1, 2)).astype(np.uint8)


def _verify(name: str, entry: dict, data: bytes) -> None:
    verify_bytes(f"dictionary file {name}", entry, data, DictionaryError, size_optional=True)


def entries(manifest: dict) -> list[dict]:
    """The manifest's dictionary files [tensors, metadata], or [] when the model has none."""
    d = manifest.get(MANIFEST_KEY)
    if not d:
        return []
    try:
        return [d["tensors"], d["metadata"]]
    except (KeyError, TypeError):
        raise DictionaryError("manifest.json's 'dictionary' entry needs 'tensors' and 'metadata' "
                              "(each with file, bytes, sha256)") from None


def from_bytes(manifest: dict, tensor_bytes: bytes, meta_bytes: bytes, verified: bool = False) -> Dictionary:
    """Check both files against the manifest (unless ``verified``) and against the model's width."""
    tensors_entry, meta_entry = entries(manifest) or (None, None)
    if tensors_entry is None:
        raise DictionaryError("this model has no dictionary (manifest.json lists none)")
    if not verified:
        _verify(tensors_entry["file"], tensors_entry, tensor_bytes)
        _verify(meta_entry["file"], meta_entry, meta_bytes)
    try:
        t = safetensors.load(tensor_bytes)
        meta = json.loads(meta_bytes)
    except ValueError as e:
        raise DictionaryError(f"dictionary file is unreadable: {e}") from None
    want = {"phi", "scale", "importance", "contexts", "context_act", "klass"}
    if not want <= set(t):
        raise DictionaryError(f"{tensors_entry['file']} lacks {sorted(want - set(t))}")
    D = int(manifest["config"]["n_embd"])
    S = int(manifest["config"]["n_layer"]) + 1
    phi = t["phi"]
    F = phi.shape[1] if phi.ndim == 2 else -1
    if phi.shape != (D, F) or t["scale"].shape != (S,) or t["importance"].shape != (S, F) or t["contexts"].shape[:2] != (F, S):
        raise DictionaryError(f"{tensors_entry['file']} does not fit this model (D={D}, {S} streams): "
                              f"phi {phi.shape}, importance {t['importance'].shape}")
    if "lambda" not in meta:
        raise DictionaryError(f"{meta_entry['file']} does not say lambda")
    return Dictionary(phi=phi, scale=t["scale"], importance=t["importance"], contexts=t["contexts"],
                      context_act=t["context_act"], klass=t["klass"], meta=meta)


def load_dictionary(folder: str, manifest: dict) -> Dictionary:
    """Read and verify the dictionary files of model folder ``folder``."""
    found = entries(manifest)
    if not found:
        raise DictionaryError(f"{folder} has no dictionary (its manifest.json lists none); learn one "
                              "with tools/learn_dictionary.py")
    data = []
    for entry in found:
        path = os.path.join(folder, entry["file"])
        if not os.path.exists(path):
            raise DictionaryError(f"dictionary file {path} is missing (expected sha256 {entry['sha256']})")
        with open(path, "rb") as f:
            data.append(f.read())
    return from_bytes(manifest, *data)


def manifest_entry(file: str, data: bytes) -> dict:
    return {"file": file, "bytes": len(data), "sha256": sha256_hex(data)}


def to_bytes(d: Dictionary) -> tuple[bytes, bytes]:
    """(dictionary.safetensors, dictionary.json) contents."""
    tensors = {"phi": d.phi.astype(np.float32), "scale": d.scale.astype(np.float32), "importance": d.importance.astype(np.float32),
               "contexts": d.contexts.astype(np.uint16), "context_act": d.context_act.astype(np.float32),
               "klass": d.klass.astype(np.uint8)}
    return safetensors.save(tensors, {"format": "glassbox-dictionary"}), (json.dumps(d.meta, indent=1) + "\n").encode()


# ----- what a code says ---------------------------------------------------------------------------

@dataclass
class Coding:
    """One vector's code: the nonzero coefficients, largest first, and how well they rebuild it."""

    stream: int
    position: int
    lam: float
    code: np.ndarray  # [F] float64
    objective: float
    residual_norm: float
    norm: float

    def nonzero(self) -> list[tuple[int, float]]:
        order = np.argsort(-self.code, kind="stable")
        return [(int(f), float(self.code[f])) for f in order if self.code[f] > 0]

    @property
    def relative_error(self) -> float:
        return self.residual_norm / self.norm if self.norm else 0.0

    def to_json(self) -> dict:
        return {"layer": self.stream, "position": self.position, "lambda": self.lam, "objective": self.objective,
                "residual_norm": self.residual_norm, "norm": self.norm,
                "codes": [{"factor": f, "weight": w} for f, w in self.nonzero()]}


def code_vector(d: Dictionary, x: np.ndarray, stream: int = 0, position: int = 0) -> Coding:
    x = np.asarray(x, dtype=np.float64)
    a = d.code(x)
    r = x - d.phi.astype(np.float64) @ a
    return Coding(stream, position, d.lam, a, float(objective(d.phi, x, a, d.lam)), float(np.linalg.norm(r)),
                  float(np.linalg.norm(x)))


def code_position(d: Dictionary, trace: Trace, stream: int, position: int) -> Coding:
    """The code of residual stream ``stream`` at 0-based ``position`` of ``trace``."""
    x = residual(trace, stream)
    n = x.shape[0]
    if not 0 <= position < n:
        raise OptionsError(f"position {position} does not exist: the text has {n} tokens (positions 0 to {n - 1})")
    if x.shape[1] != d.width:
        raise DictionaryError(f"the dictionary has width {d.width}, the model {x.shape[1]}")
    return code_vector(d, scaled(d, x[position], stream), stream, position)


def scaled(d: Dictionary, x: np.ndarray, stream: int) -> np.ndarray:
    """x [.., D] of stream ``stream`` divided by that stream's scale: what the codes explain."""
    return np.asarray(x, dtype=np.float64) / float(d.scale[stream])


def occluded(ids: np.ndarray, position: int) -> list[np.ndarray]:
    """The texts occlusion runs: ids[:position+1] without token i, for i = 0..position (the
    one-token text without its only token is empty: None)."""
    ids = np.asarray(ids, dtype=np.int64)[:position + 1]
    return [np.delete(ids, i) if ids.size > 1 else None for i in range(ids.size)]


def occlusion_values(d: Dictionary, stream: int, base: float, last_rows: list, factor: int) -> np.ndarray:
    """base − the factor's activation at the last row of each occluded run (``last_rows[i]``:
    the raw residual vector [D] of stream ``stream``, or None for an empty text: then the
    whole activation counts). [position + 1]"""
    out = np.full(len(last_rows), float(base))
    present = [i for i, r in enumerate(last_rows) if r is not None]
    if present:
        codes = d.code(np.stack([scaled(d, last_rows[i], stream) for i in present]))
        out[present] = base - codes[:, factor]
    return out


def occlusion(d: Dictionary, forward: Callable[[np.ndarray], Trace], ids: np.ndarray, stream: int, position: int,
              factor: int) -> np.ndarray:
    """How much each input token i <= position contributes to ``factor`` at ``position``:
    activation with the full text minus activation with token i removed (the text re-run
    without it, so later tokens shift one place left). [position + 1]; later tokens cannot
    contribute (the model is causal) and are not run. ``forward(ids) -> Trace``."""
    ids = np.asarray(ids, dtype=np.int64)[:position + 1]
    base = code_position(d, forward(ids), stream, position).code[factor]
    rows = [None if kept is None else residual(forward(kept), stream)[-1] for kept in occluded(ids, position)]
    return occlusion_values(d, stream, base, rows, factor)


def contexts_of(d: Dictionary, factor: int, stream: int) -> list[tuple[list[int], int, list[int], float]]:
    """The stored top contexts of ``factor`` at ``stream``, strongest first, as
    (ids before the target, target id, ids after, activation); empty slots left out."""
    out = []
    R = d.contexts.shape[-1] // 2
    for ctx, act in zip(d.contexts[factor, stream], d.context_act[factor, stream]):
        if not act > 0:
            continue
        ids = [int(t) for t in ctx]
        out.append(([t for t in ids[:R] if t != PAD], ids[R], [t for t in ids[R + 1:] if t != PAD], float(act)))
    return out
