#!/usr/bin/env python3
"""Time the experiments (glassbox/experiments.py) on numpy with the committed default model.

    python3 tools/bench_experiments.py                 # prompts of 7, 64 and 256 tokens
    python3 tools/bench_experiments.py --lengths 7 32

For each prompt length: the forward pass (full trace), the logit lens (every stream at every
position), the "which heads matter" sweep (each of the L x H heads ablated alone, zero and mean),
activation patching (every stream x position and every head) and direct logit attribution.
Each figure is the median of --repeat runs. Prints a table and writes bench/experiments.md with
the machine and this exact command. Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "py"))
sys.path.insert(0, str(ROOT / "tools"))

from bench import machine  # noqa: E402
from glassbox import experiments as ex  # noqa: E402
from glassbox.model import load  # noqa: E402

TEXT = "The open() function returns a file"


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "weights" / "mini"))
    ap.add_argument("--lengths", type=int, nargs="+", default=[7, 64, 256])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--patch-max", type=int, default=64,
                    help="time the patching grid ((L+1) x N + L x H re-runs) only up to this many tokens")
    ap.add_argument("--out", default=str(ROOT / "bench" / "experiments.md"))
    args = ap.parse_args(argv)
    before = machine()
    model = load(args.model, str(ROOT / "vendor" / "gpt2"))
    P, C = model.params, model.config
    base = model.prompt(TEXT * 64).ids
    rows = []
    for n in args.lengths:
        ids = base[:n]
        corrupt_ids = ids.copy()
        corrupt_ids[1] = 11925  # " len" for " open"
        trace, corrupt = model.forward(ids), model.forward(corrupt_ids)
        target = int(np.argmax(trace.logits[-1]))
        row = {"tokens": n,
               "forward (full trace)": median_seconds(lambda: model.forward(ids), args.repeat),
               "logit lens": median_seconds(lambda: ex.logit_lens(P, C, trace), args.repeat),
               "sweep, zero": median_seconds(lambda: ex.sweep(P, C, trace, target), args.repeat),
               "sweep, mean": median_seconds(lambda: ex.sweep(P, C, trace, target, mean=True), args.repeat),
               "patching grid": (median_seconds(lambda: ex.patching(P, C, trace, corrupt, target), args.repeat)
                                 if n <= args.patch_max else None),
               "attribution": median_seconds(lambda: ex.attribution(P, C, trace, target), args.repeat)}
        rows.append(row)
        print("  ".join(f"{k} {v:.3f} s" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    keys = list(rows[0])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blas = f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} " if "OPENBLAS_NUM_THREADS" in os.environ else ""
    lines = [f"# Experiments on numpy: {model.name} (L{C.n_layer} H{C.n_head} D{C.n_embd}, {C.n_layer * C.n_head} heads)",
             "", f"Measured {when} with:", "", "```", blas + "python3 " + shlex.join(["tools/bench_experiments.py", *(argv or sys.argv[1:])]),
             "```", "", f"- machine at the start: {before}", f"- machine at the end: {machine()}",
             f"- BLAS threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset (all cores)')}",
             f"- median of {args.repeat} runs; a re-run after an ablation or a patch starts at the first changed layer "
             "(the clean run's stream there), so the blocks before it are not run again", "",
             "| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(str(v) if k == "tokens" else "not timed" if v is None else f"{v * 1000:.0f} ms"
                                       for k, v in row.items()) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
