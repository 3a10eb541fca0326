#!/usr/bin/env python3
"""Benchmark the page in a real browser: in-browser WebGPU vs in-browser numpy, same page.

    python3 tools/bench_browser.py                    # headless Debian chromium, SwiftShader WebGPU
    python3 tools/bench_browser.py --models default --lengths 8 64 --decode 8
    python3 tools/bench_browser.py --browser-command "bash ../shared/tools/chromium-gpu/run-on-gpu.sh B"

Serves the repository (tools/serve.py) on 127.0.0.1, opens bench.html (py/app/bench.py) in a
browser, waits for the page to POST its report (bench/raw/NAME.json), then writes the
"In the browser" section of bench/results.md (the native section that tools/bench.py writes
is kept): the machine, the browser and its WebGPU adapter, each figure for WebGPU and numpy
and their ratio. Not a test.

The browser is started as a subprocess with the page's URL as its last argument: by default
/usr/bin/chromium headless with the e2e tests' flags (WebGPU through SwiftShader, as in
tests/e2e/conftest.py); ``--browser-command`` replaces everything before the URL (the GPU
machine's run-on-gpu.sh takes BUNDLE_DIR URL). ``--no-browser`` only serves and waits, for a
browser started by hand. Standard library only (no Playwright) for this benchmark, so that it
runs on the GPU machine.

The other page benchmarks (bench_qk, bench_kernels, bench_decode, bench_page) drive the
page through Playwright instead; they share :func:`playwright_browser` and :func:`ready_page`
below (serve the repository, launch the e2e tests' headless Chromium, open the app and wait
until it is ready) and :func:`write_block` (replace one marked section of results.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from serve import BENCH_DIR, serve_in_thread  # noqa: E402
from bench import machine  # noqa: E402  (tools/bench.py)

# The e2e tests' browser (tests/e2e/conftest.py: CHROMIUM_FLAGS, kept the same by hand).
CHROMIUM = os.environ.get("GLASSBOX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--enable-unsafe-webgpu",
    "--enable-features=Vulkan", "--use-webgpu-adapter=swiftshader",
]
MARK = "<!-- browser-bench:{}:{} -->"  # one section per run name, and one "howto" block
GPU_HOWTO = """\
## In the browser on a machine with a GPU

The GPU machine has an NVIDIA GPU and Python with numpy, but no browser and no package
registry. `../shared/tools/chromium-gpu/` (its README) packs Debian's chromium-headless-shell
for it and starts it with WebGPU on the GPU (`--use-gl=angle --use-angle=gl-egl`: with
software GL, WebGPU silently falls back to SwiftShader). This script needs only the standard
library there: it serves the app, starts that browser on bench.html and waits for the
report. Steps (each transfer to the machine carries at most 64 MiB, the working tree
included, and the machine keeps `/tmp` only while it stays up, so run them back to back):

1. Here, once: `bash ../shared/tools/chromium-gpu/build.sh .gpu-bundle` (put `.gpu-bundle/` in
   `.git/info/exclude`), `cp ../shared/tools/chromium-gpu/run-on-gpu.sh .gpu-bundle/`, and
   `split -b 30M .gpu-bundle/part1.xz .gpu-bundle/part1.xz.` (part1, ~56 MB, plus the ~13 MB
   tree would not fit one transfer). `make serve` (or `python3 tools/vendor.py`) must have
   filled `vendor/`.
2. There, carrying `.gpu-bundle/part1.xz.aa`: `mkdir -p /tmp/gpu-part1 && cp .gpu-bundle/part1.xz.aa /tmp/gpu-part1/`;
   then carrying `.gpu-bundle/part1.xz.ab`: `mkdir -p /tmp/chromium-gpu/chromium && cat
   /tmp/gpu-part1/part1.xz.aa .gpu-bundle/part1.xz.ab | xz -d > /tmp/chromium-gpu/chromium/chromium-headless-shell
   && chmod +x /tmp/chromium-gpu/chromium/chromium-headless-shell`.
3. There, carrying `vendor`, `.gpu-bundle/part2.tar.xz`, `.gpu-bundle/debs` and
   `.gpu-bundle/run-on-gpu.sh`: `python3 tools/bench_browser.py --name h100 --budget 60
   --browser-command "bash .gpu-bundle/run-on-gpu.sh .gpu-bundle" && cp bench/results.md
   bench/raw/h100.json $OUT/`. The adapter line must name NVIDIA, not SwiftShader.
4. Here: put the returned `h100.json` in `bench/raw/` and run `python3 tools/bench_browser.py
   --from-json bench/raw/h100.json`: its section joins this file beside the SwiftShader one.
   Commit `bench/results.md`.

