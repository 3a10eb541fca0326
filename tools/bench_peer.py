#!/usr/bin/env python3
"""Glassbox against its peer, ONNX Runtime Web, in the same headless browser on the same weights.

    python3 tools/bench_peer.py                       # 2 interleaved rounds, every configuration
    python3 tools/bench_peer.py --rounds 3 --only ort-wasm-2t-fp32 glassbox-wasm
    python3 tools/bench_peer.py --from-json bench/raw/peer-report.json   # only rewrite results.md

The weights are GPT-2-small's shape, random (``weights.random_checkpoint(GPT2_SMALL, "int8")``,
as py/app/bench.py makes them). For the peer they are written as ONNX graphs with a KV cache
(tools/peer_onnx.py: float32, and int8 by onnxruntime's dynamic quantization) and run by npm
``onnxruntime-web`` (vendor/ort) on bench_peer.html; for Glassbox they are written as a model
folder (int8, the same bytes) that bench.html loads like the page loads a model. Everything
goes to bench/raw/peer/ (git-ignored; made once, about 1 GB).

Each configuration is one page load in a fresh headless Chromium (the e2e tests' flags,
WebGPU on SwiftShader), served cross-origin isolated (tools/serve.py --isolated: COOP/COEP,
so the WASM backend may use threads). Rounds run every configuration once, in the same
order, so slow phases of a shared machine hit all of them alike ("interleaved"). Figures:
load (peer: fetch + InferenceSession.create; Glassbox: load_model of the folder, then the
backend's own preparation), a 64-token forward (median of the timed runs after a warm-up)
and decode tokens/s (8-token prompt, then KV-cached greedy steps); the table gives the median
over rounds and the ratio of each Glassbox figure to the peer's WASM (1 and 2 threads).
Writes the "peer" section of bench/results.md and bench/raw/peer-report.json (``--section``
names another, e.g. for a separate run of the slow SwiftShader pages). Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "py"))

from bench import machine  # noqa: E402  (tools/bench.py)
from bench_browser import CHROMIUM, CHROMIUM_FLAGS, MARK, _put  # noqa: E402
from serve import BENCH_DIR, serve_in_thread  # noqa: E402

PEER_DIR = BENCH_DIR / "peer"
FOLDER = PEER_DIR / "glassbox-gpt2"

# name -> (page, query). Glassbox's backends: wasm = numpy with the int8 SIMD kernel
# (the page's fallback), numpy = float32 numpy (the fallback before issue 15), webgpu.
CONFIGS = {
    "ort-wasm-1t-fp32": ("bench_peer.html", {"ep": "wasm", "threads": 1, "model": "fp32"}),
    "ort-wasm-2t-fp32": ("bench_peer.html", {"ep": "wasm", "threads": 2, "model": "fp32"}),
    "ort-wasm-1t-int8": ("bench_peer.html", {"ep": "wasm", "threads": 1, "model": "int8"}),
    "ort-wasm-2t-int8": ("bench_peer.html", {"ep": "wasm", "threads": 2, "model": "int8"}),
    "ort-webgpu-fp32": ("bench_peer.html", {"ep": "webgpu", "threads": 1, "model": "fp32"}),
    "glassbox-wasm": ("bench.html", {"backends": "wasm"}),
    "glassbox-numpy": ("bench.html", {"backends": "numpy"}),
    "glassbox-webgpu": ("bench.html", {"backends": "webgpu"}),
}
PEERS = ("ort-wasm-1t-fp32", "ort-wasm-2t-fp32")


def prepare(regenerate: bool = False) -> None:
    """The ONNX graphs and the Glassbox model folder, made once from the same weights."""
    from app.bench import GPT2_SMALL
    from glassbox import weights
    from peer_onnx import write_models

    peer = ROOT / PEER_DIR
    if not regenerate and all((peer / f).is_file() for f in ("gpt2-fp32.onnx", "gpt2-int8.onnx")) \
            and (ROOT / FOLDER / weights.MANIFEST).is_file():
        return
    print("making the weights (ONNX fp32 + int8, Glassbox int8 folder): a few minutes", flush=True)
    checkpoint = weights.random_checkpoint(GPT2_SMALL, "int8")
    params = checkpoint.dequantized()
    write_models(peer, params, GPT2_SMALL, int8=True)
    tokenizer = json.loads((ROOT / "weights" / "mini" / weights.MANIFEST).read_text())["tokenizer"]
    # Quantizing the dequantized int8 weights again gives the same bytes (scale = max|row| / 127).
    weights.write_folder(str(ROOT / FOLDER), GPT2_SMALL, params, "int8", tokenizer)


def url_for(port: int, name: str, run: str, n: int, decode: int, seconds: float) -> str:
    page, extra = CONFIGS[name]
    if page == "bench_peer.html":
        query = {"name": run, "n": n, "decode": decode, "seconds": seconds, **extra,
                 "model": f"./{PEER_DIR.as_posix()}/gpt2-{extra['model']}.onnx"}
    else:
        query = {"name": run, "models": "gpt2-small", "lengths": n, "decode": decode, "seconds": seconds,
                 "budget": 600, "folder": f"./{FOLDER.as_posix()}/", **extra}
    return f"http://127.0.0.1:{port}/{page}?{urlencode(query)}"


def run_page(url: str, result: Path, timeout: float, log: Path) -> dict:
    """Open url in a fresh headless Chromium and return the JSON the page posts."""
    result.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="glassbox-peer-", ignore_cleanup_errors=True) as profile, \
            open(log, "w") as out:
        cmd = [CHROMIUM, "--headless", "--enable-logging=stderr", f"--user-data-dir={profile}", *CHROMIUM_FLAGS, url]
        browser = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not result.exists():
                if browser.poll() is not None:
                    return {"error": f"the browser exited ({browser.returncode}); see {log}"}
                if time.monotonic() > deadline:
                    return {"error": f"no report after {timeout:g} s"}
                time.sleep(1)
            time.sleep(0.5)
            return json.loads(result.read_text())
        finally:  # the browser and every process it started (its own session)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(browser.pid, sig)
                    browser.wait(10)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
            time.sleep(1)  # let its helpers leave the profile before it is removed


def figures(name: str, report: dict) -> dict:
    """{load_s, forward_ms, decode_tok_s, error} of one page's report."""
    if report.get("error"):
        return {"error": str(report["error"]).strip().splitlines()[-1][:200]}
    if CONFIGS[name][0] == "bench_peer.html":
        return {"load_s": report["load_ms"] / 1e3, "forward_ms": report["forward_ms"],
                "decode_tok_s": report["decode_tok_s"], "isolated": report.get("crossOriginIsolated"),
                "adapter": report.get("adapter")}
    backend = CONFIGS[name][1]["backends"]
    model = report["models"]["gpt2-small"]
    rows = {r["what"].split(",")[0] if r["unit"] == "ms" else "decode": r for r in report["rows"]
            if r["unit"] == "tokens/s" or r["what"].endswith("logits only")}
    forward = next((r.get(backend) for w, r in rows.items() if w.startswith("forward")), None)
    return {"load_s": model["load_s"] + model.get("setup_s", {}).get(backend, 0.0), "forward_ms": forward,
            "decode_tok_s": rows.get("decode", {}).get(backend), "adapter": report.get("adapter"),
            "kernel": report.get("wasm_kernel")}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rate(v: float) -> str:
    return f"{v:.1f} tok/s" if v >= 1 else f"{v:.2g} tok/s"


