"""What crosses the model worker (issue 16): bytes and ms of a run and of one decode step, before
(the whole trace) and after (a partial trace: the globals, every layer's summaries, the viewed
layer and the last logits row), and the WebGPU runner's readback per run and step.

    PYTHONPATH=py .venv/bin/python tools/bench_worker.py            # writes bench/results.md's section
    PYTHONPATH=py .venv/bin/python tools/bench_worker.py --no-gpu   # numpy only

numpy: the real protocol (app.protocol: the page's WorkerRunner and the worker's ModelHost
around a ReferenceRunner) on one event loop, each buffer copied on the way as a transferred
ArrayBuffer is copied once into a numpy array on the page. "before" is the same host sending
the whole trace (what it sent before issue 16's partial traces). ms: from the page's call to
the Trace in its hands (the forward, packing, the copies, unpacking): medians of 3.

WebGPU: app.gpu_runner.WebGPURunner on wgpu-native (lavapipe/llvmpipe here), full capture
(before) vs ``partial=True`` (after): readback copies and bytes per run and per step (the
engine's copies into readback buffers), and ms. Weights: weights/mini (the default model,
int8) and GPT-2-small's shape with random int8 weights (glassbox.weights.random_checkpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))

BEGIN, END = "<!-- worker-bench:begin -->", "<!-- worker-bench:end -->"
CASES = (("default", 8), ("default", 256), ("gpt2-small", 64))


def models():
    from glassbox import model as glassbox_model, weights
    from glassbox.config import GPTConfig

    mini = glassbox_model.load(str(ROOT / "weights" / "mini"), str(ROOT / "vendor" / "gpt2"))
    small = weights.random_checkpoint(GPTConfig(n_layer=12, n_head=12, n_embd=768, n_positions=1024,
                                                vocab_size=50257), "int8", seed=1)
    return {"default": mini.checkpoint, "gpt2-small": small}


class _Wire:
    """The page and the worker on one loop; every buffer copied once on the way to the page."""

    def __init__(self, params, config, full: bool):
        from app import protocol, runner as runners

        loop = asyncio.get_event_loop()
        self.host = protocol.ModelHost(lambda h, a: loop.call_soon(self.page.receive, h,
                                                                   [np.array(x, copy=True) for x in a]))
        self.host.runner = runners.ReferenceRunner(params, config, step=self.host.step)
        if full:  # before issue 16: the whole trace or step crossed
            async def whole(trace, layer, before=None):
                return trace

            self.host._partial = whole
        self.page = protocol.WorkerRunner(lambda h, a: loop.call_soon(self.host.handle, h, list(a)), config)


def _median_ms(fn, repeat: int = 3):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def numpy_rows(checkpoints) -> list[dict]:
    from app import runner as runners

    rows = []
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    for name, n in CASES:
        ck = checkpoints[name]
        params, config = ck.dequantized(), ck.config
        ids = (np.arange(n, dtype=np.int64) * 97 + 13) % config.vocab_size
        for label, full in (("before", True), ("after", False)):
            wire = _Wire(params, config, full)
            run_ms, trace = _median_ms(lambda: loop.run_until_complete(wire.page.run(ids)))
            run_bytes = wire.host.sent[-1][1]

            def step():  # the N-th token after N - 1 cached ones (256 is the default model's context)
                wire.page.truncate(n - 1)
                return loop.run_until_complete(wire.page.extend([7]))

            step_ms, _ = _median_ms(step)
            step_bytes = wire.host.sent[-1][1]
            rows.append({"model": name, "n": n, "when": label, "run_bytes": run_bytes, "run_ms": run_ms,
                         "run_tensors": len(trace.tensors), "step_bytes": step_bytes, "step_ms": step_ms})
            print("numpy", rows[-1], flush=True)
            assert isinstance(trace, runners.LayerTrace) != full
    return rows


def gpu_rows(checkpoints) -> tuple[list[dict], str]:
    from app import runner as runners
    from app.gpu_runner import WebGPURunner
    from glassbox.gpu import Engine
    from glassbox.gpu.native import NativeBackend

    rows, adapter = [], ""

    async def go():
        nonlocal adapter
        backend = await NativeBackend.create()
        for name, n in CASES:
            ck = checkpoints[name]
            engine = await Engine.create(backend, ck)
            adapter = engine.describe()
            ids = (np.arange(n, dtype=np.int64) * 97 + 13) % ck.config.vocab_size

            async def make():
                return engine

            for label, partial in (("before", False), ("after", True)):
                runner = WebGPURunner(make, runners.ReferenceRunner(ck.dequantized(), ck.config), partial=partial)
                await runner.start("webgpu")
                await runner.run(ids)  # compiles the pipelines of this shape
                runner.truncate(n - 1)
                await runner.extend([7])
                row = {"model": name, "n": n, "when": label}
                for what in ("run", "step"):
                    times = []
                    for _ in range(3 if n <= 64 else 1):
                        runner.truncate(n - 1) if what == "step" else None
                        t0 = time.perf_counter()
                        await (runner.run(ids) if what == "run" else runner.extend([7]))
                        times.append((time.perf_counter() - t0) * 1e3)
                    last = engine._last
                    row[f"{what}_ms"] = statistics.median(times)
                    # after: + the one copy of the last logits row (Engine.read_last_rows)
                    row[f"{what}_copies"] = len(last.read) + partial
                    row[f"{what}_bytes"] = int(sum(a.nbytes for a in last.read.values())) + \
                        partial * 4 * ck.config.vocab_size
                rows.append(row)
                print("webgpu", row, flush=True)
            del engine, runner  # the next model gets its own engine on the same device
        backend.destroy()

    asyncio.run(go())
    return rows, adapter


def _mib(b: int) -> str:
    return f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 1024:.1f} KiB"


def table(rows, gpu_rows_, adapter: str) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    import os

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    out = [BEGIN, "## What crosses the worker (issue 16)", "",
           f"Measured {now} with `PYTHONPATH=py .venv/bin/python tools/bench_worker.py` on this 2-core machine "
           f"(load average {load}, shared with other jobs: ms are indicative). Default model: weights/mini "
           "(L4 H4 D128, V 50257, int8); GPT-2-small: its shape with random int8 weights. One run of N tokens, "
           "and one decode step (the N-th token after N - 1 cached). *Before*: the whole trace crosses the worker; *after*: "
           "the partial trace (embeddings, ln_f, every layer's attn_proj/mlp_proj/res_1/res_2, every tensor "
           "of the viewed layer, the last logits row); another layer crosses when the reader opens it.", "",
           "numpy in the worker (the real protocol under CPython; ms from the page's call to the Trace in "
           "hand, including the forward):", "",
           "| model | N | | run: bytes | run: ms | step: bytes | step: ms |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['n']} | {r['when']} | {_mib(r['run_bytes'])} | {r['run_ms']:.0f} | "
                   f"{_mib(r['step_bytes'])} | {r['step_ms']:.0f} |")
    if gpu_rows_:
        out += ["", f"WebGPU runner ({adapter}): readback from the GPU per run and per step (copies into "
                    "readback buffers, bytes mapped), and ms from the call to the Trace:", "",
                "| model | N | | run: copies | run: bytes | run: ms | step: copies | step: bytes | step: ms |",
                "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in gpu_rows_:
            out.append(f"| {r['model']} | {r['n']} | {r['when']} | {r['run_copies']} | {_mib(r['run_bytes'])} | "
                       f"{r['run_ms']:.0f} | {r['step_copies']} | {_mib(r['step_bytes'])} | {r['step_ms']:.0f} |")
        out += ["", "After: the logits [N, V] stay on the GPU (`forward_top` reads none; `read_last_rows` copies "
                    "the last row, counted above). A run keeps every other tensor on the GPU (`keep=True`: GPU-to-GPU "
                    "copies, which on llvmpipe are CPU memcpys and show in its run time); a fetched layer then costs "
                    "one `read_layer`, or after decode steps one forward of that layer from the engine's own cache "
                    "(the KV cache the runner extends is untouched). Each run and step now maps twice (the "
                    "trace, then the last logits row): on llvmpipe under this load the after-ms are not lower "
                    "(and are noisy); putting the row into the forward's one readback is an engine change "
                    "(its plan's copies) not made here."]
    out.append(END)
    return "\n".join(out)


def write(section: str) -> None:
    path = ROOT / "bench" / "results.md"
    text = path.read_text()
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-gpu", action="store_true", help="numpy only")
    parser.add_argument("--no-write", action="store_true", help="print, do not write bench/results.md")
    args = parser.parse_args(argv)
    checkpoints = models()
    rows = numpy_rows(checkpoints)
    gpu, adapter = ([], "") if args.no_gpu else gpu_rows(checkpoints)
    section = table(rows, gpu, adapter)
    print(section)
    if not args.no_write:
        write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
