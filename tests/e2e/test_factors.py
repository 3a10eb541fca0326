"""The factors panel on the shared page (issue 13): it opens from a click on a token in the
embedding, attention and block views, its codes equal the command line's, occlusion draws over
the token chips, the browser searches; screenshots on a desktop and a 360 px phone.

The codes and the occlusion are computed in the model worker (issue 16 x16: app/lab.py; the
worker's describe counts its lab calls), on its numpy reference of the page's tokens.

Tolerance for page vs command line: the worker codes its numpy reference trace (float32 numpy
under Pyodide, no BLAS) and the command line the native numpy trace (OpenBLAS); activations
agree to ~1e-6 relative (tests/e2e/test_views.py), and the FISTA code is Lipschitz
in x with constant ~1/σ_min of the active atoms, so weights are compared with atol 1e-3; the
factors above 1e-2 must be the same set. Both runs stop FISTA at the same relative step 1e-7.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .test_views import open_every_view, run_text

ROOT = Path(__file__).resolve().parents[2]
TEXT = "The tempfile module creates temporary files"
PANEL = "[data-testid=factors-panel][data-ready=true]"
ATOL = 1e-3


def cli_codes(stream: int, position: int) -> dict[int, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py")}
    r = subprocess.run([sys.executable, "-m", "glassbox", "factors", str(ROOT / "weights" / "mini"), TEXT,
                        "--layer", str(stream), "--position", str(position), "--json"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return {c["factor"]: c["weight"] for c in json.loads(r.stdout)["codes"]}


def page_codes(page) -> dict[int, float]:
    return {int(f): float(w) for f, w in page.eval_on_selector_all(
        "[data-testid=factor]", "els => els.map(e => [e.dataset.factor, e.dataset.weight])")}


def open_from(page, view: str, position: int) -> int:
    """Click token ``position`` in the factor strip of ``view``; returns the stream it opened."""
    button = page.locator(f"#view-{view} [data-testid=factors-open][data-position='{position}']")
    stream = int(button.get_attribute("data-stream"))
    button.click()
    page.wait_for_selector(f"{PANEL}[data-stream='{stream}'][data-position='{position}']", timeout=120_000)
    return stream


def test_panel_opens_from_each_view_and_equals_the_cli(app):
    page = app.page
    run_text(page, TEXT)
    open_every_view(page)
    lab_calls = "(await explainer.runner.describe())['lab_calls']"
    for view, position in (("embedding", 1), ("attention", 3), ("block", 5)):
        calls = app.py(lab_calls)
        stream = open_from(page, view, position)
        assert app.py(lab_calls) == calls + 1 and app.py("explainer.factors.lab.where") == "worker"
        got, want = page_codes(page), cli_codes(stream, position)
        assert got, f"no factors shown for {view}"
        big = lambda codes: {f for f, w in codes.items() if w > 1e-2}  # noqa: E731
        assert big(got) == big(want), (view, sorted(got.items())[:5], sorted(want.items())[:5])
        for f in set(got) | set(want):
            assert abs(got.get(f, 0.0) - want.get(f, 0.0)) <= ATOL, (view, f)
    assert page.locator("[data-testid=residual-norm]").count() == 1


def test_occlusion_search_and_screenshots(app, artifacts):
    page = app.page
    if page.locator(PANEL).count() == 0:
        run_text(page, TEXT)
        open_from(page, "block", 5)
    position = int(page.get_attribute(PANEL, "data-position"))
    calls = app.py("(await explainer.runner.describe())['lab_calls']")
    page.locator("[data-testid=factor-attribute]").first.click(no_wait_after=True)
    page.wait_for_selector("[data-testid=occlusion-token]", timeout=120_000)
    assert app.py("(await explainer.runner.describe())['lab_calls']") == calls + 1  # occlusion: in the worker
    assert page.locator("[data-testid=occlusion-token]").count() == position + 1
    page.locator("[data-testid=factor-browser] summary").click()
    page.get_by_test_id("factor-search").fill("the")
    page.wait_for_function("document.querySelector('[data-testid=browser-count]').textContent.includes('match')")
    assert page.locator("[data-testid=browser-factor]").count() >= 1
    page.evaluate("document.activeElement && document.activeElement.blur()")
    try:
        page.set_viewport_size({"width": 1280, "height": 900})
        page.locator("#view-factors").scroll_into_view_if_needed()
        page.locator("#view-factors").screenshot(path=str(artifacts / "factors-desktop.png"))
        page.locator("#view-embedding [data-testid=factor-strip]").screenshot(path=str(artifacts / "factors-strip.png"))
        page.set_viewport_size({"width": 360, "height": 740})
        page.wait_for_timeout(300)
        width = page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 360, f"the page scrolls sideways on a phone ({width} px wide)"
        page.locator("#view-factors").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "factors-phone.png"))
    finally:
        page.set_viewport_size({"width": 1280, "height": 720})
    page.locator("[data-action=factors-close]").click()
    page.wait_for_selector("[data-testid=factors-intro]")
