"""Runners: ``async run(ids) -> Trace`` over the whole displayed sequence, plus the KV cache.

The explainer (``explainer.py``) only needs a runner with

    async run(ids)      -> Trace   every tensor of the sequence ``ids`` (positions 0..N-1)

and, when a runner offers them, two extras that make generation cheap:

    async extend(ids)   -> Trace   the full trace of the cached sequence + ``ids``
    truncate(n)                    forget everything after the first n positions

and, optionally (issue 12: the query/key map runs its corpus through the page's runner),

    async tensors(ids, names) -> dict[str, np.ndarray]
                                   only the trace tensors ``names`` (``trace.layer_name``
                                   keys such as 'h.0.q', 'h.0.k', 'h.0.att') of ``ids`` run
                                   from position 0 with an empty cache of its own: the
                                   explainer's KV cache and sequence are never touched.

A runner with ``run`` alone also works: the explainer then re-runs the whole sequence per
generated token (what Transformer Explainer does). The WebGPU runner (``gpu_runner.py``)
offers all three, its ``extend`` joining rows with ``append_rows`` just as here.

Why the KV cache still gives the views a *full* trace: GPT-2 is causal, so appending tokens
never changes a row of an earlier position. The trace of ``ids + new`` is the old trace with
the new rows appended (``append_rows``) — the step trace computed with the cache holds
exactly those rows — plus, in the attention tensors, one new *column* per new key for the
old rows. Those columns are masked for old queries: ``att`` is 0 there and ``masked`` is
MASK_VALUE; only the raw ``scores``/``scaled`` (which the derivation view shows before the
mask) need the old queries times the new keys, one small product per layer.
"""

from __future__ import annotations

import asyncio
import math
from typing import Awaitable, Callable

import numpy as np

from glassbox import reference
from glassbox.config import GPTConfig
from glassbox.trace import (FINAL_NAMES, LAYER_NAMES, SUMMARY_NAMES, LayerTrace, Trace, check_names, layer_name,
                            layer_of)

# Per-layer tensors laid out [H, N, T] (queries x keys) and [H, N, K] (heads first).
ATTENTION_GRIDS = ("scores", "scaled", "masked", "att")
HEAD_ROWS = ("q", "k", "v", "head_out")

Yield = Callable[[str, float], Awaitable[None]]


async def _yield_to_page(label: str, fraction: float) -> None:
    await asyncio.sleep(0)


async def forward_async(params, config: GPTConfig, ids, cache: reference.KVCache | None = None,
                        step: Yield = _yield_to_page, logit_rows: int = 4,
                        capture: Callable[[str], bool] | None = None) -> Trace:
    """reference.forward, step for step, handing control back to the page between layers.

    The same functions (``reference.embed``, ``block``, ``final_norm``, ``unembed``) compute every tensor;
    only the logits are computed ``logit_rows`` rows at a time so a long input does not block
    the page for the whole [N, D] x [D, V] product. ``step(label, fraction)`` is awaited
    between steps (progress display + ``asyncio.sleep(0)``). ``capture(name)``, as in
    reference.forward, picks the tensors the Trace keeps (light mode, ``lightmode.py``);
    the logits are always kept.
    """
    start = cache.length if cache is not None else 0
    ids = reference.check_ids(config, ids, start)
    trace = Trace(config=config, ids=ids, start=start)

    def keep(name: str, value: np.ndarray) -> None:
        if capture is None or capture(name):
            trace[name] = value

    total = config.n_layer + 2

    x = reference.embed(params, ids, start, keep)
    await step("Embedding", 1 / total)
    for layer in range(config.n_layer):
        x = reference.block(x, params, layer, config, cache, keep)
        await step(f"Block {layer + 1} of {config.n_layer}", (layer + 2) / total)
    lnf = reference.final_norm(params, config, x, keep)
    rows = []
    for first in range(0, lnf.shape[0], logit_rows):
        rows.append(reference.unembed(params, lnf[first:first + logit_rows]))
        await step("Logits", 1.0)
    trace["logits"] = np.concatenate(rows, axis=0)
    return trace


