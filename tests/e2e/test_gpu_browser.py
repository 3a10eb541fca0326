"""The GPU engine inside the page: navigator.gpu (SwiftShader here) through Pyodide's FFI.

The page builds glassbox.gpu.browser.BrowserBackend from navigator.gpu, runs a small random
checkpoint, and compares the WebGPU trace with the numpy reference tensor by tensor, in the
page (Pyodide's numpy) and here (the runner's numpy, from the same deterministic weights).
"""

from __future__ import annotations

import numpy as np
import pytest

from glassbox import reference

# Runs both in the page and here, so both sides hold bit-identical weights (PCG64 draws).
MODEL = """
import numpy as np
from glassbox import weights
from glassbox.config import GPTConfig

def make_checkpoint(scheme):
    config = GPTConfig(n_layer=2, n_head=2, n_embd=64, n_positions=32, vocab_size=300)
    return weights.random_checkpoint(config, scheme, seed=7)
"""

IDS = [3, 141, 59, 265, 35, 89, 79]

# Same bound as tests/gpu (whole forward, small model): 3e-5 + 1e-4*|ref|; SwiftShader's
# float32 arithmetic differs from numpy's only in summation order.
ATOL, RTOL = 3e-5, 1e-4


@pytest.fixture(scope="module")
def page_gpu(app):
    """Make the backend once in the page. The page's console namespace is shared with other
    tests, so everything here lives in gpu_test_* names and functions."""
    got = app.py(MODEL.replace("def make_checkpoint", "def gpu_test_checkpoint") + """
import js
from pyodide.ffi import to_js
from glassbox.gpu.browser import BrowserBackend

async def gpu_test_backend():
    return await BrowserBackend.create(js.navigator.gpu, to_js, js.Object.fromEntries)

gpu_test_shared = await gpu_test_backend()
info = gpu_test_shared.info
{"describe": info.describe(), "vendor": info.vendor, "architecture": info.architecture,
 "limits": gpu_test_shared.limits}
""")
    print(f"\n{got['describe']}")
    return got


def test_backend_reports_its_adapter_and_default_limits(page_gpu):
    # Chromium runs with --use-webgpu-adapter=swiftshader (tests/e2e/conftest.py).
    assert page_gpu["architecture"] == "swiftshader", page_gpu
    assert page_gpu["describe"].startswith("browser WebGPU")
    assert page_gpu["limits"]["max_storage_buffers_per_shader_stage"] == 8
    assert page_gpu["limits"]["max_storage_buffer_binding_size"] == 128 * 1024 * 1024


