"""The first screen as a picture of the model (issue 10): the map in the first viewport on a
desktop and a phone, a short default page, the map opening parts in place, the busy state,
the status chip and the console. All on the shared page (tests/e2e/conftest.py)."""

from __future__ import annotations

import pytest

from .test_views import RUN_TIMEOUT_MS, run_text, runs, wait_run

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 360, "height": 740}


@pytest.fixture()
def viewport(app):
    """Set a viewport for one test, scrolled to the top; the shared page is left as found."""
    before = app.page.viewport_size

    def use(size):
        app.page.set_viewport_size(size)
        app.page.evaluate("window.scrollTo(0, 0)")
        return app.page

    yield use
    app.page.set_viewport_size(before)


def box(page, selector):
    return page.evaluate("""s => { const r = document.querySelector(s).getBoundingClientRect();
        return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height}; }""", selector)


def close_every_view(page):
    if page.get_attribute("#open-all", "aria-pressed") == "true":  # "Every view" first: it closes them all
        page.click("#open-all")
    page.evaluate("""document.querySelectorAll('[data-action=close-view]').forEach(b => {
        if (b.closest('.view').dataset.open === 'true') b.click(); })""")
    # The default state: the model picker's list and the status chip closed too (other tests open them).
    page.evaluate("document.querySelectorAll('details.pick-details[open], details.status-chip[open]')"
                  ".forEach(d => { d.open = false; })")


def test_the_map_is_the_first_screen_on_a_desktop(app, viewport):
    page = viewport(DESKTOP)
    close_every_view(page)
    page.evaluate("window.scrollTo(0, 0)")
    assert app.state() == "ready"
    the_map = box(page, "[data-testid=model-map]")
    assert the_map["top"] >= 0 and the_map["bottom"] <= DESKTOP["height"], the_map
    for selector in ("[data-testid=prompt]", "[data-testid=example]", "[data-testid=status-chip]"):
        assert box(page, selector)["bottom"] <= DESKTOP["height"], selector
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height <= 3 * DESKTOP["height"], f"default page is {height} px tall"
    n_layer = app.py("model.config.n_layer")
    parts = page.eval_on_selector_all("[data-testid=model-map] [data-part]", "els => els.map(e => e.dataset.part)")
    assert {f"block-{b}-{p}" for b in range(n_layer) for p in ("attention", "mlp")} | {"embedding", "output"} <= set(parts)
    # The backend/mode/offline cards are one chip that opens on demand.
    assert page.is_hidden("[data-testid=backend]")
    page.click("[data-testid=status-chip] summary")
    assert page.is_visible("[data-testid=backend]") and page.is_visible("[data-testid=device-mode]")
    page.click("[data-testid=status-chip] summary")


def test_the_map_is_in_the_first_phone_screen(app, viewport):
    page = viewport(PHONE)
    run_text(page, "The function returns")  # a short prompt: earlier tests may leave a long one's chips
    close_every_view(page)
    page.evaluate("window.scrollTo(0, 0)")
    the_map = box(page, "[data-testid=model-map]")
    assert the_map["top"] < PHONE["height"] - 120, the_map  # at least its upper part shows
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"horizontal scroll on a phone: {width}"


def test_a_map_part_opens_its_view_in_place_and_back(app, viewport):
    page = viewport(DESKTOP)
    close_every_view(page)
    assert page.is_hidden("#view-attention")
    page.click("[data-testid=model-map] [data-part=block-1-attention]")
    page.wait_for_function("document.querySelector('#view-attention').dataset.open === 'true'")
    assert page.is_visible("#view-attention") and "layer 2" in page.inner_text("#view-attention h2")
    assert page.get_attribute("[data-testid=model-map] [data-part=block-1-attention]", "aria-pressed") == "true"
    assert page.get_attribute("[data-testid=mini-map] [data-part=block-1-attention]", "aria-pressed") == "true"
    page.wait_for_function("document.querySelector('#view-attention').getBoundingClientRect().top < innerHeight")
    # The mini map stays on screen while reading (sticky).
    page.evaluate("window.scrollBy(0, 1500)")
    assert 0 <= box(page, "[data-testid=mini-map]")["top"] < 120
    page.click("#view-attention [data-action=close-view]")
    assert page.is_hidden("#view-attention")
    page.click("[data-testid=mini-map] [data-part=block-0-mlp]")
    page.wait_for_function("document.querySelector('#view-block').dataset.open === 'true'")
    assert "layer 1" in page.inner_text("#view-block h2")
    close_every_view(page)
    app.py("pending = explainer.select_layer(0)\nif pending is not None: await pending  # a fetch (issue 16)")


