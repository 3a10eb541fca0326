#!/usr/bin/env python3
"""The page's longest main-thread task while the experiments compute (issue 16, x16).

    python3 tools/bench_lab.py [--before /path/to/a/checkout/without/x16] [--tokens 64]

Serves a checkout (this one: the experiments compute in the model worker; ``--before``: another
checkout, e.g. main before x16, where they compute on the page's main thread with a hand-back
every 0.1 s), opens its default page (weights/mini) in headless Chromium with the e2e tests'
flags, types a prompt of ``--tokens`` tokens, opens the Experiments panel and, under a
PerformanceObserver of 'longtask' entries (every main-thread task over 50 ms), runs the
ablation sweep (each head alone) and activation patching (a corrupted prompt of the same
length: one token changed). Reports the longest task and the time from the click to the drawn
result for each (and the long tasks' sum per click), and writes the "lab" section of bench/results.md. Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from bench import machine  # noqa: E402
from bench_browser import CHROMIUM, CHROMIUM_FLAGS, _put  # noqa: E402
from serve import serve_in_thread  # noqa: E402

OBSERVE = """() => {
  window.__longTasks = [];
  window.__longTaskObserver?.disconnect();
  window.__longTaskObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push(Math.round(e.duration));
  });
  window.__longTaskObserver.observe({type: "longtask"});
}"""
CLICK = """async (testid) => {
  const slot = document.querySelector('[data-slot="experiments"]');
  const before = Number(slot.dataset.expRuns || 0);
  const t0 = performance.now();
  slot.querySelector(`[data-testid="${testid}"]`).click();
  while (Number(slot.dataset.expRuns || 0) === before) await new Promise(r => setTimeout(r, 5));
  return performance.now() - t0;
}"""
NOTE = ('What is left on the main thread after x16: the click, a status line, a progress line about every 0.1 s, and one draw of the whole panel with the result (its HTML is ~100 KB with the 64-token patching grid: view.render 60-240 ms plus the DOM update, measured in the page under this load); that draw is the longest task. Before, the numpy re-runs themselves ran on the main thread between 0.1 s hand-backs, so the page was blocked for most of the computation (the sum column). On this shared 2-core machine (load average 14-38) every duration is stretched several-fold; the ratio of the sums is the figure to read. Click-to-drawn is the same order before and after: the worker runs the same float32 numpy.')
PROMPTS = """
tok = explainer.model.tokenizer
words = ("The old lighthouse keeper counted the ships that passed in the night, and every morning he "
         "wrote their names in a book that nobody else would ever read. ")
ids = tok.encode(words * 20)[:{n}]
text = tok.decode(ids)
bad = list(ids)
bad[1] = tok.encode(" cat")[0] if bad[1] != tok.encode(" cat")[0] else tok.encode(" dog")[0]
corrupt = tok.decode(bad)
assert len(tok.encode(text)) == len(tok.encode(corrupt)) == {n}
[text, corrupt]
"""


def py(page, code: str):
    return page.evaluate("code => window.glassbox_py(code)", code)


def measure(browser, site: str, tokens: int, repeat: int) -> dict:
    page = browser.new_context().new_page()
    page.goto(f"{site}/index.html?sw=off")
    page.wait_for_function("document.documentElement.dataset.state === 'ready'", timeout=600_000)
    text, corrupt = py(page, PROMPTS.format(n=tokens))
    box = page.locator("[data-testid=explainer]")
    runs = int(box.get_attribute("data-runs") or 0)
    page.get_by_test_id("prompt").fill(text)
    page.get_by_test_id("prompt").press("Enter")
    page.wait_for_function(f"Number(document.querySelector('[data-testid=explainer]').dataset.runs) > {runs} && "
                           "document.documentElement.dataset.state === 'ready'", timeout=300_000)
    page.get_by_test_id("open-experiments").click()
    page.wait_for_selector("#view-experiments[data-open=true]")
    page.get_by_test_id("exp-corrupt").fill(corrupt)
    where = py(page, "getattr(getattr(explainer.experiments, 'lab', None), 'where', 'page')")
    out = {"where": where, "runner": py(page, "type(explainer.runner).__name__")}
    for name, testid in (("sweep", "exp-sweep-run"), ("patching", "exp-patch-run")):
        tasks, ms = [], []
        for _ in range(repeat + 1):  # the first one also builds the trace: a warm-up
            page.evaluate(OBSERVE)
            ms.append(page.evaluate(CLICK, testid))
            page.wait_for_timeout(150)  # the observer's entries arrive asynchronously
            tasks.append(page.evaluate("window.__longTasks"))
        timed = tasks[1:]
        out[name] = {"longest_task_ms": max((max(t, default=0) for t in timed)),
                     "long_task_ms_per_click": sorted(sum(t) for t in timed)[len(timed) // 2],
                     "click_to_drawn_ms": sorted(ms[1:])[len(ms[1:]) // 2], "warmup_tasks": tasks[0]}
        status = page.text_content('[data-slot="experiments"] [data-testid=exp-status]') or ""
        assert "wrong" not in status and "cannot" not in status, status
    page.context.close()
    return out


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="a checkout whose experiments compute on the main thread")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = parser.parse_args(argv)
    roots = ([("before (main thread)", Path(args.before))] if args.before else []) + [("after (x16: worker)", ROOT)]
    started = machine()
    got = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        for label, root in roots:
            server, _ = serve_in_thread(root)
            try:
                got[label] = measure(browser, f"http://127.0.0.1:{server.server_address[1]}", args.tokens, args.repeat)
            finally:
                server.shutdown()
                server.server_close()
            print(label, json.dumps(got[label]), flush=True)
        browser.close()
    lines = ["## Experiments off the main thread (issue 16, x16)", "",
             f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} with `python3 tools/bench_lab.py"
             f"{' --before ' + args.before if args.before else ''} --tokens {args.tokens} --repeat {args.repeat}`: "
             f"the default page (weights/mini), a {args.tokens}-token prompt, the Experiments panel's sweep "
             "(each head alone) and patching (a corrupted prompt of the same length) clicked "
             f"{args.repeat} times each after a warm-up; longest main-thread task ('longtask' "
             "PerformanceObserver, tasks over 50 ms; 0 = none) over those clicks, the median over clicks of the "
             "summed long tasks (main-thread time the page could not answer in), median click-to-drawn time.", "",
             f"- machine at the start: {started}", f"- machine at the end: {machine()}", "",
             "| page | computes in | experiment | longest task | long tasks per click (sum, median) "
             "| click to drawn (median) |", "|---|---|---|---:|---:|---:|"]
    for label, r in got.items():
        for name in ("sweep", "patching"):
            x = r[name]
            lines.append(f"| {label} | {r['where']} | {name} | {x['longest_task_ms']} ms | "
                         f"{x['long_task_ms_per_click']} ms | {x['click_to_drawn_ms']:.0f} ms |")
    lines += ["", NOTE]
    out = Path(args.out)
    out.write_text(_put(out.read_text() if out.exists() else "", "lab", "\n".join(lines)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