async def tensors_async(params, config: GPTConfig, ids, names) -> dict[str, np.ndarray]:
    """The runner contract's ``tensors`` on the numpy reference: the named tensors of ``ids``
    run from position 0 without a cache, via reference.embed / block (and final_norm /
    unembed only when a final name is asked), yielding to the page between layers."""
    wanted = set(check_names(config, names))
    ids = reference.check_ids(config, ids)
    out: dict[str, np.ndarray] = {}

    def keep(name: str, value: np.ndarray) -> None:
        if name in wanted:
            out[name] = value

    final = bool(wanted & set(FINAL_NAMES))
    layers = [layer_of(name) for name in wanted if layer_of(name) is not None]
    last = config.n_layer - 1 if final else max(layers, default=-1)
    x = reference.embed(params, ids, 0, keep)
    for layer in range(last + 1):
        x = reference.block(x, params, layer, config, None, keep)
        await asyncio.sleep(0)
    if final:
        lnf = reference.final_norm(params, config, x, keep)
        if "logits" in wanted:
            out["logits"] = reference.unembed(params, lnf)
    return out


def _partial(trace: Trace) -> bool:
    return isinstance(trace, LayerTrace)


def _check_layers(trace: Trace) -> None:
    if _partial(trace):
        return
    for layer in range(trace.config.n_layer):
        if layer_name(layer, "att") not in trace:
            raise ValueError(f"the trace lacks layer {layer}'s tensors: capture every tensor to extend it")


def _logits_rows(old: Trace, new: Trace, n0: int) -> tuple[np.ndarray, int] | None:
    """(logits, first position held) of the joined trace: every row when both hold every row,
    else the rows the step holds (a partial trace keeps the last rows only)."""
    if "logits" not in new.tensors:
        return None
    if "logits" not in old.tensors:  # a cut partial trace: the step's rows
        return new.tensors["logits"], n0 + int(getattr(new, "logits_start", 0))
    start0, start1 = int(getattr(old, "logits_start", 0)), int(getattr(new, "logits_start", 0))
    extra = new.tensors["logits"]
    if start0 == 0 and start1 == 0 and old.tensors["logits"].shape[0] == n0 and extra.shape[0] == new.ids.size:
        return np.concatenate([old.tensors["logits"], extra], axis=0), 0
    return extra, n0 + start1


def append_rows(old: Trace, new: Trace) -> Trace:
    """The trace of old.ids + new.ids, from old (positions 0..N0-1) and new, the cached step.

    ``new`` must have been computed with the KV cache holding exactly old's keys and values
    (new.start == N0). See the module docstring for why this equals a full forward.

    Partial traces (glassbox.trace.LayerTrace, issue 16) join too: the result holds what both
    hold (every layer's summaries; the viewed layer when both hold it in full, else none:
    ``viewed`` None, the caller fetches it), and the logits rows the step holds. The raw
    ``scores``/``scaled`` columns of the old rows need the old queries, which the viewed layer
    holds.
    """
    n0 = int(old.ids.size)
    if old.start != 0 or new.start != n0:
        raise ValueError(f"cannot join a trace at {old.start} of {n0} tokens with a step starting at {new.start}")
    if old.config != new.config:
        raise ValueError("the traces come from different models")
    _check_layers(old), _check_layers(new)
    K = old.config.head_size
    ids = np.concatenate([old.ids, new.ids])
    partial = _partial(old) or _partial(new)
    if partial:
        viewed = getattr(old, "viewed", None) if _partial(old) else getattr(new, "viewed", None)
        if _partial(old) and _partial(new) and old.viewed != new.viewed:
            viewed = None
        if viewed is not None and not (_holds(old, viewed) and _holds(new, viewed)):
            viewed = None
        out = LayerTrace(old.config, ids, 0, viewed=viewed)
    else:
        out = Trace(config=old.config, ids=ids, start=0)
    for name, value in old.tensors.items():
        if name == "logits" or name not in new.tensors:
            continue
        short = name.split(".", 2)[2] if name.startswith("h.") else name
        layer = layer_of(name)
        if partial and layer is not None and short not in SUMMARY_NAMES and layer != out.viewed:
            continue  # a layer only one side holds in full: fetched again when shown
        extra = new.tensors[name]
        if short in HEAD_ROWS:
            out[name] = np.concatenate([value, extra], axis=1)
        elif short in ATTENTION_GRIDS:
            h, _, t0 = value.shape
            if short in ("scores", "scaled"):
                q_old = old.tensors[layer_name(layer, "q")]
                k_new = new.tensors[layer_name(layer, "k")]
                cols = (q_old @ k_new.transpose(0, 2, 1)).astype(np.float32)
                if short == "scaled":
                    cols = (cols / np.float32(math.sqrt(K))).astype(np.float32)
            elif short == "masked":
                cols = np.full((h, n0, extra.shape[2] - t0), reference.MASK_VALUE, dtype=np.float32)
            else:
                cols = np.zeros((h, n0, extra.shape[2] - t0), dtype=np.float32)
            out[name] = np.concatenate([np.concatenate([value, cols], axis=2), extra], axis=1)
        else:
            out[name] = np.concatenate([value, extra], axis=0)
    logits = _logits_rows(old, new, n0)
    if logits is not None:
        out["logits"] = logits[0]
        if partial:
            out.logits_start = logits[1]
        elif logits[1]:
            raise ValueError("a full trace cannot join a step that holds only some logits rows")
    return out