def section(data: dict, key: str = "peer") -> str:
    rounds, names = data["rounds"], data["configs"]
    lines = [f"## Glassbox against ONNX Runtime Web ({key}), same browser, same weights", "",
             f"Measured {data['measured']} with:", "", "```", data["command"], "```", "",
             f"- machine at the start: {data['machine_before']}", f"- machine at the end: {data['machine_after']}",
             f"- browser: {data['browser']}, one fresh headless instance per page, served cross-origin isolated "
             "(COOP/COEP: `tools/serve.py --isolated`)",
             "- weights: random, GPT-2-small's shape (L=12 H=12 D=768 V=50257), the same int8 values for both: "
             "the peer runs them as ONNX (tools/peer_onnx.py; fp32 = dequantized, int8 = onnxruntime's dynamic "
             "quantization of that graph), Glassbox loads them as an int8 model folder",
             f"- {len(rounds)} interleaved rounds (every configuration once per round, in the table's order); "
             "each cell is the median over rounds; within a page, forward = median of the timed runs after a "
             f"warm-up (at least 1, at most 10, for {data.get('seconds', 3.0):g} s), decode = one run of "
             f"{data.get('decode', 16)} KV-cached greedy steps ({data.get('gpu_decode', 4)} on WebGPU pages) after "
             "an 8-token prompt",
             "- load: peer = fetch of the .onnx + InferenceSession.create; Glassbox = load_model (fetch, sha256, "
             "parse) + the backend's preparation (wasm: none, numpy: dequantize to float32, webgpu: engine and "
             "upload)",
             "- Glassbox wasm = the page's numpy fallback with int8 weights through wasm/linear_i8.so "
             "(1 thread); numpy = float32 weights and numpy's own matmul (the fallback before issue 15)", "",
             f"| configuration | load | {data.get('n', 64)}-token forward | decode | forward vs ORT WASM 1t / 2t | decode vs 1t / 2t | rounds ok |",
             "|---|---:|---:|---:|---:|---:|---|"]
    meds = {}
    for name in names:
        got = [r[name] for r in rounds if name in r and not r[name].get("error")]
        meds[name] = {k: med([g.get(k) for g in got]) for k in ("load_s", "forward_ms", "decode_tok_s")}
        meds[name]["ok"] = f"{len(got)} of {len(rounds)}"
    for name in names:
        m = meds[name]
        cells = [f"{m['load_s']:.1f} s" if m["load_s"] else "–", f"{m['forward_ms']:.0f} ms" if m["forward_ms"] else "–",
                 rate(m["decode_tok_s"]) if m["decode_tok_s"] else "–"]
        fr, dr = [], []
        for peer in PEERS:
            p = meds.get(peer, {})
            fr.append(f"{m['forward_ms'] / p['forward_ms']:.2f}x" if m["forward_ms"] and p.get("forward_ms") else "–")
            dr.append(f"{p['decode_tok_s'] / m['decode_tok_s']:.2f}x" if m["decode_tok_s"] and p.get("decode_tok_s") else "–")
        lines.append(f"| {name} | {' | '.join(cells)} | {' / '.join(fr)} | {' / '.join(dr)} | {m['ok']} |")
    lines += ["", "Ratios are time over the peer's time (forward) and the peer's tokens/s over this one's (decode): "
              "below 1 is faster than the peer, 2.00x is twice as slow."]
    ours, theirs = meds.get("glassbox-webgpu", {}), meds.get("ort-webgpu-fp32", {})
    if ours.get("forward_ms") and theirs.get("forward_ms"):
        decode = (f", decode {theirs['decode_tok_s'] / ours['decode_tok_s']:.2f}x"
                  if ours.get("decode_tok_s") and theirs.get("decode_tok_s") else "")
        lines += ["", f"Glassbox WebGPU against ONNX Runtime Web's WebGPU backend, same ratios: forward "
                  f"{ours['forward_ms'] / theirs['forward_ms']:.2f}x{decode}."]
    lines += ["",
              "Each round's figures (forward ms, decode tok/s), to show the spread:", "",
              "| configuration | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |",
              "|---|" + "---:|" * len(rounds)]
    for name in names:
        cells = []
        for r in rounds:
            g = r.get(name, {})
            cells.append("failed" if g.get("error") else
                         f"{g['forward_ms']:.0f} ms, {rate(g['decode_tok_s'])}" if g.get("forward_ms") and g.get("decode_tok_s")
                         else "–")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    load = data["machine_before"].split("load average ")[-1].split(")")[0]
    cpus = re.search(r"(\d+) logical CPUs", data["machine_before"])
    lines += ["", f"Load average at the start: {load}, on {cpus.group(1) if cpus else '?'} logical CPUs: "
              "a shared machine gives each page a share of a core, so absolute figures swing between rounds and "
              "threads help little; compare figures within a round."]
    errors = [f"- round {i + 1}, {name}: {r[name]['error']}" for i, r in enumerate(rounds) for name in r
              if r[name].get("error")]
    if errors:
        lines += ["", "Failed pages:", ""] + errors
    adapters = {r[n].get("adapter") for r in rounds for n in r if r[n].get("adapter")}
    if adapters:
        lines += ["", f"WebGPU adapters seen: {', '.join(sorted(map(str, adapters)))} (SwiftShader is WebGPU on "
                  "the CPU: not a GPU figure)."]
    return "\n".join(lines)


