"""How far a quantized model strays from its reference: top-1 agreement, KL divergence and
perplexity over real text, run window by window with the numpy reference."""

from __future__ import annotations

import numpy as np

from . import reference
from .config import GPTConfig
from .trace import capture_logits


def log_softmax(x: np.ndarray) -> np.ndarray:
    """[..., V] -> [..., V], in float64 for stable sums."""
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    with np.errstate(under="ignore"):
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def logits_over(params, config: GPTConfig, ids: np.ndarray, window: int) -> np.ndarray:
    """Next-token logits at every position of ``ids``, in non-overlapping windows. [N, V]"""
    chunks = [reference.forward(params, config, ids[i:i + window], capture=capture_logits).logits
              for i in range(0, ids.size, window)]
    return np.concatenate(chunks)


def compare(ref_params, test_params, config: GPTConfig, ids, window: int | None = None) -> dict:
    """Agreement of ``test_params`` with ``ref_params`` on token ids [N].

    top1: share of positions whose arg-max next token is the same; kl_mean / kl_max:
    KL(ref || test) in nats per position; ppl_ref / ppl_test: perplexity on the ids.
    """
    ids = np.asarray(ids, dtype=np.int64)
    window = window or config.n_positions
    a = log_softmax(logits_over(ref_params, config, ids, window))
    b = log_softmax(logits_over(test_params, config, ids, window))
    kl = (np.exp(a) * (a - b)).sum(axis=-1)
    # Perplexity: position j predicts id j+1 (the first token of each window restarts
    # the context, so windowed perplexity is a little higher than a sliding window's).
    rows, targets = np.arange(ids.size - 1), ids[1:]
    nll_a = -a[rows, targets]
    nll_b = -b[rows, targets]
    return {
        "positions": int(ids.size),
        "top1": float((a.argmax(-1) == b.argmax(-1)).mean()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "ppl_ref": float(np.exp(nll_a.mean())),
        "ppl_test": float(np.exp(nll_b.mean())),
    }
