#!/usr/bin/env python3
"""Benchmark the query/key map (issue 12): time to compute and draw the matrix view.

    python3 tools/bench_qk.py                  # native numpy: default model + GPT-2-small's shape
    python3 tools/bench_qk.py --page           # also the default model in the page (headless chromium)
    python3 tools/bench_qk.py --webgpu         # also native WebGPU (wgpu-py; lavapipe here)
    python3 tools/bench_qk.py --page-webgpu    # also the page with ?backend=webgpu (SwiftShader here)

Three costs, each for every head of the model (the matrix view): **q/k** — running the corpus
(weights/mini/qk-corpus.json) through the numpy reference blocks (once per model; the page
caches it); **projection** — alignment + exact PCA of every head over corpus + one user
sentence (each time the text or an option changes); **drawing** — the RGBA pixel buffers of
all L×H canvases (each time colour, search or zoom changes; ``app/views/qk.raster``). The
GPT-2-small shape uses random weights (``weights.random_params``) and the same corpus ids.
``--page`` boots the app in Debian's chromium (Playwright, as the e2e tests do), clicks
"Build the map" and reads the timings the page measured (numpy under Pyodide; the corpus q/k
run through the explainer's runner: numpy, or WebGPU with ``--page-webgpu``, where the PCA
runs on WebGPU too). ``--webgpu`` measures the same three costs natively on wgpu-py's adapter:
the corpus q/k through ``app.gpu_runner.WebGPURunner.tensors`` (the page's code path: one
engine forward per sentence from its own cache that stops after the last layer and reads
back q, k and att; also timed the old way, with ln_f and the logits, for the ratio) and
every head's PCA through ``glassbox.gpu.qk_pca`` (the drawing is the same numpy either way).
Writes its section of bench/results.md. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one thread, CPU time comparable
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))
sys.path.insert(0, str(ROOT / "tools"))

from app.views import qk as view  # noqa: E402
from bench import machine  # noqa: E402  (tools/bench.py)
from bench_browser import write_block  # noqa: E402
from glassbox import qk, weights  # noqa: E402
from glassbox.config import GPTConfig  # noqa: E402
from glassbox.model import load  # noqa: E402

BEGIN, END = "<!-- qk-bench:begin -->", "<!-- qk-bench:end -->"
GPT2_SMALL = GPTConfig(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
USER = "The file is opened, read and closed again."


def draw_all(data: qk.QKSet, xy: dict, labels: list[str], px: int) -> None:
    P = data.n_tokens
    user = np.zeros(2 * P, bool)
    pos = np.concatenate([data.position] * 2)
    for (layer, head), coords in xy.items():
        colours = view.point_colours("kind", P, pos, labels + labels, None)
        frame = view.Frame.fit(coords, px, px)
        view.raster(px, px, *frame.pixels(coords), view.head_layers(colours, user, None, 3))


def timed(fn):
    """(result, wall seconds, CPU seconds of this process): on a shared machine the CPU time
    is the figure to read, the wall time includes waiting for a core."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, params, config: GPTConfig, corpus_ids, user_ids) -> dict:
    data, qk_s, qk_cpu = timed(lambda: qk.collect(params, config, corpus_ids + [user_ids]))
    xy, project_s, project_cpu = timed(lambda: {(l, h): qk.project(data, l, h)
                                                 for l in range(config.n_layer) for h in range(config.n_head)})
    labels = [str(i) for i in data.token_id]
    px = 132 if config.n_layer * config.n_head <= 36 else 96
    _, draw_s, draw_cpu = timed(lambda: draw_all(data, xy, labels, px))
    return {"model": name, "heads": config.n_layer * config.n_head, "tokens": data.n_tokens,
            "qk_s": qk_s, "project_s": project_s, "draw_s": draw_s,
            "qk_cpu": qk_cpu, "project_cpu": project_cpu, "draw_cpu": draw_cpu}


