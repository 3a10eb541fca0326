"""The query/key map (issue 12) on the shared page: build it, L×H heads, the page's
coordinates equal the `qk` command's, a click draws the real attention, search marks every
head, the explainer's layer/head selects the large head. Screenshots (desktop, 360 px phone)
go to tests/artifacts/qk-*.png.

Tolerance for page vs command line: the page's corpus q/k come from numpy under Pyodide (the
fixture builds with the runner's numpy fallback; the WebGPU path is checked on a few
sentences), the user's text from the page's runner (WebGPU on SwiftShader), the CLI's from
native numpy with OpenBLAS: float32 agreement ~1e-6 relative, which PCA carries into the
coordinates; the page's PCA runs on WebGPU once its runner is (float32 scatter sums, within
1e-4 of the extent); atol 1e-3 × the map's extent is above both and far below a pixel (1/560).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .test_views import choose_layer, run_text

ROOT = Path(__file__).resolve().parents[2]
TEXT = "The file is opened, read and closed again."
BUILD_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def built(app):
    page = app.page
    run_text(page, TEXT)
    page.get_by_test_id("open-qk").click()  # the map's navigation opens the view in place
    page.wait_for_selector("#view-qk[data-open=true]")
    page.locator("#view-qk").scroll_into_view_if_needed()
    # The shared page runs WebGPU on SwiftShader, where one forward per corpus sentence takes
    # seconds: the corpus is built with the runner's numpy fallback here (cheap), and
    # test_corpus_runs_on_the_page_webgpu_runner checks the WebGPU path on a few sentences.
    # (the model worker's runner has no numpy attribute: None gives the map's own numpy path, the
    # same reference blocks; through the worker on SwiftShader the corpus (then 184 sentences) took over 300 s)
    app.py("explainer.qk.runner = lambda: getattr(explainer.runner, 'numpy', None)")
    try:
        page.get_by_test_id("qk-build").click()
        page.wait_for_selector("[data-testid=qk-matrix][data-draws]", timeout=BUILD_TIMEOUT_MS)
        n = app.py("int(explainer.qk.corpus_set.n_tokens + explainer.ids.size)")
        page.wait_for_function(f"document.querySelector('[data-testid=qk-matrix]').dataset.points == '{2 * n}'",
                               timeout=BUILD_TIMEOUT_MS)
    finally:
        app.py("explainer.qk.runner = lambda: explainer.runner")
    return app


def test_corpus_runs_on_the_page_webgpu_runner(built):
    """runner.tensors (issue 12's runner contract) on the page's WebGPU runner: the first corpus
    sentences' q, k and att equal the numpy ones the map holds (same bound as the GPU runner's
    native test: 3e-5 + 1e-4 |x|), and the explainer's sequence is left alone."""
    got = built.py("""
import numpy as np
from glassbox import qk
m, r = explainer.qk, explainer.runner
ids_before, names = explainer.ids.tolist(), qk.qk_names(m.config.n_layer)
worst = 0.0
for s, ids in enumerate(m.corpus.ids[:2]):
    q, k, att = qk.from_tensors(await r.tensors(ids, names), m.config.n_layer)
    rows = m.corpus_set.sentence_rows(s)
    for have, want in ((q, m.corpus_set.q[:, :, rows]), (k, m.corpus_set.k[:, :, rows]), (att, m.corpus_set.att[s])):
        worst = max(worst, float((np.abs(have - want) / (3e-5 + 1e-4 * np.abs(want))).max()))
kind = (await r.describe())["kind"] if type(r).__name__ == "WorkerRunner" else type(r).__name__  # issue 16
[r.status.backend, kind, worst, explainer.ids.tolist() == ids_before]""")
    assert got[:2] == ["webgpu", "WebGPURunner"] and got[3], got
    assert got[2] <= 1, got


def test_matrix_has_every_head(built):
    page = built.page
    L, H = built.py("[explainer.config.n_layer, explainer.config.n_head]")
    heads = page.locator("[data-testid=qk-matrix] [data-testid=qk-head]")
    assert heads.count() == L * H == 16
    # every canvas has both colours drawn (queries green, keys pink)
    counts = page.evaluate("""() => [...document.querySelectorAll('[data-testid=qk-head]')].map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let q = 0, k = 0;
        for (let i = 0; i < d.length; i += 4) { if (d[i] == 27 && d[i+1] == 158) q++; if (d[i] == 231 && d[i+1] == 41) k++; }
        return [q, k]; })""")
    assert all(q > 0 and k > 0 for q, k in counts), counts


