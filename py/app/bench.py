"""In-browser benchmark: WebGPU and numpy on the same page, posted to the server as JSON.

bench.html runs ``main()``; tools/bench_browser.py serves the app, opens that page in
headless Chromium, waits for the JSON and writes the browser section of bench/results.md.
The query string sets the work (defaults in brackets):

    name=NAME            the results file, bench/raw/NAME.json            [browser]
    models=a,b           default (weights/mini, as the page loads it) and/or gpt2-small
                         (random int8 weights of GPT-2-small's shape)     [default,gpt2-small]
    lengths=8,64,256     prompt lengths for the forward latency            [8,64,256]
    decode=16            tokens decoded with the KV cache after 8          [16]
    seconds=2            timed runs per figure continue for this long      [2]
    budget=90            a figure whose estimate (warm-up + one run) is over this many
                         seconds is skipped and recorded as skipped        [90]
    folder=URL           load gpt2-small from this model folder (loader.load_model: fetch,
                         sha256, parse) instead of making its random weights in the page  []
    backends=a,b         webgpu, numpy (float32 weights, ``@``) and/or wasm (the stored
                         int8 weights through wasm/linear_i8.so, ``qlinear``) [webgpu,numpy]

For each model and backend: the forward latency of an N-token prompt, logits only and with
every tensor read back (WebGPU: ``Engine.forward(capture=...)``; numpy: ``reference.forward``
with and without capture, as tools/bench.py), then decoded tokens per second with the KV
cache (greedy, logits only). WebGPU first compiles every pipeline once per model (8- and
17-token prompts, a cached step). Each figure is then the median of the timed runs after one
warm-up run; a figure estimated over 5 s gets one unwarmed run. Estimates come from the same
backend's previous figure scaled by the token count (linear: an overestimate for WebGPU,
whose short runs are dominated by fixed costs). Decoding gets fewer steps (at least 2) when
``decode`` steps would not fit the budget.

Everything but ``main`` is plain Python (no ``js``): ``run_benchmark`` also runs under CPython
with any engine factory (tests/gpu/test_gpu_runner.py uses wgpu-native).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import traceback
from typing import Awaitable, Callable
from urllib.parse import parse_qs

import numpy as np

from glassbox import reference, weights
from glassbox.config import GPTConfig
from glassbox.gpu.backend import GPUUnavailableError

GPT2_SMALL = GPTConfig(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
DEFAULTS = {"name": "browser", "models": "default,gpt2-small", "lengths": "8,64,256", "decode": "16",
            "seconds": "2", "budget": "90", "backends": "webgpu,numpy", "folder": ""}
BACKENDS = ("webgpu", "numpy", "wasm")
MAX_RUNS = 10
NO_WARMUP_S = 5.0  # numpy figures estimated over this run once, unwarmed


def settings(search: str) -> dict:
    """The benchmark's settings from a query string (see the module docstring)."""
    query = {k: v[0] for k, v in parse_qs(search.lstrip("?")).items()}
    s = {**DEFAULTS, **{k: v for k, v in query.items() if k in DEFAULTS}}
    return {"name": s["name"], "models": [m for m in s["models"].split(",") if m],
            "lengths": [int(n) for n in s["lengths"].split(",") if n], "decode": int(s["decode"]),
            "seconds": float(s["seconds"]), "budget": float(s["budget"]),
            "backends": [b for b in s["backends"].split(",") if b in BACKENDS], "folder": s["folder"]}


async def timed(fn: Callable[[], Awaitable], seconds: float, warm: bool = True) -> tuple[float, int]:
    """(median seconds, timed runs) of ``await fn()``: one warm-up run (if ``warm``), then runs
    until ``seconds`` have passed (at least one, at most MAX_RUNS)."""
    if warm:
        await fn()
    times: list[float] = []
    started = time.perf_counter()
    while not times or (time.perf_counter() - started < seconds and len(times) < MAX_RUNS):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
        await asyncio.sleep(0)
    return statistics.median(times), len(times)


class Estimates:
    """Seconds per token of the last figure, per (backend, capture), to skip over-budget work."""

    def __init__(self):
        self.per_token: dict[tuple[str, str], float] = {}

    def guess(self, key: tuple[str, str], n: int) -> float | None:
        rate = self.per_token.get(key)
        return None if rate is None else rate * n

    def learn(self, key: tuple[str, str], n: int, seconds: float) -> None:
        self.per_token[key] = seconds / n