def write_section(path: Path, text: str, key: str = "peer") -> None:
    old = path.read_text() if path.exists() else "# Glassbox benchmark results\n"
    path.write_text(_put(old, key, text))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="configurations (default: all)")
    parser.add_argument("--n", type=int, default=64, help="forward length")
    parser.add_argument("--decode", type=int, default=16, help="decoded tokens")
    parser.add_argument("--gpu-decode", type=int, default=4,
                        help="decoded tokens on the WebGPU pages (slow on a software adapter)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="timed forward runs continue this long (at least 1 run, at most 10)")
    parser.add_argument("--timeout", type=float, default=900, help="per page")
    parser.add_argument("--regenerate", action="store_true", help="rewrite the ONNX graphs and the model folder")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    parser.add_argument("--section", default="peer", help="the results.md section (and bench/raw/SECTION-report.json)")
    parser.add_argument("--from-json", metavar="FILE", help="only rewrite the section from a saved report")
    args = parser.parse_args(argv)
    if args.from_json:
        write_section(Path(args.out), section(json.loads(Path(args.from_json).read_text()), args.section), args.section)
        return 0
    prepare(args.regenerate)
    names = args.only or list(CONFIGS)
    report = ROOT / BENCH_DIR / f"{args.section}-report.json"
    server, _ = serve_in_thread(ROOT, port=0, isolated=True)
    port = server.server_address[1]
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    data = {"command": "python3 tools/bench_peer.py" + "".join(" " + shlex.quote(a) for a in (argv or sys.argv[1:])),
            "machine_before": machine(), "browser": f"{version or CHROMIUM} headless, {' '.join(CHROMIUM_FLAGS[-3:])}",
            "configs": names, "n": args.n, "seconds": args.seconds, "decode": args.decode,
            "gpu_decode": args.gpu_decode, "rounds": []}
    for i in range(args.rounds):
        got = {}
        data["rounds"].append(got)
        for name in names:
            run = f"peer-{name}-r{i + 1}"
            decode = args.gpu_decode if "webgpu" in name else args.decode
            url = url_for(port, name, run, args.n, decode, args.seconds)
            print(f"round {i + 1}: {name} ...", end=" ", flush=True)
            t0 = time.monotonic()
            posted = run_page(url, ROOT / BENCH_DIR / f"{run}.json", args.timeout, ROOT / BENCH_DIR / f"{run}.log")
            got[name] = figures(name, posted)
            print(f"{time.monotonic() - t0:.0f} s: {got[name]}", flush=True)
            report.write_text(json.dumps(data, indent=1))
    server.shutdown()
    data["machine_after"] = machine()
    data["measured"] = f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    report.write_text(json.dumps(data, indent=1))
    write_section(Path(args.out), section(data, args.section), args.section)
    print(f"wrote {args.out} and {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
