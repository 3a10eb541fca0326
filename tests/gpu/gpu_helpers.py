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


# Random weights come from the core, shared with the benchmark and the page tests.
random_params, random_checkpoint = weights.random_params, weights.random_checkpoint


SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=64, n_positions=32, vocab_size=300)
GPT2_SMALL = GPTConfig(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
