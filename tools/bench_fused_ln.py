#!/usr/bin/env python3
"""Benchmark the layer norm fused into the next matmul's prologue (issue 15, engine). Not a test.

    PYTHONPATH=py python3 tools/bench_fused_ln.py                 # GPT-2-small's shape, native
    PYTHONPATH=py python3 tools/bench_fused_ln.py --models default --trials 3
    PYTHONPATH=py python3 tools/bench_fused_ln.py --kernels       # per matmul, unfused vs LN
    PYTHONPATH=py python3 tools/bench_fused_ln.py --encode        # host encode time per step
    PYTHONPATH=py python3 tools/bench_fused_ln.py --grid          # split decode grid vs T

Two engines on the same random int8 checkpoint through wgpu-py: Engine(fuse_ln=False), every
layer norm its own layer_norm.wgsl dispatch (before), and the default (after: ln_1 and ln_2 in
c_attn's and c_fc's prologue where nothing reads them). Interleaved trials of: decode steps
as the page runs them (glassbox.gpu.decode_bench "after-top": forward_top, nothing else read
back; its dispatches per step, host time up to the readback wait, wall time), the same with
one layer shown ("after-shown": that layer keeps its separate layer norms), and a 64-token
forward reading back the logits (wall and this process's CPU time, which on a CPU adapter
includes llvmpipe's threads). Writes the "Fused layer norm" section of bench/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shlex
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

BEGIN, END = "<!-- fused-ln-bench:begin -->", "<!-- fused-ln-bench:end -->"
ENGINES = ("before", "after")  # fuse_ln False, True


async def measure(model: str, trials: int, steps: int, prompt: int) -> tuple[list[dict], str]:
    from glassbox import weights
    from glassbox.gpu import Engine
    from glassbox.gpu.decode_bench import decode_figures
    from glassbox.gpu.native import NativeBackend

    backend = await NativeBackend.create()
    config = MODELS[model]
    checkpoint = weights.random_checkpoint(config, "int8", seed=1)
    engines = {name: await Engine.create(backend, checkpoint, fuse_ln=name == "after") for name in ENGINES}
    ids = np.random.default_rng(0).integers(0, config.vocab_size, prompt)

    async def forward(engine) -> tuple[float, float, int]:
        wall, cpu = time.perf_counter(), time.process_time()
        await engine.forward(ids, capture="logits")
        return 1e3 * (time.perf_counter() - wall), 1e3 * (time.process_time() - cpu), _dispatches(engine)

    for engine in engines.values():  # warm-up: pipelines and plans of every case
        await forward(engine)
        for mode in ("after-top", "after-shown"):
            await decode_figures(engine, mode, steps=1)
    got: dict = {}
    for _ in range(trials):
        for name, engine in engines.items():
            for mode in ("after-top", "after-shown"):
                cpu = time.process_time()
                row = await decode_figures(engine, mode, steps=steps)
                row["cpu_ms"] = 1e3 * (time.process_time() - cpu) / (steps + 1)  # + the prompt's step
                got.setdefault((f"decode step ({mode})", name), []).append(row)
                print(model, name, mode, row, flush=True)
            wall, cpu, count = await forward(engine)
            got.setdefault((f"{prompt}-token forward (logits)", name), []).append(
                {"wall_ms": wall, "cpu_ms": cpu, "host_ms": None, "dispatches": count})
            print(model, name, "forward", wall, cpu, flush=True)
    rows = []
    for (what, name), values in got.items():
        med = lambda key: None if values[0][key] is None else statistics.median(v[key] for v in values)  # noqa: E731
        rows.append({"model": model, "what": what, "engine": name, "dispatches": values[0]["dispatches"],
                     "host_ms": med("host_ms"), "wall_ms": med("wall_ms"), "cpu_ms": med("cpu_ms"),
                     "trials": len(values)})
    describe = backend.info.describe()
    backend.destroy()
    return rows, describe


def _dispatches(engine) -> int:
    from glassbox.gpu.backend import Dispatch

    return sum(isinstance(c, Dispatch) for c in engine.last_plan.commands)


def section(rows: list[dict], adapter: str, command: str, load_before: str) -> str:
    lines = [BEGIN, "## Fused layer norm: fewer dispatches per step (issue 15, engine)", "",
             f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with `{command}` on "
             f"{adapter}; {machine()} (load average before the run: {load_before}).", "",
             "**A CPU adapter (llvmpipe), not a GPU**: no GPU was lent to this session. Before = "
             "`Engine(fuse_ln=False)`, every layer norm its own `layer_norm.wgsl` dispatch (the default on "
             "CPU adapters); after = `Engine(fuse_ln=True)` (the default on GPUs), ln_1 and ln_2 normalized "
             "in c_attn's and c_fc's prologue (matmul_splitk.wgsl for "
             "decode, matmul_prefill.wgsl for 17+ tokens; matmul_common.wgsl LN) in every layer whose ln "
             "tensors are not read back; ln_f keeps its dispatch (every forward keeps it for `read_kept`). "
             "Same random int8 checkpoint, interleaved trials, medians. Decode: the greedy steps of "
             "`glassbox.gpu.decode_bench` after an 8-token prompt, after-top = `forward_top` only (the "
             "page's continuous generation), after-shown = top-k + one layer kept (`keep=True`: that run "
             "keeps every layer norm, so it is unfused in both). Host = Python side up to the readback "
             "wait (plan, writes, encoding, submit); CPU = this process's CPU time, llvmpipe's threads "
             "included, per step (the prompt's step counted in).", "",
             "| model | run | engine | dispatches | host ms | wall ms | CPU ms | after / before (wall) | "
             "after / before (CPU) | trials |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = {(r["model"], r["what"]): r for r in rows if r["engine"] == "before"}
    for r in rows:
        b = base[(r["model"], r["what"])]
        host = "" if r["host_ms"] is None else f"{r['host_ms']:.2f}"
        lines.append(f"| {r['model']} | {r['what']} | {r['engine']} | {r['dispatches']} | {host} | "
                     f"{r['wall_ms']:.1f} | {r['cpu_ms']:.1f} | {r['wall_ms'] / b['wall_ms']:.2f}x | "
                     f"{r['cpu_ms'] / b['cpu_ms']:.2f}x | {r['trials']} |")
    lines += ["", END]
    return "\n".join(lines)


ENCODE_BEGIN, ENCODE_END = "<!-- fused-ln-encode:begin -->", "<!-- fused-ln-encode:end -->"


def encode_section(model: str, reps: int, command: str, load_before: str) -> str:
    """Host encode time alone: one decode step's plan (forward_top, nothing else read back)
    encoded into a command buffer and finished, not submitted, ``reps`` times per engine,
    interleaved; so the GPU's (llvmpipe's) work does not fall inside the timing."""
    from glassbox import weights
    from glassbox.gpu import Engine
    from glassbox.gpu.backend import Dispatch, encode
    from glassbox.gpu.native import NAMES, NativeBackend, run_sync

    be = run_sync(NativeBackend.create())
    config = MODELS[model]
    checkpoint = weights.random_checkpoint(config, "int8", seed=1)
    plans = {}
    for name in ENGINES:
        engine = run_sync(Engine.create(be, checkpoint, fuse_ln=name == "after"))
        cache = engine.new_cache()
        run_sync(engine.forward_top(list(range(8)), cache=cache))
        run_sync(engine.forward_top([8], cache=cache))
        plans[name] = engine.last_plan.commands
    times = {name: [] for name in ENGINES}
    for _ in range(reps):
        for name, commands in plans.items():
            started = time.perf_counter()
            encoder = be.device.create_command_encoder()
            encode(encoder, commands, NAMES)
            encoder.finish()
            times[name].append(time.perf_counter() - started)
    lines = [ENCODE_BEGIN, "### Host encode time of a decode step", "",
             f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with `{command}` on "
             f"{be.info.describe()}; {machine()} (load average before the run: {load_before}). {model}'s decode "
             f"plan (forward_top, T = 9) encoded into one command buffer through wgpu-py and finished, not "
             f"submitted; {reps} repetitions per engine, interleaved; median and the fastest decile.", "",
             "| engine | dispatches | encode ms (median) | encode ms (10th percentile) | us per dispatch (median) |",
             "|---|---:|---:|---:|---:|"]
    for name, commands in plans.items():
        count = sum(isinstance(c, Dispatch) for c in commands)
        ordered = sorted(times[name])
        median = statistics.median(ordered)
        lines.append(f"| {name} ({'fuse_ln=True' if name == 'after' else 'fuse_ln=False'}) | {count} | "
                     f"{1e3 * median:.3f} | {1e3 * ordered[len(ordered) // 10]:.3f} | {1e6 * median / count:.1f} |")
        print(lines[-1], flush=True)
    be.destroy()
    return "\n".join(lines + ["", ENCODE_END])


def interleaved(variants: dict, timed, trials: int, warm=None) -> dict[str, list]:
    """Each variant once to warm up (``warm``, else ``timed``), then ``trials`` rounds that time
    every variant in turn, so that a change of load touches all alike: {name: [timed(...)]}."""
    for commands in variants.values():
        (warm or timed)(commands)
    times = {name: [] for name in variants}
    for _ in range(trials):
        for name, commands in variants.items():
            times[name].append(timed(commands))
    return times


KERNEL_BEGIN, KERNEL_END = "<!-- fused-ln-kernels:begin -->", "<!-- fused-ln-kernels:end -->"


def kernel_section(reps: int, trials: int, command: str, load_before: str) -> str:
    """Per matmul that follows a layer norm (GPT-2-small's c_attn and c_fc, int8), at N = 1
    (matmul_splitk) and N = 64 (matmul_prefill): layer_norm.wgsl then the matmul (before)
    against the matmul with LN (after), interleaved, CPU and wall time per pair of calls."""
    from bench_kernels import Case
    from glassbox.gpu import kernels as K
    from glassbox.gpu.backend import Copy, Dispatch
    from glassbox.gpu.native import NativeBackend, run_sync

    be = run_sync(NativeBackend.create())
    rng = np.random.default_rng(0)
    D = 768
    lines = [KERNEL_BEGIN, "### Per kernel: layer_norm + matmul vs the matmul with LN", "",
             f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with `{command}` on "
             f"{be.info.describe()}; {machine()} (load average before the run: {load_before}). GPT-2-small's "
             f"shapes, int8, the adapter's own shader variant; median of {trials} submits of {reps} back-to-back "
             "repetitions, per repetition; CPU = this process's CPU time (llvmpipe's threads included).", "",
             "| matmul | N | kernel | before: layer_norm + matmul, CPU ms | after: matmul with LN, CPU ms | "
             "after / before (CPU) | before wall ms | after wall ms |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    features = frozenset(f for f in ("packed4x8", "subgroups") if f in be.shader_features)
    lanes = min(K.SPLITK_LANES, be.subgroup_min_size) if "subgroups" in features else K.SPLITK_LANES
    for name, n_out, epilogue in (("c_attn 768x2304", 3 * D, K.EPILOGUE_NONE),
                                  ("c_fc 768x3072 +gelu", 4 * D, K.EPILOGUE_GELU)):
        for n in (1, 64):
            case = Case(be, "int8", n, D, n_out, epilogue, True, rng)
            entry = "splitk" if n <= K.SPLITK_MAX_TOKENS else "prefill"
            before = case.dispatches(entry, features if entry == "splitk" else features - {"subgroups"}, lanes)
            case.constants.update(LN=True, EPS=1e-5)  # res: >= 2 x IN floats of weight, bias
            after = case.dispatches(entry, features if entry == "splitk" else features - {"subgroups"}, lanes)
            ln = {label: be.create_buffer(nbytes, "storage", label) for label, nbytes in (
                ("weight", 4 * D), ("bias", 4 * D), ("out", 4 * n * D), ("mean", 4 * n), ("var_", 4 * n))}
            layout = be.create_layout(K.LAYER_NORM.kinds)
            group = be.create_bind_group(layout, [(b, 0, b.size) for b in K.LAYER_NORM.order(
                {"params": case.params, "x": case.buffers["x"], **ln})])
            entry_ln, extra, grid = K.layer_norm_launch(n)
            pipeline = run_sync(be.create_pipeline(K.LAYER_NORM.source(), entry_ln, {"D": D, "EPS": 1e-5, **extra},
                                                   layout, "layer_norm"))
            # before: the matmul reads x itself, not layer_norm's out (the same work; its values
            # do not matter to a timing)
            variants = {"before": [Dispatch(pipeline, group, grid)] + before, "after": after}

            def timed(commands):
                probe = [Copy(case.buffers["out"], 0, case.readback, 0, 16)]
                wall, cpu = time.perf_counter(), time.process_time()
                be.submit(commands * reps + probe)
                run_sync(be.read([(case.readback, 0, 16)]))
                return (time.perf_counter() - wall) / reps, (time.process_time() - cpu) / reps

            times = interleaved(variants, timed, trials)
            cpu = {v: 1e3 * statistics.median(c for _, c in t) for v, t in times.items()}
            wall = {v: 1e3 * statistics.median(w for w, _ in t) for v, t in times.items()}
            lines.append(f"| {name} | {n} | matmul_{entry} | {cpu['before']:.2f} | {cpu['after']:.2f} | "
                         f"{cpu['after'] / cpu['before']:.2f}x | {wall['before']:.2f} | {wall['after']:.2f} |")
            print(lines[-1], flush=True)
    be.destroy()
    return "\n".join(lines + ["", KERNEL_END])


GRID_BEGIN, GRID_END = "<!-- decode-grid-bench:begin -->", "<!-- decode-grid-bench:end -->"


def grid_section(reps: int, trials: int, command: str, load_before: str) -> str:
    """attention_decode.wgsl at GPT-2-small's shape, N = 1: the split grid of all SPLITS (the
    engine's before) against K.decode_grid(T) (after), interleaved (bench_attention's harness)."""
    import math

    from bench_attention import _Kernels
    from glassbox.gpu.native import NativeBackend, run_sync

    backend = run_sync(NativeBackend.create())
    rng = np.random.default_rng(0)
    lines = [GRID_BEGIN, "## Split decode attention: the grid follows T (issue 15, engine)", "",
             f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with `{command}` on "
             f"{backend.info.describe()}; {machine()} (load average before the run: {load_before}). A CPU "
             "adapter, not a GPU.", "",
             "attention_decode.wgsl (both passes), GPT-2-small's shape (12 heads x 64, C = 1024), one query: "
             "before, every plan launched all 32 splits per head whatever T (empty ones exit early); after, "
             "the engine keys decode plans by a power-of-two bucket of T and launches `K.decode_grid(T)` "
             "splits (the combine pass reads only the splits that hold keys). Median of "
             f"{trials} submits of {reps} back-to-back calls, per call, interleaved; CPU = this process's "
             "CPU time (llvmpipe's threads included).", "",
             "| T | grid | split workgroups | CPU ms per call | wall ms per call | after / before (CPU) |",
             "|---:|---|---:|---:|---:|---:|"]
    for t in (9, 64, 256, 1024):
        kernels = _Kernels(backend, run_sync, 1, t - 1, rng)
        variants = kernels.variants()
        chosen = {"before (32 splits)": variants["new: split decode"],
                  "after (grid for T)": variants["new: split decode, grid for T"]}
        times = interleaved(chosen, lambda commands: kernels.seconds(commands, reps), trials,
                            warm=lambda commands: kernels.seconds(commands, 1))
        cpu = {name: statistics.median(c for _, c in v) / reps for name, v in times.items()}
        for name, commands in chosen.items():
            wall = statistics.median(w for w, _ in times[name]) / reps
            lines.append(f"| {t} | {name} | {math.prod(commands[0].workgroups)} | {1e3 * cpu[name]:.3f} | "
                         f"{1e3 * wall:.3f} | {cpu[name] / cpu['before (32 splits)']:.2f}x |")
            print(lines[-1], flush=True)
    backend.destroy()
    return "\n".join(lines + ["", GRID_END])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["gpt2-small"], choices=sorted(MODELS))
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="decode steps per trial")
    parser.add_argument("--prompt", type=int, default=64, help="tokens of the timed forward")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--grid", action="store_true",
                        help="instead: the split decode attention's grid, all splits vs K.decode_grid(T)")
    parser.add_argument("--encode", action="store_true",
                        help="instead: the host's encode time of one decode step's plan, per engine")
    parser.add_argument("--kernels", action="store_true",
                        help="instead: per matmul, layer_norm + matmul vs the matmul with LN")
    args = parser.parse_args(argv)
    import os

    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python3 tools/bench_fused_ln.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.grid:
        write_block(args.out, GRID_BEGIN, GRID_END, grid_section(20, args.trials, command.strip(), load_before))
        return 0
    if args.encode:
        write_block(args.out, ENCODE_BEGIN, ENCODE_END, encode_section(args.models[0], 200, command.strip(),
                                                                        load_before))
        return 0
    if args.kernels:
        write_block(args.out, KERNEL_BEGIN, KERNEL_END, kernel_section(10, args.trials, command.strip(),
                                                                        load_before))
        return 0
    rows, adapter = [], ""
    for model in args.models:
        got, adapter = asyncio.run(measure(model, args.trials, args.steps, args.prompt))
        rows += got
    write_block(args.out, BEGIN, END, section(rows, adapter, command.strip(), load_before))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
