#!/usr/bin/env python3
"""Time to first prediction in headless Chromium: cold (nothing stored), warm (app and model
stored by the service worker and the loader) and offline (warm, network off).

    python3 tools/bench_pwa.py                   # desktop and phone, 3 runs each, writes bench/pwa.md
    python3 tools/bench_pwa.py --runs 5 --profiles desktop

"First prediction" is the moment the first next-token row (data-testid="prediction") enters
the page, in ms from the navigation's start (performance.now() in the page, recorded by a
MutationObserver), so Playwright's polling does not count. Each cold run uses a new browser
context (empty caches, no service worker, no HTTP cache); warm and offline runs reload that
context once its service worker has stored the app. Profiles: desktop (1280x720, full mode,
weights/mini int8) and phone (360x740 touch, light mode, weights/mini-q4). The server is
tools/serve.py over this checkout on a free port; it counts the requests that reach it.

Needs Debian's chromium and Playwright (make test installs both). Writes bench/pwa.md (its
own file: tools/bench.py owns bench/results.md). Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import threading
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import serve  # noqa: E402
from bench import machine  # noqa: E402  (tools/bench.py)

CHROMIUM = os.environ.get("GLASSBOX_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-unsafe-webgpu",
         "--enable-features=Vulkan", "--use-webgpu-adapter=swiftshader"]
PROFILES = {
    "desktop": {"viewport": {"width": 1280, "height": 720}},
    "phone": {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True,
              "device_scale_factor": 2},
}
# Phases, by the status line's text (web/shell.js, py/app): the first time each appears.
PHASES = {"python": "Importing numpy", "weights": "weights:", "explainer": "Preparing the explainer"}
MARK = """
(() => {
  const phases = %s;
  window.__phases = {};
  // Python reports its steps through window.glassboxShell.progress: time each first sight.
  let shell;
  Object.defineProperty(window, "glassboxShell", {
    configurable: true,
    get: () => shell,
    set: (value) => {
      const progress = value.progress;
      value.progress = (label, ...rest) => {
        for (const [name, text] of Object.entries(phases)) {
          if (String(label).includes(text) && !(name in window.__phases)) window.__phases[name] = performance.now();
        }
        return progress(label, ...rest);
      };
      shell = value;
    },
  });
  new MutationObserver((_, observer) => {
    if (document.querySelector('[data-testid="prediction"]')) {
      window.__firstPrediction = performance.now();
      observer.disconnect();
    }
  }).observe(document, { childList: true, subtree: true });
})();
""" % json.dumps(PHASES)
TIMEOUT_MS = 240_000
NOTE = ("Full mode's first prediction comes ~3 s after its model is loaded, light mode's ~1 s. "
        "Measured in the page (8 tokens, after boot): the explainer's default runner takes "
        "0.45-0.5 s per run, the same reference forward without its per-step status update "
        "0.06-0.09 s: each update (a DOM write, then a yield) lets the browser lay out and "
        "paint the whole page, 7 times for 8 tokens. Light mode's runner reports no steps.")


def start_server():
    hits: list[str] = []

    class Counted(serve.Handler):
        quiet = True

        def send_head(self):
            hits.append(urlsplit(self.path).path)
            return super().send_head()

    Counted.precache = serve.Live(ROOT)
    server = serve.Server(("127.0.0.1", 0), partial(Counted, directory=str(ROOT)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/", hits


def first_prediction(page, hits: list[str]) -> tuple[float, str, int]:
    """(seconds to the first prediction, mode, requests the server had seen by then); the
    phases' times go to LAST_PHASES."""
    page.wait_for_function("window.__firstPrediction !== undefined || document.documentElement.dataset.state === 'error'",
                           timeout=TIMEOUT_MS)
    seen = len(hits)
    state = page.evaluate("document.documentElement.dataset.state")
    if state == "error":
        raise RuntimeError("the page failed: " + " ".join(page.inner_text("[data-testid=error]").split()))
    page.wait_for_function("document.documentElement.dataset.state === 'ready'", timeout=TIMEOUT_MS)
    LAST_PHASES.clear()
    LAST_PHASES.update({k: v / 1000 for k, v in page.evaluate("window.__phases").items()})
    return page.evaluate("window.__firstPrediction") / 1000, page.evaluate("document.documentElement.dataset.mode"), seen


LAST_PHASES: dict[str, float] = {}


