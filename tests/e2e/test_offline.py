"""The installable offline app in headless Chromium: service worker, model store, phones.

* offline: after one visit the page reloads with the network off, loads and predicts;
* update: a changed file gives a new version that downloads only that file, offers
  "Update ready — reload", and once reloaded leaves only the new app cache;
* a corrupted shard (fulfilled by a route with one byte flipped) is refused by name, with
  both hashes, and not stored;
* an interrupted download (the 2nd shard's request aborted once) resumes on reload without
  fetching the finished shard again (a multi-shard copy of weights/mini, route-served);
* a 360x740 touch phone picks light mode (q4 weights, the viewed layer only), loads,
  predicts, has no horizontal scroll, and the switch moves it to full mode and remembers;
  its boot shifts the layout by less than 0.1 (CLS, issue 16).

Each test opens its own browser context (fresh storage), sparingly: about 8 boots in all.
The service-worker tests serve a snapshot of the site from a second server (vendor/ linked,
the rest copied), so a file edited elsewhere during the run cannot change the version, and
so the update can change a file there. Those contexts have no Playwright route (routes and
service workers do not mix); every request is still checked to stay on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from glassbox import weights

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import precache  # noqa: E402
import serve  # noqa: E402

from .conftest import (BOOT_TIMEOUT_MS, LAYOUT_SHIFTS_JS, LOCAL_HOST, SETTLED,  # noqa: E402
                       largest_paint_is_the_loading_text, layout_shift, model_worker_isolation)

MODEL_CACHE = "glassbox-models-v1"
SHARD = json.loads((ROOT / "weights" / "mini" / "manifest.json").read_text())["shards"][0]

JS_CACHES = """async () => {
  const out = {};
  for (const name of await caches.keys()) {
    out[name] = (await (await caches.open(name)).keys()).map((r) => new URL(r.url).pathname);
  }
  return out;
}"""


# issue 16: the isolation headers of a response the page fetches (through the service worker).
JS_HEADERS = """async (path) => {
  const r = await fetch(path);
  await r.arrayBuffer();
  return {coop: r.headers.get('Cross-Origin-Opener-Policy'), coep: r.headers.get('Cross-Origin-Embedder-Policy'), ok: r.ok};
}"""


def settle(page, timeout_ms: int = BOOT_TIMEOUT_MS) -> str:
    page.wait_for_function(SETTLED, timeout=timeout_ms)
    return page.evaluate("document.documentElement.dataset.state")


def error_text(page) -> str:
    return " ".join((page.text_content("[data-testid=error]") or "").split())


def predictions(page) -> int:
    return page.locator("[data-testid=prediction]").count()


def new_context(browser, requests: list[str], **options):
    """A fresh context (own storage) recording every request, the service worker's included."""
    context = browser.new_context(**options)
    context.on("request", lambda request: requests.append(request.url))
    return context


def assert_local(requests: list[str]) -> None:
    foreign = [u for u in requests if urlsplit(u).hostname != LOCAL_HOST and not u.startswith(("data:", "blob:"))]
    assert not foreign, f"requests left 127.0.0.1: {foreign}"


# ----- a snapshot of the site on a second server -----------------------------------------------

