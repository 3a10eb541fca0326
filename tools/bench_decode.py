#!/usr/bin/env python3
"""Benchmark one decode step's host side and the GPU time per kernel (issue 15). Not a test.

    python3 tools/bench_decode.py                       # native (wgpu-py) and the page, both models
    python3 tools/bench_decode.py --where native --models default --steps 4

For each model (the committed default model's shape and GPT-2-small's, random int8 weights)
and each mode of glassbox.gpu.decode_bench (before: the whole trace or the logits, encoded
command by command; after: the top-k only, or the top-k and one layer kept, replayed):
dispatches, readback copies and bytes, GPU-to-GPU copies, host time (Python side: plan,
writes, encoding or replay, submit), wall time and calls into JS per decode step — natively
through wgpu-py and in the page (Playwright + Debian's chromium, WebGPU on SwiftShader:
tools/bench_browser.py's flags) through BrowserBackend. Then, natively where the adapter has
'timestamp-query', Engine.profile's GPU time per kernel for one decode step and for an 8-token
prompt. Writes the "Decode step: host side" section of bench/results.md (between markers;
the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))
sys.path.insert(0, str(ROOT / "tools"))

from bench import MODELS, machine  # noqa: E402  (tools/bench.py)

BEGIN, END = "<!-- decode-bench:begin -->", "<!-- decode-bench:end -->"

PAGE_CODE = """
import js
from pyodide.ffi import to_js
from glassbox import weights
from glassbox.config import GPTConfig
from glassbox.gpu.browser import create_engine
from glassbox.gpu.decode_bench import MODES, decode_figures

async def g15_bench(config, steps):
    checkpoint = weights.random_checkpoint(GPTConfig(**config), "int8", seed=1)
    engine = await create_engine(js.navigator.gpu, to_js, js.Object.fromEntries, checkpoint)
    out = [await decode_figures(engine, mode, steps=steps) for mode in MODES]
    engine.backend.destroy()
    return {"rows": out, "adapter": engine.describe()}