def test_page_coordinates_equal_the_command_line(built):
    layer, head = 1, 2
    page_xy = np.array(built.py(f"explainer.qk.xy[({layer}, {head})].tolist()"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py")}
    out = subprocess.run([sys.executable, "-m", "glassbox", "qk", str(ROOT / "weights" / "mini"), TEXT, "--with-corpus",
                          "--layer", str(layer), "--head", str(head), "--json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    points = json.loads(out.stdout)["points"]
    cli_xy = np.array([[p["x"], p["y"]] for p in points])
    assert cli_xy.shape == page_xy.shape
    assert [p["source"] for p in points].count("text") == 2 * len(built.py("explainer.ids.tolist()"))
    extent = np.abs(cli_xy).max()
    np.testing.assert_allclose(page_xy, cli_xy, atol=1e-3 * extent)


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_precomputed_map_in_the_page_equals_the_command_line(built, artifacts, method):
    page = built.page
    draws = int(page.get_attribute("[data-testid=qk-matrix]", "data-draws"))
    page.select_option("#qk-method", method)
    page.wait_for_function(f"Number(document.querySelector('[data-testid=qk-matrix]').dataset.draws) > {draws}")
    assert "approximately" in page.inner_text("[data-testid=qk-approx]")
    assert page.is_disabled("#qk-scale")
    page.locator("[data-testid=qk-matrix]").screenshot(path=str(artifacts / f"qk-{method}.png"))
    page_xy = np.array(built.py("explainer.qk.xy[(2, 1)].tolist()"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py")}
    out = subprocess.run([sys.executable, "-m", "glassbox", "qk", str(ROOT / "weights" / "mini"), TEXT, "--with-corpus",
                          "--method", method, "--layer", "2", "--head", "1", "--json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    cli_xy = np.array([[p["x"], p["y"]] for p in json.loads(out.stdout)["points"]])
    # corpus points are the shipped map itself; the user's are means of 5 neighbours (ties
    # broken the same way on both sides), so float32 noise cannot move them
    np.testing.assert_allclose(page_xy, cli_xy, atol=1e-6 * np.abs(cli_xy).max())
    draws = int(page.get_attribute("[data-testid=qk-matrix]", "data-draws"))
    page.select_option("#qk-method", "pca")
    page.wait_for_function(f"Number(document.querySelector('[data-testid=qk-matrix]').dataset.draws) > {draws}")


def test_pca_on_the_page_webgpu_equals_numpy(built):
    """The shared page's runner is on WebGPU (SwiftShader here), so the map computes every
    head's PCA there (glassbox.gpu.qk_pca on the runner's BrowserBackend); its coordinates
    equal numpy's SVD (glassbox.qk.project) within 1e-4 of each head's extent
    (tests/gpu/test_qk_pca.py says why)."""
    got = built.py("""
from glassbox import qk
m = explainer.qk
await m.coords()
worst = 0.0
for (layer, head), xy in m.xy.items():
    ref = qk.project(m.data, layer, head, "pca", m.translate, m.scale)
    worst = max(worst, float(abs(xy - ref).max() / abs(ref).max()))
[m.pca_backend, worst, explainer.runner.status.backend]""")
    assert got[0] == got[2] == "webgpu", got
    assert got[1] <= 1e-4, got


def test_click_on_a_point_draws_its_attention_lines(built, artifacts):
    page = built.page
    page.locator("[data-testid=qk-single]").scroll_into_view_if_needed()
    P, x, y = built.py("""m = explainer.qk
P = m.data.n_tokens
px, py = m.single_frame().pixels(m.xy[(m.layer, m.head)])
[P, float(px[P - 1]), float(py[P - 1])]""")
    box = page.get_by_test_id("qk-canvas").bounding_box()
    scale = box["width"] / 560
    page.mouse.click(box["x"] + x * scale, box["y"] + y * scale)
    page.wait_for_selector("[data-testid=qk-line]")
    focus, want = built.py("""m = explainer.qk
rows, w = m.attention(m.focus % m.data.n_tokens, m.focus < m.data.n_tokens)
[m.focus, int((w >= 0.01).sum())]""")
    assert page.locator("[data-testid=qk-line]").count() == want > 0
    page.locator("[data-testid=qk-single]").screenshot(path=str(artifacts / "qk-click.png"))
    assert "the query" in page.inner_text("[data-testid=qk-sentence]") or "the key" in page.inner_text("[data-testid=qk-sentence]")
    if focus == P - 1:  # the last query of the user's text: weights are the trace's own
        weights = sorted(float(w) for w in page.eval_on_selector_all("[data-testid=qk-line]", "els => els.map(e => e.dataset.weight)"))
        att = built.py("l, h = explainer.qk.layer, explainer.qk.head\nexplainer.trace[f'h.{l}.att'][h, -1].tolist()")
        np.testing.assert_allclose(weights, sorted(w for w in att if w >= 0.01), rtol=1e-5)


def test_search_highlights_across_heads(built):
    page = built.page
    page.get_by_test_id("qk-search").fill("file")
    page.wait_for_function("document.querySelector('[data-testid=qk-search-count]').textContent.includes('match')")
    marked = page.evaluate("""() => [...document.querySelectorAll('[data-testid=qk-head]')].map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] == 10 && d[i+1] == 10 && d[i+2] == 10) n++;
        return [Number(c.dataset.highlighted), n]; })""")
    assert all(h >= 2 and n > 0 for h, n in marked), marked
    page.get_by_test_id("qk-search").fill("")


def test_explainer_head_selects_the_large_head(built):
    page = built.page
    choose_layer(page, "3")  # issue 16: the worker sends layer 3 first
    page.select_option("#head-select", "2")
    assert page.inner_text("[data-testid=qk-single-layer]") == "3"
    assert page.inner_text("[data-testid=qk-single-head]") == "2"
    page.locator("[data-testid=qk-head][data-layer='0'][data-head='3']").click()
    assert page.inner_text("[data-testid=qk-single-head]") == "4"
    assert page.input_value("#head-select") == "4"


def test_screenshots(built, artifacts):
    page = built.page
    size = page.viewport_size
    try:
        for name, width in (("desktop", 1280), ("phone", 360)):
            page.set_viewport_size({"width": width, "height": 900})
            page.locator("#view-qk").screenshot(path=str(artifacts / f"qk-{name}.png"))
            overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
            assert not overflow, f"horizontal overflow at {width} px"
    finally:
        page.set_viewport_size(size)
