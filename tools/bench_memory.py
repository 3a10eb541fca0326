#!/usr/bin/env python3
"""The page's WebAssembly heap with GPT-2-small's shape loaded: the float32 copies before and
after issue 11's lazy parameters (glassbox.weights.LazyParams), desktop and phone profiles.

    python3 tools/bench_memory.py              # writes bench/memory.md

Each measurement opens a fresh page (?backend=numpy; the wasm heap never shrinks, so paths
cannot share a page), then in the page builds random quantized weights of GPT-2 small's shape
(L12 D768 V50257) directly in their stored form (no float32 on the way: int8 on the desktop
profile, q4 on the phone profile, as light mode loads), and reports the heap
(pyodide's HEAPU8 length) and the float32 bytes held:

* ``stored``: the quantized checkpoint alone;
* ``old``: after ``checkpoint.dequantized()``, what Model.params did before (every matrix
  as float32, whichever backend runs);
* ``lazy``: after the page's load path today (Model.params is LazyParams; the WebGPU runner
  uploads the stored tensors): nothing dequantized;
* ``lazy+numpy``: after one 8-token numpy forward (each matrix made once, then kept);
* ``quantized``: Model.keep_quantized with the WebAssembly int8 kernel (issue 15), as the page
  runs numpy on int8 weights when the kernel loads, and always on q4 weights (light mode):
  matrices stay in their stored form.

Needs Debian's chromium and Playwright (make test installs both). Not a test.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import serve  # noqa: E402
from bench import machine  # noqa: E402
from bench_pwa import CHROMIUM, FLAGS, PROFILES  # noqa: E402

BUILD = """
import numpy as np, pyodide_js
from glassbox import weights
from glassbox.config import GPTConfig
from glassbox.model import Model
MIB = 1024 * 1024
def heap():
    return int(pyodide_js._module.HEAPU8.length)
cfg = GPTConfig(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
scheme = "%s"
rng = np.random.default_rng(0)
matrices = set(weights.matrix_names(cfg))
tensors = {}
for name, shape in weights.expected_shapes(cfg).items():
    if name in matrices and scheme == "int8":
        tensors[name] = rng.integers(-127, 128, size=shape, dtype=np.int8)
        tensors[name + ".scale"] = np.full(shape[0], 0.02 / 127, np.float32)
    elif name in matrices:
        tensors[name] = rng.integers(0, 256, size=(shape[0], shape[1] // 2), dtype=np.uint8)
        tensors[name + ".scale"] = np.full((shape[0], shape[1] // 32), 0.02 / 7, np.float32)
    else:
        tensors[name] = np.ones(shape, np.float32)
ck = weights.Checkpoint(cfg, scheme, 32, tensors)
big = Model(ck, model.tokenizer)
out = {"stored": ck.nbytes() / MIB, "heap_stored": heap() / MIB}
"""
PATHS = {
    "old": "ck.dequantized(); out['float32'] = sum(v.nbytes for v in ck.dequantized().values()) / MIB\n"
           "out['heap'] = heap() / MIB\nout",
    "lazy": "p = big.params; out['float32'] = p.made_bytes() / MIB; out['heap'] = heap() / MIB\n"
            "big.forward(np.arange(8), capture=lambda name: False)\n"
            "out['float32_after_forward'] = p.made_bytes() / MIB; out['heap_after_forward'] = heap() / MIB\nout",
    # What the page does (main.py): Model.keep_quantized for int8 with the SIMD kernel (issue
    # 15) and for q4; every matrix used in its stored form, no float32 copy made.
    "quantized": "from app.kernel import load_kernel\nkernel, note = await load_kernel()\n"
                 "big.keep_quantized(kernel); out['kernel'] = note; out['float32'] = 0.0; out['heap'] = heap() / MIB\n"
                 "big.forward(np.arange(8), capture=lambda name: False)\n"
                 "out['float32_after_forward'] = 0.0; out['heap_after_forward'] = heap() / MIB\nout",
}


def measure(browser, site: str, profile: str, path: str) -> dict:
    context = browser.new_context(**PROFILES[profile])
    page = context.new_page()
    page.goto(f"{site}/?backend=numpy&sw=off")
    page.wait_for_function("document.documentElement.dataset.state === 'ready'", timeout=300_000)
    scheme = "int8" if profile == "desktop" else "q4"
    result = page.evaluate("code => window.glassbox_py(code)", BUILD % scheme + PATHS[path])
    context.close()
    return result


def main() -> int:
    from playwright.sync_api import sync_playwright

    server, _ = serve.serve_in_thread(ROOT)
    site = f"http://127.0.0.1:{server.server_address[1]}"
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        for profile in ("desktop", "phone"):
            for path in ("old", "lazy", "quantized"):
                r = measure(browser, site, profile, path)
                print(profile, path, json.dumps(r), flush=True)
                rows.append((profile, path, r))
        browser.close()
    server.shutdown()
    lines = ["# The page's memory with GPT-2-small's shape", "",
             f"Written by `python3 tools/bench_memory.py` on {datetime.date.today()} ({machine()}).",
             "Random weights of GPT-2 small's shape built in the page in their stored form; the wasm "
             "heap is Pyodide's HEAPU8 length (it never shrinks, so each row is a fresh page).", "",
             "| profile | weights | stored | load path | float32 copies | wasm heap | after an 8-token numpy forward |",
             "| --- | --- | ---: | --- | ---: | ---: | --- |"]
    for profile, path, r in rows:
        after = (f"{r['float32_after_forward']:.0f} MiB float32, heap {r['heap_after_forward']:.0f} MiB"
                 if "heap_after_forward" in r else "(same)")
        what = {"old": "before: checkpoint.dequantized()", "lazy": "LazyParams (WebGPU; numpy without the kernel)",
                "quantized": "keep_quantized (the page's numpy path: int8 kernel, or q4 by blocks)"}[path]
        lines.append(f"| {profile} | {'int8' if profile == 'desktop' else 'q4'} | {r['stored']:.0f} MiB | {what} | "
                     f"{r['float32']:.0f} MiB | {r['heap']:.0f} MiB | {after} |")
    lines.append("")
    (ROOT / "bench" / "memory.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
