#!/usr/bin/env python3
"""Benchmark the attention kernels (issue 15): attention.wgsl against flash_attention.wgsl
(prefill) and attention_decode.wgsl (decode) on GPT-2-small's shapes, native wgpu.

    PYTHONPATH=py .venv/bin/python tools/bench_attention.py            # writes its section of bench/results.md
    PYTHONPATH=py .venv/bin/python tools/bench_attention.py --no-write

Shapes: 12 heads x 64 (D = 768), context C = 1024, random N(0, 1) q/k/v and cache; prefill
N = 64 at start 0, decode N = 1 at T = 64, 256 and 1024. Each figure is the median over
``--trials`` submits of ``--reps`` back-to-back dispatches of one kernel (both passes for the
split decode), divided by ``--reps``, after a warm-up submit: wall time from submit to the
mapped readback of its output, so it includes one submit's fixed cost / reps. Old and new
kernels are measured in the same run, interleaved per trial. "old" is attention.wgsl as the
engine ran it for every layer without captured stages (CAPTURE false); "old, stages" is the
same kernel writing the four [H, N, T] stages (what the viewed layer still runs). Then whole
forwards of the default model's shape with the new kernels and without (Engine
fast_attention). Reports wall and process CPU time (a CPU adapter's threads are in the
process). Not a test.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))
sys.path.insert(0, str(ROOT / "tools"))

from bench import MODELS, machine  # noqa: E402  (tools/bench.py)
from bench_browser import write_block  # noqa: E402
from glassbox.gpu import kernels as K  # noqa: E402
from glassbox.gpu.backend import Copy, Dispatch  # noqa: E402

BEGIN, END = "<!-- attention-bench:begin -->", "<!-- attention-bench:end -->"
H, HEAD, CTX = 12, 64, 1024  # GPT-2-small
CASES = (("prefill", 64, 0), ("decode", 1, 63), ("decode", 1, 255), ("decode", 1, 1023))  # (kind, N, start)


class _Kernels:
    """Pipelines, buffers and bind groups for one (N, start) case of each attention kernel."""

    def __init__(self, backend, run, n: int, start: int, rng):
        self.backend, self.run = backend, run
        D = H * HEAD
        self.params = (n, start + n, start)
        self.buffers = {"params": backend.create_buffer(16, "uniform", "params")}
        backend.write_buffer(self.buffers["params"], K.params_array(*self.params))
        stage = 4 * H * n * (start + n)
        for name, nbytes, data in (
                ("qkv", 4 * n * 3 * D, rng.standard_normal((n, 3 * D))),
                ("k_cache", 4 * CTX * D, rng.standard_normal((CTX, D))),
                ("v_cache", 4 * CTX * D, rng.standard_normal((CTX, D))),
                ("out", 4 * n * D, None),
                ("partials", 4 * K.decode_partials_floats(n, H, HEAD, CTX), None),
                *[(s, stage, None) for s in ("scores", "scaled", "masked", "att")],
                *[(f"dummy{i}", 16, None) for i in range(4)]):
            self.buffers[name] = backend.create_buffer(nbytes, "storage", name)
            if data is not None:
                backend.write_buffer(self.buffers[name], data.astype(np.float32))
        self.readback = backend.create_buffer(256, "readback", "probe")
        self.constants = {"H": H, "K": HEAD, "SQRT_K": float(np.float32(math.sqrt(HEAD)))}
        self.layouts = {}

    def dispatches(self, kernel: K.Kernel, launches, constants: dict, names: dict) -> list[Dispatch]:
        be = self.backend
        if kernel.name not in self.layouts:
            self.layouts[kernel.name] = be.create_layout(kernel.kinds)
        layout = self.layouts[kernel.name]
        buffers = {binding: self.buffers[names.get(binding, binding)] for binding in kernel.names}
        group = be.create_bind_group(layout, [(b, 0, b.size) for b in kernel.order(buffers)])
        out = []
        for entry, extra, grid in launches:
            pipeline = self.run(be.create_pipeline(kernel.source(), entry, {**self.constants, **constants, **extra},
                                                   layout, kernel.name))
            out.append(Dispatch(pipeline, group, grid))
        return out

    def variants(self) -> dict[str, list[Dispatch]]:
        n = self.params[0]
        old = {"CTX": CTX}
        dummies = {s: f"dummy{i}" for i, s in enumerate(("scores", "scaled", "masked", "att"))}
        found = {
            "old": self.dispatches(K.ATTENTION, [K.attention_launch(n, H)], {**old, "CAPTURE": False}, dummies),
            "old, stages": self.dispatches(K.ATTENTION, [K.attention_launch(n, H)], {**old, "CAPTURE": True}, {}),
        }
        if n <= K.DECODE_MAX_TOKENS:
            found["new: split decode"] = self.dispatches(K.ATTENTION_DECODE, K.attention_decode_launches(n, H, CTX),
                                                         {}, {})
            # issue 15, engine: the grid the engine plans for this T (K.decode_grid), not all SPLITS
            found["new: split decode, grid for T"] = self.dispatches(
                K.ATTENTION_DECODE, K.attention_decode_launches(n, H, CTX, t=self.params[1]), {}, {})
        else:
            tile = K.flash_tile(HEAD, self.backend.limits)
            found["new: flash"] = self.dispatches(K.FLASH_ATTENTION, [K.flash_attention_launch(n, H, HEAD, tile)],
                                                  {}, {})
        return found

    def seconds(self, commands: list[Dispatch], reps: int) -> tuple[float, float]:
        """(wall, CPU) seconds of one submit of ``reps`` repetitions, until its output is mapped.
        The CPU time is this process's, all threads: on a CPU adapter (llvmpipe's thread pool
        runs in the process) it is the figure to read on a shared machine."""
        probe = [Copy(self.buffers["out"], 0, self.readback, 0, 16)]
        wall, cpu = time.perf_counter(), time.process_time()
        self.backend.submit(commands * reps + probe)
        self.run(self.backend.read([(self.readback, 0, 16)]))
        return time.perf_counter() - wall, time.process_time() - cpu


def bench_attention(backend, run, reps: int = 20, trials: int = 7, seed: int = 0) -> list[dict]:
    """Per-kernel milliseconds for each case: rows of {case, N, T, kernel, ms, workgroups, dispatches}."""
    rng = np.random.default_rng(seed)
    rows = []
    for kind, n, start in CASES:
        kernels = _Kernels(backend, run, n, start, rng)
        variants = kernels.variants()
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for commands in variants.values():
            kernels.seconds(commands, 1)  # warm-up
        for _ in range(trials):
            for name, commands in variants.items():  # interleaved
                times[name].append(kernels.seconds(commands, reps))
        for name, commands in variants.items():
            rows.append({"case": kind, "N": n, "T": start + n, "kernel": name,
                         "ms": 1000 * statistics.median(w for w, _ in times[name]) / reps,
                         "cpu_ms": 1000 * statistics.median(c for _, c in times[name]) / reps,
                         "workgroups": " + ".join(str(math.prod(d.workgroups)) for d in commands),
                         "dispatches": len(commands)})
            print(f"{kind} N={n} T={start + n} {name}: {rows[-1]['ms']:.3f} ms wall, {rows[-1]['cpu_ms']:.3f} ms CPU",
                  flush=True)
    return rows


def bench_engine_attention(backend, run, config, trials: int = 5, prompt: int = 64, steps: int = 16,
                           seed: int = 0) -> list[dict]:
    """Whole forwards with the new kernels (Engine fast_attention=True) and with attention.wgsl
    everywhere (False), interleaved: a ``prompt``-token forward reading back the logits, and
    ``steps`` KV-cached decode steps after it. Rows of {what, kernels, ms, cpu_ms} (medians)."""
    from glassbox import weights
    from glassbox.gpu import Engine

    checkpoint = weights.random_checkpoint(config, "int8", seed=seed)
    ids = np.random.default_rng(seed).integers(0, config.vocab_size, prompt + steps)
    engines = {"new": run(Engine.create(backend, checkpoint)),
               "old": run(Engine.create(backend, checkpoint, fast_attention=False))}

    def timed(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu

    def forward(engine):
        run(engine.forward(ids[:prompt], capture="logits"))

    def decode(engine):
        cache = engine.new_cache()
        run(engine.forward(ids[:prompt], cache=cache, capture="logits"))
        return timed(lambda: [run(engine.forward(ids[t:t + 1], cache=cache, capture="logits"))
                              for t in range(prompt, prompt + steps)])

    times = {(what, name): [] for what in ("forward", "decode") for name in engines}
    for engine in engines.values():  # warm-up: pipelines and plans
        forward(engine)
        decode(engine)
    for _ in range(trials):
        for name, engine in engines.items():
            times[("forward", name)].append(timed(lambda: forward(engine)))
            wall, cpu = decode(engine)
            times[("decode", name)].append((wall / steps, cpu / steps))
    rows = []
    for (what, name), values in times.items():
        label = f"{prompt}-token forward (logits)" if what == "forward" else \
            f"decode step, T = {prompt + 1}..{prompt + steps}"
        rows.append({"what": label, "kernels": name, "ms": 1000 * statistics.median(w for w, _ in values),
                     "cpu_ms": 1000 * statistics.median(c for _, c in values)})
        print(f"{label} {name}: {rows[-1]['ms']:.1f} ms wall, {rows[-1]['cpu_ms']:.1f} ms CPU", flush=True)
    return rows


def section(rows: list[dict], engine_rows: list[dict], adapter: str, command: str, reps: int, trials: int) -> str:
    lines = [BEGIN, "## Attention kernels (issue 15): old vs flash prefill and split decode", "",
             f"`{command}` on {adapter}; {machine()}.", "",
             "**Measured on a CPU adapter (llvmpipe), not a GPU**: no GPU was lent to this session. The machine "
             "was shared (see the load average), so read the CPU column: this process's CPU time, all threads "
             "(llvmpipe's thread pool runs in the process); wall time includes waiting for a core.", "",
             f"Per kernel, GPT-2-small's attention shapes ({H} heads x {HEAD}, C = {CTX}): median of {trials} "
             f"submits of {reps} back-to-back dispatches, per dispatch (both passes for the split decode), old and "
             "new interleaved in one run. \"old\" is attention.wgsl without stages (what every layer without "
             "captured stages ran before); \"old, stages\" is the viewed layer's kernel (unchanged).", "",
             "| case | N | T | kernel | workgroups | CPU ms per call | vs old (CPU) | wall ms |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    old = {(r["case"], r["T"]): r["cpu_ms"] for r in rows if r["kernel"] == "old"}
    for r in rows:
        ratio = old[(r["case"], r["T"])] / r["cpu_ms"]
        lines.append(f"| {r['case']} | {r['N']} | {r['T']} | {r['kernel']} | {r['workgroups']} | {r['cpu_ms']:.2f} | "
                     f"{ratio:.2f}x | {r['ms']:.1f} |")
    if engine_rows:
        lines += ["", "Whole forwards, the default model's shape (random int8 weights, L4 H4 D128 C256), logits "
                  "read back (so every layer runs the new kernels), Engine(fast_attention=True) \"new\" vs False "
                  "\"old\", interleaved; medians:", "",
                  "| measure | attention | CPU ms | wall ms |", "|---|---|---:|---:|"]
        for r in engine_rows:
            lines.append(f"| {r['what']} | {r['kernels']} | {r['cpu_ms']:.1f} | {r['ms']:.1f} |")
    lines += ["", "Reading: a CPU adapter runs workgroups one after another on its two cores, so the split "
              "decode's 32x more workgroups buy nothing there (below T = 1024 the later ones are empty: chunks "
              "have at least 32 keys), and its staging of key rows in workgroup memory (for coalesced loads on a "
              "GPU) is extra work: 1.4-2.8x the old kernel's CPU time per call here. Flash prefill is about even "
              "with the old kernel. In whole forwards attention is a small share (the matmuls dominate) and the "
              "difference is within this shared machine's noise. "
              "On a GPU the old decode kernel keeps 12 workgroups (one per head) busy with a serial loop over "
              "all T keys, the split decode 12 x 32; the GPU figures are still to be measured "
              "(`tools/bench_attention.py` on the GPU machine).", "",
              "Correctness: tests/gpu/test_attention_kernels.py, tests/gpu/test_engine_attention.py (numpy "
              "reference, lavapipe) and tests/e2e/test_attention_page.py (in the page, SwiftShader).", END]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20, help="dispatches per submit")
    ap.add_argument("--trials", type=int, default=7, help="submits per figure (the median is kept)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--no-engine", action="store_true", help="kernels only, no whole forwards")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = ap.parse_args(argv)
    from glassbox.gpu.native import NativeBackend, run_sync

    backend = run_sync(NativeBackend.create())
    adapter = backend.info.describe()
    print(f"adapter: {adapter}", flush=True)
    rows = bench_attention(backend, run_sync, args.reps, args.trials)
    engine_rows = [] if args.no_engine else bench_engine_attention(backend, run_sync, MODELS["default"])
    command = "tools/bench_attention.py" + (f" --reps {args.reps}" if args.reps != 20 else "") + \
        (f" --trials {args.trials}" if args.trials != 7 else "")
    if not args.no_write:
        write_block(Path(args.out), BEGIN, END, section(rows, engine_rows, adapter, command, args.reps, args.trials))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
