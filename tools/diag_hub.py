#!/usr/bin/env python3
"""Which Python calls make the page's main-thread long tasks while a Hub model loads (issue 16, hw20).

    PYTHONPATH=py .venv/bin/python tools/diag_hub.py [--shape tiny|small] [--root CHECKOUT] [--json OUT]

The same set-up as tools/bench_hub.py (a random-init checkpoint on the fake Hub, a fresh
headless Chromium context, ``?backend=numpy``), but before clicking the notice's Download
button it runs Python in the page (window.glassbox_py) that wraps the functions of the Hub
load -- glassbox.hub's converter steps, loader.py's store reads/writes, hashing and
verification, weights.from_shards, the tokenizer, the kernel, the explainer's build and first
run -- so that each call records its span (performance.now(), the clock of the long-task
entries). Coroutines are timed per step (each resumption is one synchronous slice, which is
what a long task is made of); Python's garbage collector is timed through gc.callbacks.
Nothing in the app changes: the wrappers live in this page only.

Prints, for the click-to-first-prediction window:

* each wrapped call's total synchronous time, its longest slice and its count (phase -> ms);
* each main-thread long task over 200 ms with the wrapped calls overlapping it (innermost
  first), so a long task is attributed to the Python that ran in it.

A diagnostic, not a test, not a benchmark table (bench_hub.py writes bench/results.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_browser import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from bench_hub import CLICK_TO_READY, OBSERVE, checkpoint, long_tasks  # noqa: E402
from serve import serve_in_thread  # noqa: E402

# (module, attribute path, label). Sync functions, coroutine functions and generators are told
# apart in the page; a missing attribute is skipped (an older or newer checkout).
TARGETS = """
glassbox.hub Converter.run
glassbox.hub Converter._tensor
glassbox.hub Converter._range
glassbox.safetensors decode
glassbox.safetensors save
glassbox.safetensors load
glassbox.safetensors load_with_metadata
glassbox.convert hf_tensor
glassbox.weights store_tensor
glassbox.weights shard_files
glassbox.weights sha256_hex
glassbox.weights verify_bytes
glassbox.weights verify_shard
glassbox.weights from_shards
glassbox.weights _check_stored
glassbox.weights manifest_text
glassbox.weights Checkpoint.linear_params
glassbox.model tokenizer_from_files
glassbox.model Model.__init__
glassbox.model Model.keep_quantized
glassbox.tokenizer Tokenizer.__init__
app.hub_loader HubNetwork.fetch_range
app.hub_loader HubNetwork.fetch
app.hub_loader PrefixStore.put
app.hub_loader PrefixStore.get
app.hub_loader FolderFetch.__call__
app.hub_loader ModelChooser._convert
app.hub_loader ModelChooser.show
app.hub_loader load_model
app.loader BrowserStore.get
app.loader BrowserStore.put
app.loader BrowserStore.keys
app.loader verify_file
app.loader build_model
app.gpu_light use_kernel
app.kernel load_kernel
app.explainer Explainer.__init__
app.explainer Explainer.mount
app.explainer Explainer.start
app.explainer Explainer.render_all
app.explainer Explainer.set_trace
app.worker_client ModelWorker.attach
app.binding Binding.attach
app.qk_dom attach_qk
app.dom Page.progress
app.transfer incoming
glassbox.sampling distribution
app.controllers.run *
app.controllers.map *
app.controllers.embedding *
app.controllers.attention *
app.controllers.block *
app.controllers.output *
app.controllers.sampling *
app.controllers.console *
app.controllers.base *
app.experiments_controller *
app.factors *
app.views.embedding *
app.views.attention *
app.views.block *
app.views.output *
app.views.overview *
app.views.common *
app.views.controls *
app.runner *
app.protocol *
"""

INSTALL = r"""
import functools, gc, importlib, inspect, js
_now = js.performance.now
_spans = []
_DIAG = globals().setdefault("_diag_state", {"spans": _spans})

def _record(label, t0):
    _DIAG["spans"].append((label, t0, _now()))

class _Timed:
    def __init__(self, coro, label):
        self.coro, self.label = coro, label
    def __await__(self):
        it = self.coro.__await__()
        value, error = None, None
        while True:
            t = _now()
            try:
                step = it.throw(error) if error is not None else it.send(value)
            except StopIteration as stop:
                _record(self.label, t)
                return stop.value
            except BaseException:
                _record(self.label, t)
                raise
            _record(self.label, t)
            try:
                value, error = (yield step), None
            except BaseException as e:  # noqa: BLE001
                value, error = None, e

def _wrap(f, label):
    if inspect.iscoroutinefunction(f):
        @functools.wraps(f)
        async def w(*a, **k):
            return await _Timed(f(*a, **k), label)
    elif inspect.isgeneratorfunction(f):
        @functools.wraps(f)
        def w(*a, **k):
            it = f(*a, **k)
            while True:
                t = _now()
                try:
                    item = next(it)
                except StopIteration:
                    _record(label, t)
                    return
                _record(label, t)
                yield item
    else:
        @functools.wraps(f)
        def w(*a, **k):
            t = _now()
            try:
                return f(*a, **k)
            finally:
                _record(label, t)
    w._diag = True
    return w