def test_run_buttons_are_disabled_while_busy(app):
    page = app.page
    # Watch every state change: while busy, the run actions are disabled and Stop is enabled.
    page.evaluate("""() => {
        window.__busy = [];
        new MutationObserver(() => {
            if (document.documentElement.dataset.state !== 'busy') return;
            const q = s => [...document.querySelectorAll(s)];
            window.__busy.push({
                run: q('#run, #generate, #continuous, #resample, [data-testid=example]').every(b => b.disabled),
                stop: !document.querySelector('#stop').disabled,
                progress: document.querySelector('[data-testid=run-progress]').textContent});
        }).observe(document.documentElement, {attributes: true, attributeFilter: ['data-state']});
    }""")
    before = runs(page)
    page.get_by_test_id("continuous").click()
    page.wait_for_function("document.documentElement.dataset.state === 'busy'")
    page.wait_for_function("document.querySelector('[data-testid=run-progress]').textContent.includes('tokens so far')",
                           timeout=RUN_TIMEOUT_MS)
    assert page.get_by_test_id("run").is_disabled() and page.get_by_test_id("example").first.is_disabled()
    page.get_by_test_id("stop").click()
    wait_run(page, before)
    seen = page.evaluate("window.__busy")
    assert seen and all(s["run"] and s["stop"] for s in seen), seen
    assert page.get_by_test_id("run").is_enabled() and page.get_by_test_id("stop").is_disabled()
    assert page.inner_text("[data-testid=run-progress]") == ""
    assert "Generated" in page.inner_text("[data-testid=run-status]")
    run_text(page, "The function returns")


def test_console_prints_and_the_link_focuses_it(app):
    page = app.page
    page.click("[data-testid=console-link]")
    assert page.evaluate("document.activeElement.id") == "console-input"
    page.get_by_test_id("console-input").fill('print("x")')
    page.get_by_test_id("console-run").click()
    page.wait_for_function("document.querySelector('[data-testid=console-output]').textContent.includes('>>> print')")
    out = page.inner_text("[data-testid=console-output]")
    assert out.rstrip().endswith('>>> print("x")\nx')
    page.get_by_test_id("console-input").fill("help()")
    page.get_by_test_id("console-run").click()
    page.wait_for_function("document.querySelector('[data-testid=console-output]').textContent.includes('>>> help()')")
    assert "Live objects" in page.inner_text("[data-testid=console-output]").split(">>> help()")[-1], \
        page.inner_text("[data-testid=console-output]")[-1500:]
    scrolled = page.evaluate("""(() => { const o = document.querySelector('[data-testid=console-output]');
        return o.scrollHeight - o.clientHeight - o.scrollTop; })()""")
    assert scrolled <= 2, "the output shows its newest entry"
    page.get_by_test_id("console-input").fill("1/0")
    page.get_by_test_id("console-input").press("Control+Enter")
    page.wait_for_function("document.querySelector('[data-testid=console-output]').textContent.includes('ZeroDivisionError')")
    out = page.inner_text("[data-testid=console-output]")
    assert "console.py" not in out.split(">>> 1/0")[-1]


def test_first_screen_screenshots(app, viewport, artifacts):
    """tests/artifacts/first-desktop.png and first-phone.png: the first screen, default state;
    GLASSBOX_UPDATE_SCREENSHOT=1 also copies them to docs/."""
    import os
    import shutil
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    for name, size in (("first-desktop.png", DESKTOP), ("first-phone.png", PHONE)):
        page = viewport(size)
        close_every_view(page)
        page.evaluate("window.scrollTo(0, 0)")
        path = artifacts / name
        page.screenshot(path=str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("GLASSBOX_UPDATE_SCREENSHOT"):
            shutil.copy(path, docs / name)


def test_the_tour_is_a_bottom_sheet_on_a_phone(app, viewport):
    """At 360 px the tour card spans the bottom of the screen and its target starts above it."""
    page = viewport(PHONE)
    close_every_view(page)
    page.get_by_test_id("tour-start").click()
    try:
        for _ in range(6):
            tour = page.get_by_test_id("tour")
            step = int(tour.get_attribute("data-step"))
            page.wait_for_timeout(700)  # the smooth scroll to the target
            sheet = box(page, "[data-testid=tour]")
            target = box(page, "[data-tour-active]")
            assert sheet["left"] <= 1 and sheet["right"] >= PHONE["width"] - 1 and sheet["bottom"] >= PHONE["height"] - 1
            assert target["top"] < sheet["top"] - 20, (step, target, sheet)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            page.get_by_test_id("tour-next").click()
            page.wait_for_function(f"document.querySelector('[data-testid=tour]')?.dataset.step === '{step + 1}'")
    finally:
        page.get_by_test_id("tour-end").click()
        close_every_view(page)


def test_the_prompt_is_kept_for_the_next_visit(app):
    page = app.page
    page.get_by_test_id("prompt").fill("The module defines")
    assert page.evaluate("localStorage.getItem('glassbox-prompt')") == "The module defines"
    assert app.py("from app.main import stored_prompt; stored_prompt()") == "The module defines"
    examples = page.eval_on_selector_all("[data-testid=example]", "els => els.map(e => e.textContent)")
    assert examples == app.py("list(model.checkpoint.manifest['examples'])")  # the model folder's own
    run_text(page, "The function returns")
