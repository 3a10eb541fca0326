"""Sampling from the GPU's top-k (issue 15): the same token glassbox.sampling draws from the
whole row of logits, from the k largest logits that top_k.wgsl reads back.

Which settings this reproduces exactly (same token, same draws from the generator):

* greedy (temperature < sampling.GREEDY_BELOW), whatever top-k and top-p: the arg-max is the
  top's first id (top_k.wgsl orders ties by the lower id, as np.argmax does);
* temperature >= GREEDY_BELOW with 1 <= top-k < k (the ids read back), any top-p: as long as
  the top-k-th largest scaled logit is strictly above the smallest read one (else a tie at
  the threshold may reach past what was read, and :func:`sample_from_top` answers None).

Anything else — top-k off (0) or >= k at a temperature, or non-finite logits — needs the
whole row: the caller reads it (``engine.read_kept("logits")``, nothing recomputed) and
samples with glassbox.sampling itself.

Why it is exact: sampling.distribution keeps the tokens whose scaled logit (logits / T in
float32, monotone in the logit) reaches the top-k-th largest one; when that threshold is
above every unread logit's scaled value, the kept set, the masked row (-inf elsewhere), and
so top-p, the probabilities and rng.choice's draw are the same arrays as on the full row.
:func:`sample_from_top` builds a row [V] with the read logits in place and every other id
set just below the smallest read one, and hands it to glassbox.sampling unchanged.
"""

from __future__ import annotations

import numpy as np

from ..sampling import GREEDY_BELOW, check_options, distribution, sample
from .engine import TOP_K, GPUCache, Top


def exact_on_top(temperature: float, top_k: int, top_p: float, k: int = TOP_K) -> bool:
    """Whether these settings can be sampled from the k largest logits (see the module
    docstring; a tie at the threshold can still send one step to the full row)."""
    check_options(temperature, top_k, top_p)
    return temperature < GREEDY_BELOW or 1 <= top_k < k


def sample_from_top(top: Top, temperature: float, top_k: int, top_p: float,
                    rng: np.random.Generator) -> int | None:
    """The token glassbox.sampling.sample(distribution(row, ...), rng) draws on the full row,
    or None (and no draw from ``rng``) when the top cannot decide it: settings outside
    :func:`exact_on_top`, a tie at the threshold, or non-finite logits."""
    if not exact_on_top(temperature, top_k, top_p, top.values.size) and top.values.size < top.vocab_size:
        return None
    if top.nonfinite or top.values.size == 0:
        return None
    values = top.values.astype(np.float32)
    if top.values.size < top.vocab_size:
        if temperature >= GREEDY_BELOW:
            scaled = (values / np.float32(temperature)).astype(np.float32)
            if not scaled[top_k - 1] > scaled[-1]:
                return None
        below = np.nextafter(values[-1], np.float32(-np.inf), dtype=np.float32)
        if not np.isfinite(below):
            return None
        row = np.full(top.vocab_size, below, dtype=np.float32)
    else:
        row = np.empty(top.vocab_size, dtype=np.float32)
    row[top.ids] = values
    return sample(distribution(row, temperature, top_k, top_p), rng)


async def generate(engine, ids, n: int, temperature: float, top_k: int, top_p: float,
                   rng: np.random.Generator, k: int = TOP_K) -> list[int]:
    """Continue ``ids`` by up to ``n`` tokens with the KV cache, sampling as
    glassbox.model.Model.generate_ids does (same tokens for the same generator), reading back
    only the top k logits per step where that is exact, else the last row of logits."""
    check_options(temperature, top_k, top_p)
    cache: GPUCache = engine.new_cache()
    out: list[int] = []
    step = ids
    for _ in range(n):
        top, _ = await engine.forward_top(step, cache=cache, k=k)
        token = sample_from_top(top, temperature, top_k, top_p, rng)
        if token is None:
            logits = (await engine.read_kept("logits")).logits[-1]
            token = sample(distribution(logits, temperature, top_k, top_p), rng)
        out.append(int(token))
        if cache.length >= engine.config.n_positions or len(out) == n:
            break
        step = [int(token)]
    return out