async def bench_model(label: str, checkpoint, engine, opts: dict, say: Callable[[str], None],
                      kernel=None, setup: dict | None = None) -> list[dict]:
    """Rows for one model: forward latencies and decode speed, WebGPU (``engine``, or None),
    numpy and wasm (``kernel``, a qlinear.LinearKernel, or None) on the same page. ``setup``
    receives each CPU backend's seconds to prepare its weights."""
    config = checkpoint.config
    rng = np.random.default_rng(1)
    estimates = Estimates()
    budget, seconds = opts["budget"], opts["seconds"]
    params = None  # dequantized only once WebGPU is done with the model (memory)

    wanted = opts.get("backends", ["webgpu", "numpy"])
    backends = [b for b in wanted if (b != "webgpu" or engine is not None) and (b != "wasm" or kernel is not None)]
    setup = {} if setup is None else setup
    figures = [(n, capture) for n in opts["lengths"] if n <= config.n_positions for capture in ("logits", "all")]
    results: dict[tuple, dict] = {}
    for backend in backends:
        if backend in ("numpy", "wasm"):
            say(f"{label}: preparing weights for {backend}")
            await asyncio.sleep(0)
            t0 = time.perf_counter()
            params = checkpoint.dequantized() if backend == "numpy" else checkpoint.linear_params(kernel)
            setup[backend] = round(time.perf_counter() - t0, 3)
        elif engine is not None:
            # Compile every pipeline the figures use: short and long prompts (matmul's tile
            # height changes above 16 rows) and a cached one-token step.
            say(f"{label}: compiling WebGPU pipelines")
            longest = max((n for n, _ in figures), default=8)
            for n in sorted({min(8, longest), min(17, longest)}):
                await engine.forward(rng.integers(0, config.vocab_size, n), capture="all")
            await decode_webgpu_seconds(engine, rng.integers(0, config.vocab_size, 8), 1)
        for n, capture in figures:
            ids = rng.integers(0, config.vocab_size, n)
            key = (backend, capture)
            guess = estimates.guess(key, n)
            warm = guess is None or guess < NO_WARMUP_S
            cost = None if guess is None else guess * (2 if warm else 1)
            entry = results.setdefault((n, capture), {"model": label, "what": _what(n, capture), "unit": "ms"})
            if cost is not None and cost > budget:
                entry[backend] = None
                entry[f"{backend}_note"] = f"skipped: estimated {cost:.0f} s > budget {budget:g} s"
                say(f"{label}: {backend} {entry['what']}: {entry[f'{backend}_note']}")
                continue
            say(f"{label}: {backend} {entry['what']}" + (f" (about {cost:.0f} s)" if cost else ""))
            await asyncio.sleep(0)
            if backend == "webgpu":
                async def fn(ids=ids, capture=capture):
                    await engine.forward(ids, capture=capture)
            else:
                keep = (lambda _: False) if capture == "logits" else None

                async def fn(ids=ids, keep=keep):
                    reference.forward(params, config, ids, capture=keep)
            median, runs = await timed(fn, seconds, warm)
            estimates.learn(key, n, median)
            entry[backend] = median * 1e3
            entry[f"{backend}_runs"] = runs if warm else f"{runs}, not warmed"
        rows_decode = results.setdefault("decode", {"model": label, "unit": "tokens/s"})
        steps = min(opts["decode"], config.n_positions - 8)
        rows_decode.setdefault("what", f"decode {steps} tokens with the KV cache")
        # A decode step costs at most what the shortest logits-only forward cost (per call):
        # fewer steps (at least 2) when all of them would not fit the budget.
        shortest = next((results[f][backend] for f in results
                         if f != "decode" and f[1] == "logits" and results[f].get(backend)), None)
        if shortest is not None:
            fit = int(budget / (shortest / 1e3)) - 1  # the 8-token prompt first
            if fit < 2:
                rows_decode[backend] = None
                rows_decode[f"{backend}_note"] = (f"skipped: estimated {3 * shortest / 1e3:.0f} s for 2 steps "
                                                  f"> budget {budget:g} s")
                continue
            steps = min(steps, fit)
        say(f"{label}: {backend} decoding {steps} tokens")
        await asyncio.sleep(0)
        prompt = rng.integers(0, config.vocab_size, 8)
        if backend == "webgpu":
            elapsed = await decode_webgpu_seconds(engine, prompt, steps)
        else:
            elapsed = decode_numpy_seconds(params, config, prompt, steps)
        rows_decode[backend] = steps / elapsed
        rows_decode[f"{backend}_runs"] = f"1 run of {steps} steps"
    rows = [results[key] for key in results if key != "decode"] + [results["decode"]]
    for row in rows:
        if row.get("webgpu") and row.get("numpy"):
            w, n = row["webgpu"], row["numpy"]
            row["speedup"] = n / w if row["unit"] == "ms" else w / n  # > 1: WebGPU faster
    return rows


def _what(n: int, capture: str) -> str:
    return f"forward {n} tokens, {'logits only' if capture == 'logits' else 'full trace'}"


async def decode_webgpu_seconds(engine, prompt: np.ndarray, steps: int) -> float:
    """Seconds for ``steps`` greedy decode steps with the KV cache after ``prompt`` (logits only);
    tools/bench.py times the native engine with it too."""
    cache = engine.new_cache()
    logits = (await engine.forward(prompt, cache=cache, capture="logits")).logits[-1]
    started = time.perf_counter()
    for _ in range(steps):
        logits = (await engine.forward([int(np.argmax(logits))], cache=cache, capture="logits")).logits[-1]
    return time.perf_counter() - started


