"""Helpers for the GPU tests: random GPT-2-like checkpoints and a recording assert_close."""

from __future__ import annotations

import numpy as np

from glassbox import weights
from glassbox.config import GPTConfig

MEASURED: list[tuple[str, float, float]] = []  # (what, max |gpu - numpy|, worst |error| / tolerance)


def assert_close(what: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> float:
    """|got - want| <= atol + rtol * |want| elementwise; records the worst error for the summary."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = atol + rtol * np.abs(want.astype(np.float64))
    ratio = float((diff / bound).max()) if diff.size else 0.0
    worst = float(diff.max()) if diff.size else 0.0
    MEASURED.append((what, worst, ratio))
    if ratio > 1:
        i = np.unravel_index(np.argmax(diff / bound), diff.shape)
        raise AssertionError(f"{what}: |gpu - numpy| = {diff[i]:.3g} at {i} exceeds {atol} + {rtol}*|{want[i]:.4g}| "
                             f"(max abs error {worst:.3g})")
    return worst


def random_params(config: GPTConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """GPT-2-like random parameters in the Glassbox layout: N(0, 0.02) matrices, small
    biases, layer norm gains near 1 (perturbed so layout mistakes cannot hide)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in weights.expected_shapes(config).items():
        if len(shape) == 2:
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        elif name.endswith(".weight"):  # layer norm gains
            value = 1 + rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
        else:
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        params[name] = value.astype(np.float32)
    return params


def random_checkpoint(config: GPTConfig, scheme: str, seed: int = 0, params=None) -> weights.Checkpoint:
    params = random_params(config, seed) if params is None else params
    return weights.Checkpoint(config=config, scheme=scheme, group=32,
                              tensors=weights.quantize_params(params, config, scheme, 32))


SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=64, n_positions=32, vocab_size=300)
GPT2_SMALL = GPTConfig(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