@pytest.mark.parametrize("scheme", ["int8", "q4"])
def test_page_webgpu_trace_equals_numpy(app, page_gpu, scheme):
    got = app.py(f"""
async def gpu_test_forward(scheme):
    import numpy as np
    from glassbox import reference
    from glassbox.gpu import Engine
    checkpoint = gpu_test_checkpoint(scheme)
    engine = await Engine.create(gpu_test_shared, checkpoint)
    ids = np.array({IDS})
    gpu = await engine.forward(ids)
    ref = reference.forward(checkpoint.dequantized(), checkpoint.config, ids)
    ratios = {{}}
    for name, want in ref.tensors.items():
        have = gpu[name]
        assert have.shape == want.shape, (name, have.shape, want.shape)
        keep = want != reference.MASK_VALUE
        assert ((have == reference.MASK_VALUE) == ~keep).all(), name
        ratios[name] = float((np.abs(have - want)[keep] / ({ATOL} + {RTOL} * np.abs(want[keep]))).max())
    return {{"names": gpu.names(), "ratios": ratios, "logits": gpu.logits, "att": gpu["h.1.att"],
            "writable": all(t.flags.writeable for t in gpu.tensors.values())}}

await gpu_test_forward({scheme!r})
""")
    exec(MODEL, namespace := {})
    checkpoint = namespace["make_checkpoint"](scheme)
    ref = reference.forward(checkpoint.dequantized(), checkpoint.config, np.array(IDS))
    assert got["names"] == ref.names()
    worst = max(got["ratios"].items(), key=lambda item: item[1])
    assert worst[1] <= 1, f"in the page, {worst[0]} is off by {worst[1]:.2f} x the tolerance"
    np.testing.assert_allclose(np.array(got["logits"], np.float32), ref.logits, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(np.array(got["att"], np.float32), ref["h.1.att"], atol=ATOL, rtol=RTOL)
    assert got["writable"], "trace tensors must be ordinary writable arrays, as numpy's are"
    print(f"{scheme}: worst tensor {worst[0]} at {worst[1]:.3f} x tolerance")


def test_page_kv_cache_decode_equals_full_recompute(app, page_gpu):
    got = app.py(f"""
async def gpu_test_decode():
    import numpy as np
    from glassbox.gpu import Engine
    engine = await Engine.create(gpu_test_shared, gpu_test_checkpoint("int8"))
    new = await engine.generate(np.array({IDS}), 5, lambda logits: int(np.argmax(logits)))
    full = (await engine.forward(np.array({IDS} + new[:-1]), capture="logits")).logits
    return {{"new": new, "full_argmax": np.argmax(full[{len(IDS) - 1}:], axis=-1)}}

await gpu_test_decode()
""")
    assert got["new"] == got["full_argmax"]


def test_page_device_loss_raises_a_catchable_error(app, page_gpu):
    got = app.py("""
async def gpu_test_loss():
    from glassbox.gpu import DeviceLostError, Engine
    backend = await gpu_test_backend()
    engine = await Engine.create(backend, gpu_test_checkpoint("int8"))
    await engine.forward([1, 2], capture="logits")
    backend.destroy()
    try:
        await engine.forward([1, 2], capture="logits")
    except DeviceLostError as e:
        return str(e)

await gpu_test_loss()
""")
    assert got and "lost" in got


def test_page_splitk_and_prefill_matmuls_equal_numpy(app, page_gpu):
    """Issue 15, matmul: decode steps through matmul_splitk.wgsl in the shader variants this
    browser compiles (Tint: unpack4xI8, subgroups where offered), and through matmul.wgsl's
    tiled entry, equal the numpy reference (the same checkpoint, here and in the page); so
    does a 20-token prompt through matmul_prefill.wgsl."""
    got = app.py(f"""
async def gpu_test_splitk():
    import numpy as np
    from glassbox import reference
    from glassbox.gpu import Engine
    checkpoint = gpu_test_checkpoint("q4")
    out = {{"features": sorted(gpu_test_shared.shader_features), "steps": {{}}}}
    for splitk in (4, 0):
        engine = await Engine.create(gpu_test_shared, checkpoint, splitk_max_tokens=splitk, rowwise_max_tokens=0)
        cache = engine.new_cache()
        await engine.forward(np.array({IDS[:4]}), cache=cache, capture="logits")
        out["steps"][splitk] = [(await engine.forward(np.array([t]), cache=cache)).logits[-1].tolist()
                                for t in {IDS[4:]}]
    # A 20-token prompt through matmul_prefill.wgsl (64 x 64 tiles), against the page's numpy.
    engine = await Engine.create(gpu_test_shared, checkpoint, prefill_min_tokens=17)
    ids = np.arange(20) * 13 % 300
    gpu = await engine.forward(ids, capture="logits")
    ref = reference.forward(checkpoint.dequantized(), checkpoint.config, ids, capture=lambda name: False)
    out["prefill_ratio"] = float((np.abs(gpu.logits - ref.logits) / ({ATOL} + {RTOL} * np.abs(ref.logits))).max())
    return out

await gpu_test_splitk()
""")
    print(f"shader variants in the page: {got['features']}")
    assert got["prefill_ratio"] <= 1, f"prefill logits off by {got['prefill_ratio']:.2f} x the tolerance"
    ns = {}
    exec(MODEL, ns)
    checkpoint = ns["make_checkpoint"]("q4")
    cache = reference.KVCache(checkpoint.config)
    params = checkpoint.dequantized()
    reference.forward(params, checkpoint.config, np.array(IDS[:4]), cache=cache)
    want = [reference.forward(params, checkpoint.config, np.array([t]), cache=cache).logits[-1] for t in IDS[4:]]
    for splitk, steps in got["steps"].items():
        for i, (mine, ref) in enumerate(zip(steps, want)):
            np.testing.assert_allclose(np.array(mine, np.float32), ref, atol=ATOL, rtol=RTOL,
                                       err_msg=f"decode step {i} splitk<={splitk}")


def test_page_fused_layer_norm_equals_numpy(app, page_gpu):
    """Issue 15, engine: Engine(fuse_ln=True) (the default on GPUs; SwiftShader's is False) in
    this browser's shader compiler: a 20-token prompt (matmul_prefill.wgsl with LN) and decode
    steps (matmul_splitk.wgsl with LN, in the variants this browser compiles) run only ln_f's
    layer_norm dispatch and give numpy's logits (the page's numpy, same checkpoint)."""
    got = app.py(f"""
async def gpu_test_fused_ln():
    import numpy as np
    from glassbox import reference
    from glassbox.gpu import Engine
    from glassbox.gpu.backend import Dispatch
    checkpoint = gpu_test_checkpoint("int8")
    engine = await Engine.create(gpu_test_shared, checkpoint, fuse_ln=True)
    names = lambda: [key[0] for key, p in engine._pipelines.items() for cmd in engine.last_plan.commands
                     if isinstance(cmd, Dispatch) and cmd.pipeline is p]
    params, config = checkpoint.dequantized(), checkpoint.config
    cache, ref_cache = engine.new_cache(), reference.KVCache(config)
    out = {{"default": (await Engine.create(gpu_test_shared, checkpoint)).fuse_ln, "ratios": [], "layer_norms": []}}
    for ids in (np.arange(20) * 13 % 300, np.array([5]), np.array([77, 3])):
        gpu = await engine.forward(ids, cache=cache, capture="logits")
        out["layer_norms"].append(names().count("layer_norm"))
        ref = reference.forward(params, config, ids, cache=ref_cache, capture=lambda name: False)
        out["ratios"].append(float((np.abs(gpu.logits - ref.logits) / ({ATOL} + {RTOL} * np.abs(ref.logits))).max()))
    return out

await gpu_test_fused_ln()
""")
    assert got["default"] is False, "SwiftShader is a CPU adapter: no fusion by default"
    assert got["layer_norms"] == [1, 1, 1], got  # ln_f only
    assert max(got["ratios"]) <= 1, f"fused logits off by {got['ratios']} x the tolerance"
