#!/usr/bin/env python3
"""Audit the served page with Lighthouse (desktop and mobile presets); write bench/audit.md.

    python3 tools/audit.py [--presets desktop,mobile] [--output bench/audit.md] [--path ""] [--no-isolation]
    python3 tools/audit.py --from-raw --note "..."   # rewrite the report from the last JSON reports

Not a test: a measurement, like tools/bench*.py. It serves the repository with tools/serve.py
on a free 127.0.0.1 port (so the precompressed .br/.gz copies are used, as a well-set static
host would), runs the pinned npm ``lighthouse`` (package.json devDependency, ``npm ci``
installs it; ``node_modules/lighthouse/cli/index.js``) with Debian's Chromium
(``CHROME_PATH``, default /usr/bin/chromium, headless, no WebGPU flag: the page as a browser
without WebGPU sees it, so it keeps the numpy backend), once per preset, and writes the four
category scores, the key metrics (FCP, LCP, TBT, CLS, max potential FID, Speed Index, Time to
Interactive, transfer size) and the audits that did not pass to bench/audit.md, with the
date, machine and versions. Lighthouse's JSON reports go to bench/raw/lighthouse-PRESET.json
(git-ignored).

The page boots Pyodide after its load event, so Lighthouse's wait is widened (its network- and
CPU-quiet windows to QUIET_MS, its maximum wait to MAX_WAIT_MS); the report says whether the
trace saw the model's weights arrive (the boot's last download) and any warning Lighthouse
gave. Mobile uses Lighthouse's default simulated throttling (a mid-range phone on slow 4G,
4x CPU slowdown: its TBT and TTI are estimates from the trace); desktop its desktop preset.
Needs Node 20+ and Chromium; takes a few minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from serve import serve_in_thread  # tools/serve.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
LIGHTHOUSE = ROOT / "node_modules" / "lighthouse" / "cli" / "index.js"
CHROME = os.environ.get("CHROME_PATH", "/usr/bin/chromium")
CHROME_FLAGS = "--headless=new --no-sandbox --no-first-run --disable-background-networking --disable-component-update"
QUIET_MS = 5_000
MAX_WAIT_MS = 240_000
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
# (audit id, label, unit): ms, s (shown in seconds), bytes, or "" (a plain number)
METRICS = (
    ("first-contentful-paint", "First Contentful Paint", "s"),
    ("largest-contentful-paint", "Largest Contentful Paint", "s"),
    ("total-blocking-time", "Total Blocking Time", "ms"),
    ("cumulative-layout-shift", "Cumulative Layout Shift", ""),
    ("max-potential-fid", "Max potential first input delay", "ms"),
    ("speed-index", "Speed Index", "s"),
    ("interactive", "Time to Interactive", "s"),
    ("total-byte-weight", "Transfer size", "bytes"),
)
WAIT = {"maxWaitForLoad": MAX_WAIT_MS, "networkQuietThresholdMs": QUIET_MS, "cpuQuietThresholdMs": QUIET_MS,
        "pauseAfterLoadMs": QUIET_MS, "pauseAfterFcpMs": 1_000}


def config_file(preset: str, folder: Path) -> Path:
    """A Lighthouse config: the preset (default = mobile, or desktop) with the longer waits."""
    if preset == "desktop":
        desktop = (LIGHTHOUSE.parent.parent / "core" / "config" / "desktop-config.js").as_uri()
        path = folder / "desktop.mjs"
        path.write_text(f"import base from {json.dumps(desktop)};\n"
                        f"export default {{...base, settings: {{...base.settings, ...{json.dumps(WAIT)}}}}};\n")
    else:
        path = folder / "mobile.json"
        path.write_text(json.dumps({"extends": "lighthouse:default", "settings": WAIT}))
    return path


def run_lighthouse(url: str, preset: str, report: Path) -> dict:
    """Lighthouse's result (lhr) for url with a preset; the JSON report is kept at ``report``."""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)  # a report left from an earlier run must not pass for this one
    with tempfile.TemporaryDirectory() as folder:
        command = ["node", str(LIGHTHOUSE), url, f"--config-path={config_file(preset, Path(folder))}",
                   "--output=json", f"--output-path={report}", f"--chrome-flags={CHROME_FLAGS}", "--quiet"]
        result = subprocess.run(command, env={**os.environ, "CHROME_PATH": CHROME}, capture_output=True,
                                text=True, timeout=MAX_WAIT_MS / 1000 + 600)
    if result.returncode != 0 or not report.is_file():
        raise LighthouseFailed(f"lighthouse failed ({preset}, exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(report.read_text(encoding="utf-8"))


class LighthouseFailed(Exception):
    """A Lighthouse run that ended without a report (on a busy machine, a DevTools protocol
    call can time out while Pyodide holds the page's main thread: main() tries again)."""


def run_with_retries(url: str, preset: str, report: Path, tries: int = 3) -> dict:
    for attempt in range(1, tries + 1):
        try:
            return run_lighthouse(url, preset, report)
        except LighthouseFailed as failure:
            print(f"audit: try {attempt} of {tries}: {failure}", file=sys.stderr, flush=True)
            if attempt == tries:
                raise SystemExit(f"audit: {failure}") from None
    raise AssertionError("unreachable")


def metric_text(audit: dict, unit: str) -> str:
    value = audit.get("numericValue")
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value / 1000:.1f} s"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "bytes":
        return f"{value / 2**20:.2f} MiB"
    return f"{value:.3f}"