def bench_profile(browser, url, hits, name, runs):
    rows = {"cold": [], "warm": [], "offline": []}
    phases = {"cold": [], "warm": [], "offline": []}
    mode = ""
    requests = {}
    for i in range(runs):
        context = browser.new_context(**PROFILES[name])
        context.add_init_script(MARK)
        page = context.new_page()
        try:
            hits.clear()
            page.goto(url)
            seconds, mode, requests["cold"] = first_prediction(page, hits)
            rows["cold"].append(seconds)
            phases["cold"].append({**LAST_PHASES, "prediction": seconds})
            page.wait_for_function("document.documentElement.dataset.offline === 'ready'", timeout=TIMEOUT_MS)
            hits.clear()
            page.reload()
            seconds, _, requests["warm"] = first_prediction(page, hits)
            rows["warm"].append(seconds)
            phases["warm"].append({**LAST_PHASES, "prediction": seconds})
            if i == 0:
                context.set_offline(True)
                page.reload()
                rows["offline"].append(first_prediction(page, hits)[0])
                phases["offline"].append({**LAST_PHASES, "prediction": rows["offline"][-1]})
        finally:
            context.close()
        print(f"{name} run {i + 1}: cold {rows['cold'][-1]:.2f} s, warm {rows['warm'][-1]:.2f} s"
              + (f", offline {rows['offline'][-1]:.2f} s" if i == 0 else ""), flush=True)
    return {"profile": name, "mode": mode, "rows": rows, "requests": requests, "phases": phases}


def write(path: Path, results, command: str, version: str, before: str) -> str:
    lines = [
        "# Time to first prediction: cold, warm, offline", "",
        "Written by `tools/bench_pwa.py` (the service worker and model store of issue 6); "
        "`tools/bench.py` writes the forward-pass figures in [results.md](results.md).", "",
        f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} with:", "",
        "```", command, "```", "",
        f"- browser: {version}, headless, WebGPU on SwiftShader (the model runs on numpy in Pyodide)",
        f"- machine at the start: {before}",
        f"- machine at the end: {machine()}",
        "- server: tools/serve.py on 127.0.0.1 (no network latency: on a real connection cold "
        "loads add the transfer of ~20 MiB of runtime plus the weights)",
        "- time: from the navigation's start to the first next-token row on the page "
        "(Python booted, model loaded and verified, first run drawn)",
        "- cold: new browser context (nothing stored); warm: reload once the service worker "
        "stored the app (the loader stored the model on the cold load); offline: warm with "
        "the network off", "",
        "| profile | mode | cold | warm | offline | requests reaching the server (cold → warm) |",
        "|---|---|---:|---:|---:|---|",
    ]
    text = []
    for r in results:
        cell = lambda xs: (f"{statistics.median(xs):.2f} s" + (f" (n={len(xs)}, {min(xs):.2f}–{max(xs):.2f})"
                                                                if len(xs) > 1 else "")) if xs else "–"  # noqa: E731
        lines.append(f"| {r['profile']} | {r['mode']} | {cell(r['rows']['cold'])} | {cell(r['rows']['warm'])} | "
                     f"{cell(r['rows']['offline'])} | {r['requests'].get('cold')} → {r['requests'].get('warm')} |")
        text.append(f"{r['profile']} ({r['mode']} mode): cold {cell(r['rows']['cold'])}, "
                    f"warm {cell(r['rows']['warm'])}, offline {cell(r['rows']['offline'])}")
    lines += ["", "Medians over the runs (range in brackets). The warm requests are the service "
              "worker's update check (sw.js, sw-precache.js) and the model manifest (always "
              "asked for, so a changed model is noticed); everything else comes from this device.", "",
              "Where the time goes (medians, seconds from the navigation's start): Python running "
              "(PyScript booted Pyodide, loaded numpy and Glassbox's files), the weights starting to "
              "load, the model loaded and verified, the first prediction drawn (the first run of the "
              "model and every view).", "",
              "| profile | load | Python running | weights | model loaded | first prediction |",
              "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for kind, runs in r["phases"].items():
            if not runs:
                continue
            med = lambda key: (f"{statistics.median(x[key] for x in runs if key in x):.2f}"  # noqa: E731
                               if any(key in x for x in runs) else "–")
            lines.append(f"| {r['profile']} | {kind} | {med('python')} | {med('weights')} | {med('explainer')} | "
                         f"{med('prediction')} |")
    lines += ["", NOTE, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return "\n".join(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", choices=list(PROFILES), default=list(PROFILES))
    parser.add_argument("--out", default=str(ROOT / "bench" / "pwa.md"))
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    command = "python3 tools/bench_pwa.py" + "".join(" " + shlex.quote(a) for a in given)
    from playwright.sync_api import sync_playwright

    before = machine()
    server, url, hits = start_server()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            version = f"Chromium {browser.version}"
            results = [bench_profile(browser, url, hits, name, args.runs) for name in args.profiles]
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    summary = write(Path(args.out), results, command, version, before)
    print(summary)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
