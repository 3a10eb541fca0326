#!/usr/bin/env python3
"""Micro-benchmark of the matmul kernels on GPT-2-small's shapes, old entry vs new (issue 15).

    python3 tools/bench_kernels.py                       # int8, decode N=1 and prefill N=64
    python3 tools/bench_kernels.py --schemes int8 q4 --reps 10 --rounds 5
    python3 tools/bench_kernels.py --page                # the default model's shape in the page

For each matrix of one GPT-2-small layer (c_attn 768x2304, c_proj 768x768, c_fc 768x3072,
mlp c_proj 3072x768) and the logits against the tied wte (50257x768, one vocabulary chunk
at int8/q4) it times, on native WebGPU (wgpu-py; lavapipe here):
  * decode (N = 1): matmul.wgsl's rowwise entry (the old default), its tiled entry (what
    SwiftShader used), and matmul_splitk.wgsl's two passes in each shader variant the adapter
    compiles (plain shifts, unpack4xI8, subgroup shuffles);
  * prefill (N = 64): matmul.wgsl's tiled entry (the old one) and matmul_prefill.wgsl (64 x 64
    tiles from 16-byte loads) in each variant.
Each figure: --reps dispatches of one kernel in one submit for c_attn at N = 1 (fewer for
bigger work), then a 16-byte readback to wait, divided by that count; the median over --rounds rounds, the entries interleaved within each round
so that load on the machine falls on all of them alike. Wall-clock per dispatch, not GPU
timestamps. Writes a section of bench/results.md naming the adapter. Not a test.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))
sys.path.insert(0, str(ROOT / "tools"))

from bench import machine  # noqa: E402
from bench_browser import write_block  # noqa: E402
from glassbox import quant  # noqa: E402
from glassbox.gpu import kernels as K  # noqa: E402
from glassbox.gpu.backend import Copy, Dispatch  # noqa: E402
from glassbox.gpu.native import NativeBackend, run_sync  # noqa: E402

BEGIN, END = "<!-- kernel-bench:begin -->", "<!-- kernel-bench:end -->"
PAGE_BEGIN, PAGE_END = "<!-- kernel-bench-page:begin -->", "<!-- kernel-bench-page:end -->"
D, F, V = 768, 3072, 50257
SHAPES = {  # name -> (IN, OUT, epilogue, bias)
    "c_attn 768x2304": (D, 3 * D, K.EPILOGUE_NONE, True),
    "attn c_proj 768x768 +res": (D, D, K.EPILOGUE_RESIDUAL, True),
    "c_fc 768x3072 +gelu": (D, F, K.EPILOGUE_GELU, True),
    "mlp c_proj 3072x768 +res": (F, D, K.EPILOGUE_RESIDUAL, True),
    "logits 768x50257": (D, V, K.EPILOGUE_NONE, False),
}


class Case:
    """One matmul's buffers on the device, and its dispatch list per entry."""

    def __init__(self, be, scheme: str, n: int, n_in: int, n_out: int, epilogue: int, bias: bool, rng):
        self.be, self.n = be, n
        w = (0.05 * rng.standard_normal((n_out, n_in))).astype(np.float32)
        q, scale = quant.quantize(w, scheme)
        self.constants = {"IN": n_in, "OUT": n_out, "SCHEME": K.SCHEME_CODES[scheme], "EPILOGUE": epilogue,
                          "HAS_BIAS": bias, "STORE_PRE": False}
        self.scheme, self.n_in, self.n_out = scheme, n_in, n_out

        def upload(array, label):
            data = np.ascontiguousarray(array)
            buffer = be.create_buffer(max(16, data.nbytes), "storage", label)
            be.write_buffer(buffer, data)
            return buffer

        dummy = upload(np.zeros(4, np.float32), "dummy")
        self.buffers = {
            "x": upload(rng.standard_normal((n, n_in)).astype(np.float32), "x"),
            "res": upload(rng.standard_normal((n, n_out)).astype(np.float32), "res"),
            "w": upload(q, "w"), "scale": dummy if scale is None else upload(scale, "scale"),
            "bias": upload(rng.standard_normal(n_out).astype(np.float32), "bias"),
            "pre": be.create_buffer(16, "storage", "pre"),
            "out": be.create_buffer(4 * n * n_out, "storage", "out"),
        }
        self.part = be.create_buffer(max(16, K.splitk_part_bytes(n_in, n_out, scheme)), "storage", "part")
        self.params = be.create_buffer(16, "uniform", "params")
        be.write_buffer(self.params, K.params_array(n, n, 0))
        self.readback = be.create_buffer(16, "readback", "readback")
        self._layouts = {}

    def _group(self, kernel, extra_buffers):
        if kernel.name not in self._layouts:
            self._layouts[kernel.name] = self.be.create_layout(kernel.kinds)
        layout = self._layouts[kernel.name]
        buffers = {"params": self.params, **self.buffers, **extra_buffers}
        return layout, self.be.create_bind_group(layout, [(b, 0, b.size) for b in kernel.order(buffers)])

    def dispatches(self, entry: str, features=frozenset(), lanes: int = K.SPLITK_LANES) -> list:
        if entry == "prefill":
            layout, group = self._group(K.MATMUL_PREFILL, {})
            launches = [K.prefill_launch(self.n, self.n_out)]
            kernel = K.MATMUL_PREFILL
        elif entry == "splitk":
            layout, group = self._group(K.MATMUL_SPLITK, {"part": self.part})
            launches = K.splitk_launches(self.n_in, self.n_out, self.scheme, lanes)
            kernel = K.MATMUL_SPLITK
        else:
            layout, group = self._group(K.MATMUL, {})
            rowwise_max = K.ROWWISE_MAX_TOKENS if entry == "rowwise" else 0
            launches = [K.matmul_launch(self.n, self.n_out, rowwise_max=rowwise_max)]
            assert launches[0][0] == entry, (launches[0][0], entry)
            kernel = K.MATMUL
        out = []
        for name, extra, grid in launches:
            pipeline = run_sync(self.be.create_pipeline(kernel.source(features), name, {**self.constants, **extra},
                                                        layout, f"{kernel.name}.{name}"))
            out.append(Dispatch(pipeline, group, grid))
        return out

    def seconds(self, dispatches: list, reps: int) -> float:
        commands = dispatches * reps + [Copy(self.buffers["out"], 0, self.readback, 0, 16)]
        started = time.perf_counter()
        self.be.submit(commands)
        run_sync(self.be.read([(self.readback, 0, 16)]))
        return (time.perf_counter() - started) / reps