def measure_webgpu(name: str, checkpoint, corpus_ids, user_ids) -> dict:
    """The corpus q/k and the PCA of every head on native WebGPU (wgpu-py), as the page runs them."""
    import asyncio

    from app.gpu_runner import WebGPURunner
    from app.runner import ReferenceRunner
    from glassbox.gpu import Engine
    from glassbox.gpu.native import NativeBackend
    from glassbox.gpu.qk_pca import QKPCA

    config = checkpoint.config

    async def go():
        backend = await NativeBackend.create()

        async def engine():
            return await Engine.create(backend, checkpoint)

        runner = WebGPURunner(engine, ReferenceRunner(checkpoint.dequantized(), config))
        await runner.start()
        assert runner.status.backend == "webgpu", runner.status.reason
        names = qk.qk_names(config.n_layer)
        await runner.tensors(user_ids, names)  # compiles the pipelines
        t0 = time.perf_counter()
        parts = [qk.from_tensors(await runner.tensors(ids, names), config.n_layer) for ids in corpus_ids + [user_ids]]
        qk_s = time.perf_counter() - t0
        # the same forwards as the page ran them before issue 12's forward_layers: every layer,
        # then ln_f and the logits [N, V], read back
        wanted = set(names).__contains__
        t0 = time.perf_counter()
        for ids in corpus_ids + [user_ids]:
            await runner.engine.forward(np.asarray(ids, dtype=np.int64), capture=wanted)
        full_s = time.perf_counter() - t0
        data = qk.stack(parts)
        pca = QKPCA(backend)
        points = qk.all_head_points(data)
        await pca.project(points[:1])  # compiles the pipelines
        t0 = time.perf_counter()
        xy = await pca.project(qk.all_head_points(data))
        project_s = time.perf_counter() - t0
        return data, xy, qk_s, full_s, project_s, backend.info.describe()

    data, xy, qk_s, full_s, project_s, adapter = asyncio.run(go())
    H = config.n_head
    coords = {(g // H, g % H): xy[g] for g in range(xy.shape[0])}
    labels = [str(i) for i in range(data.n_tokens)]
    px = 132 if config.n_layer * config.n_head <= 36 else 96
    _, draw_s, _ = timed(lambda: draw_all(data, coords, labels, px))
    return {"model": name, "heads": config.n_layer * H, "tokens": data.n_tokens, "sentences": len(corpus_ids),
            "qk_s": qk_s, "qk_full_s": full_s, "project_s": project_s, "draw_s": draw_s, "adapter": adapter}


def page_figures(webgpu: bool = False) -> dict:
    from bench_browser import READY, ready_page  # tools/bench_browser.py

    with ready_page("/?backend=webgpu" if webgpu else "/?backend=numpy") as page:
        page.get_by_test_id("prompt").fill(USER)
        page.get_by_test_id("run").click()
        page.wait_for_timeout(500)
        page.wait_for_function(READY, timeout=300_000)
        page.get_by_test_id("open-qk").click()  # the map's navigation opens its view in place
        page.wait_for_selector("#view-qk[data-open=true]")
        page.get_by_test_id("qk-build").click()
        page.wait_for_selector("[data-testid=qk-matrix][data-draws]", timeout=1_800_000)
        py = "code => window.glassbox_py(code)"
        timings = page.evaluate(py, "dict(explainer.qk.timings, tokens=int(explainer.qk.data.n_tokens), "
                                    "runner=explainer.runner_name, pca=explainer.qk.pca_backend)")
        redraw = page.evaluate(py, "import time\nt = time.perf_counter()\nexplainer.qk.paint_all()\ntime.perf_counter() - t")
    return {**timings, "redraw_s": redraw}


def row_kind(line: str) -> str:
    """Which measurement a table row of the section is: native-numpy, native-webgpu, page, page-webgpu."""
    if line.startswith("| native"):
        return "native-webgpu" if line.startswith("| native WebGPU") else "native-numpy"
    return "page-webgpu" if "corpus q/k on webgpu" in line else "page"


def earlier_rows(text: str) -> list[str]:
    """The table rows of the section already in results.md (empty if none)."""
    if BEGIN not in text or END not in text:
        return []
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    return [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| where")]


def section(rows: list[dict], page: dict | None, command: str, gpu_rows=(), page_gpu: dict | None = None,
            kept: list[str] = ()) -> str:
    lines = [BEGIN, "## The query/key map (issue 12)", "",
             f"`{command}` on {machine()}. Every head of the model; corpus = weights/mini/qk-corpus.json "
             f"plus one user sentence. q/k runs once per model (cached); projection reruns when the text or an "
             f"option changes; drawing reruns on colour, search or zoom.", "",
             "Native rows: CPU seconds of the process (wall-clock in brackets: the machine was shared, "
             "so the wall time includes waiting for a core); one thread (OPENBLAS_NUM_THREADS=1).", "",
             "| where | model shape | heads | tokens | q/k of the corpus | PCA, every head | draw every head |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| native numpy | {r['model']} | {r['heads']} | {r['tokens']} | {r['qk_cpu']:.2f} s ({r['qk_s']:.1f} s) | "
                     f"{r['project_cpu'] * 1000:.0f} ms ({r['project_s'] * 1000:.0f} ms) | "
                     f"{r['draw_cpu'] * 1000:.0f} ms ({r['draw_s'] * 1000:.0f} ms) |")
    for r in gpu_rows:
        lines.append(f"| native WebGPU ({r['adapter'].split(' [')[0]}) | {r['model']} | {r['heads']} | {r['tokens']} | "
                     f"{r['qk_s']:.2f} s ({r['sentences']} sentences; {r['qk_full_s']:.2f} s = "
                     f"{r['qk_full_s'] / r['qk_s']:.1f}x with ln_f and the logits, as before) | {r['project_s'] * 1000:.0f} ms | "
                     f"{r['draw_s'] * 1000:.0f} ms |")
    for p in (page, page_gpu):
        if p:
            lines.append(f"| page (Pyodide; corpus q/k on {p.get('corpus_backend', 'numpy')}, PCA on {p.get('pca', 'numpy')}) "
                         f"| default (weights/mini) | 16 | {p['tokens']} | "
                         f"{p['corpus_s']:.2f} s (incl. fetch) | {p['project_s'] * 1000:.0f} ms | "
                         f"{p['paint_s'] * 1000:.0f} ms (redraw {p['redraw_s'] * 1000:.0f} ms, incl. the large head) |")
    lines += list(kept)
    if kept:
        lines += ["", f"The last {len(kept)} row(s) were not measured by this command: they are kept from an earlier "
                  "run of this tool (its tokens column gives the corpus it ran on)."]
    lines += ["", "WebGPU rows: wall-clock seconds (the GPU work is not CPU time of this process). lavapipe and "
              "SwiftShader are software adapters on this 2-core machine: they prove the WebGPU path end to end, "
              "they are not speed references. The corpus q/k run one engine forward per sentence that stops "
              "after the last layer (Engine.forward_layers: no ln_f, no logits); the native rows also time the "
              "forwards the page ran before, with the logits [N, V] computed and read back, in the same run. "
              "No GPU machine was lent to this session.",
              END]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--page", action="store_true", help="also measure the default model in the page")
    ap.add_argument("--gpt2-sentences", type=int, default=0, help="corpus sentences for GPT-2's shape (0 = all)")
    ap.add_argument("--webgpu", action="store_true", help="also measure native WebGPU (wgpu-py)")
    ap.add_argument("--webgpu-gpt2-sentences", type=int, default=16,
                    help="corpus sentences for GPT-2's shape on native WebGPU (0 = all; lavapipe is slow)")
    ap.add_argument("--page-webgpu", action="store_true", help="also measure the page with ?backend=webgpu")
    ap.add_argument("--skip-numpy", action="store_true", help="measure no native numpy rows (the section keeps the earlier ones)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = ap.parse_args(argv)
    mini = load(str(ROOT / "weights" / "mini"), vocab_dir=str(ROOT / "vendor" / "gpt2"))
    corpus = qk.load_folder(str(ROOT / "weights" / "mini"))[1]
    user = mini.prompt(USER).ids
    mini_name, gpt2_name = "default (weights/mini, L4 H4 D128)", "GPT-2-small (random weights, L12 H12 D768)"
    gpt2_params = weights.random_params(GPT2_SMALL, seed=0)
    rows = []
    if not args.skip_numpy:
        rows.append(measure(mini_name, mini.params, mini.config, corpus.ids, user))
        print(rows[-1], flush=True)
        ids = corpus.ids[:args.gpt2_sentences] if args.gpt2_sentences else corpus.ids
        rows.append(measure(gpt2_name, gpt2_params, GPT2_SMALL, ids, user))
        print(rows[-1], flush=True)
    gpu_rows = []
    if args.webgpu:
        gpu_rows.append(measure_webgpu(mini_name, mini.checkpoint, corpus.ids, user))
        print(gpu_rows[-1], flush=True)
        n = args.webgpu_gpt2_sentences
        gpu_rows.append(measure_webgpu(gpt2_name, weights.random_checkpoint(GPT2_SMALL, "int8", params=gpt2_params),
                                       corpus.ids[:n] if n else corpus.ids, user))
        print(gpu_rows[-1], flush=True)
    page = page_figures() if args.page else None
    page_gpu = page_figures(webgpu=True) if args.page_webgpu else None
    for p in (page, page_gpu):
        if p:
            print(p, flush=True)
    command = "python3 tools/bench_qk.py" + "".join(f" --{flag}" for flag in ("skip-numpy", "page", "webgpu", "page-webgpu")
                                                    if getattr(args, flag.replace("-", "_")))
    out = Path(args.out)
    measured = {kind for kind, got in (("native-numpy", rows), ("native-webgpu", gpu_rows), ("page", page),
                                       ("page-webgpu", page_gpu)) if got}
    kept = [line for line in earlier_rows(out.read_text(encoding="utf-8") if out.exists() else "")
            if row_kind(line) not in measured]
    write_block(out, BEGIN, END, section(rows, page, command, gpu_rows, page_gpu, kept))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
