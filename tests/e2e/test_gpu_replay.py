"""The engine's host side in the page (issue 15), on SwiftShader: a forward plan recorded once
as a JS array and replayed with one call into JS (browser.REPLAY_JS), readback in one call,
the top-k, and kept tensors read later — each equal to the per-call path and to numpy.

Shares the booted page (fixture ``app``); everything lives in gpu_replay_* names.
"""

from __future__ import annotations

import json

import numpy as np

from glassbox import reference
from glassbox.gpu.browser import REPLAY_JS
from .test_gpu_browser import ATOL, IDS, MODEL, RTOL


def test_replay_equals_per_call_encoding_and_numpy(app):
    got = app.py(MODEL.replace("def make_checkpoint", "def gpu_replay_checkpoint") + f"""
import js
import numpy as np
from pyodide.ffi import to_js
from glassbox import reference
from glassbox.gpu import Engine
from glassbox.gpu.browser import BrowserBackend

async def gpu_replay_run(use_replay):
    backend = await BrowserBackend.create(js.navigator.gpu, to_js, js.Object.fromEntries)
    replays = backend.use_replay
    backend.use_replay = use_replay
    engine = await Engine.create(backend, gpu_replay_checkpoint("int8"))
    cache = engine.new_cache()
    full = await engine.forward(np.array({IDS}), cache=cache)
    steps = []
    for token in (5, 77):  # the second step reuses the first one's plan: no new recording
        before = backend.calls
        await engine.forward_top([token], cache=cache, capture="none", k=16)
        steps.append(backend.calls - before)
    top, step = await engine.forward_top([5], cache=cache, capture=1, keep=True, k=16)
    layer0 = await engine.read_layer(0)
    backend.destroy()
    return {{"replays": replays, "logits": full.logits, "att": full["h.1.att"], "top": top.ids.tolist(),
            "step_att": step["h.1.att"], "layer0_att": layer0["h.0.att"], "layer0_fc": layer0["h.0.mlp_fc"],
            "calls": steps, "T": cache.length}}

gpu_replay_out = {{"replay": await gpu_replay_run(True), "per_call": await gpu_replay_run(False)}}
gpu_replay_out
""")
    replay, per_call = got["replay"], got["per_call"]
    assert replay["replays"], "the page's Function constructor must build the replay helper"
    for key in ("logits", "att", "step_att", "layer0_att", "layer0_fc"):
        np.testing.assert_array_equal(np.array(replay[key]), np.array(per_call[key]), err_msg=key)
    assert replay["top"] == per_call["top"]
    # Against numpy: the prompt, then the decode steps' kept layer 0 and read-back layer 1.
    exec(MODEL, namespace := {})
    checkpoint = namespace["make_checkpoint"]("int8")
    params, config = checkpoint.dequantized(), checkpoint.config
    cache = reference.KVCache(config)
    ref = reference.forward(params, config, np.array(IDS), cache=cache)
    np.testing.assert_allclose(np.array(replay["logits"], np.float32), ref.logits, atol=ATOL, rtol=RTOL)
    for token in (5, 77, 5):
        step = reference.forward(params, config, [token], cache=cache)
    np.testing.assert_allclose(np.array(replay["step_att"], np.float32), step["h.1.att"], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(np.array(replay["layer0_att"], np.float32), step["h.0.att"], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(np.array(replay["layer0_fc"], np.float32), step["h.0.mlp_fc"], atol=ATOL, rtol=RTOL)
    assert replay["top"] == reference.top_k(step.logits[-1], 16)[1].tolist()[:len(replay["top"])]
    # Calls into JS per decode step (the first step also records its plan: one more).
    print(f"calls into JS per decode step: replay {replay['calls']}, per call {per_call['calls']}")
    assert replay["calls"] == [7, 6]  # to_js + replay, to_js x2 + read + to_memoryview (+ record)
    assert per_call["calls"][1] > 5 * replay["calls"][1]


def test_replay_helper_runs_in_a_worker(app):
    """REPLAY_JS uses no DOM: built with a worker's Function, it replays a copy and reads it."""
    worker = """
const helpers = new Function(%s)();
(async () => {
  const device = await (await navigator.gpu.requestAdapter()).requestDevice();
  const src = device.createBuffer({size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC});
  const dst = device.createBuffer({size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST});
  helpers.replay(device, [[1, src, 4, dst, 0, 8]], [[src, 0, new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer)]]);
  const out = await helpers.read([dst], [[0, 0, 8]]);
  postMessage(Array.from(new Float32Array(out.buffer)));
})().catch((e) => postMessage(String(e)));
""" % json.dumps(REPLAY_JS)
    got = app.page.evaluate("""code => new Promise((resolve) => {
  const w = new Worker(URL.createObjectURL(new Blob([code], {type: 'text/javascript'})));
  w.onmessage = (e) => { resolve(e.data); w.terminate(); };
  w.onerror = (e) => { resolve(String(e.message)); w.terminate(); };
})""", worker)
    assert got == [2, 3], got
