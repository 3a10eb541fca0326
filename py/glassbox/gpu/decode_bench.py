"""What one decode step costs the host, per way of running it (issue 15's benchmark).

Plain Python over an Engine (no wgpu, no js): tools/bench_decode.py runs it natively through
wgpu-py and in the page through its BrowserBackend, so both report the same figures:

* dispatches, readback copies and bytes, GPU-to-GPU copies of one decode step's plan;
* host time: from the call to the moment the engine starts waiting for the readback
  (plan lookup, the Params and ids writes, encoding or replay, submit) — the Python side;
* wall time of the step (host + GPU + readback + building the Trace);
* calls into JS per step (BrowserBackend.calls; None natively).

MODES (what a step reads back, how it is encoded):
    before-trace   every tensor, encoded command by command (the page's runner before)
    before-logits  the logits [1, V], encoded command by command
    after-top      the top-k (forward_top, k=64) only, replayed
    after-shown    the top-k + one layer's tensors (the viewed one; keep=True: every other
                   tensor stays on the GPU for read_layer)
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from .backend import Copy, Dispatch
from .engine import TOP_K

MODES = ("before-trace", "before-logits", "after-top", "after-shown")


async def decode_figures(engine, mode: str, steps: int = 8, prompt: int = 8, layer: int = 0) -> dict:
    """Median figures of ``steps`` greedy decode steps after a ``prompt``-token prompt."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    backend = engine.backend
    replay = getattr(backend, "use_replay", None)
    if replay is not None:
        backend.use_replay = mode.startswith("after")
    real_read = backend.read
    marks: list[float] = []

    async def read(regions):
        marks.append(time.perf_counter())
        return await real_read(regions)

    backend.read = read
    try:
        rng = np.random.default_rng(3)
        cache = engine.new_cache()
        token = int(await _step(engine, mode, rng.integers(0, engine.config.vocab_size, prompt), cache, layer))
        host, wall, calls = [], [], []
        for _ in range(steps):
            before_calls = getattr(backend, "calls", 0)
            marks.clear()
            started = time.perf_counter()
            token = await _step(engine, mode, [token], cache, layer)
            wall.append(time.perf_counter() - started)
            host.append(marks[0] - started)
            calls.append(getattr(backend, "calls", 0) - before_calls)
        plan = engine.last_plan
    finally:
        backend.read = real_read
        if replay is not None:
            backend.use_replay = replay
    readback = [c for c in plan.commands if isinstance(c, Copy) and c.dst.label.startswith("readback")]
    return {"mode": mode, "steps": steps, "dispatches": sum(isinstance(c, Dispatch) for c in plan.commands),
            "readback_copies": len(readback), "readback_bytes": sum(c.size for c in readback),
            "gpu_copies": sum(isinstance(c, Copy) for c in plan.commands) - len(readback),
            "host_ms": 1e3 * statistics.median(host), "wall_ms": 1e3 * statistics.median(wall),
            "js_calls": statistics.median(calls) if replay is not None else None}


async def _step(engine, mode: str, ids, cache, layer: int) -> int:
    if mode == "before-trace":
        return int(np.argmax((await engine.forward(ids, cache=cache, capture="all")).logits[-1]))
    if mode == "before-logits":
        return int(np.argmax((await engine.forward(ids, cache=cache, capture="logits")).logits[-1]))
    shown = mode == "after-shown"
    prefix = f"h.{layer}."
    capture = (lambda name: name.startswith(prefix)) if shown else "none"
    top, _ = await engine.forward_top(ids, cache=cache, capture=capture, k=TOP_K, keep=shown)
    return int(top.ids[0])