def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """(base URL, root, request log): the site as it is now, served from a copy."""
    root = tmp_path_factory.mktemp("site")
    # vendor/ is linked file by file (hard links, or copies across file systems): the dev
    # server refuses a symlink that leads outside its root (issue 9).
    shutil.copytree(ROOT / "vendor", root / "vendor", copy_function=_link_or_copy)
    # Every manifest weights/index.json lists: the model picker reads each one's size at boot.
    for rel in precache.wanted_paths(ROOT) + ["sw.js", "weights/mini/manifest.json", "weights/mini-q4/manifest.json",
                                              "weights/mini/" + SHARD["file"]]:
        if rel.startswith("vendor/"):
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, root / rel)
    log: list[str] = []

    live = precache.Live(root)

    class Logged(serve.Handler):
        quiet = True
        isolated = False  # issue 16: a static host that sets no COOP/COEP (sw.js adds them)

        def send_head(self):
            log.append(urlsplit(self.path).path)
            return super().send_head()

    Logged.precache = live
    server = serve.Server((LOCAL_HOST, 0), partial(Logged, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://{LOCAL_HOST}:{server.server_address[1]}", root, log
    server.shutdown()
    server.server_close()


def test_offline_reload_then_update_replaces_the_old_cache(browser, snapshot):
    base, root, log = snapshot
    requests: list[str] = []
    context = new_context(browser, requests)
    page = context.new_page()
    try:
        # 1. First visit: boots, stores the app (service worker) and the model (loader).
        page.goto(f"{base}/")
        assert settle(page) == "ready", error_text(page)
        page.wait_for_function("document.documentElement.dataset.offline === 'ready'", timeout=120_000)
        caches = page.evaluate(JS_CACHES)
        v1 = [name for name in caches if name.startswith("glassbox-app-")]
        assert v1 == [f"glassbox-app-{precache.manifest(root)['version']}"], caches
        assert "/weights/mini/" + SHARD["file"] in caches[MODEL_CACHE]
        assert "/vendor/pyodide/pyodide.asm.wasm" in caches[v1[0]]
        # issue 16: the host sends no COOP/COEP and the first visit worked without them.
        assert page.evaluate("crossOriginIsolated") is False

        # 2. Network off: the page still loads and predicts.
        context.set_offline(True)
        started = time.perf_counter()
        page.reload()
        assert settle(page) == "ready", error_text(page)
        offline_s = time.perf_counter() - started
        assert page.evaluate("navigator.onLine") is False
        assert predictions(page) > 0
        # issue 16 (the "coi" pattern): the service worker's answers carry COOP/COEP, the page
        # it served is cross-origin isolated, and so is the model worker it started.
        assert page.evaluate("crossOriginIsolated") is True
        assert model_worker_isolation(page) is True
        for path in ("./index.html", "./web/model-worker.mjs", "./vendor/pyodide/pyodide.asm.wasm"):
            served = page.evaluate(JS_HEADERS, path)
            assert served == {"coop": "same-origin", "coep": "credentialless", "ok": True}, (path, served)
        assert "without the network" in page.text_content("[data-testid=storage-status]")
        print(f"\noffline reload to ready: {offline_s:.1f} s")
        context.set_offline(False)

        # 3. A new version: one file changes on the server.
        css = root / "web" / "pwa.css"
        changed = css.read_bytes() + b"\n/* update test: version 2 */\n"
        css.unlink()
        css.write_bytes(changed)
        v2 = f"glassbox-app-{precache.manifest(root)['version']}"
        assert [v2] != v1
        log.clear()
        page.evaluate("window.glassboxPwa.registration.update()")
        page.wait_for_selector("[data-testid=update]", state="visible", timeout=60_000)
        assert page.inner_text("[data-testid=update]").startswith("Update ready")
        done = [m for m in page.evaluate("window.glassboxPwa.messages") if m.get("type") == "precached"]
        assert done[-1]["version"] == v2.removeprefix("glassbox-app-")
        assert done[-1]["fetched"] == ["web/pwa.css"], "only the changed file is downloaded"
        assert "/web/pwa.css" in log and set(log) <= {"/sw.js", "/sw-precache.js", "/web/pwa.css"}, log
        # Until the person reloads, the old version stays in charge.
        assert set(page.evaluate(JS_CACHES)) >= {v1[0], v2}

        # 4. "reload": the new version takes over and the old cache is gone.
        with page.expect_navigation(timeout=60_000):
            page.click("[data-testid=update-reload]")
        assert settle(page) == "ready", error_text(page)
        caches = page.evaluate(JS_CACHES)
        assert [n for n in caches if n.startswith("glassbox-app-")] == [v2], caches
        assert MODEL_CACHE in caches, "an app update keeps the stored model"
        served = page.evaluate("fetch('./web/pwa.css').then((r) => r.text())")
        assert "version 2" in served
        assert page.evaluate("crossOriginIsolated") is True  # issue 16: the new worker adds them too
        assert predictions(page) > 0
    finally:
        context.close()
    assert_local(requests)


def test_corrupted_shard_is_refused_by_name_and_not_stored(open_page):
    good = (ROOT / "weights" / "mini" / SHARD["file"]).read_bytes()
    bad = good[:1000] + bytes([good[1000] ^ 0x01]) + good[1001:]
    actual = hashlib.sha256(bad).hexdigest()

    def route(context):
        context.route(f"**/weights/mini/{SHARD['file']}",
                      lambda r: r.fulfill(status=200, body=bad, content_type="application/octet-stream"))

    broken = open_page("?sw=off", route)
    try:
        assert broken.wait_settled(120_000) == "error"
        message = broken.page.inner_text("[data-testid=error-message]")
        details = broken.page.text_content("[data-testid=error-details]")
        assert SHARD["file"] in message and "corrupted" in message
        assert SHARD["sha256"] in details and actual in details, details
        assert "not used or stored" in details
        stored = broken.page.evaluate(JS_CACHES).get(MODEL_CACHE, [])
        assert not [p for p in stored if p.endswith(".safetensors")], stored
        assert not [p for p in stored if p.endswith("manifest.json")], stored
    finally:
        broken.page.context.close()


@pytest.fixture(scope="module")
def multi_shard(tmp_path_factory):
    """weights/mini re-cut into shards of at most 3 MiB (same weights, int8) in a temp folder."""
    checkpoint = weights.load_folder(str(ROOT / "weights" / "mini"))
    folder = tmp_path_factory.mktemp("multi")
    manifest = weights.write_folder(str(folder), checkpoint.config, checkpoint.dequantized(), "int8",
                                    checkpoint.manifest["tokenizer"], max_shard_bytes=3 * 1024 * 1024)
    assert len(manifest["shards"]) >= 3
    return folder, [s["file"] for s in manifest["shards"]]


def test_interrupted_download_resumes_without_refetching_finished_shards(open_page, multi_shard):
    folder, shards = multi_shard
    asked: list[str] = []
    aborted: list[str] = []

    def serve_model(route):
        name = urlsplit(route.request.url).path.rsplit("/", 1)[-1]
        asked.append(name)
        if name == shards[1] and not aborted:
            aborted.append(name)
            route.abort("connectionreset")  # the second shard's first request breaks off
            return
        path = folder / name
        if not path.is_file():
            route.fulfill(status=404, body="not found")
            return
        route.fulfill(status=200, path=str(path),
                      content_type="application/json" if name.endswith(".json") else "application/octet-stream")

    app = open_page("?model=multi&sw=off", lambda context: context.route("**/weights/multi/**", serve_model))
    try:
        assert app.wait_settled(120_000) == "error"
        message = app.page.inner_text("[data-testid=error-message]")
        assert shards[1] in message and "resume" in app.page.text_content("[data-testid=error-details]")
        assert asked.count(shards[0]) == 1 and shards[2] not in asked
        stored = app.page.evaluate(JS_CACHES)[MODEL_CACHE]
        assert f"/weights/multi/{shards[0]}" in stored and f"/weights/multi/{shards[1]}" not in stored

        asked.clear()
        app.page.reload()
        assert settle(app.page) == "ready", error_text(app.page)
        assert shards[0] not in asked, f"the finished shard was fetched again: {asked}"
        assert [n for n in asked if n in shards] == shards[1:]
        assert predictions(app.page) > 0
        status = app.page.text_content("[data-testid=storage-status]")
        assert f"1 of {len(shards)} shards read from this device" in status
    finally:
        app.page.context.close()


def test_phone_viewport_light_mode_loads_predicts_and_switches(browser, site):
    requests: list[str] = []
    context = new_context(browser, requests, viewport={"width": 360, "height": 740},
                          is_mobile=True, has_touch=True, device_scale_factor=2)
    context.add_init_script(LAYOUT_SHIFTS_JS)  # issue 16: this boot also measures the phone's CLS
    page = context.new_page()
    py = lambda code: page.evaluate("code => window.glassbox_py(code)", code)  # noqa: E731
    try:
        page.goto(f"{site}/?sw=off")
        assert settle(page) == "ready", error_text(page)
        cls, shifts = layout_shift(page)
        assert cls < 0.1, f"cumulative layout shift {cls:.3f} on a 360 px phone while booting: {shifts}"
        largest_paint_is_the_loading_text(page)  # issue 16: the phone's LCP is the first frame's
        assert page.evaluate("document.documentElement.dataset.mode") == "light"
        assert "phone-sized (360×740 px)" in page.text_content("[data-testid=mode-why]")
        assert any("/weights/mini-q4/" in u for u in requests)
        assert not any(u.endswith(".safetensors") and "/weights/mini/" in u for u in requests)
        assert predictions(page) > 0
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"horizontal scroll on a phone: {width}"
        # Light mode keeps the viewed layer only, and computes another when it is viewed.
        # issue 15: on SwiftShader (a software adapter) the start-up calibration picks the backend.
        assert py("explainer.runner.name") in ("numpy, light mode", "WebGPU, light mode")
        assert py("sorted(n for n in trace.tensors if n.endswith('.att'))") == ["h.0.att"]
        assert py("pending = explainer.select_layer(2)\nif pending is not None: await pending  # a task on WebGPU\n"
                  "sorted(n for n in explainer.trace.tensors if n.endswith('.att'))") == ["h.2.att"]
        assert page.locator("[data-testid=error]").is_hidden()

        # The switch (a tap) goes to full mode and remembers it.
        with page.expect_navigation(timeout=60_000):
            page.tap("[data-testid=status-chip] summary")
            page.tap("[data-testid=mode-toggle]")
        assert settle(page) == "ready", error_text(page)
        assert page.evaluate("document.documentElement.dataset.mode") == "full"
        assert "you chose it with the switch" in page.text_content("[data-testid=mode-why]")
        assert page.evaluate("localStorage.getItem('glassbox-mode')") == "full"
        assert any(u.endswith(SHARD["file"]) and "/weights/mini/" in u for u in requests)
        assert predictions(page) > 0
    finally:
        context.close()
    assert_local(requests)