def _expand(module, path):
    # "module *": every function of the module and every method of its classes (dunders and
    # properties left out), each as (owner, name, label).
    mod = importlib.import_module(module)
    short = module.rsplit(".", 1)[-1]
    for name, value in list(vars(mod).items()):
        if name.startswith("__"):
            continue
        if inspect.isfunction(value) and value.__module__ == module:
            yield mod, name, f"{short}.{name}"
        elif inspect.isclass(value) and value.__module__ == module:
            for attr, raw in list(vars(value).items()):
                if not attr.startswith("__") and inspect.isfunction(raw):
                    yield value, attr, f"{value.__name__}.{attr}"

done = []
for line in TARGETS.strip().splitlines():
    module, path = line.split()
    if path == "*":
        try:
            found = list(_expand(module, path))
        except ImportError:
            continue
        for owner, name, label in found:
            raw = inspect.getattr_static(owner, name)
            if not getattr(raw, "_diag", False):
                setattr(owner, name, _wrap(raw, label))
                done.append(label)
        continue
    try:
        owner = importlib.import_module(module)
        *parents, name = path.split(".")
        for p in parents:
            owner = getattr(owner, p)
        raw = inspect.getattr_static(owner, name)
    except (ImportError, AttributeError):
        continue
    if isinstance(raw, (staticmethod, classmethod)) or getattr(raw, "_diag", False):
        continue
    setattr(owner, name, _wrap(raw, path))
    done.append(path)
done = sorted(set(done))

def _gc(phase, info, _t=[0.0]):
    if phase == "start":
        _t[0] = _now()
    else:
        _DIAG["spans"].append((f"gc (generation {info.get('generation')})", _t[0], _now()))
gc.callbacks.append(_gc)
done
"""


def attribute(spans: list, tasks: list[tuple[float, float]], t0: float, t1: float) -> dict:
    """Per label: total, longest, count of synchronous spans in [t0, t1]; per long task over 200 ms:
    the labels overlapping it (ms of overlap), shortest span first."""
    phases: dict[str, list[float]] = {}
    for label, s, e in spans:
        if e >= t0 and s <= t1:
            phases.setdefault(label, []).append(e - s)
    table = sorted(((label, sum(d), max(d), len(d)) for label, d in phases.items()), key=lambda r: -r[1])
    found = []
    for start, duration in sorted(tasks, key=lambda t: -t[1]):
        if duration <= 200:
            continue
        end = start + duration
        hits = {}
        for label, s, e in spans:
            overlap = min(e, end) - max(s, start)
            if overlap > 0.5:
                hits[label] = hits.get(label, 0.0) + overlap
        found.append({"start_ms": start - t0, "ms": duration,
                      "calls": sorted(hits.items(), key=lambda kv: kv[1])})
    return {"phases": table, "long": found}


def run(shape: str, root: str) -> dict:
    from fake_hub import FakeHub
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint(shape, Path(tmp) / shape)
        hub = FakeHub({f"test/{shape}": str(Path(tmp) / shape)}).start()
        server, _ = serve_in_thread(root)
        site = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
                page = browser.new_context().new_page()
                page.goto(f"{site}/index.html?sw=off&model=hf:test/{shape}&hub={hub.url}&backend=numpy")
                page.wait_for_selector("[data-testid=hub-confirm]", timeout=600_000)
                wrapped = page.evaluate("code => window.glassbox_py(code)",
                                        f"TARGETS = {TARGETS!r}\n" + INSTALL)
                page.evaluate(OBSERVE)
                t0, t1 = page.evaluate(CLICK_TO_READY)
                tasks = [(s, d) for s, d in page.evaluate("window.__long") if s + d >= t0 and s <= t1]
                long_tasks(page, t0, t1)
                spans = page.evaluate("code => window.glassbox_py(code)", "_diag_state['spans']")
                state = page.evaluate("document.documentElement.dataset.state")
                browser.close()
        finally:
            server.shutdown()
            hub.stop()
    out = attribute(spans, tasks, t0, t1)
    return {"shape": shape, "state": state, "wrapped": len(wrapped), "click_to_first_ms": t1 - t0,
            "longest_ms": max((d for _, d in tasks), default=0.0), "over_200": sum(d > 200 for _, d in tasks),
            "long_sum_ms": sum(d for _, d in tasks), **out}


def report(r: dict) -> str:
    lines = [f"{r['shape']}: state {r['state']}, {r['wrapped']} functions wrapped, click to first prediction "
             f"{r['click_to_first_ms'] / 1e3:.1f} s, longest task {r['longest_ms']:.0f} ms, "
             f"{r['over_200']} tasks > 200 ms, long tasks {r['long_sum_ms']:.0f} ms in all", "",
             "phase (synchronous time)                 total ms   longest ms   count"]
    for label, total, longest, count in r["phases"]:
        if total >= 5:
            lines.append(f"{label:40s} {total:9.0f} {longest:12.0f} {count:7d}")
    lines += ["", "long tasks > 200 ms (ms after the click, duration): the calls running in them (ms)"]
    for t in r["long"]:
        calls = ", ".join(f"{label} {ms:.0f}" for label, ms in t["calls"]) or "(no wrapped Python call)"
        lines.append(f"  at {t['start_ms']:8.0f}  {t['ms']:6.0f} ms: {calls}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--root", default=str(ROOT), help="the checkout to serve (default: this one)")
    parser.add_argument("--json", help="also write the raw result here")
    args = parser.parse_args(argv)
    from bench import machine

    r = run(args.shape, args.root)
    print(machine())
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
