"""Accessibility on the shared page (issue 16, part 4): axe-core finds no WCAG 2.1 A/AA violation
in any state a reader can reach, at desktop (1280x800) and phone (360x740) sizes.

axe-core is a test asset: npm devDependency (pinned in package.json / package-lock.json), read
from node_modules/axe-core/axe.min.js and injected into the page once; it is not part of the
app's runtime or vendor/. No rule is disabled and no element is excluded from a scan.

States walked on the one booted page (tests/e2e/conftest.py). The main states are scanned as
a whole page; a sub-state (*) opens one part on top of a main state that was just scanned
whole, and its scan covers that part (the rest of the page is the same DOM), which keeps the
walk to about a minute per viewport here:
    ready            the default first screen (the map, the prompt, the bar)
    status-chip*     the backend/mode/offline chip opened
    model-picker*    the model picker's list opened
    every-view       every detailed view the map opens ("Every view" in the bar), with every
                     <details> in them opened (math panels, worked sums, factor browser)
    derivation*      the attention view with "how the matrix is computed", every stage shown
    weights-popover* a weight matrix popover open (the first weights button)
    factors*         the factors panel opened from a token of the block view
    qk-map           the Q/K map view open (before its corpus is built)
    experiments      the experiments panel open
    console*         the Python console after a command (its output filled)
    tour*            the guided tour's card and the part it highlights (first step)

Pictures to look at after colour changes: tests/artifacts/axe-<width>-view-input.png,
-view-attention.png, -view-output.png and -derivation.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_map import close_every_view
from .test_views import open_every_view

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
AXE_VERSION = "4.14.1"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}
FACTORS_TIMEOUT_MS = 120_000

SCAN = """async ([tags, within]) => {
    // Let finite animations (a derivation stage fading in, a popover opening) end first: colours
    // are read mid-fade otherwise. Endless ones (a spinner) are not waited for; 5 s at most.
    const finite = document.getAnimations().filter(a => Number.isFinite(a.effect?.getComputedTiming().endTime));
    await Promise.race([Promise.all(finite.map(a => a.finished.catch(() => null))),
                        new Promise(done => setTimeout(done, 5000))]);
    const result = await axe.run(within.length ? {include: within} : document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
    return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map(n => ({target: n.target.join(' '), html: n.html.slice(0, 160),
                                  why: [...n.any, ...n.all, ...n.none].map(c => c.message).join('; ').slice(0, 200)}))}));
}"""


def inject_axe(page) -> None:
    """Put axe on the page once (the shared page is never navigated away)."""
    if page.evaluate("typeof window.axe === 'object' && window.axe.version") == AXE_VERSION:
        return
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `npm ci` (axe-core {AXE_VERSION} is a devDependency)")
    page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    version = page.evaluate("window.axe.version")
    assert version == AXE_VERSION, f"axe-core {version} on the page, {AXE_VERSION} pinned"


def scan(page, state: str, found: list[str], within: tuple[str, ...] = ()) -> None:
    """Run axe on the whole page, or on the parts ``within`` (CSS selectors) that a sub-state
    opened; each violation becomes one readable entry in ``found``."""
    for v in page.evaluate(SCAN, [TAGS, within]):
        for node in v["nodes"]:
            found.append(f"[{state}] {v['id']} ({v['impact']}): {v['help']}\n"
                         f"    target {node['target']}\n    html   {' '.join(node['html'].split())}\n    why    {node['why']}")


def walk(app, size: dict, shots: Path) -> list[str]:
    """Every state in the module docstring, in order; returns the violations found. Pictures of
    the parts whose colours the fixes changed go to ``shots``-<part>.png, to look at."""
    page = app.page
    page.set_viewport_size(size)
    close_every_view(page)
    page.evaluate("window.scrollTo(0, 0)")
    inject_axe(page)
    found: list[str] = []
    scan(page, "ready", found)

    page.click("[data-testid=status-chip] summary")
    page.wait_for_selector("[data-testid=backend]", state="visible")
    scan(page, "status-chip", found, ("[data-testid=status-chip]",))
    page.click("[data-testid=status-chip] summary")

    if page.locator("[data-testid=pick-current]").count():
        page.click("[data-testid=pick-current]")
        scan(page, "model-picker", found, ("[data-testid=model-picker]",))
        page.click("[data-testid=pick-current]")

    open_every_view(page)
    page.evaluate("""() => { const shut = [...document.querySelectorAll('#explainer details:not([open])')];
        shut.forEach(d => { d.open = true; d.dataset.axeOpened = ''; }); }""")  # math panels, worked sums
    scan(page, "every-view", found)
    for part in ("view-input", "view-attention", "view-output"):
        page.locator(f"#{part}").screenshot(path=f"{shots}-{part}.png")

    toggle = page.get_by_test_id("derivation-toggle")
    if toggle.get_attribute("aria-expanded") != "true":
        toggle.click()
    page.get_by_test_id("derivation-all").click()
    scan(page, "derivation", found, ("#view-attention",))
    page.get_by_test_id("derivation").screenshot(path=f"{shots}-derivation.png")
    page.get_by_test_id("derivation-toggle").click()

    button = page.get_by_test_id("weights-button").first
    button.scroll_into_view_if_needed()
    button.click()
    page.wait_for_function("[...document.querySelectorAll('.weights-pop')].some(e => e.matches(':popover-open'))")
    scan(page, "weights-popover", found, (".weights-pop:popover-open",))
    page.keyboard.press("Escape")

    strip = page.locator("#view-block [data-testid=factors-open]")
    strip.nth(min(1, strip.count() - 1)).click()
    page.wait_for_selector("[data-testid=factors-panel][data-ready=true]", timeout=FACTORS_TIMEOUT_MS)
    scan(page, "factors", found, ("#view-factors",))
    page.locator("[data-action=factors-close]").click()
    page.evaluate("document.querySelectorAll('details[data-axe-opened]').forEach(d => { d.open = false; })")

    close_every_view(page)
    page.get_by_test_id("open-qk").click()
    page.wait_for_selector("#view-qk[data-open=true]")
    scan(page, "qk-map", found)
    close_every_view(page)
    page.get_by_test_id("open-experiments").click()
    page.wait_for_selector("#view-experiments[data-open=true]")
    scan(page, "experiments", found)
    close_every_view(page)

    page.get_by_test_id("console-input").fill("len(tokens)")
    page.get_by_test_id("console-run").click()
    page.wait_for_function("document.querySelector('[data-testid=console-output]').textContent.includes('>>> len(tokens)')")
    scan(page, "console", found, ("#view-console",))

    page.get_by_test_id("tour-start").click()
    page.wait_for_selector("[data-testid=tour][data-step='0']")
    scan(page, "tour", found, ("[data-testid=tour]", "[data-tour-active]"))
    page.get_by_test_id("tour-end").click()
    close_every_view(page)
    return found


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_no_wcag21_aa_violation_in_any_state(app, size, artifacts):
    before = app.page.viewport_size
    try:
        found = walk(app, size, artifacts / f"axe-{size['width']}")
    finally:
        app.page.set_viewport_size(before)
        app.page.evaluate("window.scrollTo(0, 0)")
    assert not found, f"{len(found)} axe violation(s) at {size['width']}x{size['height']}:\n" + "\n".join(found)