def _holds(trace: Trace, layer: int) -> bool:
    return all(layer_name(layer, n) in trace.tensors for n in LAYER_NAMES)


def truncate_rows(trace: Trace, n: int) -> Trace:
    """The trace of the first n tokens (exact: later tokens never change earlier rows)."""
    if not 0 < n <= trace.ids.size or trace.start != 0:
        raise ValueError(f"cannot cut a trace of {trace.ids.size} tokens to {n}")
    if _partial(trace):
        out = LayerTrace(trace.config, trace.ids[:n].copy(), 0, viewed=trace.viewed,
                         logits_start=min(trace.logits_start, n - 1))
    else:
        out = Trace(config=trace.config, ids=trace.ids[:n].copy(), start=0)
    for name, value in trace.tensors.items():
        short = name.split(".", 2)[2] if name.startswith("h.") else name
        if name == "logits" and _partial(trace):
            rows = value[:max(0, n - trace.logits_start)].copy()
            if rows.shape[0]:
                out[name] = rows
        elif short in HEAD_ROWS:
            out[name] = value[:, :n].copy()
        elif short in ATTENTION_GRIDS:
            out[name] = value[:, :n, :n].copy()
        else:
            out[name] = value[:n].copy()
    return out


def partial_step(trace: Trace, layer: int, last_logits: bool = True) -> LayerTrace:
    """What crosses the model worker (issue 16): ``trace`` (a run or a step) cut to the globals,
    every layer's summaries and ``layer``'s tensors, with the last logits row only."""
    return LayerTrace.select(trace, layer, last_logits=last_logits)


class ReferenceRunner:
    """The numpy reference as a runner, with a KV cache kept in step with the last trace."""

    name = "numpy"

    def __init__(self, params, config: GPTConfig, step: Yield = _yield_to_page):
        self.params = params
        self.config = config
        self.step = step
        self.cache: reference.KVCache | None = None

    async def run(self, ids) -> Trace:
        """Every tensor of ``ids``; the cache now holds exactly these positions."""
        self.cache = reference.KVCache(self.config)
        try:
            return await forward_async(self.params, self.config, ids, self.cache, self.step)
        except BaseException:
            self.cache = None
            raise

    async def extend(self, ids) -> Trace:
        """The step trace of ``ids`` after the cached positions (rows of the new tokens)."""
        if self.cache is None:
            raise ValueError("nothing is cached: run a sequence first")
        before = self.cache.length
        try:
            return await forward_async(self.params, self.config, ids, self.cache, self.step)
        except BaseException:
            self.truncate(before)
            raise

    async def tensors(self, ids, names) -> dict[str, np.ndarray]:
        """Only the trace tensors ``names`` of ``ids`` (from position 0, a cache of its own;
        ``self.cache`` is untouched). Stops after the last layer a name needs; ln_f and the
        logits are computed only when asked for."""
        return await tensors_async(self.params, self.config, ids, names)

    def truncate(self, n: int) -> None:
        """Keep the first n cached positions (after a discarded token, or a failed step)."""
        if self.cache is None:
            return
        for layer in range(self.config.n_layer):
            if self.cache.k[layer] is not None:
                self.cache.k[layer] = self.cache.k[layer][:, :n]
                self.cache.v[layer] = self.cache.v[layer][:, :n]
        if self.cache.length == 0:
            self.cache = reference.KVCache(self.config)
