"""Issue 15, attention: the flash prefill and split decode kernels inside the page (WebGPU on
SwiftShader through Pyodide's FFI), against the numpy reference with its KV cache.

A forward that reads back no attention stage runs flash_attention.wgsl for a prompt and
attention_decode.wgsl for one or a few tokens; every other tensor of every layer is compared.
Same tolerance as test_gpu_browser (3e-5 + 1e-4*|ref|).
"""

from __future__ import annotations

from .test_gpu_browser import ATOL, IDS, RTOL, page_gpu  # noqa: F401  (page_gpu: the fixture)


def test_page_flash_and_split_decode_equal_numpy(app, page_gpu):  # noqa: F811
    got = app.py(f"""
async def gpu_test_attention_kernels():
    import numpy as np
    from glassbox import reference
    from glassbox.gpu import Engine
    from glassbox.gpu.engine import STAGES
    checkpoint = gpu_test_checkpoint("int8")
    params, config = checkpoint.dequantized(), checkpoint.config
    engine = await Engine.create(gpu_test_shared, checkpoint)
    no_stages = lambda name: not name.endswith(STAGES)
    cache, ref_cache = engine.new_cache(), reference.KVCache(config)
    worst = {{}}
    for part in ({IDS}, [7], [11, 13, 17], [19] * 6):
        gpu = await engine.forward(np.array(part), cache=cache, capture=no_stages)
        ref = reference.forward(params, config, np.array(part), cache=ref_cache, capture=no_stages)
        assert gpu.names() == ref.names(), (gpu.names(), ref.names())
        for name, want in ref.tensors.items():
            ratio = float((np.abs(gpu[name] - want) / ({ATOL} + {RTOL} * np.abs(want))).max())
            key = f"N={{len(part)}} {{name}}"
            worst[key] = ratio
    return {{"worst": max(worst.items(), key=lambda item: item[1]), "checked": len(worst),
            "length": cache.length}}

await gpu_test_attention_kernels()
""")
    assert got["length"] == len(IDS) + 1 + 3 + 6
    assert got["checked"] > 4 * 20, got
    name, ratio = got["worst"]
    assert ratio <= 1, f"in the page, {name} is off by {ratio:.2f} x the tolerance"
    print(f"flash / split decode in the page: worst {name} at {ratio:.3f} x tolerance")
