"""Browser end-to-end fixtures: the real page in Debian's headless Chromium, via Playwright.

Shared by every test under tests/e2e (fixture scope "package": torn down after the last e2e
test, because Playwright's sync API holds an asyncio loop on the main thread that would
break asyncio.run() in later tests), so Pyodide boots once for all of them:

    site       the project's own server (tools/serve.py) on a free 127.0.0.1 port
    browser    /usr/bin/chromium, headless, WebGPU through SwiftShader
    app        an AppPage: the page loaded once and booted to data-state=ready

``app.page`` is the Playwright page, ``app.py(code)`` runs Python in the page and returns
the JSON value of its last expression (numpy arrays arrive as lists), ``app.requests`` lists
every URL the page asked for, ``app.console`` every console message, ``app.boot_seconds`` the
time from navigation to ready. Tests share the page: they may read it and run Python in it,
but must not navigate it away; a test that needs a different page opens its own with the
``open_page(path="", route=None)`` fixture (its own browser context; close it when done).

A renderer crash (Playwright's "Target crashed") is a browser failure, not a page error: CI
once lost the shared page that way at its first boot, and every later test errored with it.
Chromium logs to tests/artifacts/chromium.log, a crash is marked on its AppPage, and a shared
page that crashed (at boot or in a test) is booted again once before the next test, with a
warning naming the crash; a second crash fails as before. A failing test's report ends with
the tail of that log.

Every test fails if any page asked for a host other than 127.0.0.1 (such requests are also
blocked, so the page runs as it would with the network cut). A failing test's report
includes the browser console.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from serve import serve_in_thread  # noqa: E402

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("GLASSBOX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--enable-unsafe-webgpu",
    "--enable-features=Vulkan", "--use-webgpu-adapter=swiftshader",
]
CHROMIUM_LOG = ROOT / "tests" / "artifacts" / "chromium.log"
MAX_SHARED_REBOOTS = 1
BOOT_TIMEOUT_MS = 180_000
SETTLED = "['ready', 'error'].includes(document.documentElement.dataset.state)"
# issue 16 (no layout shift): every page records its layout shifts (PerformanceObserver,
# buffered, those without recent input) and when it first became ready; layout_shift() sums them.
LAYOUT_SHIFTS_JS = """
window.__glassboxShifts = []; window.__glassboxReadyAt = null;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.hadRecentInput) continue;
    window.__glassboxShifts.push({value: e.value, at: e.startTime, sources: (e.sources || []).map((s) =>
      s.node ? (s.node.id ? '#' + s.node.id : s.node.nodeName + '.' + String(s.node.className || '')) : '?')});
  }
}).observe({type: 'layout-shift', buffered: true});
// issue 16: the largest contentful paints too (the first screen's largest element, and when).
window.__glassboxLcp = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const el = e.element;
    window.__glassboxLcp.push({size: e.size, at: e.startTime,
      node: el ? (el.dataset.testid || (el.id ? '#' + el.id : el.nodeName + '.' + String(el.className || ''))) : '?'});
  }
}).observe({type: 'largest-contentful-paint', buffered: true});
new MutationObserver(() => {
  if (window.__glassboxReadyAt === null && document.documentElement.dataset.state === 'ready') {
    window.__glassboxReadyAt = performance.now();
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-state']});
"""
LOCAL_HOST = "127.0.0.1"


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


@dataclass
class AppPage:
    page: object
    requests: list[str] = field(default_factory=list, repr=False)
    foreign: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list, repr=False)  # in the failure report instead
    boot_seconds: float | None = None
    started: float = field(default_factory=time.perf_counter, repr=False)
    crashed: bool = False  # the renderer process died (Playwright's page "crash" event)

    def state(self) -> str:
        return self.page.evaluate("document.documentElement.dataset.state")

    def py(self, code: str):
        """Run Python in the page (window.glassbox_py); Python errors raise with the traceback."""
        return self.page.evaluate("code => window.glassbox_py(code)", code)

    def wait_settled(self, timeout_ms: int = BOOT_TIMEOUT_MS) -> str:
        """Wait for data-state ready or error; boot_seconds counts from navigation."""
        self.page.wait_for_function(SETTLED, timeout=timeout_ms)
        self.boot_seconds = time.perf_counter() - self.started
        return self.state()


_PAGES: list[AppPage] = []


def _open_page(browser, site: str, path: str = "", route=None, into: AppPage | None = None) -> AppPage:
    """A new page in its own context, recording requests and console, not yet settled.

    ``route(context)`` may install extra Playwright routes (e.g. to break a file on purpose).
    ``into``: an AppPage to start afresh for the new page (tests holding it see the new page).
    """
    context = browser.new_context()
    context.add_init_script(LAYOUT_SHIFTS_JS)  # issue 16
    if into is None:
        app = AppPage(page=None)
        _PAGES.append(app)
    else:
        app = into
        app.__init__(page=None)  # every field back to its default

    def guard(route_):
        url = route_.request.url
        if urlsplit(url).hostname != LOCAL_HOST:
            app.foreign.append(url)
            route_.abort("blockedbyclient")
        else:
            route_.fallback()

    context.route("**/*", guard)
    if route is not None:
        route(context)
    page = context.new_page()
    app.page = page
    page.on("request", lambda request: app.requests.append(request.url))
    page.on("console", lambda msg: app.console.append(f"[{msg.type}] {msg.text}"))
    page.on("pageerror", lambda error: app.console.append(f"[pageerror] {error}"))
    page.on("crash", lambda _: _crashed(app))
    app.started = time.perf_counter()
    page.goto(f"{site}/{path}")
    return app


def _crashed(app: AppPage) -> None:
    app.crashed = True
    app.console.append("[crash] the renderer process of this page crashed (see tests/artifacts/chromium.log)")


def chromium_log_tail(lines: int = 40) -> str:
    """The last lines of Chromium's own log, without its D-Bus complaints (no bus here)."""
    if not CHROMIUM_LOG.is_file():
        return "(no log)"
    kept = [line for line in CHROMIUM_LOG.read_text(errors="replace").splitlines() if "dbus" not in line]
    return "\n".join(kept[-lines:]) or "(empty)"


def model_worker_isolation(page) -> bool | None:
    """crossOriginIsolated inside the page's model worker (web/model-worker.mjs), None when the
    page runs none (issue 16)."""
    for worker in page.workers:
        if worker.url.endswith("/web/model-worker.mjs"):
            return worker.evaluate("crossOriginIsolated")
    return None


def layout_shift(page, after_ready_ms: float = 2000.0) -> tuple[float, list[dict]]:
    """(CLS, shifts) of a page opened with LAYOUT_SHIFTS_JS: the layout shifts without recent
    input from navigation until ``after_ready_ms`` after it became ready (the frames that first
    show the ready page included); waits for that moment. Issue 16."""
    page.wait_for_function("window.__glassboxReadyAt !== null", timeout=BOOT_TIMEOUT_MS)
    page.wait_for_function(f"performance.now() > window.__glassboxReadyAt + {after_ready_ms}")
    shifts = page.evaluate(f"window.__glassboxShifts.filter((s) => s.at <= window.__glassboxReadyAt + {after_ready_ms})")
    return sum(s["value"] for s in shifts), shifts


def largest_paints(page, after_ready_ms: float = 2000.0) -> list[dict]:
    """The largest-contentful-paint entries ({size, at, node}) of a page opened with
    LAYOUT_SHIFTS_JS, from navigation until ``after_ready_ms`` after it became ready; the last
    is the page's LCP element. Issue 16."""
    page.wait_for_function("window.__glassboxReadyAt !== null", timeout=BOOT_TIMEOUT_MS)
    page.wait_for_function(f"performance.now() > window.__glassboxReadyAt + {after_ready_ms}")
    return page.evaluate(f"window.__glassboxLcp.filter((e) => e.at <= window.__glassboxReadyAt + {after_ready_ms})")


def largest_paint_is_the_loading_text(page) -> None:
    """Assert that the page's LCP element is the loading card's static explanation
    (index.html's status-intro, painted with the first frame): no element the boot or the
    first run draws later is larger. Issue 16 (Lighthouse's LCP, desktop and phone)."""
    entries = largest_paints(page)
    assert entries, "no largest-contentful-paint entry from navigation to ready"
    assert entries[-1]["node"] == "status-intro", f"the largest paint is not the loading text: {entries}"


@pytest.fixture(scope="package")
def site():
    server, _ = serve_in_thread(ROOT)
    yield f"http://{LOCAL_HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium); "
                    "the e2e tests never download a browser")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    CHROMIUM_LOG.unlink(missing_ok=True)
    log = ["--enable-logging", f"--log-file={CHROMIUM_LOG}", "--v=0"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_FLAGS + log)
        yield browser
        browser.close()


SHARED_PATH = "?backend=webgpu"
_SHARED: dict = {"app": None, "reboots": 0}


def _boot_shared(browser, site, into: AppPage | None = None) -> tuple[AppPage, str]:
    # ?backend=webgpu: on SwiftShader the default page would time both backends and keep
    # numpy (issue 15); the shared page is where the WebGPU path is tested, so it asks for it.
    app = _open_page(browser, site, SHARED_PATH, into=into)
    try:
        state = app.wait_settled()
    except Exception as error:
        if not (app.crashed or "Target crashed" in str(error)):
            raise
        app.crashed, state = True, "crashed"
    return app, state


def _reboot_after_crash(browser, site, app: AppPage, when: str) -> AppPage:
    """Boot the shared page again in a new context after its renderer crashed, once per run."""
    if _SHARED["reboots"] >= MAX_SHARED_REBOOTS:
        pytest.fail(f"the shared page's renderer crashed again ({when}); Chromium's log:\n{chromium_log_tail()}")
    _SHARED["reboots"] += 1
    warnings.warn(f"the shared page's renderer crashed ({when}); booted it again in a new context. "
                  f"Chromium's log:\n{chromium_log_tail(15)}", RuntimeWarning, stacklevel=1)
    with contextlib.suppress(Exception):
        app.page.context.close()
    _, state = _boot_shared(browser, site, into=app)  # the same AppPage: tests holding it see the new page
    if state == "crashed":
        pytest.fail(f"the shared page's renderer crashed again at boot; Chromium's log:\n{chromium_log_tail()}")
    return app


@pytest.fixture(scope="package")
def app(browser, site) -> AppPage:
    """The page, booted once for all e2e tests (again once if its renderer crashes)."""
    app, state = _boot_shared(browser, site)
    if state == "crashed":
        app = _reboot_after_crash(browser, site, app, "at boot")
        state = app.state()
    if state != "ready":
        error = app.page.text_content("[data-testid=error]") or ""
        pytest.fail(f"the page did not become ready (state {state}): {' '.join(error.split())}\n"
                    + "\n".join(app.console))
    print(f"\npage boot: {app.boot_seconds:.1f} s to data-state=ready")
    _SHARED["app"] = app
    return app


@pytest.fixture(autouse=True)
def _revive_the_shared_page(request):
    """Before each test: if the shared page's renderer crashed in an earlier test, boot it again
    (once per run) so that one browser crash costs one test, not every test after it."""
    shared = _SHARED["app"]
    if shared is not None and shared.crashed:
        _reboot_after_crash(request.getfixturevalue("browser"), request.getfixturevalue("site"),
                            shared, f"before {request.node.name}")
    yield


@pytest.fixture
def open_page(browser, site):
    """open_page(path="", route=None) -> AppPage: a fresh page in its own context."""
    return lambda path="", route=None: _open_page(browser, site, path, route)


@pytest.fixture(autouse=True)
def _only_local_requests():
    """Fail the test if any page opened so far asked for a host other than 127.0.0.1."""
    yield
    foreign = [url for app in _PAGES for url in app.foreign]
    assert not foreign, f"requests left 127.0.0.1: {foreign}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and _PAGES:
        lines = [line for app in _PAGES for line in app.console]
        report.sections.append(("browser console", "\n".join(lines) or "(empty)"))
        if any(app.crashed for app in _PAGES) or "Target crashed" in str(report.longrepr):
            report.sections.append(("Chromium's log (tail)", chromium_log_tail()))
    return report


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
