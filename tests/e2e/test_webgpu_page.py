"""The page's explainer on WebGPU (app/gpu_runner.py): numbers against native numpy, why each
backend runs, and a device lost in the middle of generation.

The shared page boots on WebGPU (SwiftShader in the test browser). Tolerances: the page's
WebGPU float32 and the native numpy float32 differ in summation order only; through the 4
blocks of weights/mini probabilities and attention weights (in [0, 1]) agree to ~1e-6, so
they are compared with test_views' atol 2e-5 + rtol 2e-4 (>10x the largest difference seen,
far below the 3 significant digits the page prints). In the page, the WebGPU trace is also
compared tensor by tensor with Pyodide's numpy reference: 1e-4 + 1e-3*|ref| (logits reach
~±20 and sum over D=128; measured worst ratio printed).

This file runs after test_views (alphabetical), so the device-loss test, which recreates the
device, comes last; it leaves the page on WebGPU again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from glassbox.sampling import distribution

from .test_views import ATOL, RTOL, cells, choose_layer, predictions, ref, run_text, runs, set_sampling, shown_ids, wait_run  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PAGE_ATOL, PAGE_RTOL = 1e-4, 1e-3


def backend(page) -> tuple[str, str, str]:
    """(data-backend, the reason's data-cause, the reason's text)."""
    reason = page.locator("[data-testid=backend-reason]")
    return (page.get_attribute("html", "data-backend"), reason.get_attribute("data-cause"), reason.text_content())  # in the status chip


def test_the_page_runs_the_explainer_on_webgpu_and_says_so(app):
    assert backend(app.page)[:2] == ("webgpu", "ok"), backend(app.page)
    assert "WebGPU runs the model on" in backend(app.page)[2]
    app.page.click("[data-testid=status-chip] summary")  # the chip opens its details on demand
    try:
        assert app.page.is_visible("[data-testid=backend-reason]")
    finally:
        app.page.click("[data-testid=status-chip] summary")
    # issue 16: the page's WorkerRunner relays to the model worker, where a WebGPURunner computes.
    assert app.py("[type(explainer.runner).__name__, app.backend]") == ["WorkerRunner", "webgpu"]
    assert app.py("(await explainer.runner.describe())['kind']") == "WebGPURunner"


def test_webgpu_numbers_on_the_page_equal_native_numpy(app, ref):  # noqa: F811
    page = app.page
    set_sampling(page, 1.0, 0, 1.0)
    before = runs(page)
    page.get_by_test_id("example").nth(0).click()  # the explainer's first prompt
    wait_run(page, before)
    assert app.py("explainer.runner.name") == "webgpu"
    assert "(webgpu)" in page.inner_text("[data-testid=run-status]")
    ids = shown_ids(page)
    native = ref.forward(np.asarray(ids))
    # Every prediction row's probability.
    dist = distribution(native.logits[-1], 1.0, 0, 1.0)
    rows = predictions(page)
    got = np.array([p for _, p in rows])
    want = np.array([dist.probs[i] for i, _ in rows])
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)
    worst = float(np.abs(got - want).max())
    # Every attention cell of every layer and head.
    n = len(ids)
    for layer in range(ref.config.n_layer):
        choose_layer(page, str(layer + 1))
        for head in range(ref.config.n_head):
            page.get_by_test_id("head-select").select_option(str(head + 1))
            shown = cells(page)
            assert len(shown) == n * n
            values = np.array([v for *_, v, _ in shown])
            expected = np.array([native[f"h.{layer}.att"][head][q, k] for q, k, _, _ in shown])
            np.testing.assert_allclose(values, expected, atol=ATOL, rtol=RTOL, err_msg=f"layer {layer} head {head}")
            worst = max(worst, float(np.abs(values - expected).max()))
    # In the page: the WebGPU trace against Pyodide's numpy, every tensor.
    ratio = app.py(f"""
from glassbox import reference
ref_trace = reference.forward(explainer.params, explainer.config, trace.ids)
worst = {{}}
for layer in range(explainer.config.n_layer):
    await explainer.runner.fetch_layer(trace, layer)  # issue 16: the worker sends one layer at a time
    for name, want in ref_trace.tensors.items():
        if name.startswith("h.") and not name.startswith(f"h.{{layer}}."):
            continue
        if name == "logits":  # only the last row crosses the worker (issue 16)
            want = want[-trace.logits.shape[0]:]
        keep = want != reference.MASK_VALUE
        worst[name] = float((np.abs(trace[name] - want)[keep] / ({PAGE_ATOL} + {PAGE_RTOL} * np.abs(want[keep]))).max())
await explainer.runner.fetch_layer(trace, explainer.layer)  # the layer the views show, again
assert len(worst) == len(ref_trace.tensors)
max(worst.items(), key=lambda item: item[1])
""")
    print(f"\nWebGPU page vs native numpy: largest |difference| {worst:.2e} over {len(rows)} probabilities and "
          f"{ref.config.n_layer * ref.config.n_head * n * n} attention cells; in the page, worst tensor "
          f"{ratio[0]} at {ratio[1]:.3f} x tolerance")
    assert ratio[1] <= 1


FAKE_GPUS = """
import asyncio, js
from pyodide.ffi import to_js
from app import gpu_runner, runner as runners

def fake(body):
    return js.eval("(() => { " + body + " })()")

