#!/usr/bin/env python3
"""Benchmark the forward pass: numpy reference vs native WebGPU (wgpu-py), in one run.

    python3 tools/bench.py                      # both models, prompts of 8/64/256 tokens
    python3 tools/bench.py --models default --lengths 8 64 --decode 32

For each model (random int8 weights: timing does not depend on the values):
  * forward latency of a prompt of N tokens, logits only and with the full trace read back;
  * decoded tokens per second with the KV cache (a prompt of 8, then --decode steps, logits
    only, greedy);
for numpy (glassbox.reference) and wgpu-native (glassbox.gpu), with the GPU/numpy speed
ratio. Each figure is the median of timed runs after one warm-up run (which compiles the
pipelines), repeated until --seconds have passed (at least once). Prints a table and writes
bench/results.md with the machine, the adapter and this exact command. Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))

from glassbox import reference, weights  # noqa: E402
from glassbox.config import GPTConfig  # noqa: E402
from app.bench import decode_numpy_seconds, decode_webgpu_seconds  # noqa: E402  (the page's bench times decoding alike)

MODELS = {
    # The committed default model's shape (weights/mini).
    "default": GPTConfig(n_layer=4, n_head=4, n_embd=128, n_positions=256, vocab_size=50257),
    "gpt2-small": GPTConfig(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257),
}


def timed(fn, budget: float) -> float:
    """Median seconds of fn() over runs filling ``budget`` seconds (one warm-up first)."""
    fn()
    times = []
    started = time.perf_counter()
    while not times or (time.perf_counter() - started < budget and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(name: str, config: GPTConfig, args, engine_for, run) -> list[dict]:
    checkpoint = weights.random_checkpoint(config, args.scheme)
    params = checkpoint.dequantized()
    engine = engine_for(checkpoint)
    rng = np.random.default_rng(1)
    rows = []
    for n in args.lengths:
        if n > config.n_positions:
            continue
        ids = rng.integers(0, config.vocab_size, n)
        for capture, label in (("logits", "logits only"), ("all", "full trace")):
            keep = (lambda _: False) if capture == "logits" else None
            cpu = timed(lambda: reference.forward(params, config, ids, capture=keep), args.seconds)
            gpu = timed(lambda: run(engine.forward(ids, capture=capture)), args.seconds)
            rows.append({"model": name, "what": f"forward {n} tokens, {label}", "unit": "ms",
                         "numpy": cpu * 1e3, "gpu": gpu * 1e3, "speedup": cpu / gpu})
            print(f"  {rows[-1]['what']:<34} numpy {cpu * 1e3:9.1f} ms   wgpu {gpu * 1e3:9.1f} ms   x{cpu / gpu:.2f}",
                  flush=True)
    prompt = rng.integers(0, config.vocab_size, 8)
    steps = min(args.decode, config.n_positions - prompt.size)

    run(decode_webgpu_seconds(engine, prompt, steps))  # warm-up: decode-shaped pipelines
    cpu = steps / min(decode_numpy_seconds(params, config, prompt, steps) for _ in range(2))
    gpu = steps / min(run(decode_webgpu_seconds(engine, prompt, steps)) for _ in range(2))
    rows.append({"model": name, "what": f"decode {steps} tokens with the KV cache", "unit": "tokens/s",
                 "numpy": cpu, "gpu": gpu, "speedup": gpu / cpu})
    print(f"  {rows[-1]['what']:<34} numpy {cpu:9.1f} tok/s wgpu {gpu:9.1f} tok/s x{gpu / cpu:.2f}", flush=True)
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} logical CPUs " \
           f"(load average {load}), Python {platform.python_version()}, numpy {np.__version__}"


def write_results(path: Path, rows: list[dict], adapter: str, command: str, args, machine_before: str) -> None:
    lines = [
        "# Glassbox benchmark results", "",
        f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} with:", "",
        "```", command, "```", "",
        f"- machine at the start: {machine_before}",
        f"- machine at the end: {machine()}",
        "- numpy: glassbox.reference (float32, dequantized weights)",
        f"- wgpu: glassbox.gpu on {adapter}",
        f"- weights: random, scheme {args.scheme}; medians after a warm-up run; latency is wall time "
        "from the call to the Trace in hand (upload of ids, one submit, readback)", "",
        "| model | measure | numpy | wgpu-native | wgpu / numpy |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        fmt = "{:.1f} ms" if r["unit"] == "ms" else "{:.1f} tok/s"
        ratio = f"{r['speedup']:.2f}x faster" if r["speedup"] >= 1 else f"{1 / r['speedup']:.2f}x slower"
        lines.append(f"| {r['model']} | {r['what']} | {fmt.format(r['numpy'])} | {fmt.format(r['gpu'])} | {ratio} |")
    # The browser section (tools/bench_browser.py) is kept as it is.
    old = path.read_text() if path.exists() else ""
    if "<!-- browser-bench:" in old:
        lines += ["", old[old.index("<!-- browser-bench:"):].rstrip("\n")]
    else:
        lines += ["", "In-browser figures: `python3 tools/bench_browser.py` (not run yet)."]
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[8, 64, 256])
    parser.add_argument("--decode", type=int, default=32, help="tokens decoded with the KV cache")
    parser.add_argument("--scheme", choices=["none", "int8", "q4"], default="int8")
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per figure")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    command = "python3 tools/bench.py" + "".join(" " + shlex.quote(a) for a in given)

    from glassbox.gpu import Engine
    from glassbox.gpu.native import NativeBackend, run_sync

    backend = run_sync(NativeBackend.create())
    adapter = backend.info.describe()
    machine_before = machine()
    print(f"machine: {machine_before}\nadapter: {adapter}", flush=True)
    rows = []
    for name in args.models:
        print(f"{name}: {MODELS[name]}", flush=True)
        rows += bench_model(name, MODELS[name], args, lambda c: run_sync(Engine.create(backend, c)), run_sync)
    write_results(Path(args.out), rows, adapter, command, args, machine_before)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