Not run yet: no GPU machine was lent to the session that wrote this.
"""


READY = "document.documentElement.dataset.state === 'ready'"
SETTLED = "['ready', 'error'].includes(document.documentElement.dataset.state)"


@contextlib.contextmanager
def playwright_browser(isolated: bool = False):
    """Serve the repository (tools/serve.py) and launch the e2e tests' headless Chromium
    through Playwright; yields (browser, site URL). Both are closed on the way out."""
    from playwright.sync_api import sync_playwright

    server, _ = serve_in_thread(ROOT, isolated=isolated)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                yield browser, f"http://127.0.0.1:{server.server_address[1]}"
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()


def open_ready(browser, site: str, path: str = "/", until: str = READY, timeout_ms: int = 300_000):
    """A new page (in its own browser context) at ``site + path``, once ``until`` holds."""
    page = browser.new_context().new_page()
    page.goto(site + path)
    page.wait_for_function(until, timeout=timeout_ms)
    return page


@contextlib.contextmanager
def ready_page(path: str = "/", until: str = READY, timeout_ms: int = 300_000):
    """The app at ``path`` (e.g. ``/?backend=webgpu``) in a served repository and a fresh
    headless Chromium, once ready: the one page a page benchmark measures."""
    with playwright_browser() as (browser, site):
        yield open_ready(browser, site, path, until, timeout_ms)


def write_block(path: Path, begin: str, end: str, body: str) -> None:
    """Replace the block from ``begin`` to ``end`` in results.md with ``body`` (which carries
    both markers), or append it; the rest of the file is kept."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Glassbox benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text, encoding="utf-8")


def fmt(value, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} ms" if unit == "ms" else f"{value:.1f} tok/s"


def ratio(row: dict) -> str:
    s = row.get("speedup")
    if not s:
        return "–"
    return f"WebGPU {s:.2f}x faster" if s >= 1 else f"WebGPU {1 / s:.2f}x slower"


def section(report: dict, command: str, machine_before: str, machine_after: str, browser: str,
            measured: str | None = None) -> str:
    """The markdown of the browser section, from the page's report."""
    measured = measured or f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    models = report.get("models", {})
    lines = [
        f"## In the browser ({report.get('settings', {}).get('name', '?')}): WebGPU vs numpy on the same page", "",
        f"Measured {measured} with:", "",
        "```", command, "```", "",
        f"- machine at the start: {machine_before}",
        f"- machine at the end: {machine_after}",
        f"- browser: {browser}; {report.get('user_agent', '?')}",
        f"- WebGPU adapter: {report.get('adapter') or 'none: ' + str(report.get('webgpu_error'))}",
        f"- page: bench.html (py/app/bench.py), Pyodide's Python {report.get('python', '?')}, "
        f"numpy {report.get('numpy', '?')} (no BLAS); the whole run took {report.get('seconds', '?')} s",
        "- WebGPU: glassbox.gpu.Engine on navigator.gpu; numpy: glassbox.reference in the page; "
        "latency is wall time from the call to the Trace in hand",
        "- figures: WebGPU compiles its pipelines once per model first; then each figure is the median of "
        "the timed runs after one warm-up run (a figure estimated over 5 s: one unwarmed run); a figure "
        "whose estimate exceeds the budget is skipped, with the estimate",
    ]
    for label, m in models.items():
        c = m["config"]
        lines.append(f"- model `{label}`: L={c['n_layer']} H={c['n_head']} D={c['n_embd']} "
                     f"C={c['n_positions']} V={c['vocab_size']}, {m['scheme']}, {m['megabytes']} MB"
                     + (" (weights/mini, the page's default)" if label == "default" else
                        " (random weights of GPT-2-small's shape)"))
    if "swiftshader" in str(report.get("adapter")).lower():
        lines += ["", "SwiftShader is Chromium's WebGPU on the CPU (this machine has no GPU): its figures show "
                  "that the page's WebGPU path runs and what it costs in the tests' browser, not how fast a GPU "
                  "is. Pyodide's numpy wins here; the same page on a GPU is measured as described below."]
    lines += ["", "| model | measure | WebGPU | numpy | WebGPU vs numpy | runs (WebGPU / numpy) |",
              "|---|---|---:|---:|---:|---|"]
    notes = []
    for row in report.get("rows", []):
        unit = row["unit"]
        cells = []
        for backend in ("webgpu", "numpy"):
            note = row.get(f"{backend}_note")
            if note:
                notes.append(f"{row['model']}, {row['what']}, {'WebGPU' if backend == 'webgpu' else 'numpy'}: {note}")
                cells.append("skipped")
            else:
                cells.append(fmt(row.get(backend), unit))
        runs = f"{row.get('webgpu_runs', '–')} / {row.get('numpy_runs', '–')}"
        lines.append(f"| {row['model']} | {row['what']} | {cells[0]} | {cells[1]} | {ratio(row)} | {runs} |")
    if notes:
        lines += ["", "Skipped (over the time budget):", ""] + [f"- {n}" for n in notes]
    if report.get("error"):
        lines += ["", "The page reported an error (figures above are what it measured first):", "", "```",
                  report["error"].strip(), "```"]
    return "\n".join(lines)