# In the page (--page): the default model's shape (random int8 weights) on the browser's WebGPU
# adapter (SwiftShader in this project's headless Chromium), whole decode steps and a 64-token
# forward (logits only), each matmul entry on its own engine, interleaved.
PAGE_CODE = """
async def bench_kernels_page():
    import time, js
    import numpy as np
    from pyodide.ffi import to_js
    from glassbox import weights
    from glassbox.config import GPTConfig
    from glassbox.gpu import Engine
    from glassbox.gpu.browser import BrowserBackend
    be = await BrowserBackend.create(js.navigator.gpu, to_js, js.Object.fromEntries)
    config = GPTConfig(n_layer=4, n_head=4, n_embd=128, n_positions=256, vocab_size=50257)
    ck = weights.random_checkpoint(config, "int8", seed=3)
    out = {"adapter": be.info.describe(), "features": sorted(be.shader_features), "subgroup_min": be.subgroup_min_size}
    median = lambda t: sorted(t)[len(t) // 2] * 1000
    decode = {"matmul.wgsl tiled (old SwiftShader choice)": dict(rowwise_max_tokens=0, splitk_max_tokens=0),
              "matmul.wgsl rowwise (old default elsewhere)": dict(rowwise_max_tokens=4, splitk_max_tokens=0),
              "matmul_splitk.wgsl (new default)": dict(rowwise_max_tokens=0, splitk_max_tokens=4)}
    engines = {name: await Engine.create(be, ck, **options) for name, options in decode.items()}
    caches = {}
    for name, e in engines.items():
        caches[name] = e.new_cache()
        await e.forward(np.arange(8), cache=caches[name], capture="logits")
        await e.forward([1], cache=caches[name], capture="logits")
    times = {name: [] for name in engines}
    for step in range(STEPS):
        for name, e in engines.items():
            t0 = time.perf_counter()
            await e.forward([step + 2], cache=caches[name], capture="logits")
            times[name].append(time.perf_counter() - t0)
    out["decode_ms"] = {name: median(t) for name, t in times.items()}
    prefill = {"matmul.wgsl tiled (old)": await Engine.create(be, ck, prefill_min_tokens=10 ** 9),
               "matmul_prefill.wgsl (new default)": await Engine.create(be, ck)}
    times = {name: [] for name in prefill}
    ids = np.arange(64) * 7
    for r in range(ROUNDS + 1):
        for name, e in prefill.items():
            t0 = time.perf_counter()
            await e.forward(ids, capture="logits")
            if r:
                times[name].append(time.perf_counter() - t0)
    out["prefill_ms"] = {name: median(t) for name, t in times.items()}
    return out

await bench_kernels_page()
"""


