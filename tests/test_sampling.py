"""Sampling: temperature, top-k and top-p over the full vocabulary, checked against definitions
and against Hugging Face's logits warpers."""

import numpy as np
import pytest
import torch

from glassbox.sampling import distribution, sample


def test_temperature_one_is_softmax(rng):
    logits = rng.normal(size=500).astype(np.float32)
    d = distribution(logits)
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(d.probs, want, rtol=1e-5)
    assert d.kept.all() and d.probs.sum() == pytest.approx(1, abs=1e-6)


def test_greedy_is_one_hot_on_first_argmax():
    logits = np.array([1.0, 3.0, 3.0, -2.0], dtype=np.float32)
    d = distribution(logits, temperature=0)
    assert d.greedy and d.probs.tolist() == [0, 1, 0, 0]
    assert sample(d, np.random.default_rng(1)) == 1


def test_low_temperature_sharpens(rng):
    logits = rng.normal(size=100).astype(np.float32)
    assert distribution(logits, 0.5).probs.max() > distribution(logits, 1.0).probs.max() > distribution(logits, 2.0).probs.max()


@pytest.mark.parametrize("top_k, top_p, temperature", [(5, 1.0, 1.0), (0, 0.9, 0.7), (40, 0.5, 1.3), (1, 1.0, 2.0), (0, 0.05, 1.0)])
def test_matches_transformers_warpers(rng, top_k, top_p, temperature):
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    logits = rng.normal(scale=3, size=2000).astype(np.float32)
    scores = torch.tensor(logits)[None]
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    want = torch.softmax(scores, -1)[0].numpy()
    d = distribution(logits, temperature, top_k, top_p)
    assert (d.kept == (want > 0)).all()
    np.testing.assert_allclose(d.probs, want, rtol=1e-4, atol=1e-7)


def test_top_p_uses_full_vocabulary():
    # 200 equally likely tokens (0.5% each): reaching 89.75% needs 180 of them, far beyond any
    # top-50 shortcut (the target sits between 179 and 180 tokens' mass, away from rounding).
    d = distribution(np.zeros(200, dtype=np.float32), top_p=0.8975)
    assert d.kept.sum() == 180


def test_seeded_sampling_is_reproducible_and_follows_probs(rng):
    d = distribution(np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32)))
    draws = [sample(d, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(draws)) == 1
    g = np.random.default_rng(0)
    counts = np.bincount([sample(d, g) for _ in range(4000)], minlength=3) / 4000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.2], atol=0.03)


def test_sampling_never_picks_filtered_tokens():
    d = distribution(np.array([5.0, 4.0, 0.0, -1.0], dtype=np.float32), top_k=2)
    g = np.random.default_rng(0)
    assert {sample(d, g) for _ in range(200)} <= {0, 1}


@pytest.mark.parametrize("kwargs, message", [(dict(temperature=-1), "temperature"), (dict(top_k=-2), "top-k"),
                                             (dict(top_p=0), "top-p"), (dict(top_p=1.5), "top-p")])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distribution(np.zeros(4, dtype=np.float32), **kwargs)


def _top_reference(d, n):
    """The order before #16: a full lexsort (probs, then full_probs, both descending; ties by id)."""
    ids = np.arange(d.probs.size)
    return np.lexsort((ids, -d.full_probs, -d.probs))[:n]


def test_top_matches_the_full_sort_on_rows_with_ties(rng):
    """Distribution.top partitions instead of sorting the vocabulary: the same ids in the same
    order as the full sort, on rows full of ties (quantized logits tie in probs and full_probs;
    top-k/top-p and greedy leave runs of zeros in probs), for n inside, at and past the kept tokens."""
    size = 3001
    checked = 0
    for trial in range(40):
        logits = np.round(rng.normal(size=size) * rng.choice([0.5, 2, 8])).astype(np.float32)
        options = [dict(), dict(top_k=int(rng.integers(1, 60))), dict(top_p=float(rng.uniform(0.05, 0.9))),
                   dict(temperature=0), dict(temperature=float(rng.uniform(0.3, 3)), top_k=7, top_p=0.6)]
        d = distribution(logits, **options[trial % len(options)])
        kept = int(d.kept.sum())
        for n in {1, 2, 5, kept, kept + 1, kept + 13, 50, size // 2, size - 1, size, size + 4, 0}:
            got = d.top(n)
            np.testing.assert_array_equal(got, _top_reference(d, n), err_msg=f"trial {trial}, n={n}")
            checked += 1
    # ties the sampler itself rarely makes: equal probs with different full_probs and the reverse
    probs = np.array([0.25, 0.0, 0.25, 0.1, 0.0, 0.25, 0.0, 0.15, 0.0], dtype=np.float32)
    full = np.array([0.2, 0.05, 0.2, 0.1, 0.05, 0.22, 0.02, 0.1, 0.06], dtype=np.float32)
    d = distribution(np.zeros(9, dtype=np.float32))
    d = type(d)(d.logits, 1.0, 0, 1.0, d.scaled, full, probs > 0, probs)
    for n in range(12):
        np.testing.assert_array_equal(d.top(n), _top_reference(d, n), err_msg=f"hand-made row, n={n}")
    assert d.top(6).tolist() == [5, 0, 2, 7, 3, 8]
    assert checked > 300
