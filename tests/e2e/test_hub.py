"""The model picker and Hub loading in the real page, against a fake Hub (tests/fake_hub.py).

The fake Hub runs on 127.0.0.1 (another port), so the conftest's rule that no request leaves
127.0.0.1 still holds; it serves random-init GPT-2-family checkpoints that transformers'
save_pretrained wrote (one file, and sharded) and a BERT config. Pages run ?backend=numpy
(the Hub path is the same on either backend; numpy keeps these boots short). Each page
boot costs ~20 s here, so each test checks several things per page.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glassbox import convert, safetensors

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from fake_hub import FakeHub  # noqa: E402
from hf_helpers import random_hf_model  # noqa: E402

from .test_views import predictions  # noqa: E402

SETTLED = "['ready', 'error'].includes(document.documentElement.dataset.state)"


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    model = random_hf_model(n_layer=2, n_head=2, n_embd=64, n_positions=64, vocab_size=50257, seed=3)
    model.save_pretrained(root / "tiny")
    model.save_pretrained(root / "sharded", max_shard_size="4MB")
    assert (root / "sharded" / "model.safetensors.index.json").exists()
    (root / "bert").mkdir()
    (root / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    cli = root / "cli"
    convert.convert(str(root / "tiny"), str(cli), "int8", vocab_dir=str(ROOT / "vendor" / "gpt2"))
    hub = FakeHub({"test/tiny": str(root / "tiny"), "test/sharded": str(root / "sharded"),
                   "test/bert": str(root / "bert"), "test/nocors": str(root / "tiny")}).start()
    hub.no_cors.add("test/nocors")
    yield hub, cli, root
    hub.stop()


def settle(app) -> str:
    app.page.wait_for_function(SETTLED, timeout=240_000)
    return app.state()


def error_text(app) -> str:
    return " ".join((app.page.text_content("[data-testid=error]") or "").split())


def confirm(app) -> None:
    app.page.get_by_test_id("hub-go").click()


def native_predict(folder: Path, text: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "glassbox", "predict", str(folder), text, "--json",
                          "--backend", "numpy", "--rows", "10"],
                         capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "py")})
    return json.loads(out.stdout)


def check_predictions(app, cli: Path) -> None:
    """The page's next-token ranking equals `predict --json` on the CLI-converted int8 folder."""
    ids = app.py("[int(i) for i in ids]")
    text = app.py("model.tokenizer.decode(ids)")
    ref = native_predict(cli, text)
    assert ref["tokens"] == ids
    shown = predictions(app.page)[:10]
    assert [i for i, _ in shown] == [row["id"] for row in ref["predictions"]]
    for (_, p), row in zip(shown, ref["predictions"]):
        # float32 in the page (einsum in blocks) vs native numpy: rounding only.
        assert abs(p - row["probability"]) <= 1e-5 + 1e-4 * row["probability"]


IN_WORKER = """
import numpy as np
from app.runner import ReferenceRunner
ref = (await ReferenceRunner(explainer.model.params, explainer.config).run(explainer.ids)).logits
got = explainer.trace.logits
ref = ref[getattr(explainer.trace, "logits_start", 0) or 0:]  # a partial trace holds the last row(s) only
assert got.shape == ref.shape, (got.shape, ref.shape)
[type(explainer.runner).__name__, app.backend, float(np.max(np.abs(got - ref) / (1e-5 + 1e-5 * np.abs(ref))))]
"""


def check_in_worker(app) -> None:
    """issue 16 (h16): the Hub model computed in the model worker (its runner, and the backend
    reason says so), and the worker's logits equal this thread's numpy run of the same stored
    weights: the same int8 bytes through the same numpy code on both sides, so only float32
    rounding may differ (1e-5 + 1e-5 * |ref|; random-init logits stay within a few units)."""
    kind, backend, ratio = app.py(IN_WORKER)
    assert (kind, backend) == ("WorkerRunner", "numpy")
    reason = app.page.text_content("[data-testid=backend-reason]")
    assert "Web Worker" in reason and "runs on the page's main thread" not in reason, reason
    assert ratio <= 1.0, f"the worker's logits differ from the main thread's: {ratio:.3g} of the tolerance"
    # Its load reported progress to the page: the stored folder, read back to the last shard.
    label, fraction = app.py("[app.worker.loading['label'], app.worker.loading['fraction']]")
    assert label.startswith("Model worker: Checking stored weights") and fraction == 1.0, (label, fraction)


def hub_paths(hub) -> list[tuple[str, str, str | None]]:
    return list(hub.requests)


def test_pick_load_reload_offline(fake_hub, open_page, artifacts):
    hub, cli, root = fake_hub
    hub.clear()
    app = open_page(f"?model=hf:test/tiny&hub={hub.url}&backend=numpy")
    app.page.wait_for_selector("[data-testid=hub-confirm]", timeout=120_000)
    picker = app.page.get_by_test_id("model-picker")
    assert "contact" in picker.inner_text() and hub.url.split("//")[1] in picker.inner_text()
    assert hub.requests == [], "the page asked the Hub before the visitor agreed"
    app.page.screenshot(path=str(artifacts / "hub-confirm.png"))
    confirm(app)
    assert settle(app) == "ready", error_text(app)
    # Only byte ranges of the weights; the CDN redirect was followed.
    st = [r for r in hub.requests if r[1].endswith(".safetensors") and r[0] == "GET"]
    assert st and all(r[2] and r[2].startswith("bytes=") for r in st), st
    assert any(r[1].startswith("/cdn/") for r in st) and any("/resolve/" in r[1] for r in st)
    assert "model=hf%3Atest%2Ftiny" in app.page.url or "model=hf:test/tiny" in app.page.url
    check_predictions(app, cli)
    check_in_worker(app)
    assert "hf:test/tiny" in app.page.get_by_test_id("pick-current").inner_text()
    app.page.get_by_test_id("pick-current").click()  # open the list
    picker.scroll_into_view_if_needed()
    picker.screenshot(path=str(artifacts / "hub-picker-desktop.png"))

    # Reload: from the model store, zero Hub requests; then offline.
    app.page.wait_for_function("document.documentElement.dataset.offline === 'ready'", timeout=180_000)
    hub.clear()
    app.page.reload()
    assert settle(app) == "ready", error_text(app)
    assert hub.requests == []
    assert "stored on this device" not in app.page.get_by_test_id("pick-current").inner_text()
    app.page.context.set_offline(True)
    try:
        app.page.reload()
        assert settle(app) == "ready", error_text(app)
        assert hub.requests == []
        check_predictions(app, cli)
        check_in_worker(app)  # offline too: the worker reads the stored folder
    finally:
        app.page.context.set_offline(False)
    app.page.close()