def page_figures(steps: int, rounds: int) -> dict:
    """PAGE_CODE's figures from the page in the e2e tests' headless Chromium (tools/bench_browser.py)."""
    from bench_browser import ready_page

    with ready_page() as page:
        code = PAGE_CODE.replace("STEPS", str(steps)).replace("ROUNDS", str(rounds))
        return page.evaluate("code => window.glassbox_py(code)", code)


def entries_for(be, n: int) -> list[tuple[str, str, frozenset, int]]:
    """(label, entry, shader features, lanes) to time for N tokens."""
    if n > K.ROWWISE_MAX_TOKENS:
        out = [("tiled (old)", "tiled", frozenset(), 0), ("prefill shifts", "prefill", frozenset(), 0)]
        if "packed4x8" in be.shader_features:
            out.append(("prefill unpack4xI8", "prefill", frozenset({"packed4x8"}), 0))
        return out
    out = [("rowwise (old default)", "rowwise", frozenset(), 0), ("tiled", "tiled", frozenset(), 0),
           ("splitk shifts", "splitk", frozenset(), K.SPLITK_LANES)]
    if "packed4x8" in be.shader_features:
        out.append(("splitk unpack4xI8", "splitk", frozenset({"packed4x8"}), K.SPLITK_LANES))
    if "subgroups" in be.shader_features:
        lanes = min(K.SPLITK_LANES, be.subgroup_min_size)
        out.append((f"splitk subgroups ({lanes} lanes)", "splitk", frozenset({"packed4x8", "subgroups"}) & (
            be.shader_features), lanes))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schemes", nargs="+", default=["int8"], choices=["none", "int8", "q4"])
    ap.add_argument("--tokens", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--prefill-shapes", nargs="+", default=[name for name in SHAPES if not name.startswith("logits")],
                    choices=list(SHAPES), help="shapes timed for N > 4 (the 64-token logits take minutes on lavapipe)")
    ap.add_argument("--reps", type=int, default=8, help="dispatches per timed submit")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    ap.add_argument("--page", action="store_true", help="instead, time whole decode steps and a 64-token forward "
                    "of the default model's shape in the page (headless Chromium's WebGPU adapter)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = ap.parse_args(argv)
    command = "python3 tools/bench_kernels.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.page:
        before = machine()
        page = page_figures(steps=6, rounds=args.rounds)
        print(page, flush=True)
        write_block(Path(args.out), PAGE_BEGIN, PAGE_END, "\n".join(
            [PAGE_BEGIN, "## Matmul entries in the page (issue 15)", "", "```", command.strip(), "```", "",
             f"- machine at the start: {before}", f"- machine at the end: {machine()}", "", *page_lines(page), PAGE_END]))
        return 0
    before = machine()
    be = run_sync(NativeBackend.create())
    adapter = be.info.describe()
    print(adapter, "shader variants:", sorted(be.shader_features), "subgroup min", be.subgroup_min_size, flush=True)
    rng = np.random.default_rng(0)
    rows = []
    for scheme in args.schemes:
        for n in args.tokens:
            for shape in [s for s in args.shapes if n <= K.ROWWISE_MAX_TOKENS or s in args.prefill_shapes]:
                n_in, n_out, epilogue, bias = SHAPES[shape]
                case = Case(be, scheme, n, n_in, n_out, epilogue, bias, rng)
                entries = entries_for(be, n)
                lists = [case.dispatches(entry, features, lanes) for _, entry, features, lanes in entries]
                # --reps for c_attn's size at N = 1; fewer for bigger work (the logits: 1).
                reps = max(1, round(args.reps * D * 3 * D / (n_in * n_out * n)))
                times = [[] for _ in entries]
                for _ in range(args.rounds + 1):  # the first round warms up
                    for i, dispatches in enumerate(lists):
                        times[i].append(case.seconds(dispatches, reps))
                medians = [statistics.median(t[1:]) for t in times]
                for (label, *_), median, dispatches in zip(entries, medians, lists):
                    row = {"scheme": scheme, "n": n, "shape": shape, "entry": label, "ms": 1000 * median,
                           "vs": medians[0] / median, "dispatches": len(dispatches)}
                    rows.append(row)
                    print(f"{scheme:5} N={n:<3} {shape:26} {label:28} {row['ms']:9.3f} ms  "
                          f"x{row['vs']:.2f} vs {entries[0][0]}", flush=True)
    write_block(Path(args.out), BEGIN, END, section(rows, adapter, be, command.strip(), before, args))
    print(f"wrote {args.out}")
    return 0


def page_lines(page: dict) -> list[str]:
    lines = [f"In the page ({page['adapter']}; shader variants {', '.join(page['features']) or 'none'}, "
             f"smallest subgroup {page['subgroup_min'] or 'unknown'}): the default model's shape "
             "(L4 H4 D128, V 50257, random int8), logits only, medians, entries interleaved:", "",
             "| run | matmul entry | ms |", "|---|---|---:|"]
    lines += [f"| decode step (T ~ 10) | {name} | {ms:.0f} |" for name, ms in page["decode_ms"].items()]
    lines += [f"| 64-token forward | {name} | {ms:.0f} |" for name, ms in page["prefill_ms"].items()]
    return lines


def section(rows, adapter, be, command, before, args) -> str:
    lines = [BEGIN, "## Matmul kernels, GPT-2-small shapes (issue 15): old entry vs new", "",
             "```", command, "```", "",
             f"- adapter: {adapter} — a CPU adapter: these figures rank entries on this machine only; "
             "no real GPU was measured",
             f"- shader variants compiled here: {', '.join(sorted(be.shader_features)) or 'none'}"
             f"; smallest subgroup {be.subgroup_min_size or 'unknown'}",
             f"- machine at the start: {before}", f"- machine at the end: {machine()}",
             f"- wall time per matmul (splitk: its two dispatches, partial + reduce): {args.reps} dispatches "
             "in one submit for c_attn at N = 1, fewer for bigger work (down to 1), median of "
             f"{args.rounds} interleaved rounds after a warm-up", "",
             "| scheme | N | matmul | entry | ms per matmul | speed vs first entry |",
             "|---|---:|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scheme']} | {r['n']} | {r['shape']} | {r['entry']} | {r['ms']:.3f} | {r['vs']:.2f}x |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