def boot_seen(lhr: dict) -> str:
    """Whether the trace covered the boot: did the model's weights (its last download) arrive?"""
    items = lhr["audits"].get("network-requests", {}).get("details", {}).get("items", [])
    shards = [i for i in items if "/weights/" in i.get("url", "") and i["url"].endswith(".safetensors")]
    last = max((i.get("networkEndTime") or 0 for i in items), default=0)
    if not shards:
        return f"no: the trace ended before the model's weights were requested ({len(items)} requests, last at {last / 1000:.1f} s)"
    done = max(i.get("networkEndTime") or 0 for i in shards)
    return (f"yes: the weights ({', '.join(i['url'].split('/weights/')[1] for i in shards)}) arrived at "
            f"{done / 1000:.1f} s; {len(items)} requests, the last ending at {last / 1000:.1f} s")


def failing(lhr: dict, category: str) -> list[str]:
    """Titles of the category's scored audits that did not pass."""
    out = []
    for ref in lhr["categories"][category]["auditRefs"]:
        audit = lhr["audits"][ref["id"]]
        if ref.get("weight", 0) > 0 and audit.get("score") is not None and audit["score"] < 1:
            out.append(f"{audit['title']} ({ref['id']}: {audit['score']:.2f})")
    return out


def deprecations(lhr: dict) -> list[str]:
    """Each deprecated API the page used, with where the call is (Lighthouse's source
    locations are 0-based; shown 1-based, as an editor counts)."""
    out = []
    for item in lhr["audits"].get("deprecations", {}).get("details", {}).get("items", []):
        where = item.get("source") or {}
        path = where.get("url", "?").split("/", 3)[-1] if where.get("url") else "?"
        place = f"{path} line {where['line'] + 1} column {where['column'] + 1}" if "line" in where else path
        out.append(f"{' '.join(str(item.get('value', '?')).split())} ({place})")
    return out


def lcp_element(lhr: dict) -> str:
    """The element Lighthouse took for the largest contentful paint, and its text's start."""
    for table in lhr["audits"].get("largest-contentful-paint-element", {}).get("details", {}).get("items", []):
        for item in table.get("items", []):
            node = item.get("node") or {}
            if node.get("selector"):
                return f"`{node['selector']}` ({' '.join(str(node.get('nodeLabel', '')).split())[:80]})"
    return "n/a"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({model or 'unknown CPU'})"


