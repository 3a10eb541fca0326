"""GPT-2's forward pass in numpy: the reference every GPU kernel, test and view answers to.

One pure function per operation, in float32, named after the checkpoint's keys. Shapes use
the legend in ``glassbox/__init__``. Weights are in the Glassbox layout ``[out, in]``.

``forward`` runs the model and returns a :class:`~glassbox.trace.Trace` holding every
intermediate tensor under the names listed in ``trace.py``.

Experiments (``experiments.py``: ablation, patching) change the forward pass through an
optional ``edit(name, value) -> value``, called at the points in ``EDIT_POINTS`` with the
tensor about to flow on; what it returns flows on instead (and is what the Trace keeps).
Without an edit (the default) nothing extra runs.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from .config import GPTConfig
from .trace import Trace, layer_name

# Score written into masked (future) cells before the softmax. A finite large negative
# number rather than -inf: it survives JSON and WGSL, and exp(MASK_VALUE - max) is exactly 0
# in float32 for any real score.
MASK_VALUE = np.float32(-1e30)

Params = Mapping[str, np.ndarray]
Edit = Callable[[str, np.ndarray], np.ndarray]

# Where an edit may change the forward pass: the residual stream after the embedding and
# after each block, and each layer's per-head attention output before c_proj.
EDIT_POINTS = ("emb", "h.{layer}.head_out", "h.{layer}.res_2")


def gelu(x: np.ndarray) -> np.ndarray:
    """GPT-2's GELU (tanh approximation). [...] -> [...]"""
    c = np.float32(math.sqrt(2.0 / math.pi))
    return (0.5 * x * (1.0 + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the row max. [..., T] -> [..., T]

    exp of a masked cell underflows to exactly 0 by design, so underflow is not an error here.
    """
    with np.errstate(under="ignore"):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def layer_norm_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased, two-pass) variance of each row. [N, D] -> [N], [N]"""
    mean = x.mean(axis=-1)
    var = ((x - mean[..., None]) ** 2).mean(axis=-1)
    return mean.astype(np.float32), var.astype(np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """Token-wise layer norm. [N, D], [D], [D] -> [N, D]"""
    mean, var = layer_norm_stats(x)
    xhat = (x - mean[:, None]) / np.sqrt(var[:, None] + np.float32(eps))
    return (xhat * weight + bias).astype(np.float32)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """y = x W^T + b. [N, in], [out, in], [out] -> [N, out]

    ``weight`` is a float32 array, or a ``qlinear.QuantizedMatrix`` (stored int8/q4 weights,
    ``Checkpoint.linear_params``) that computes x W^T itself without a float32 copy.
    """
    y = weight.linear(x) if hasattr(weight, "linear") else x @ weight.T
    if bias is not None:
        y = y + bias
    return y.astype(np.float32)


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """[N, D] -> [H, N, K]"""
    n, d = x.shape
    return x.reshape(n, n_head, d // n_head).transpose(1, 0, 2)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """[H, N, K] -> [N, D]"""
    h, n, k = x.shape
    return x.transpose(1, 0, 2).reshape(n, h * k)


def causal_mask(n_query: int, n_key: int) -> np.ndarray:
    """True where query i (at absolute position n_key - n_query + i) may see key t. [N, T]"""
    past = n_key - n_query
    return np.arange(n_key)[None, :] <= (past + np.arange(n_query))[:, None]


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """Causal scaled dot-product attention for all heads, every stage kept.

    q [H, N, K], k [H, T, K], v [H, T, K] ->
    scores, scaled, masked, att [H, N, T]; head_out [H, N, K]
    """
    scores = (q @ k.transpose(0, 2, 1)).astype(np.float32)
    scaled = (scores / np.float32(math.sqrt(q.shape[-1]))).astype(np.float32)
    masked = np.where(causal_mask(q.shape[1], k.shape[1])[None], scaled, MASK_VALUE).astype(np.float32)
    att = softmax(masked)
    head_out = (att @ v).astype(np.float32)
    return {"scores": scores, "scaled": scaled, "masked": masked, "att": att, "head_out": head_out}


class KVCache:
    """Keys and values of every layer for the tokens run so far: k[l], v[l] are [H, T, K]."""

    def __init__(self, config: GPTConfig):
        self.config = config
        self.k: list[np.ndarray | None] = [None] * config.n_layer
        self.v: list[np.ndarray | None] = [None] * config.n_layer

    @property
    def length(self) -> int:
        """T, the number of positions already cached."""
        return 0 if self.k[0] is None else int(self.k[0].shape[1])

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add this run's k, v [H, N, K] to layer's cache; return the full [H, T, K] pair."""
        if self.k[layer] is not None:
            k = np.concatenate([self.k[layer], k], axis=1)
            v = np.concatenate([self.v[layer], v], axis=1)
        self.k[layer], self.v[layer] = k, v
        return k, v


def block(x: np.ndarray, p: Params, layer: int, config: GPTConfig,
          cache: KVCache | None, keep: Callable[[str, np.ndarray], None], edit: Edit | None = None) -> np.ndarray:
    """One transformer block (pre-norm). [N, D] -> [N, D]

    ``edit`` (optional) may replace ``h.{layer}.head_out`` [H, N, K] and ``h.{layer}.res_2``."""
    w = lambda name: p[f"h.{layer}.{name}"]  # noqa: E731  (short local accessor)
    t = lambda name, value: keep(layer_name(layer, name), value)  # noqa: E731

    mean1, var1 = layer_norm_stats(x)
    ln1 = layer_norm(x, w("ln_1.weight"), w("ln_1.bias"), config.layer_norm_epsilon)
    t("ln_1.mean", mean1), t("ln_1.var", var1), t("ln_1", ln1)

    qkv = linear(ln1, w("attn.c_attn.weight"), w("attn.c_attn.bias"))  # [N, 3D]
    q, k, v = (split_heads(part, config.n_head) for part in np.split(qkv, 3, axis=-1))
    t("q", q), t("k", k), t("v", v)
    if cache is not None:
        k, v = cache.append(layer, k, v)
    stages = attention(q, k, v)
    if edit is not None:
        stages["head_out"] = edit(layer_name(layer, "head_out"), stages["head_out"])
    for name, value in stages.items():
        t(name, value)
    concat = merge_heads(stages["head_out"])
    proj = linear(concat, w("attn.c_proj.weight"), w("attn.c_proj.bias"))
    res1 = (x + proj).astype(np.float32)
    t("attn_concat", concat), t("attn_proj", proj), t("res_1", res1)

    mean2, var2 = layer_norm_stats(res1)
    ln2 = layer_norm(res1, w("ln_2.weight"), w("ln_2.bias"), config.layer_norm_epsilon)
    t("ln_2.mean", mean2), t("ln_2.var", var2), t("ln_2", ln2)
    fc = linear(ln2, w("mlp.c_fc.weight"), w("mlp.c_fc.bias"))
    act = gelu(fc)
    mproj = linear(act, w("mlp.c_proj.weight"), w("mlp.c_proj.bias"))
    res2 = (res1 + mproj).astype(np.float32)
    if edit is not None:
        res2 = edit(layer_name(layer, "res_2"), res2)
    t("mlp_fc", fc), t("mlp_gelu", act), t("mlp_proj", mproj), t("res_2", res2)
    return res2


def check_ids(config: GPTConfig, ids, start: int = 0) -> np.ndarray:
    """Token ids [N] as int64, or a ValueError saying what is wrong with them."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("forward needs a non-empty 1-D sequence of token ids")
    if start + ids.size > config.n_positions:
        raise ValueError(f"{start + ids.size} positions exceed the context length {config.n_positions}")
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        raise ValueError(f"token ids must lie in [0, {config.vocab_size})")
    return ids


def embed(params: Params, ids: np.ndarray, start: int, keep: Callable[[str, np.ndarray], None],
          edit: Edit | None = None) -> np.ndarray:
    """Token plus position embedding. ids [N] -> [N, D]; ``edit`` may replace ``emb``."""
    tok = params["wte.weight"][ids].astype(np.float32)
    pos = params["wpe.weight"][start:start + ids.size].astype(np.float32)
    x = (tok + pos).astype(np.float32)
    if edit is not None:
        x = edit("emb", x)
    keep("tok_emb", tok), keep("pos_emb", pos), keep("emb", x)
    return x


def final_norm(params: Params, config: GPTConfig, x: np.ndarray, keep: Callable[[str, np.ndarray], None]) -> np.ndarray:
    """The final layer norm. [N, D] -> [N, D]"""
    meanf, varf = layer_norm_stats(x)
    lnf = layer_norm(x, params["ln_f.weight"], params["ln_f.bias"], config.layer_norm_epsilon)
    keep("ln_f.mean", meanf), keep("ln_f.var", varf), keep("ln_f", lnf)
    return lnf


def unembed(params: Params, lnf: np.ndarray) -> np.ndarray:
    """Logits against the tied token embedding. [N, D] -> [N, V]"""
    return linear(lnf, params["wte.weight"], None)


def forward(params: Params, config: GPTConfig, ids, cache: KVCache | None = None,
            capture: Callable[[str], bool] | None = None, edit: Edit | None = None) -> Trace:
    """Run GPT-2 on token ids [N] and return the Trace.

    With a ``cache`` the ids continue the cached sequence (positions start at cache.length)
    and the cache is extended. ``capture(name)`` decides which tensors the Trace keeps
    (default: all); the logits are always kept. ``edit`` changes the run (``EDIT_POINTS``).
    """
    start = cache.length if cache is not None else 0
    ids = check_ids(config, ids, start)
    trace = Trace(config=config, ids=ids, start=start)

    def keep(name: str, value: np.ndarray) -> None:
        if capture is None or capture(name):
            trace[name] = value

    x = embed(params, ids, start, keep, edit)
    for layer in range(config.n_layer):
        x = block(x, params, layer, config, cache, keep, edit)
    trace["logits"] = unembed(params, final_norm(params, config, x, keep))
    return trace


def top_k(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest values of one row [V] and their ids, largest first, the lower id first
    on ties (np.argmax's order: ids[0] == np.argmax(row)). [V] -> [k], [k]"""
    order = np.lexsort((np.arange(row.size), -row))[:k]
    return row[order], order
