"""Issue 10 on the real page: attention at any length (canvas matrix, colour scales, zoomed
window, lines view), taps that read the cell under the finger, nothing wider than a 360 px
phone, the sampling view's cut tokens, split characters grouped, the derivation's pictures.

Shares the booted page (``app``); taps are real touch events (Chrome DevTools Protocol
``Input.dispatchTouchEvent`` with touch emulation switched on for the test, then off), so no
second page is booted. Numbers are checked against the numpy reference on the same weights
(tolerances as in test_views.py: the page's float32 numpy under Pyodide vs native OpenBLAS).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from glassbox import model as glassbox_model
from glassbox.sampling import distribution

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "py"))

from app.views.attention import scale_weights  # noqa: E402
from app.views.common import viridis  # noqa: E402

from .test_views import choose_layer  # noqa: E402

RUN_TIMEOUT_MS = 300_000  # a 256-token run on SwiftShader WebGPU took 150 s on a loaded 2-core machine
LONG_TEXT = " ".join(["The model reads every word of this sentence once more."] * 30)


@pytest.fixture(scope="module")
def ref():
    return glassbox_model.load(str(ROOT / "weights" / "mini"), str(ROOT / "vendor" / "gpt2"))


def runs(page) -> int:
    return int(page.get_attribute("[data-testid=explainer]", "data-runs") or 0)


def run_text(page, text: str) -> None:
    before = runs(page)
    page.get_by_test_id("prompt").fill(text)
    page.get_by_test_id("prompt").press("Enter")
    page.wait_for_function(
        """n => document.documentElement.dataset.state === 'ready'
              && Number(document.querySelector('[data-testid=explainer]').dataset.runs) > n""",
        arg=before, timeout=RUN_TIMEOUT_MS)


def open_views(page) -> None:
    """Every detailed view open (the map's "Every view" button), whatever the map shows."""
    button = page.get_by_test_id("open-all")
    if button.count() and button.get_attribute("aria-pressed") != "true":
        button.click()


def tap(page, x: float, y: float) -> None:
    """A real one-finger tap at viewport point (x, y)."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
        point = [{"x": x, "y": y, "id": 1, "radiusX": 1, "radiusY": 1, "force": 1}]
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": point})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        page.wait_for_timeout(150)
    finally:
        cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": False})
        cdp.detach()


def cell_point(page, q: int, k: int, n: int) -> tuple[float, float]:
    canvas = page.get_by_test_id("attention-matrix")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    return box["x"] + (k + 0.5) * box["width"] / n, box["y"] + (q + 0.5) * box["height"] / n


def overflowing(page, root_selector: str) -> list[str]:
    """Elements under ``root_selector`` whose visible right edge is beyond the viewport
    (an element inside a box that scrolls or clips counts only as far as that box)."""
    return page.evaluate("""sel => {
        const width = document.documentElement.clientWidth, bad = [];
        for (const root of document.querySelectorAll(sel)) {
          for (const e of [root, ...root.querySelectorAll('*')]) {
            const r = e.getBoundingClientRect();
            if (!r.width || !r.height) continue;
            let right = r.right;
            for (let a = e.parentElement; a; a = a.parentElement) {
              if (getComputedStyle(a).overflowX !== 'visible') { right = Math.min(right, a.getBoundingClientRect().right); }
            }
            if (right > width + 0.5) bad.push(`${e.tagName}.${e.className && e.className.baseVal === undefined ? e.className : ''} right=${right.toFixed(1)}`);
          }
        }
        return bad.slice(0, 10);
    }""", root_selector)


def test_a_256_token_input_covers_every_position_in_each_colour_scale(app, ref):
    page = app.page
    open_views(page)
    prompt = ref.prompt(LONG_TEXT)
    assert prompt.ids.size == ref.config.n_positions == 256
    run_text(page, LONG_TEXT)
    choose_layer(page, "3")
    page.get_by_test_id("head-select").select_option("2")
    att = ref.forward(prompt.ids)["h.2.att"][1]
    for scale in ("linear", "row", "log"):
        page.get_by_test_id("attention-scale").select_option(scale)
        shown = scale_weights(att, scale)
        matrix = page.get_by_test_id("attention-matrix")
        assert matrix.get_attribute("data-positions") == "256"
        assert page.eval_on_selector("[data-testid=attention-matrix]", "c => [c.width, c.height]") == [256, 256]
        # Pixels of the canvas: the reference weight on this colour scale (a few cells, first
        # query, diagonal, last row); viridis is looked up in 257 steps, so allow ~2 steps.
        for q, k in ((0, 0), (100, 100), (255, 0), (255, 254), (200, 37)):
            got = page.eval_on_selector("[data-testid=attention-matrix]",
                                        f"c => Array.from(c.getContext('2d').getImageData({k}, {q}, 1, 1).data)")
            want = viridis(shown[q, k])
            assert np.abs(np.array(got[:3], dtype=int) - want[:3].astype(int)).max() <= 6, (scale, q, k, got, want)
    # Head thumbnails show the whole matrix too (n <= 128 cells a side would be one per position).
    sizes = page.eval_on_selector_all("[data-testid=head-thumb] canvas", "cs => cs.map(c => c.width)")
    assert sizes == [128] * ref.config.n_head
    page.get_by_test_id("attention-scale").select_option("linear")


def test_a_tap_on_an_attention_cell_reads_that_cell_and_moves_the_window(app, ref):
    page = app.page
    open_views(page)
    ids = [int(i) for i in page.eval_on_selector_all("[data-testid=sequence] [data-testid=token]",
                                                     "els => els.map(e => e.dataset.tokenId)")]
    n = len(ids)
    assert n == 256, "runs after the 256-token test"
    att = ref.forward(np.asarray(ids))["h.2.att"][1]
    tokens = ref.tokenizer.display(ids)
    for q, k in ((40, 3), (230, 229), (17, 17)):
        tap(page, *cell_point(page, q, k, n))
        tip = page.get_by_test_id("tooltip")
        assert tip.is_visible()
        assert (tip.get_attribute("data-q"), tip.get_attribute("data-k")) == (str(q), str(k))
        text = tip.inner_text()
        assert f"query {q} ‘{tokens[q].replace(' ', '␣')}’" in text and f"key {k}" in text, text
        value = float(text.rsplit("= ", 1)[1])
        assert value == pytest.approx(float(att[q, k]), rel=1e-3, abs=1e-6)
        # The zoomed window moved onto the cell, and its query / key rows are marked in Q and K.
        cell = page.locator(f'[data-testid=attention-cell][data-q="{q}"][data-k="{k}"]')
        assert cell.count() == 1
        assert float(cell.get_attribute("data-value")) == pytest.approx(float(att[q, k]), rel=2e-4, abs=2e-5)
        assert page.locator('[data-mark="q"]').is_visible() and page.locator('[data-mark="k"]').is_visible()
        assert f"Query {q}" in page.get_by_test_id("attention-selection").inner_text()
    # A tap on a window cell and on an embedding heat map reads them too.
    cell = page.locator('[data-testid=attention-cell][data-q="20"][data-k="10"]')
    cell.scroll_into_view_if_needed()
    box = cell.bounding_box()
    tap(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert page.get_by_test_id("tooltip").get_attribute("data-q") == "20"
    canvas = page.locator('canvas[data-heat="emb.emb"]')
    canvas.locator("xpath=../..").scroll_into_view_if_needed()  # its scrolling box, at the top
    box = canvas.bounding_box()
    D = ref.config.n_embd
    tap(page, box["x"] + (D // 2 + 0.5) * box["width"] / D, box["y"] + 5.5 * box["height"] / n)
    text = page.get_by_test_id("tooltip").inner_text()
    assert "token 5" in text and f"dim {D // 2}" in text, text
    assert page.get_by_test_id("tooltip").get_attribute("data-q") is None
    # The model map's ribbons say what they are in an SVG <title>: a tap shows it.
    page.get_by_test_id("model-map").scroll_into_view_if_needed()
    found = page.evaluate("""() => {
        for (const r of document.querySelectorAll('[data-testid=model-map] path.ribbon')) {
          const b = r.getBoundingClientRect(), x = b.left + b.width / 2, y = b.top + b.height / 2;
          const title = r.querySelector(':scope > title');
          if (title && document.elementFromPoint(x, y) === r) return [x, y, title.textContent];
        }
        return null; }""")
    assert found, "no ribbon of the map is on top at its middle"
    tap(page, found[0], found[1])
    assert page.get_by_test_id("tooltip").inner_text() == found[2]


def test_lines_view_toggles_heads_and_follows_a_query(app, ref):
    page = app.page
    open_views(page)
    run_text(page, "The function returns the value of the")
    view = page.get_by_test_id("bertviz")
    head = int(page.get_by_test_id("head-select").input_value()) - 1
    assert view.get_attribute("data-heads") == str(head)
    assert view.get_attribute("data-query") == "all"  # short input: every query's lines
    other = (head + 1) % ref.config.n_head
    view.locator(f'.bv-head[data-head="{other}"]').click()
    view = page.get_by_test_id("bertviz")
    assert view.get_attribute("data-heads") == ",".join(str(h) for h in sorted({head, other}))
    assert view.locator(f'.bv-lines[data-head="{other}"] line').count() > 0
    view.locator('.bv-q[data-index="2"]').click()
    view = page.get_by_test_id("bertviz")
    assert view.get_attribute("data-query") == "2"
    # Query 2 sees keys 0..2: at most 3 lines per visible head.
    for h in (head, other):
        assert 0 < view.locator(f'.bv-lines[data-head="{h}"] line').count() <= 3
    view.locator(f'.bv-head[data-head="{other}"]').click()


def test_cut_tokens_show_their_probability_before_the_filter(app, ref):
    page = app.page
    ids = [int(i) for i in page.eval_on_selector_all("[data-testid=sequence] [data-testid=token]",
                                                     "els => els.map(e => e.dataset.tokenId)")]
    page.get_by_test_id("temperature").fill("1")
    page.get_by_test_id("top-p").fill("1")
    page.get_by_test_id("top-k").fill("3")
    dist = distribution(ref.forward(np.asarray(ids)).logits[-1], 1.0, 3, 1.0)
    rows = page.locator("[data-testid=prediction].filtered")
    assert rows.count() >= 10
    for r in range(3):
        row = rows.nth(r)
        tid = int(row.get_attribute("data-token-id"))
        assert float(row.get_attribute("data-prob")) == 0.0
        before = float(row.get_attribute("data-prob-before"))
        assert before == pytest.approx(float(dist.full_probs[tid]), rel=2e-4, abs=2e-5) and before > 0
        assert "was" in row.inner_text() and "0%" not in row.inner_text().split("was")[0]
        assert row.locator(".bar.before").evaluate("e => e.getBoundingClientRect().width") > 0
    page.get_by_test_id("top-k").fill("0")
    page.get_by_test_id("top-p").fill("0.95")
    page.get_by_test_id("temperature").fill("0.8")


def test_split_characters_are_grouped_with_their_bytes(app, ref):
    page = app.page
    open_views(page)
    text = "I love 😀 and 日本"
    run_text(page, text)
    groups = page.locator("#view-embedding [data-testid=char-group]")
    assert [g.inner_text().split("\n")[0].strip() for g in groups.all()] == ["😀", "日", "本"]
    first = groups.first
    assert "F0 9F 98 | 80" in first.get_attribute("title")
    assert first.locator(".token").count() == 2


def test_at_360_px_popovers_tables_and_the_tour_fit_the_screen(app, artifacts):
    page = app.page
    open_views(page)
    run_text(page, "The function returns the value of the")
    try:
        page.set_viewport_size({"width": 360, "height": 740})
        page.wait_for_timeout(300)
        button = page.get_by_test_id("weights-button").first
        button.scroll_into_view_if_needed()
        button.click()
        assert page.locator(".weights-pop:popover-open").count() == 1
        assert overflowing(page, ".weights-pop:popover-open") == []
        page.keyboard.press("Escape")
        assert overflowing(page, "[data-testid=pipeline], [data-testid=prediction]") == []
        assert overflowing(page, "#view-attention") == []
        page.locator("#view-attention").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "attention-phone.png"))
        if page.get_by_test_id("tour-start").count():
            page.get_by_test_id("tour-start").click()
            for _ in range(6):
                assert overflowing(page, "[data-testid=tour]") == []
                page.get_by_test_id("tour-next").click()
            page.keyboard.press("Escape")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 360
    finally:
        page.set_viewport_size({"width": 1280, "height": 720})


def test_derivation_pictures_play_and_the_view_follows(app, artifacts):
    page = app.page
    open_views(page)
    page.set_viewport_size({"width": 1280, "height": 900})
    try:
        toggle = page.get_by_test_id("derivation-toggle")
        if toggle.get_attribute("aria-expanded") == "true":
            toggle.click()
        page.get_by_test_id("derivation-toggle").click()
        page.get_by_test_id("derivation-play").click()  # pause at stage 1
        page.get_by_test_id("derivation-replay").click()
        page.get_by_test_id("derivation-play").click()  # pause
        stage = int(page.get_attribute("#derivation", "data-stage"))
        names = [re.sub("^stage-", "", t) for t in page.eval_on_selector_all(
            "[data-testid=derivation] .stage", "els => els.map(e => e.dataset.testid)")]
        page.get_by_test_id("derivation-step").click()
        active = page.get_by_test_id(f"stage-{names[stage]}")
        page.wait_for_timeout(700)
        top = active.evaluate("e => e.getBoundingClientRect().top")
        assert 0 <= top < 900, "the view follows the active stage"
        animations = active.evaluate("e => e.getAnimations({subtree: true}).map(a => a.animationName)")
        assert animations, "the active stage's picture moves"
        page.screenshot(path=str(artifacts / "derivation-mid.png"))
        page.get_by_test_id("bertviz").screenshot(path=str(artifacts / "bertviz.png"))
    finally:
        page.set_viewport_size({"width": 1280, "height": 720})