def render(results: dict[str, dict], when: str, node: str, isolated: bool = False, note: str = "") -> str:
    first = next(iter(results.values()))
    lines = [
        "# Lighthouse audit of the served page",
        "",
        "Written by `tools/audit.py` (not a test): Lighthouse against the page served by tools/serve.py "
        f"(precompressed .br/.gz on; {'COOP/COEP sent: cross-origin isolated' if isolated else 'no COOP/COEP: not isolated'}), "
        "in headless Chromium without WebGPU (the numpy backend). Mobile is "
        "Lighthouse's default (simulated slow 4G and 4x CPU slowdown: TBT/TTI are estimates), desktop its "
        "desktop preset; the wait for load is widened to "
        f"{MAX_WAIT_MS // 1000} s with {QUIET_MS // 1000} s network/CPU quiet windows so the Pyodide boot is traced.",
        "",
        f"- date: {when}",
        f"- machine: {machine()}; Lighthouse benchmark index {first['environment'].get('benchmarkIndex', 'n/a')}",
        f"- Lighthouse {first['lighthouseVersion']}, {first['environment'].get('hostUserAgent', '')}",
        f"- Node {node}, Python {platform.python_version()}",
        *([f"- note: {note}"] if note else []),
        "",
        "| | " + " | ".join(results) + " |",
        "| --- | " + " | ".join("---:" for _ in results) + " |",
    ]
    for category in CATEGORIES:
        lines.append(f"| {first['categories'][category]['title']} score | "
                     + " | ".join(f"{lhr['categories'][category]['score']:.2f}" for lhr in results.values()) + " |")
    for audit_id, label, unit in METRICS:
        lines.append(f"| {label} | " + " | ".join(metric_text(lhr["audits"][audit_id], unit) for lhr in results.values()) + " |")
    for preset, lhr in results.items():
        lines += ["", f"## {preset}", "", f"- boot traced: {boot_seen(lhr)}",
                  f"- largest contentful paint: {lcp_element(lhr)}"]
        for warning in lhr.get("runWarnings", []):
            lines.append(f"- Lighthouse warned: {' '.join(str(warning).split())}")
        for category in CATEGORIES:
            bad = failing(lhr, category)
            lines.append(f"- {lhr['categories'][category]['title']}: "
                         + ("every scored audit passed" if not bad else "not passed: " + "; ".join(bad)))
        for used in deprecations(lhr):
            lines.append(f"- deprecated API: {used}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="desktop,mobile", help="comma-separated: desktop, mobile")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "audit.md")
    parser.add_argument("--path", default="", help="the page's path and query under the site (default: /)")
    parser.add_argument("--note", default="", help="a line for the report (e.g. what else ran on the machine)")
    parser.add_argument("--from-raw", action="store_true",
                        help="write the report from the last run's bench/raw/lighthouse-*.json, running nothing")
    isolation = parser.add_mutually_exclusive_group()  # issue 16: isolated by default, as tools/serve.py
    isolation.add_argument("--no-isolation", dest="isolated", action="store_false",
                           help="serve without COOP/COEP (tools/serve.py --no-isolation: a host that sets no headers)")
    isolation.add_argument("--isolated", dest="isolated", action="store_true",
                           help="serve with COOP/COEP, cross-origin isolated (the default)")
    parser.set_defaults(isolated=True)
    args = parser.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if not set(presets) <= {"desktop", "mobile"}:
        parser.error("--presets takes desktop and/or mobile")
    if not LIGHTHOUSE.is_file():
        print("audit: node_modules/lighthouse is missing: run npm ci (make does)", file=sys.stderr)
        return 2
    if not Path(CHROME).is_file():
        print(f"audit: no Chromium at {CHROME}: apt-get install chromium, or set CHROME_PATH", file=sys.stderr)
        return 2
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
    raw = {preset: ROOT / "bench" / "raw" / f"lighthouse-{preset}.json" for preset in presets}
    results = {}
    if args.from_raw:
        results = {preset: json.loads(path.read_text(encoding="utf-8")) for preset, path in raw.items()}
    else:
        server, _ = serve_in_thread(ROOT, isolated=args.isolated)
        url = f"http://127.0.0.1:{server.server_address[1]}/{args.path}"
        try:
            for preset in presets:
                print(f"audit: lighthouse {preset} on {url} ...", flush=True)
                results[preset] = run_with_retries(url, preset, raw[preset])
                scores = ", ".join(f"{c} {results[preset]['categories'][c]['score']:.2f}" for c in CATEGORIES)
                print(f"audit: {preset}: {scores}", flush=True)
        finally:
            server.shutdown()
            server.server_close()
    fetched = dt.datetime.fromisoformat(next(iter(results.values()))["fetchTime"].replace("Z", "+00:00"))
    when = fetched.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    args.output.write_text(render(results, when, node, args.isolated, args.note), encoding="utf-8")
    print(f"audit: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