await g15_bench(%r, %d)
"""


def native(models: list[str], steps: int, kernels_only: bool = False) -> tuple[list[dict], list[dict], str]:
    """The decode modes' figures (unless ``kernels_only``) and Engine.profile's GPU time per
    kernel where the adapter has 'timestamp-query'."""
    from glassbox import weights
    from glassbox.gpu import Engine
    from glassbox.gpu.decode_bench import MODES, decode_figures
    from glassbox.gpu.native import NativeBackend

    async def go():
        backend = await NativeBackend.create(optional_features=("timestamp-query",))
        rows, kernels = [], []
        for name in models:
            engine = await Engine.create(backend, weights.random_checkpoint(MODELS[name], "int8", seed=1))
            for mode in () if kernels_only else MODES:
                rows.append({"model": name, **await decode_figures(engine, mode, steps=steps)})
                print("native", rows[-1], flush=True)
            if backend.can_time:
                for label, ids in (("decode step", [5]), ("prompt of 8", list(range(8)))):
                    cache = engine.new_cache()
                    if label == "decode step":
                        await engine.forward(list(range(8)), cache=cache, capture="none")
                    await engine.profile(ids, cache=engine.new_cache(), top=64)  # compile first
                    profile = await engine.profile(ids, cache=cache, top=64)
                    kernels.append({"model": name, "run": label, "profile": [[l, float(t)] for l, t in profile]})
                    print("kernels", name, label, flush=True)
        return rows, kernels, backend.info.describe(), backend.can_time

    rows, kernels, adapter, can_time = asyncio.run(go())
    return rows, kernels, adapter + ("" if can_time else " (no timestamp-query)")


def page(models: list[str], steps: int) -> tuple[list[dict], str, str]:
    from dataclasses import asdict

    from bench_browser import SETTLED, ready_page

    rows, adapter = [], ""
    with ready_page("/?backend=webgpu", until=SETTLED) as page_:
        version = page_.context.browser.version
        page_.set_default_timeout(1_800_000)
        for name in models:
            got = page_.evaluate("code => window.glassbox_py(code)", PAGE_CODE % (asdict(MODELS[name]), steps))
            adapter = got["adapter"]
            for row in got["rows"]:
                rows.append({"model": name, **row})
                print("page", rows[-1], flush=True)
    return rows, adapter, f"Chromium {version}"


def kernel_table(kernels: list[dict]) -> list[str]:
    lines = []
    for entry in kernels:
        by = defaultdict(lambda: [0, 0.0])
        for label, ns in entry["profile"]:
            by[label][0] += 1
            by[label][1] += ns
        total = sum(ns for _, ns in entry["profile"])
        lines += ["", f"{entry['model']}, {entry['run']}: {len(entry['profile'])} dispatches, "
                      f"{total / 1e3:.0f} us of GPU time in all", "",
                  "| kernel | dispatches | total us | share |", "|---|---:|---:|---:|"]
        for label, (count, ns) in sorted(by.items(), key=lambda item: -item[1][1]):
            lines.append(f"| {label} | {count} | {ns / 1e3:.0f} | {100 * ns / total:.0f}% |")
    return lines


def write(rows_by_where: dict, kernels: list[dict], adapters: dict, command: str) -> None:
    lines = [BEGIN, "## Decode step: host side, readback and GPU time per kernel (issue 15)", "",
             f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with `{command}` "
             f"on {machine()}. No real GPU: CPU adapters only — these are figures of the host side "
             "(what the issue asks to cut), not of GPU speed. The counts (dispatches, copies, bytes, calls "
             "into JS) are exact; the times are medians on a machine shared with other jobs (see the load "
             "average) and move by 2-3x between runs.", ""]
    for where, adapter in adapters.items():
        lines.append(f"- {where}: {adapter}")
    lines += ["", "Per decode step after an 8-token prompt (median over the greedy steps of the steps "
              "column, random int8 weights). Modes: before-trace = every tensor read back, "
              "encoded command by command (the page's runner before); before-logits = the logits [1, V]; "
              "after-top = `forward_top` (the 64 largest logits: 516 bytes), plan replayed with one call "
              "into JS; after-shown = the top-k and one layer's tensors, `keep=True` (every other tensor "
              "stays on the GPU for `read_layer`). Calls into JS are 1 more on a step that records a new plan "
              "(after-shown records one per step: its attention stages' size depends on T). Host = Python side up to the wait for the readback "
              "(plan, writes, encoding or replay, submit); wall = the whole step.", "",
              "| where | model | mode | steps | dispatches | readback copies | readback bytes | GPU copies | "
              "host ms | wall ms | calls into JS |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for where, rows in rows_by_where.items():
        for r in rows:
            calls = "" if r["js_calls"] is None else f"{r['js_calls']:.0f}"
            lines.append(f"| {where} | {r['model']} | {r['mode']} | {r['steps']} | {r['dispatches']} | "
                         f"{r['readback_copies']} | "
                         f"{r['readback_bytes']:,} | {r['gpu_copies']} | {r['host_ms']:.2f} | {r['wall_ms']:.1f} | "
                         f"{calls} |")
    if kernels:
        lines += ["", "GPU time per kernel (`Engine.profile`: each dispatch in its own pass between "
                  "timestamp queries, native wgpu-py; lavapipe runs kernels on the CPU, so the shares, "
                  "not the microseconds, are what carries over). In the page, Chrome offers "
                  "'timestamp-query' only with --enable-webgpu-developer-features for full resolution; "
                  "`Engine.profile` works there too when the device has the feature."]
        lines += kernel_table(kernels)
    lines += ["", END]
    path = ROOT / "bench" / "results.md"
    text = path.read_text(encoding="utf-8")
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + "\n".join(lines) + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["default", "gpt2-small"], choices=sorted(MODELS))
    parser.add_argument("--where", nargs="+", default=["native", "kernels", "page"],
                        choices=["native", "kernels", "page"],
                        help="native: the modes through wgpu-py; kernels: Engine.profile through wgpu-py; "
                             "page: the modes in the page (each kept in bench/raw/decode-WHERE.json)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--write-only", action="store_true",
                        help="measure nothing: rewrite the section from bench/raw/decode-*.json")
    args = parser.parse_args(argv)
    if args.write_only:
        args.where = []
    command = "python3 tools/bench_decode.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    raw = ROOT / "bench" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for where in args.where:
        if where == "page":
            rows, adapter, browser = page(args.models, args.steps)
            got = {"rows": rows, "adapter": f"{adapter}, {browser}"}
        else:
            rows, kernels, adapter = native(args.models, args.steps, kernels_only=where == "kernels")
            got = {"rows": rows, "kernels": kernels, "adapter": adapter}
        got["command"] = command.strip()
        (raw / f"decode-{where}.json").write_text(json.dumps(got), encoding="utf-8")
    found = {where: json.loads((raw / f"decode-{where}.json").read_text(encoding="utf-8"))
             for where in ("native", "kernels", "page") if (raw / f"decode-{where}.json").exists()}
    rows = {where: got["rows"] for where, got in found.items() if got["rows"]}
    adapters = {where: got["adapter"] for where, got in found.items()}
    commands = sorted({got["command"] for got in found.values()})
    write(rows, found.get("kernels", {}).get("kernels", []), adapters, "`, `".join(commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
