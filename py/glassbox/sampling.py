"""Next-token sampling: temperature, top-k and top-p over the full vocabulary.

The steps follow the order Hugging Face's generate applies them (temperature, then top-k,
then top-p) and keep every intermediate so the views can draw the walk from logits to the
sampled token:

    logits [V] --/T--> scaled [V] --top-k, top-p--> kept [V] --softmax over kept--> probs [V]

Temperatures below GREEDY_BELOW (0 included) mean greedy: probs is one-hot on the arg-max
(the first one on ties). That is the limit of softmax(logits / T) as T -> 0, computed
exactly instead of through logits / T, which overflows float32 for tiny T (NaN after the
softmax). At T >= GREEDY_BELOW, logits up to 3e35 in magnitude stay finite; the model's are
far smaller. The page and the command line both take their sampling from here, so they
agree on the threshold. Temperatures above MAX_TEMPERATURE are refused: there every
probability is within exp(2 max|logit| / T) of uniform (1% for logits up to 50), and a float32
T would overflow near 3e38. Every option is checked once, in :func:`check_options`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OptionsError
from .reference import softmax

GREEDY_BELOW = 1e-3  # temperatures below this sample greedily (see the module docstring)
MAX_TEMPERATURE = 1e4  # above it the distribution is uniform to float32 rounding: refused


@dataclass(frozen=True)
class Distribution:
    """What the model's next-token choice is drawn from; arrays are [V]."""

    logits: np.ndarray
    temperature: float
    top_k: int  # 0 = off
    top_p: float  # 1.0 = off
    scaled: np.ndarray  # logits / temperature (logits themselves when greedy)
    full_probs: np.ndarray  # softmax(scaled) before any filtering
    kept: np.ndarray  # bool: tokens that survive top-k and top-p
    probs: np.ndarray  # the distribution actually sampled from (0 outside kept)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def top(self, n: int) -> np.ndarray:
        """Ids of the n most probable tokens under ``probs``, most probable first; ties on
        ``probs`` go by ``full_probs`` (higher first), then by id (lower first).

        The order is that of a stable full sort of the vocabulary (:func:`_top_by_full_sort`)
        but costs O(V + n log n): a partition finds the n-th largest probability, every token
        above it is in, and the tokens tied with it (all the filtered-out zeros, when n is past
        the kept tokens) are cut the same way by full_probs, then by id; only the n chosen ids
        are sorted.
        """
        size = self.probs.shape[0]
        if n <= 0 or n >= size:
            return _top_by_full_sort(self.probs, self.full_probs)[:n]
        probs, full = self.probs, self.full_probs
        edge = np.partition(probs, size - n)[size - n]  # the n-th largest probability
        chosen = np.flatnonzero(probs > edge)
        tied = np.flatnonzero(probs == edge)  # ascending ids
        need = n - chosen.size
        if tied.size > need:
            tied_full = full[tied]
            cut = np.partition(tied_full, tied.size - need)[tied.size - need]
            above = tied[tied_full > cut]
            tied = np.concatenate([above, tied[tied_full == cut][:need - above.size]])
        chosen = np.concatenate([chosen, tied])
        return chosen[np.lexsort((chosen, -full[chosen], -probs[chosen]))]


def _top_by_full_sort(probs: np.ndarray, full_probs: np.ndarray) -> np.ndarray:
    """Every id ordered by probs, then full_probs (both descending), then id (the sort is
    stable): the definition :meth:`Distribution.top` answers to, at O(V log V)."""
    return np.lexsort((-full_probs, -probs))


def check_options(temperature: float, top_k: int, top_p: float) -> None:
    """Raise OptionsError unless temperature is finite and >= 0, top-k a whole number >= 0
    and top-p in (0, 1]."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) \
            or not np.isfinite(temperature) or not 0 <= temperature <= MAX_TEMPERATURE:
        raise OptionsError(f"temperature must be a number in [0, {MAX_TEMPERATURE:g}] (below {GREEDY_BELOW:g} "
                           f"is greedy), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float, np.number)) \
            or not np.isfinite(top_k) or int(top_k) != top_k or top_k < 0:
        raise OptionsError(f"top-k must be a whole number >= 0 (0 turns it off), got {top_k!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.number)) \
            or not np.isfinite(top_p) or not 0 < top_p <= 1:
        raise OptionsError(f"top-p must be in (0, 1] (1 turns it off), got {top_p!r}")


def distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0) -> Distribution:
    """Build the next-token distribution from one row of logits [V]."""
    check_options(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 1:
        raise ValueError(f"distribution takes one row of logits [V], got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise OptionsError(f"the logits hold {int((~np.isfinite(logits)).sum())} non-finite values: "
                           "nothing can be sampled from them")
    if temperature < GREEDY_BELOW:
        scaled = logits.copy()
        full = softmax(scaled)
        kept = np.zeros(logits.shape, dtype=bool)
        kept[int(np.argmax(logits))] = True
        return Distribution(logits, float(temperature), int(top_k), float(top_p), scaled, full, kept, kept.astype(np.float32))

    scaled = (logits / np.float32(temperature)).astype(np.float32)
    full = softmax(scaled)
    kept = np.ones(logits.shape, dtype=bool)
    if top_k and top_k < logits.size:
        # Keep the k highest; ties at the threshold are kept, as Hugging Face does.
        threshold = np.partition(scaled, -top_k)[-top_k]
        kept &= scaled >= threshold
    if top_p < 1.0:
        # Over the whole vocabulary: sort the survivors by probability and keep the smallest
        # prefix whose mass reaches top_p (the token that crosses it is kept).
        p = softmax(np.where(kept, scaled, -np.inf).astype(np.float32)) if not kept.all() else full
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order], dtype=np.float64)
        n_keep = int(np.searchsorted(cum, top_p, side="left")) + 1
        mask = np.zeros_like(kept)
        mask[order[:n_keep]] = True
        kept &= mask
    masked = np.where(kept, scaled, -np.inf).astype(np.float32)
    probs = softmax(masked)
    return Distribution(logits, float(temperature), int(top_k), float(top_p), scaled, full, kept, probs)


def sample(dist: Distribution, rng: np.random.Generator) -> int:
    """Draw one token id from ``dist.probs`` (the arg-max when greedy)."""
    if dist.greedy:
        return int(np.argmax(dist.probs))
    p = dist.probs.astype(np.float64)
    return int(rng.choice(p.size, p=p / p.sum()))