def decode_numpy_seconds(params, config: GPTConfig, prompt: np.ndarray, steps: int) -> float:
    """The same on glassbox.reference."""
    cache = reference.KVCache(config)
    logits = reference.forward(params, config, prompt, cache=cache, capture=lambda _: False).logits[-1]
    started = time.perf_counter()
    for _ in range(steps):
        logits = reference.forward(params, config, [int(np.argmax(logits))], cache=cache,
                                   capture=lambda _: False).logits[-1]
    return time.perf_counter() - started


async def run_benchmark(opts: dict, load_default: Callable[[], Awaitable], make_engine: Callable,
                        say: Callable[[str], None] = print, kernel=None) -> dict:
    """Every model in opts["models"]: ``load_default(url=None)`` -> the default model's (or the
    folder ``url``'s) Checkpoint,
    ``make_engine(checkpoint)`` -> an Engine (raising GPUError / GPUUnavailableError when
    WebGPU cannot run). Returns the JSON-ready report (rows, adapter, errors, seconds)."""
    started = time.perf_counter()
    report = {"settings": opts, "rows": [], "adapter": None, "webgpu_error": None, "models": {}}
    for label in opts["models"]:
        t0 = time.perf_counter()
        if label == "default":
            say("default: loading weights/mini")
            checkpoint = await load_default()
        elif label == "gpt2-small" and opts.get("folder"):
            say(f"gpt2-small: loading {opts['folder']}")
            checkpoint = await load_default(opts["folder"])
        elif label == "gpt2-small":
            say("gpt2-small: making random int8 weights of GPT-2-small's shape")
            await asyncio.sleep(0)
            checkpoint = weights.random_checkpoint(GPT2_SMALL, "int8")
        else:
            raise ValueError(f"unknown model {label!r}: expected default or gpt2-small")
        report["models"][label] = {"config": checkpoint.config.to_dict(), "scheme": checkpoint.scheme,
                                   "megabytes": round(checkpoint.nbytes() / 1e6, 1),
                                   "load_s": round(time.perf_counter() - t0, 2)}
        engine = None
        try:
            if "webgpu" not in opts.get("backends", ["webgpu"]):
                raise GPUUnavailableError("not asked for (backends=)")
            t0 = time.perf_counter()
            engine = await make_engine(checkpoint)
            report["models"][label]["setup_s"] = {"webgpu": round(time.perf_counter() - t0, 3)}
            report["adapter"] = engine.describe()
        except Exception as e:  # noqa: BLE001  (no WebGPU: numpy figures only, and why)
            report["webgpu_error"] = f"{type(e).__name__}: {e}"
            say(f"{label}: no WebGPU ({report['webgpu_error']}); numpy only")
        report["rows"] += await bench_model(label, checkpoint, engine, opts, say, kernel,
                                            report["models"][label].setdefault("setup_s", {}))
        if engine is not None:
            engine.backend.destroy()  # frees the model's GPU memory before the next one
        del engine, checkpoint
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


async def main() -> None:
    """bench.html: run the benchmark on this page and POST the report to /bench-results."""
    import json
    import platform
    import sys

    import js
    from pyodide.ffi import to_js

    from glassbox.gpu.browser import create_engine

    from .loader import load_model

    log = js.document.getElementById("log")
    root = js.document.documentElement

    def say(text: str) -> None:
        print(text)
        log.textContent = f"{log.textContent}{time.strftime('%H:%M:%S')} {text}\n"

    opts = {"name": "browser"}
    report: dict = {"error": None}
    try:
        opts = settings(str(js.location.search))
        root.dataset.bench = "running"

        async def load_default(url=None):
            return (await load_model(url or "./weights/mini/")).checkpoint

        async def make_engine(checkpoint):
            return await create_engine(getattr(js.navigator, "gpu", None), to_js, js.Object.fromEntries, checkpoint,
                                       timeout=10.0)

        from .kernel import load_kernel

        kernel, why = await load_kernel()
        report["wasm_kernel"] = why
        say(f"wasm kernel: {why}")
        report = {**await run_benchmark(opts, load_default, make_engine, say, kernel), "wasm_kernel": why}
        report["error"] = None
    except Exception:  # noqa: BLE001  (reported, so the driver does not wait for ever)
        report["error"] = traceback.format_exc()
        say(report["error"])
    report.update(user_agent=str(js.navigator.userAgent), python=sys.version.split()[0],
                  numpy=np.__version__, platform=platform.platform(),
                  hardware_concurrency=int(getattr(js.navigator, "hardwareConcurrency", 0) or 0))
    body = json.dumps(report, default=str)
    init = to_js({"method": "POST", "headers": {"Content-Type": "application/json"}, "body": body},
                 dict_converter=js.Object.fromEntries)
    response = await js.fetch(f"./bench-results?name={opts['name']}", init)
    say(f"posted: HTTP {response.status}")
    root.dataset.bench = "error" if report["error"] else "done"
