"""The Experiments panel on the real page: its logit lens and ablation numbers equal the command
line's (``python -m glassbox lens|ablate`` run natively here on the same weights/mini and text),
every experiment runs from the DOM by click and keyboard, and the panel fits a 360 px phone.
The numbers are computed in the model worker (issue 16 x16: app/lab.py; the worker's describe
counts its lab calls), on its numpy reference, not on the page's main thread.

Tolerance: the page computes with float32 numpy in Pyodide (no BLAS), the CLI with OpenBLAS; the
probabilities agree to ~1e-6, so 2e-5 absolute + 2e-4 relative (as in test_views.py) on
probabilities and KL, and equal top-token ids.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from glassbox import safetensors
from glassbox.cli import main

from .test_views import run_text

ROOT = Path(__file__).resolve().parents[2]
MINI = str(ROOT / "weights" / "mini")
TEXT, CORRUPT = "The Eiffel Tower is in", "The Colosseum is in"
ATOL, RTOL = 2e-5, 2e-4
SLOT = '[data-slot="experiments"]'


def cli(capsys, *argv):
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def exp_runs(page) -> int:
    return int(page.get_attribute(SLOT, "data-exp-runs") or 0)


def act(page, testid: str, nth: int = 0, key: str | None = None) -> None:
    """Click (or focus and press ``key`` on) a panel control; wait until its experiment ran."""
    before = exp_runs(page)
    control = page.locator(f'{SLOT} [data-testid="{testid}"]').nth(nth)
    if key:
        control.focus()
        control.press(key)
    else:
        control.click()
    page.wait_for_function(f"n => Number(document.querySelector('{SLOT}').dataset.expRuns) > n", arg=before,
                           timeout=60_000)


def head_button(page, layer: int, head: int):
    return page.locator(f'{SLOT} [data-testid="exp-head"][data-layer="{layer}"][data-head="{head}"]')


def test_experiments_equal_the_command_line(app, capsys, artifacts):
    page = app.page
    page.set_viewport_size({"width": 1280, "height": 900})
    run_text(page, TEXT)
    lab_calls = "(await explainer.runner.describe())['lab_calls']"
    calls, top_known = app.py(lab_calls), app.py("explainer.experiments.top is not None")
    page.get_by_test_id("open-experiments").click()  # the bar's button opens the panel in place
    page.wait_for_selector("#view-experiments[data-open=true]")
    act(page, "exp-lens-run")
    assert app.py("explainer.experiments.lab.where") == "worker"
    assert app.py(lab_calls) == calls + 1
    n = page.locator(f"{SLOT} [data-testid=exp-lens-cell]").count() // 5
    # the page's top 5 of every stream at the last position == `lens --json`
    want = cli(capsys, "lens", MINI, TEXT, "--json")["layers"]
    got = app.py("ex = app.explainer.experiments; [[ex.lens.ids[s, -1].tolist(), ex.lens.probs[s, -1].tolist()] "
                 "for s in range(ex.lens.ids.shape[0])]")
    assert len(got) == len(want) == 5
    for (ids, probs), row in zip(got, want):
        assert ids == [t["id"] for t in row["top"]]
        np.testing.assert_allclose(probs, [t["prob"] for t in row["top"]], atol=ATOL, rtol=RTOL)
    cells = page.eval_on_selector_all(f"{SLOT} [data-testid=exp-lens-cell]",
                                      "els => els.map(e => [+e.dataset.tokenId, +e.dataset.prob])")
    last_column = [cells[s * n + n - 1] for s in range(5)]
    assert [c[0] for c in last_column] == [row["top"][0]["id"] for row in want]
    np.testing.assert_allclose([c[1] for c in last_column], [row["top"][0]["prob"] for row in want], atol=ATOL, rtol=RTOL)
    # keyboard: Enter on a cell opens its top-5 list
    page.locator(f"{SLOT} [data-testid=exp-lens-cell]").nth(n + 1).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{SLOT} [data-testid=exp-lens-detail]")
    assert "Stream 1, position 1" in page.inner_text(f"{SLOT} [data-testid=exp-lens-detail]")

    # ablation of heads 0.1 and 3.2 (0-based) == `ablate --heads 0.1,3.2 --json`, and the sweep
    before = exp_runs(page)
    head_button(page, 0, 1).click()
    page.wait_for_function(f"n => Number(document.querySelector('{SLOT}').dataset.expRuns) > n", arg=before)
    before = exp_runs(page)
    head_button(page, 3, 2).focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"n => Number(document.querySelector('{SLOT}').dataset.expRuns) > n", arg=before)
    want = cli(capsys, "ablate", MINI, TEXT, "--heads", "0.1,3.2", "--json", "--top-k", "5", "--sweep")
    summary = page.locator(f"{SLOT} [data-testid=exp-ablation-summary]")
    np.testing.assert_allclose(float(summary.get_attribute("data-kl")), want["kl"], atol=ATOL, rtol=RTOL)
    after = app.py("e = app.explainer.experiments.ablation; [e[3].tolist(), e[4].tolist()]")
    assert after[0] == [r["id"] for r in want["rows"]]
    np.testing.assert_allclose(after[1], [r["prob"] for r in want["rows"]], atol=ATOL, rtol=RTOL)
    started = time.perf_counter()
    act(page, "exp-sweep-run")
    print(f"\nsweep of 16 heads in the page (Pyodide numpy), clicked to drawn: {time.perf_counter() - started:.2f} s")
    kl = page.eval_on_selector_all(f"{SLOT} [data-testid=exp-sweep-cell]", "els => els.map(e => +e.dataset.kl)")
    np.testing.assert_allclose(np.reshape(kl, (4, 4)), want["sweep"]["kl"], atol=ATOL, rtol=RTOL)

    # patching: a prompt of another length is refused in words; one of the same length runs
    page.get_by_test_id("exp-corrupt").fill("The cat")
    act(page, "exp-patch-run")
    assert "differ in length" in page.inner_text(f"{SLOT} [data-testid=exp-patch-message]")
    page.get_by_test_id("exp-corrupt").fill(CORRUPT)
    act(page, "exp-patch-run")
    assert page.locator(f"{SLOT} [data-testid=exp-patch-cell]").count() == 5 * n
    act(page, "exp-attribute-run")
    # each experiment above ran in the worker: lens, (the clean top token), two ablations, sweep,
    # patching, attribution
    assert app.py(lab_calls) == calls + 6 + (not top_known)
    dla = page.locator(f"{SLOT} [data-testid=exp-dla-summary]")
    assert abs(float(dla.get_attribute("data-sum")) - float(dla.get_attribute("data-logit"))) < 1e-4

    # exports: a CSV and the trace, as real downloads
    with page.expect_download() as info:
        page.locator(f'{SLOT} [data-testid="exp-csv-sweep"]').click()
    assert info.value.suggested_filename == "sweep.csv"
    assert Path(info.value.path()).read_text().startswith("layer,head,kl,dlogp")
    with page.expect_download() as info:
        act(page, "exp-download-trace")
    tensors, meta = safetensors.load_with_metadata(Path(info.value.path()).read_bytes())
    assert meta["text"] == TEXT and len(tensors) == 3 + 4 * 21 + 4 + 1  # as `python -m glassbox trace` writes
    assert tensors["ids"].tolist() == app.py("app.explainer.ids.tolist()")

    section = page.locator("#view-experiments")
    section.scroll_into_view_if_needed()
    section.screenshot(path=str(artifacts / "experiments-desktop.png"))
    try:
        page.set_viewport_size({"width": 360, "height": 740})
        page.wait_for_timeout(200)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow} px at 360 px"
        section.screenshot(path=str(artifacts / "experiments-phone.png"))
        for part in ("lens", "ablation", "patching"):
            page.locator(f"#exp-{part}").screenshot(path=str(artifacts / f"experiments-phone-{part}.png"))
    finally:
        page.set_viewport_size({"width": 1280, "height": 720})


@pytest.fixture(autouse=True)
def _leave_heads_clear(app):
    yield
    app.py("app.explainer.experiments.heads.clear(); None")
