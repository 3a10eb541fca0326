"""The peer benchmark's ONNX graph (tools/peer_onnx.py) computes Glassbox's reference forward.

tools/bench_peer.py compares ONNX Runtime Web with Glassbox on this graph, so it must be the
same function of the same weights, KV cache included. Native onnxruntime runs it here.
Tolerance (float32 graph): atol 1e-5 + rtol 1e-4, as tests/test_pyodide.py (summation order
only). The int8 graph (dynamic quantization: activations are quantized too) is only checked
to stay near: max error under 5% of the logits' range.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from glassbox import reference, weights
from glassbox.config import GPTConfig

from test_pyodide import ROOT

sys.path.insert(0, str(ROOT / "tools"))
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is pinned in requirements-test.txt")
import peer_onnx  # noqa: E402

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=50)


def test_graph_with_kv_cache_matches_reference(tmp_path):
    params = weights.random_params(CONFIG, seed=1, scale=0.3)
    paths = peer_onnx.write_models(tmp_path, params, CONFIG, int8=True)
    ids = [3, 7, 1, 9, 4, 49]
    want = reference.forward(params, CONFIG, ids)
    for kind, path in paths.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        first = dict(zip(names, session.run(None, peer_onnx.feeds(CONFIG, ids[:4]))))
        step = dict(zip(names, session.run(None, peer_onnx.feeds(CONFIG, ids[4:], first))))
        got = np.concatenate([first["logits"], step["logits"]])
        assert step["present_k.1"].shape == (2, 6, 8)
        if kind == "fp32":
            err = np.abs(got - want.logits)
            assert (err <= 1e-5 + 1e-4 * np.abs(want.logits)).all(), err.max()
            assert np.allclose(step["present_v.0"], np.concatenate([want["h.0.v"]], axis=1), atol=1e-5)
        else:
            assert np.abs(got - want.logits).max() < 0.05 * np.ptp(want.logits)
