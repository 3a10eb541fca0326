"""The query/key map's PCA on WebGPU (glassbox.gpu.qk_pca, shaders/qk_cov.wgsl and
qk_project.wgsl) against glassbox.qk.pca and scikit-learn, on lavapipe in CI.

Tolerance: 1e-4 of the map's extent (max |coordinate|) per head. Why it holds (module
docstring of qk_pca): float32 points (6e-8 relative), two-level scatter sums of 64 points
then M/64 partial sums (~(64 + M/64) eps relative), axes moved by that over the eigenvalue gap, K-term
float32 projections; measured ~1e-6 here. 1e-4 of the extent is still far below a pixel of
the 560-pixel head view (1/560 = 1.8e-3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glassbox import qk
from glassbox.gpu import kernels as K
from glassbox.gpu.qk_pca import KERNELS, QKPCA
from glassbox.model import load
from gpu_helpers import assert_close

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ["The file is opened, read and closed again.", "A module can contain executable statements.",
             "Each thread has its own stack."]


@pytest.fixture(scope="module")
def mini_set():
    """q/k of the default model on three sentences plus one text, as the page's map joins them."""
    model = load(str(ROOT / "weights" / "mini"), vocab_dir=str(ROOT / "vendor" / "gpt2"))
    return qk.collect(model.params, model.config, [model.tokenizer.encode(s) for s in SENTENCES])


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_shader_bindings_and_header(kernel, backend):
    source = kernel.source()
    assert K.declared_bindings(source) == list(kernel.bindings), "Python binds in a different order than the shader"
    assert source.startswith(f"// {kernel.name}.wgsl"), "the header names the file"
    assert "glassbox.qk.pca" in source.split("\n\n")[0], "the header names the numpy function it matches"
    backend.device.create_shader_module(code=source)


@pytest.mark.parametrize("translate,scale", [(True, False), (False, False), (True, True)])
def test_gpu_pca_equals_qk_pca_for_every_head(run, backend, mini_set, translate, scale):
    points = qk.all_head_points(mini_set, translate, scale)
    gpu = run(_project(backend, points))
    L, H = mini_set.q.shape[:2]
    assert gpu.shape == (L * H, points.shape[1], 2)
    for g in range(L * H):
        cpu = qk.pca(points[g])
        extent = np.abs(cpu).max()
        assert_close(f"qk_pca head {g}", gpu[g], cpu, atol=1e-4 * extent, rtol=0)


async def _project(backend, points):
    pca = await QKPCA.create(backend)
    return await pca.project(points)


def test_gpu_pca_equals_scikit_learn_up_to_sign(run, backend, mini_set):
    from sklearn.decomposition import PCA

    points = qk.all_head_points(mini_set)
    gpu = run(_project(backend, points))
    for g in (0, points.shape[0] - 1):
        ref = PCA(n_components=2, svd_solver="full").fit_transform(points[g])
        signs = np.sign((ref * gpu[g]).sum(axis=0))
        assert_close(f"qk_pca sklearn head {g}", gpu[g], ref * signs, atol=1e-4 * np.abs(ref).max(), rtol=0)


def test_gpu_pca_splits_heads_over_the_binding_limit(run, backend, rng):
    """GPT-2's 144 heads of 7,400 points of K=64 are 273 MB, over the 128 MiB binding limit: the
    heads go in batches. Here a small limit forces three batches of a small problem."""
    points = rng.standard_normal((5, 40, 8)) * np.linspace(3, 0.5, 8)  # distinct variances: clear axes
    pca = run(QKPCA.create(backend))
    limits = dict(backend.limits)
    try:
        backend.limits = {**limits, "max_storage_buffer_binding_size": 2 * 4 * 40 * 8}
        got = run(pca.project(points))
    finally:
        backend.limits = limits
    assert pca.batches == 3
    for g in range(5):
        cpu = qk.pca(points[g])
        assert_close(f"qk_pca batch head {g}", got[g], cpu, atol=1e-4 * np.abs(cpu).max(), rtol=0)


def test_bad_points_are_refused(run, backend):
    pca = run(QKPCA.create(backend))
    with pytest.raises(ValueError, match=r"\[G, M, K\]"):
        run(pca.project(np.zeros((3, 4))))


def test_the_map_uses_the_gpu_pca_when_its_runner_is_on_webgpu(run, backend, mini_set):
    """app.qkmap.QKMap with a runner on WebGPU (a stand-in with the runner's engine, status and
    tensors): its coordinates come from the GPU and equal glassbox.qk.project's."""
    import json
    from types import SimpleNamespace

    from app import runner as runners
    from app.qkmap import QKMap
    from glassbox import weights
    from test_qkmap import FakeDom, FakeUI

    model = load(str(ROOT / "weights" / "mini"), vocab_dir=str(ROOT / "vendor" / "gpt2"))
    sentences = [{"text": t, "ids": model.tokenizer.encode(t)} for t in SENTENCES]
    corpus = json.dumps({"sentences": sentences}).encode()
    files = {"m/qk.json": json.dumps({"format": qk.FORMAT, "format_version": qk.FORMAT_VERSION, "corpus": {
        "file": "c.json", "bytes": len(corpus), "sha256": weights.sha256_hex(corpus)}}).encode(), "m/c.json": corpus}

    async def fetch(url):
        return files[url]

    numpy = runners.ReferenceRunner(model.params, model.config)
    runner = SimpleNamespace(engine=SimpleNamespace(backend=backend), status=SimpleNamespace(backend="webgpu"),
                             tensors=numpy.tensors)
    m = QKMap(FakeUI(), FakeDom(), model, "m/", fetch, runner=lambda: runner)
    run(m.build())
    assert not m.error, m.error
    assert m.pca_backend == "webgpu" and m.timings["corpus_backend"] == "webgpu"
    assert "projection on webgpu" in m._summary()
    for layer, head in ((0, 0), (3, 3)):
        cpu = qk.project(m.data, layer, head)
        assert_close(f"qk_pca map {layer}.{head}", m.xy[layer, head], cpu, atol=1e-4 * np.abs(cpu).max(), rtol=0)


def test_the_page_asks_the_model_worker_for_the_pca(run, backend, mini_set):
    """Issue 16: with the model in a Web Worker the page has no GPU device of its own; the Q/K
    map's PCA crosses to the worker (protocol 'qk_pca': the points out, the coordinates back,
    as byte buffers) and runs there on the runner's device: the same numbers as QKPCA here."""
    import asyncio
    import json
    from types import SimpleNamespace

    from app import protocol

    host_box = {}

    def to_host(head, arrays):
        asyncio.get_event_loop().call_soon(host_box["host"].handle, json.loads(json.dumps(head)),
                                           [np.ascontiguousarray(a).tobytes() for a in arrays])

    page = protocol.WorkerRunner(to_host, None)

    def to_page(head, arrays):
        asyncio.get_event_loop().call_soon(page.receive, json.loads(json.dumps(head)),
                                           [np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8) for a in arrays])

    runner = SimpleNamespace(engine=SimpleNamespace(backend=backend), name="webgpu")
    host_box["host"] = protocol.ModelHost(to_page, runner)
    points = qk.all_head_points(mini_set)
    got = run(page.qk_pca.project(points))
    np.testing.assert_array_equal(got, run(_project(backend, points)))
    runner.engine = None  # WebGPU gone in the worker: a clear error, the map then uses numpy
    with pytest.raises(ValueError, match="WebGPU does not run"):
        run(page.qk_pca.project(points))