async def gpu_test_reasons():
    out = {}
    cases = {
        "no-webgpu": None,
        "no-adapter": fake("return {gpu: {requestAdapter: async () => null}}"),
        "adapter-timeout": fake("return {gpu: {requestAdapter: () => new Promise(() => {})}}"),
        "device-refused": fake("return {gpu: {requestAdapter: async () => ({features: new Set(), "
                               "requestDevice: async () => { throw new Error('no device for you'); }})}}"),
        "device-timeout": fake("return {gpu: {requestAdapter: async () => ({features: new Set(), "
                               "requestDevice: () => new Promise(() => {})})}}"),
    }
    for label, navigator in cases.items():
        navigator = navigator if navigator is not None else js.Object.new()
        make = gpu_runner.browser_engine(navigator, to_js, js.Object.fromEntries, explainer.model.checkpoint,
                                         timeout=0.3)
        statuses = []
        runner = gpu_runner.WebGPURunner(make, runners.ReferenceRunner(explainer.params, explainer.config),
                                         on_status=statuses.append)
        status = await runner.start()
        out[label] = [status.backend, status.cause, status.reason, len(statuses)]
    return out

await gpu_test_reasons()
"""


def test_each_reason_for_numpy_in_the_page(app):
    got = app.py(FAKE_GPUS)
    assert {k: v[:2] for k, v in got.items()} == {
        "no-webgpu": ["numpy", "no-webgpu"], "no-adapter": ["numpy", "no-adapter"],
        "adapter-timeout": ["numpy", "no-adapter"], "device-refused": ["numpy", "device-refused"],
        "device-timeout": ["numpy", "device-refused"]}
    assert "navigator.gpu is missing" in got["no-webgpu"][2]
    assert "no WebGPU adapter" in got["no-adapter"][2]
    assert "requestAdapter() did not answer within 0.3 s" in got["adapter-timeout"][2]
    assert "no device for you" in got["device-refused"][2]
    assert "requestDevice() did not answer within 0.3 s" in got["device-timeout"][2]


def test_a_browser_without_webgpu_boots_on_numpy_and_says_why(open_page):
    def no_gpu(context):
        context.add_init_script("delete Navigator.prototype.gpu")
        # issue 16: the model worker has its own navigator (init scripts do not reach workers).
        context.route("**/web/model-worker.mjs", lambda route: route.fulfill(
            response=route.fetch(), body="delete WorkerNavigator.prototype.gpu;\n" + route.fetch().text()))

    other = open_page(route=no_gpu)
    try:
        assert other.wait_settled() == "ready"
        assert backend(other.page)[:2] == ("numpy", "no-webgpu")
        assert "navigator.gpu is missing" in backend(other.page)[2]
        assert "(numpy)" in other.page.inner_text("[data-testid=run-status]")
        print(f"\nboot without navigator.gpu: {other.boot_seconds:.1f} s")
    finally:
        other.page.context.close()


def test_device_lost_mid_generation_numpy_steps_in_then_webgpu_returns(app, ref):  # noqa: F811
    page = app.page
    run_text(page, "Once upon a time, there was a little")
    set_sampling(page, 0.0, 0, 1.0)  # greedy: each appended token is the native arg-max
    ids = shown_ids(page)
    assert app.py("explainer.runner.name") == "webgpu"
    # The test hook: device.destroy() on the engine's device, behind the engine's back.
    assert app.py("explainer.runner.destroy_device_for_test()") is True
    for step, expect in enumerate(("numpy", "webgpu")):
        expected = int(np.argmax(ref.forward(np.asarray(ids)).logits[-1]))
        before = runs(page)
        page.get_by_test_id("generate").click()
        wait_run(page, before)
        ids = ids + [expected]
        assert shown_ids(page) == ids  # the next token came, from numpy after the loss
        assert app.state() == "ready"
        assert app.py("explainer.runner.name") == expect
        assert f"({expect})" in page.inner_text("[data-testid=run-status]")
        name, cause, reason = backend(page)
        if expect == "numpy":
            assert (name, cause) == ("numpy", "device-lost"), (name, cause, reason)
            assert "lost" in reason and "numpy" in reason
        else:
            assert (name, cause) == ("webgpu", "recovered"), (name, cause, reason)
            assert "new device" in reason
        # The joined trace (KV cache rows) equals a full native run, whichever backend made it.
        dist = distribution(ref.forward(np.asarray(ids)).logits[-1], 0.0, 0, 1.0)
        got = predictions(page)
        np.testing.assert_allclose([p for _, p in got], [dist.probs[i] for i, _ in got], atol=ATOL, rtol=RTOL)
        longer = ref.forward(np.asarray(ids))
        choose_layer(page, "2")
        shown = cells(page)
        np.testing.assert_allclose([v for *_, v, _ in shown],
                                   [longer["h.1.att"][int(page.input_value("[data-testid=head-select]")) - 1][q, k]
                                    for q, k, _, _ in shown], atol=ATOL, rtol=RTOL)
        page.get_by_test_id("accept").click()
    assert app.py("[explainer.runner.losses, app.backend]") == [1, "webgpu"]


def test_benchmark_page_posts_a_report_for_both_backends(open_page):
    # bench.html with the least work (tools/bench_browser.py runs the real settings).
    target = ROOT / "bench" / "raw" / "e2e-bench-smoke.json"
    target.unlink(missing_ok=True)
    bench = open_page("bench.html?name=e2e-bench-smoke&models=default&lengths=8&decode=2&seconds=0&budget=30")
    try:
        bench.page.wait_for_function("['done', 'error'].includes(document.documentElement.dataset.bench)",
                                     timeout=120_000)
        report = json.loads(target.read_text())
        assert report["error"] is None, report["error"]
        assert "swiftshader" in report["adapter"]
        whats = [row["what"] for row in report["rows"]]
        assert whats == ["forward 8 tokens, logits only", "forward 8 tokens, full trace",
                         "decode 2 tokens with the KV cache"]
        assert all(row["webgpu"] > 0 and row["numpy"] > 0 and row["speedup"] > 0 for row in report["rows"])
    finally:
        bench.page.context.close()
        target.unlink(missing_ok=True)
