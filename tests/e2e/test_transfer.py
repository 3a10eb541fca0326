"""What the page costs over the wire and how still it stands while booting (issue 16).

* the shared page's boot (1280x720) shifts its layout by less than 0.1 (CLS, from a
  PerformanceObserver of 'layout-shift' entries without recent input, navigation to ready;
  the 360 px phone's boot is measured in test_offline's phone test, which boots one anyway);
* the largest contentful paint (1280x720 here, 360 px in test_offline's phone test) is the
  loading card's static explanation, painted with the first frame;
* Pyodide's wasm reached the page compressed (its resource timing: bytes on the wire well
  under the decoded size), and a fetch of it from the page that bypasses the service worker
  is answered with Content-Encoding br (or gzip) and decodes to the pinned original's sha256.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from vendor import PYODIDE_CORE  # noqa: E402

from .conftest import largest_paint_is_the_loading_text, layout_shift  # noqa: E402

WASM = "vendor/pyodide/pyodide.asm.wasm"


def test_booting_shifts_the_layout_by_less_than_a_tenth(app):
    cls, shifts = layout_shift(app.page)
    assert cls < 0.1, f"cumulative layout shift {cls:.3f} from navigation to ready: {shifts}"


def test_the_largest_paint_is_the_static_loading_text(app):
    """The largest element the first screen paints is the loading card's static explanation,
    painted with the first frame: nothing drawn after the boot is larger (Lighthouse's LCP)."""
    largest_paint_is_the_loading_text(app.page)


def test_pyodide_wasm_arrives_compressed_and_decodes_to_the_original(app):
    page = app.page
    boot = page.evaluate("""(name) => performance.getEntriesByType('resource')
        .filter((e) => e.name.endsWith(name)).map((e) => [e.encodedBodySize, e.decodedBodySize])""", WASM)
    assert boot, "the boot's fetch of the wasm has no resource timing"
    encoded, decoded = boot[0]
    assert decoded == (ROOT / WASM).stat().st_size
    assert 0 < encoded < 0.4 * decoded, f"the boot's wasm came over the wire as {encoded} of {decoded} bytes"

    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setBypassServiceWorker", {"bypass": True})  # the network's answer, not the cache's
    try:
        with page.expect_response(lambda r: r.url.endswith(WASM) and r.request.resource_type == "fetch") as info:
            digest = page.evaluate("""async (url) => {
                const response = await fetch(url, {cache: 'no-store'});
                const bytes = await response.arrayBuffer();
                const hash = await crypto.subtle.digest('SHA-256', bytes);
                return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, '0')).join('');
            }""", WASM)
        headers = info.value.all_headers()
    finally:
        cdp.send("Network.setBypassServiceWorker", {"bypass": False})
        cdp.detach()
    assert headers.get("content-encoding") in ("br", "gzip"), headers
    assert headers["content-type"] == "application/wasm" and "accept-encoding" in headers["vary"].lower()
    assert digest == PYODIDE_CORE["pyodide.asm.wasm"]
