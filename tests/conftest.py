"""Shared test set-up: py/ and tests/ on sys.path, a seeded RNG, numpy errors raised."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "py"))
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _numpy_strict():
    """Every test runs with a fixed global seed and floating-point errors as exceptions."""
    np.random.seed(0)
    old = np.seterr(all="raise")
    yield
    np.seterr(**old)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
