"""The reader's backend switch and light mode on WebGPU (issue 15, app/gpu_light.py).

* On the shared page (booted with ?backend=webgpu): the backend card's "Run on numpy instead"
  reruns the shown tokens on numpy, says the reader chose it, remembers it for the visit
  (sessionStorage and the address's ?backend=), and the logits equal the WebGPU run's;
  "Run on WebGPU instead", by keyboard, brings WebGPU back (the parked engine: no new device).
  The unit tests (tests/test_gpu_light.py) cover the rest of the switch's logic.
  This file runs after test_webgpu_page (alphabetical) and leaves the page on WebGPU.
* A page with ?mode=light&backend=webgpu runs light mode on WebGPU (q4 weights uploaded as
  they are) and its numbers equal numpy light mode's, for the run and for a layer read from
  the GPU when the reader picks it; its card at phone width (360 px) does not overflow.

Tolerance: WebGPU float32 against Pyodide's numpy float32 differs in summation order only:
test_webgpu_page's 1e-4 + 1e-3*|ref| (logits reach ~±20 and sum over D=128).
"""

from __future__ import annotations

from .test_views import runs, wait_run
from .test_webgpu_page import PAGE_ATOL, PAGE_RTOL, backend

# Python run in the page: the largest |a-b| / (atol + rtol*|b|) over the named tensors.
WORST = """
import numpy as np
def worst(got, want, names):
    return max(float(np.max(np.abs(np.asarray(got[n]) - want[n]) / ({atol} + {rtol} * np.abs(want[n]))))
               for n in names)
""".format(atol=PAGE_ATOL, rtol=PAGE_RTOL)


def open_card(page) -> None:
    if page.get_attribute("[data-testid=status-chip]", "open") is None:
        page.click("[data-testid=status-chip] summary")


def test_the_reader_switches_to_numpy_and_back(app, artifacts):
    page = app.page
    assert backend(page)[0] == "webgpu"
    before = runs(page)
    page.get_by_test_id("example").nth(0).click()  # a run of the text the switch will run again
    wait_run(page, before)
    app.py("gpu_logits = explainer.trace.logits.copy(); gpu_ids = explainer.ids.copy()" + WORST)
    # ?backend=webgpu: numpy's int8 kernel was loaded after the first run, not before it; with the
    # model worker (issue 16) the page's kernel (for the experiments) loads while the worker boots.
    assert app.py("(app.worker.runner is not None or app.kernel_task is not None) and "
                  "(app.kernel_task is None or (await app.kernel_task) is None) and "
                  "type(explainer.params['h.0.mlp.c_fc.weight']).__name__") == "QuantizedMatrix", app.py("app.kernel_note")
    open_card(page)
    button = page.get_by_test_id("backend-switch")
    assert button.text_content() == "Run on numpy instead"
    before = runs(page)
    button.click()  # a pointer (the e2e phone test taps the mode switch; a click covers both)
    wait_run(page, before)
    html_backend, cause, reason = backend(page)
    assert (html_backend, cause) == ("numpy", "chosen") and "you chose it" in reason, (html_backend, cause, reason)
    assert app.py("explainer.runner.last") == "numpy"
    assert "(numpy)" in page.inner_text("[data-testid=run-status]")
    assert page.evaluate("sessionStorage.getItem('glassbox-backend')") == "numpy"
    assert "backend=numpy" in page.url  # the address agrees, so a reload runs numpy too
    assert app.py("bool((explainer.ids == gpu_ids).all())")
    ratio = app.py("worst({'logits': explainer.trace.logits}, {'logits': gpu_logits}, ['logits'])")
    assert ratio <= 1.0, f"numpy logits differ from the WebGPU run's: {ratio:.3g} of the tolerance"
    print(f"\nswitch: numpy logits vs WebGPU's, worst error / tolerance {ratio:.3g}")
    page.locator("[data-testid=backend]").screenshot(path=str(artifacts / "backend-switch-desktop.png"))

    # Back by keyboard: the card's new button has the focus after the switch.
    back = page.get_by_test_id("backend-switch")
    assert back.text_content() == "Run on WebGPU instead"
    page.wait_for_function("document.activeElement && document.activeElement.dataset.backendSwitch === 'webgpu'")
    before = runs(page)
    page.keyboard.press("Enter")
    wait_run(page, before)
    assert backend(page)[:2] == ("webgpu", "chosen")
    assert app.py("explainer.runner.last") == "webgpu"
    assert page.evaluate("sessionStorage.getItem('glassbox-backend')") == "webgpu" and "backend=webgpu" in page.url
    assert app.py("worst({'logits': explainer.trace.logits}, {'logits': gpu_logits}, ['logits'])") <= 1.0
    page.click("[data-testid=status-chip] summary")


def test_light_mode_runs_on_webgpu_with_numpy_light_modes_numbers(open_page, artifacts):
    app = open_page("?mode=light&backend=webgpu&sw=off")
    try:
        assert app.wait_settled() == "ready", app.page.text_content("[data-testid=error]")
        page = app.page
        assert page.evaluate("document.documentElement.dataset.mode") == "light"
        assert backend(page)[0] == "webgpu", backend(page)
        assert app.py("explainer.runner.name") == "WebGPU, light mode"
        # issue 16: light mode runs in the model worker; its engine holds the q4 weights
        assert app.py("type(explainer.runner).__name__") == "WorkerRunner"
        assert app.py("(await explainer.runner.describe())['scheme']") == "q4"
        assert app.py("app.kernel_task") is None  # q4: the int8 kernel is never loaded
        app.py(WORST + """
from app import lightmode
numpy_light = lightmode.LightRunner(explainer.params, explainer.config)
want = await numpy_light.run(explainer.ids)
want.tensors['logits'] = want.tensors['logits'][-1:]  # only the last row crosses the worker (issue 16)
names = sorted(explainer.trace.tensors)
""")
        assert app.py("names == sorted(want.tensors) and 'h.1.att' not in names and 'h.0.att' in names")
        ratio = app.py("worst(explainer.trace, want.tensors, [n for n in names if not n.endswith('masked')])")
        assert ratio <= 1.0, f"light WebGPU vs numpy light: {ratio:.3g} of the tolerance"
        # The reader picks layer 3: its tensors come from the GPU, the previous layer's go.
        app.py("await explainer.select_layer(2); numpy_light.view_layer(want, 2)")
        assert app.py("explainer.runner.fetches") == 1 and app.py("explainer.layer") == 2
        assert app.py("(await explainer.runner.describe())['fetches']") == 1  # read on the worker's GPU
        assert app.py("sorted(n for n in explainer.trace.tensors if n.endswith('.att'))") == ["h.2.att"]
        ratio2 = app.py("worst(explainer.trace, want.tensors, [n for n in want.tensors if n.startswith('h.2.') "
                        "and not n.endswith('masked')])")
        assert ratio2 <= 1.0, f"layer 3 from the GPU vs numpy: {ratio2:.3g} of the tolerance"
        print(f"\nlight mode on WebGPU vs numpy light mode: worst error / tolerance {ratio:.3g} (run), "
              f"{ratio2:.3g} (layer 3)")
        # The card with its switch, at phone width: no horizontal overflow.
        page.set_viewport_size({"width": 360, "height": 740})
        open_card(page)
        assert page.get_by_test_id("backend-switch").text_content() == "Run on numpy instead"
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"horizontal scroll on a phone: {width}"
        page.screenshot(path=str(artifacts / "backend-switch-phone.png"))
    finally:
        app.page.context.close()