def _put(text: str, key: str, body: str) -> str:
    """``text`` with the block between key's markers replaced by body (appended if absent)."""
    begin, end = MARK.format(key, "begin"), MARK.format(key, "end")
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_section(path: Path, name: str, text: str) -> None:
    """Replace run ``name``'s browser section of results.md (or add it) and keep the GPU
    how-to last; everything else (tools/bench.py's native section) is kept."""
    old = path.read_text() if path.exists() else "# Glassbox benchmark results\n"
    for placeholder in ("In-browser figures: `python3 tools/bench_browser.py` (not run yet).\n",
                        "In-browser WebGPU and in-browser numpy figures: not measured by this command.\n"):
        old = old.replace(placeholder, "")
    howto = MARK.format("howto", "begin")
    if howto in old:  # drop it, to add it back last
        old = old.split(howto, 1)[0].rstrip("\n") + old.split(MARK.format("howto", "end"), 1)[1]
    path.write_text(_put(_put(old, name, text), "howto", GPU_HOWTO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="browser-" + platform.node().split(".")[0],
                        help="results file bench/raw/NAME.json")
    parser.add_argument("--models", nargs="+", default=["default", "gpt2-small"], choices=["default", "gpt2-small"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[8, 64, 256])
    parser.add_argument("--decode", type=int, default=16, help="tokens decoded with the KV cache")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed runs per figure continue this long")
    parser.add_argument("--budget", type=float, default=90.0,
                        help="skip a figure whose estimate (warm-up + one run) is over this many seconds")
    parser.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    parser.add_argument("--browser-command", help="command that opens a URL (the URL is appended); "
                        "default: headless /usr/bin/chromium with the e2e tests' flags")
    parser.add_argument("--no-browser", action="store_true", help="serve and wait for a browser opened by hand")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    parser.add_argument("--from-json", metavar="FILE",
                        help="only rewrite the section from a report this script saved (bench/raw/NAME.json)")
    args = parser.parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        host = report.get("host", {})
        text = section(report, host.get("command", "?"), host.get("machine_before", "?"),
                       host.get("machine_after", "?"), host.get("browser", "?"), host.get("measured"))
        write_section(Path(args.out), report.get("settings", {}).get("name", Path(args.from_json).stem), text)
        print(f"wrote {args.out} from {args.from_json}")
        return 0
    given = argv if argv is not None else sys.argv[1:]
    command = "python3 tools/bench_browser.py" + "".join(" " + shlex.quote(a) for a in given)

    query = urlencode({"name": args.name, "models": ",".join(args.models),
                       "lengths": ",".join(map(str, args.lengths)), "decode": args.decode,
                       "seconds": args.seconds, "budget": args.budget})
    result = ROOT / BENCH_DIR / f"{args.name}.json"
    result.unlink(missing_ok=True)
    server, _ = serve_in_thread(ROOT, port=args.port)
    url = f"http://127.0.0.1:{server.server_address[1]}/bench.html?{query}"
    machine_before = machine()
    print(f"machine: {machine_before}\nbenchmark page: {url}", flush=True)

    browser, profile = None, None
    if args.browser_command:
        cmd = shlex.split(args.browser_command) + [url]
        browser_name = args.browser_command
    elif not args.no_browser:
        profile = tempfile.TemporaryDirectory(prefix="glassbox-bench-")
        # --enable-logging=stderr: the page's progress (console) goes to bench/raw/NAME.browser.log.
        cmd = [CHROMIUM, "--headless", "--enable-logging=stderr", f"--user-data-dir={profile.name}",
               *CHROMIUM_FLAGS, url]
        version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
        browser_name = f"{version or CHROMIUM} headless, {' '.join(CHROMIUM_FLAGS[-3:])}"
    else:
        browser_name = "opened by hand"
    log = None
    try:
        if not args.no_browser:
            (ROOT / BENCH_DIR).mkdir(parents=True, exist_ok=True)
            log = open(ROOT / BENCH_DIR / f"{args.name}.browser.log", "w")
            browser = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + args.timeout
        while not result.exists():
            if browser is not None and browser.poll() is not None:
                print(f"the browser exited ({browser.returncode}) before the page reported; see {log.name}",
                      file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"no report after {args.timeout:g} s", file=sys.stderr)
                return 1
            time.sleep(1)
        time.sleep(0.5)  # the server writes the file in one call; let it finish
    finally:
        if browser is not None and browser.poll() is None:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
        if browser is not None:
            try:  # the browser's own helper processes, in the session it was started in
                os.killpg(browser.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        if log is not None:
            log.close()
        server.shutdown()
        server.server_close()
        if profile is not None:
            profile.cleanup()
    report = json.loads(result.read_text())
    machine_after = machine()
    measured = f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    report["host"] = {"command": command, "machine_before": machine_before, "machine_after": machine_after,
                      "browser": browser_name, "measured": measured}
    result.write_text(json.dumps(report, indent=2) + "\n")  # --from-json rewrites the section from it
    text = section(report, command, machine_before, machine_after, browser_name, measured)
    write_section(Path(args.out), args.name, text)
    print(text)
    print(f"wrote {args.out} (raw: {result.relative_to(ROOT)})")
    return 1 if report.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