def test_errors_and_phone_layout(fake_hub, open_page, artifacts):
    hub, cli, root = fake_hub
    app = open_page(f"?model=hf:test/missing&hub={hub.url}&backend=numpy")
    app.page.set_viewport_size({"width": 360, "height": 740})
    app.page.wait_for_selector("[data-testid=hub-confirm]", timeout=120_000)
    app.page.get_by_test_id("model-picker").screenshot(path=str(artifacts / "hub-picker-phone.png"))
    width = app.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the picker overflows a 360 px screen ({width} px)"
    confirm(app)
    assert settle(app) == "error"
    assert "test/missing" in error_text(app) and "was not found" in error_text(app)
    # The picker stays usable after the error: ask for the BERT repository through its field.
    app.page.get_by_test_id("hub-repo").fill("test/bert")
    app.page.get_by_test_id("hub-form").locator("button").click()
    app.page.wait_for_url("**model=hf*bert*", timeout=30_000)
    assert settle(app) == "error"
    assert "not a GPT-2-family checkpoint: model_type is 'bert'" in error_text(app)
    # A Hub address that does not send CORS headers.
    app.page.get_by_test_id("hub-repo").fill("test/nocors")
    app.page.get_by_test_id("hub-form").locator("button").click()
    app.page.wait_for_url("**model=hf*nocors*", timeout=30_000)
    assert settle(app) == "error"
    assert "without the CORS headers" in error_text(app), error_text(app)
    app.page.close()


def break_the_workers_vocabulary(context) -> None:
    """issue 16 (h16): GPT-2's vocab.bpe arrives cut short in the model worker only (its requests'
    referrer is the worker's script), so the worker's load fails its hash check and the page
    computes on its own thread (the page's copy is intact)."""
    def handle(route):
        if route.request.all_headers().get("referer", "").endswith("/web/model-worker.mjs"):
            response = route.fetch()
            route.fulfill(response=response, body=response.body()[:-1000])
        else:
            route.fallback()
    context.route("**/vendor/gpt2/vocab.bpe", handle)


def test_sharded_download_resumes_after_a_cut(fake_hub, open_page):
    """Also (issue 16, h16): a file that fails the worker's hash check -> the page's own runner."""
    hub, cli, root = fake_hub
    hub.clear()
    hub.cut_after = 10  # the 11th range read of a safetensors file drops the connection
    # sw=off: the worker's requests reach the network (and the route), not the service worker's cache
    app = open_page(f"?model=hf:test/sharded&hub={hub.url}&backend=numpy&sw=off", route=break_the_workers_vocabulary)
    try:
        app.page.wait_for_selector("[data-testid=hub-confirm]", timeout=120_000)
        confirm(app)
        assert settle(app) == "error"
        assert "broke off" in error_text(app) and "resume" in error_text(app)
    finally:
        hub.cut_after = None
    served = [(r[1].split("/")[-1], r[2]) for r in hub.requests if r[2] and r[1].startswith("/cdn/")][:10]
    data = [s for s in served if not s[1].startswith("bytes=0-")]  # tensors, not header reads
    headers = {(f, rng) for f, rng in served if rng.startswith("bytes=0-") or _is_header(root, f, rng)}
    data = [s for s in data if s not in headers]
    assert len(data) >= 3, served
    hub.clear()
    app.page.reload()
    assert settle(app) == "ready", error_text(app)
    again = [(r[1].split("/")[-1], r[2]) for r in hub.requests if r[2] and r[1].startswith("/cdn/")]
    refetched = set(again) & set(data)
    # At most the one tensor that was cut in the middle (wte comes in row blocks) is asked again.
    assert len(refetched) <= 1, refetched
    check_predictions(app, cli)  # the sharded checkpoint is the same model as the single file
    # The worker refused the damaged vocabulary by name and hash; this thread computed, and says why.
    assert app.py("type(explainer.runner).__name__") != "WorkerRunner"
    reason = " ".join(app.page.text_content("[data-testid=backend-reason]").split())
    assert "runs on the page's main thread (LoadError: tokenizer file vocab.bpe is corrupted or truncated" in reason, \
        reason
    assert reason.count("sha256") == 2, reason
    app.page.close()


def _is_header(root: Path, file: str, rng: str) -> bool:
    """Whether a Range header asks for a shard's JSON header (bytes 8 .. 8+N-1)."""
    start = int(rng.split("=")[1].split("-")[0])
    if start != 8:
        return False
    with open(root / "sharded" / file, "rb") as f:
        return safetensors.header_length(f.read(8)) > 0
