"""py/app under CPython: boot sequence, page states, views, adapter probe, the JSON console.

The browser objects (document, navigator.gpu) are replaced by small fakes; the same code
runs on the real page in tests/e2e.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pytest

from app.console import Console, run_code, to_json
from app.boot import Boot
from app.views import adapter as adapter_view
from app.webgpu import AdapterInfo, probe_adapter

SWIFTSHADER = AdapterInfo(vendor="google", architecture="swiftshader", device="",
                          description="", fallback=True)


class FakePage:
    """Records what the app asks of the page, in order."""

    def __init__(self):
        self.calls = []
        self.state = "loading"
        self.backend = None
        self.slots = {}
        self.error = None

    def set_state(self, state):
        self.calls.append(("state", state))
        self.state = state

    def set_backend(self, backend):
        self.backend = backend

    def progress(self, label, fraction=None):
        self.calls.append(("progress", label, fraction))

    def fail(self, message, details=""):
        self.error = (message, details)
        self.state = "error"

    def show(self, slot, html):
        self.slots[slot] = html


def boot(probe):
    page = FakePage()
    app = Boot(page, probe)
    ok = asyncio.run(app.boot())
    return ok, page, app


def test_boot_with_webgpu_reaches_ready():
    async def probe():
        return SWIFTSHADER

    ok, page, app = boot(probe)
    assert ok and page.state == "ready" and page.error is None
    assert page.backend == app.backend == "webgpu"
    assert 'data-testid="adapter">google swiftshader<' in page.slots["app"]
    assert app.versions["numpy"] == np.__version__
    fractions = [c[2] for c in page.calls if c[0] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert page.calls[-1] == ("state", "ready")


def test_boot_without_webgpu_falls_back_to_numpy():
    async def probe():
        return None

    ok, page, _ = boot(probe)
    assert ok and page.state == "ready" and page.backend == "numpy"
    assert "runs on numpy" in page.slots["app"]


def test_boot_failure_is_shown_not_swallowed():
    async def probe():
        raise RuntimeError("requestAdapter exploded")

    ok, page, _ = boot(probe)
    assert not ok and page.state == "error"
    message, details = page.error
    assert message == "Start-up failed: RuntimeError: requestAdapter exploded"
    assert "Traceback" in details
    assert ("state", "ready") not in page.calls


def test_adapter_view_escapes_and_checks_its_input():
    evil = AdapterInfo(vendor="<b>v</b>", architecture="", device="", description="<script>",
                       fallback=False)
    html = adapter_view.render(evil, "webgpu", {"numpy": "2.0.2"})
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;v" in html
    with pytest.raises(ValueError):
        adapter_view.render(None, "webgpu", {})
    with pytest.raises(ValueError):
        adapter_view.render(SWIFTSHADER, "numpy", {})
    with pytest.raises(ValueError):
        adapter_view.render(None, "cuda", {})


def test_adapter_name_prefers_description_then_device():
    assert SWIFTSHADER.name == "google swiftshader"
    assert AdapterInfo("nvidia", "hopper", "H100", "", False).name == "H100"
    assert AdapterInfo("nvidia", "hopper", "H100", "NVIDIA H100 80GB", False).name == "NVIDIA H100 80GB"
    assert AdapterInfo("", "", "", "", False).name == "unnamed adapter"


def fake_navigator(adapter):
    async def request_adapter():
        return adapter

    return SimpleNamespace(gpu=SimpleNamespace(requestAdapter=request_adapter))


def test_probe_reads_adapter_info():
    info = SimpleNamespace(vendor="google", architecture="swiftshader", device="", description="",
                           isFallbackAdapter=True)
    assert asyncio.run(probe_adapter(fake_navigator(SimpleNamespace(info=info)))) == SWIFTSHADER


def test_probe_uses_request_adapter_info_on_older_browsers():
    info = SimpleNamespace(vendor="apple", architecture="common-3", device="", description="")

    async def request_adapter_info():
        return info

    adapter = SimpleNamespace(requestAdapterInfo=request_adapter_info, isFallbackAdapter=False)
    found = asyncio.run(probe_adapter(fake_navigator(adapter)))
    assert found == AdapterInfo("apple", "common-3", "", "", False)


def test_probe_without_webgpu_or_adapter_is_none():
    assert asyncio.run(probe_adapter(SimpleNamespace())) is None
    assert asyncio.run(probe_adapter(fake_navigator(None))) is None


def test_run_code_returns_the_last_expression_and_keeps_names():
    namespace = {}
    assert asyncio.run(run_code("x = 20\nx + 1", namespace)) == 21
    assert asyncio.run(run_code("x * 2", namespace)) == 40
    assert asyncio.run(run_code("y = 1", namespace)) is None
    code = "import asyncio\nawait asyncio.sleep(0)\nawait asyncio.sleep(0, result='awaited')"
    assert asyncio.run(run_code(code, namespace)) == "awaited"


def test_to_json_converts_numpy_and_refuses_nan():
    value = {"a": np.arange(3, dtype=np.float32), "b": np.int64(7), "c": [np.float32(0.5)]}
    assert json.loads(to_json(value)) == {"a": [0.0, 1.0, 2.0], "b": 7, "c": [0.5]}
    with pytest.raises(ValueError):
        to_json(float("nan"))
    with pytest.raises(TypeError, match="object"):
        to_json(object())


def test_console_answers_errors_as_text():
    console = Console({"seed": 3})
    assert json.loads(asyncio.run(console.run_json("seed * 2"))) == {"value": 6}
    reply = json.loads(asyncio.run(console.run_json("1 / 0")))
    assert set(reply) == {"error"} and "ZeroDivisionError" in reply["error"]
    reply = json.loads(asyncio.run(console.run_json("float('nan')")))
    assert "Out of range float values are not JSON compliant" in reply["error"]


def test_set_backend_says_which_backend_runs_and_why():
    async def probe():
        return SWIFTSHADER

    ok, page, app = boot(probe)
    app.set_backend("numpy", "The WebGPU device was lost (destroyed: <gone>).", "device-lost")
    assert page.backend == app.backend == "numpy"
    html = page.slots["app"]
    assert 'data-testid="backend-reason" data-cause="device-lost"' in html
    assert "lost (destroyed: &lt;gone&gt;)" in html and 'data-testid="adapter">google swiftshader<' in html
    app.set_backend("webgpu", "WebGPU runs the model on google swiftshader.", "ok")
    assert page.backend == "webgpu" and 'data-cause="ok"' in page.slots["app"]
    with pytest.raises(ValueError):
        app.set_backend("cuda", "no")
