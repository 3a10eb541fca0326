#!/usr/bin/env python3
"""A Hub model in the page (issue 16, h16): click to first prediction, and main-thread long tasks.

    python3 tools/bench_hub.py [--shape tiny --shape small] [--root /work/main --label before]

Writes a random-init GPT-2-family checkpoint per ``--shape`` (transformers' save_pretrained,
tests/hf_helpers.py), serves it from the fake Hub (tests/fake_hub.py, 127.0.0.1) and the app
from ``--root`` (default: this tree), then in headless Chromium (the e2e tests' flags, a fresh
context each: nothing stored, no service worker) opens ``?model=hf:test/<shape>&backend=numpy``
and measures in the page, from the click on the notice's Download button:

* click to first prediction (data-state=ready: downloaded, converted, stored, loaded, first run drawn);
* the main thread's long tasks (PerformanceObserver 'longtask', every task over 50 ms) in that
  window: the longest, and how many exceeded issue 16's 200 ms;
* then one Run of a 64-token prompt: click to drawn and its longest main-thread task;
* where the model computed (the explainer's runner, and the backend reason), and with the worker
  its init time (reading the stored folder back, hashing it, the kernel, the runner).

``--root`` another checkout (e.g. main before this branch) measures "before". Rows are added
to the "Hub models in the worker" section of bench/results.md (``--write``). Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

from bench import machine  # noqa: E402
from bench_browser import CHROMIUM, CHROMIUM_FLAGS, _put  # noqa: E402
from serve import serve_in_thread  # noqa: E402

SHAPES = {  # (layers, heads, width, positions); GPT-2's vocabulary
    "tiny": (2, 2, 64, 64),  # the e2e test's model
    "small": (12, 12, 768, 1024),  # GPT-2-small's shape
}
OBSERVE = """() => {
  window.__long = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__long.push([e.startTime, e.duration]);
  }).observe({type: "longtask"});
}"""
CLICK_TO_READY = """async () => {
  const t0 = performance.now();
  document.querySelector('[data-testid=hub-go]').click();
  while (!['ready', 'error'].includes(document.documentElement.dataset.state) ||
         !document.querySelector('[data-testid=explainer]') ||
         Number(document.querySelector('[data-testid=explainer]').dataset.runs || 0) < 1)
    await new Promise(r => setTimeout(r, 20));
  return [t0, performance.now()];
}"""
RUN = """async () => {
  const box = document.querySelector('[data-testid=explainer]');
  const before = Number(box.dataset.runs);
  const t0 = performance.now();
  document.querySelector('[data-testid=run]').click();
  while (Number(box.dataset.runs) === before || document.documentElement.dataset.state !== 'ready')
    await new Promise(r => setTimeout(r, 20));
  return [t0, performance.now()];
}"""
TEXT = ("The old lighthouse keeper counted the ships that passed in the night, and every morning he "
        "wrote their names in a book that nobody else would ever read. ") * 3


def long_tasks(page, t0: float, t1: float) -> list[float]:
    page.wait_for_timeout(200)  # the observer's queue
    return [d for s, d in page.evaluate("window.__long") if s + d >= t0 and s <= t1]


def checkpoint(shape: str, folder: Path) -> None:
    from hf_helpers import random_hf_model

    layers, heads, width, positions = SHAPES[shape]
    random_hf_model(n_layer=layers, n_head=heads, n_embd=width, n_positions=positions, vocab_size=50257,
                    seed=16).save_pretrained(folder)


def measure(browser, site: str, hub_url: str, shape: str) -> dict:
    page = browser.new_context().new_page()
    page.goto(f"{site}/index.html?sw=off&model=hf:test/{shape}&hub={hub_url}&backend=numpy")
    page.wait_for_selector("[data-testid=hub-confirm]", timeout=600_000)
    page.evaluate(OBSERVE)
    t0, t1 = page.evaluate(CLICK_TO_READY)
    state = page.evaluate("document.documentElement.dataset.state")
    if state != "ready":
        raise SystemExit(f"{shape}: {page.text_content('[data-testid=error]')}")
    first = long_tasks(page, t0, t1)
    where, init_ms = page.evaluate("code => window.glassbox_py(code)",
                                   "[type(explainer.runner).__name__, (app.worker.ready or {}).get('ms')]")
    reason = " ".join((page.text_content("[data-testid=backend-reason]") or "").split())
    page.get_by_test_id("prompt").fill(TEXT)
    tokens = None
    runs = []
    for _ in range(2):  # a warm-up, then the measured run
        r0, r1 = page.evaluate(RUN)
        runs.append((r1 - r0, max(long_tasks(page, r0, r1), default=0.0)))
        tokens, model_s = page.evaluate("code => window.glassbox_py(code)",
                                        "[int(explainer.ids.size), explainer.run.last_run_s]")
    # The same ids through numpy on the page's main thread (its stored weights), for comparison.
    here_s = page.evaluate("code => window.glassbox_py(code)", """
