"""The numpy reference against Hugging Face transformers' GPT2LMHeadModel, tensor by tensor.

Tolerance: both sides compute in float32 from the same weights; they differ only in the order
of floating-point summation (numpy's BLAS vs torch's kernels) and in the layer-norm and softmax
formulas' rounding. Each dot product of length D carries a relative error of a few float32
ulps times sqrt(D) (~1e-6 for D <= 256), growing a little through L layers and the residual
stream. We allow atol 2e-5 + rtol 1e-4: ~100x the measured differences (printed on failure),
yet 1000x smaller than any layout or formula mistake (a wrong transpose or GELU variant shows
errors of 1e-2 or more).
"""

import numpy as np
import pytest
import torch

from glassbox import reference
from glassbox.trace import all_names, capture_layer, capture_logits
from hf_helpers import glassbox_params, random_hf_model

ATOL, RTOL = 2e-5, 1e-4

CONFIGS = [
    dict(n_layer=1, n_head=1, n_embd=32, n_positions=16, vocab_size=50),
    dict(n_layer=2, n_head=4, n_embd=64, n_positions=32, vocab_size=97),
    dict(n_layer=3, n_head=6, n_embd=96, n_positions=40, vocab_size=300, n_inner=200),
    dict(n_layer=4, n_head=8, n_embd=256, n_positions=64, vocab_size=1000),
]


def assert_close(name, got, want):
    err = np.abs(got - want)
    bound = ATOL + RTOL * np.abs(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert (err <= bound).all(), f"{name}: max error {err.max():.3g} (bound at worst cell {bound.flat[np.argmax(err - bound)]:.3g})"


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"L{c['n_layer']}H{c['n_head']}D{c['n_embd']}")
def test_matches_transformers(cfg, rng):
    hf = random_hf_model(**cfg)
    params, config = glassbox_params(hf)
    n = cfg["n_positions"] - 3
    ids = rng.integers(0, cfg["vocab_size"], size=n)
    trace = reference.forward(params, config, ids)
    with torch.no_grad():
        out = hf(torch.tensor(ids)[None], output_hidden_states=True, output_attentions=True)
    hidden = [h[0].numpy() for h in out.hidden_states]
    assert len(hidden) == config.n_layer + 1
    assert_close("emb", trace["emb"], hidden[0])
    for layer in range(config.n_layer):
        assert_close(f"h.{layer}.att", trace[f"h.{layer}.att"], out.attentions[layer][0].numpy())
        if layer < config.n_layer - 1:  # transformers' last hidden state is after ln_f
            assert_close(f"h.{layer}.res_2", trace[f"h.{layer}.res_2"], hidden[layer + 1])
    assert_close("ln_f", trace["ln_f"], hidden[-1])
    assert_close("logits", trace.logits, out.logits[0].numpy())


def test_trace_names_shapes_and_invariants(rng):
    hf = random_hf_model()
    params, config = glassbox_params(hf)
    ids = rng.integers(0, config.vocab_size, size=9)
    trace = reference.forward(params, config, ids)
    assert trace.names() == all_names(config)
    N, D, H, K, F = 9, config.n_embd, config.n_head, config.head_size, config.mlp_width
    shapes = {"q": (H, N, K), "scores": (H, N, N), "att": (H, N, N), "head_out": (H, N, K),
              "attn_concat": (N, D), "mlp_fc": (N, F), "ln_1.mean": (N,), "res_2": (N, D)}
    for short, shape in shapes.items():
        assert trace[f"h.1.{short}"].shape == shape, short
    att = trace["h.0.att"]
    np.testing.assert_allclose(att.sum(-1), 1, atol=1e-6)
    assert (att[:, np.triu_indices(N, 1)[0], np.triu_indices(N, 1)[1]] == 0).all()
    masked = trace["h.0.masked"]
    assert (masked[:, 0, 1:] == reference.MASK_VALUE).all()
    layer = trace.layer(0)
    np.testing.assert_allclose(layer["res_1"], trace["emb"] + layer["attn_proj"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer["ln_1.var"], trace["emb"].var(-1), rtol=1e-5)
    np.testing.assert_allclose(layer["scaled"], layer["scores"] / np.sqrt(K), rtol=1e-6)


def test_kv_cache_matches_full_recompute(rng):
    hf = random_hf_model(n_layer=3, n_head=2, n_embd=32, n_positions=24)
    params, config = glassbox_params(hf)
    ids = rng.integers(0, config.vocab_size, size=20)
    full = reference.forward(params, config, ids)
    cache = reference.KVCache(config)
    logits = [reference.forward(params, config, ids[:7], cache=cache).logits]
    for i in range(7, 20):
        step = reference.forward(params, config, ids[i:i + 1], cache=cache)
        assert step.start == i and step["h.2.att"].shape == (2, 1, i + 1)
        logits.append(step.logits)
    np.testing.assert_allclose(np.concatenate(logits), full.logits, atol=1e-5, rtol=1e-5)
    assert cache.length == 20


def test_capture_filters(rng):
    params, config = glassbox_params(random_hf_model())
    ids = rng.integers(0, config.vocab_size, size=5)
    assert reference.forward(params, config, ids, capture=capture_logits).names() == ["logits"]
    names = reference.forward(params, config, ids, capture=capture_layer(1)).names()
    assert "h.1.att" in names and "h.0.att" not in names and "emb" in names and "logits" in names


@pytest.mark.parametrize("bad, message", [([], "non-empty"), ([[1, 2]], "1-D"), ([5, 97], r"\[0, 97\)")])
def test_bad_ids(bad, message):
    params, config = glassbox_params(random_hf_model())
    with pytest.raises(ValueError, match=message):
        reference.forward(params, config, bad)


def test_over_context_refused():
    params, config = glassbox_params(random_hf_model(n_positions=8))
    with pytest.raises(ValueError, match="exceed the context length 8"):
        reference.forward(params, config, np.zeros(9, dtype=int))


def test_gelu_is_tanh_variant_and_finite():
    x = np.array([-1e4, -3.0, -0.5, 0.0, 0.5, 3.0, 1e4], dtype=np.float32)
    want = torch.nn.functional.gelu(torch.tensor(x), approximate="tanh").numpy()
    np.testing.assert_allclose(reference.gelu(x), want, rtol=1e-6, atol=1e-7)