import time
from app.runner import ReferenceRunner
t = time.perf_counter()
await ReferenceRunner(explainer.model.params, explainer.config).run(explainer.ids)
time.perf_counter() - t
""")
    page.context.close()
    return {"at": f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}", "shape": shape, "runner": where,
            "worker_init_ms": init_ms, "click_to_first_ms": t1 - t0, "longest_ms": max(first, default=0.0),
            "over_200": sum(d > 200 for d in first), "run_ms": runs[-1][0], "run_longest_ms": runs[-1][1],
            "tokens": tokens, "model_ms": model_s * 1e3, "main_numpy_ms": here_s * 1e3, "reason": reason}


def main(argv=None) -> int:
    from fake_hub import FakeHub
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="default: tiny")
    parser.add_argument("--root", default=str(ROOT), help="the checkout to serve (default: this one)")
    parser.add_argument("--label", default="after", help="the rows' label (e.g. before / after)")
    parser.add_argument("--write", action="store_true", help="add the rows to bench/results.md")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    parser.add_argument("--from-json", nargs="+", metavar="LOG",
                        help="no measuring: write the rows printed (JSON lines) in these earlier runs' logs")
    args = parser.parse_args(argv)
    if args.from_json:
        rows = []
        for log in args.from_json:
            at = f"{datetime.datetime.fromtimestamp(Path(log).stat().st_mtime).astimezone():%Y-%m-%d %H:%M %Z}"
            rows += [{"at": at} | json.loads(line) for line in Path(log).read_text().splitlines()
                     if line.startswith("{") and '"shape"' in line]
        write(rows, Path(args.out))
        return 0
    shapes = args.shape or ["tiny"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            checkpoint(shape, Path(tmp) / shape)
        hub = FakeHub({f"test/{s}": str(Path(tmp) / s) for s in shapes}).start()
        server, _ = serve_in_thread(args.root)
        site = f"http://127.0.0.1:{server.server_address[1]}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            for shape in shapes:
                started = time.perf_counter()
                row = measure(browser, site, hub.url, shape) | {"label": args.label, "machine": machine()}
                row["wall_s"] = time.perf_counter() - started
                rows.append(row)
                print(json.dumps(row), flush=True)
            browser.close()
        server.shutdown()
        hub.stop()
    if args.write:
        write(rows, Path(args.out))
    return 0


def write(rows: list[dict], path: Path) -> None:
    """Add ``rows`` to the "hub-worker" section of results.md (rows written before are kept)."""
    text = path.read_text()
    key = "hub-worker"
    begin = f"<!-- browser-bench:{key}:begin -->"
    old = text.split(begin, 1)[1].split(f"<!-- browser-bench:{key}:end -->", 1)[0] if begin in text else ""
    table = [line for line in old.strip().splitlines() if line.startswith("| ") and "| page |" not in line
             and line.count("|") == 14]  # rows of this layout
    for r in rows:
        init = r.get("worker_init_ms")
        where = "worker" if r["runner"] == "WorkerRunner" else "main thread"
        table.append(f"| {r['label']} | {r['shape']} | {where} | {'-' if init is None else f'{init / 1e3:.1f} s'} "
                     f"| {r['click_to_first_ms'] / 1e3:.1f} s | {r['longest_ms']:.0f} ms | {r['over_200']} | "
                     f"{r['tokens']} | {r['run_ms']:.0f} ms | {r['model_ms']:.0f} ms | {r['main_numpy_ms']:.0f} ms | "
                     f"{r['run_longest_ms']:.0f} ms | {r.get('at', '?')} |")
    body = "\n".join([
        "## Hub models in the worker (issue 16, h16)", "",
        "`python3 tools/bench_hub.py --shape tiny [--shape small] [--root CHECKOUT --label before] --write`: a "
        "random-init checkpoint on the fake Hub (127.0.0.1), `?backend=numpy`, a fresh browser context "
        "(nothing stored, no service worker), timed in the page from the click on the notice's Download "
        "button. \"before\" serves a checkout where Hub models computed on the page's main thread. Long "
        "tasks: the main thread's (PerformanceObserver 'longtask'), in the click-to-first-prediction window "
        "(which includes the download and conversion, on the main thread in both) and during one later Run. "
        "Worker init: the worker's own load (the stored folder read back and hashed, the kernel, the runner). "
        "Model: the runner's call in that Run (explainer.run.last_run_s); main-thread numpy: the same ids through "
        "numpy on the page's own thread right after (its stored weights, the same int8 kernel).",
        f"Machine of the last row: {rows[-1]['machine']}.", "",
        "| page | shape | computes in | worker init | click to first prediction | longest task (window) | "
        "tasks > 200 ms | tokens | Run: click to drawn | Run: model | main-thread numpy | Run: longest task | "
        "measured |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|", *table])
    path.write_text(_put(text, key, body))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
