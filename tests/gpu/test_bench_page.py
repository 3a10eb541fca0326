"""app.bench (the in-browser benchmark's core) under CPython on wgpu-native, tiny settings."""

from __future__ import annotations

import pytest

from app import bench
from glassbox.gpu import Engine
from glassbox.gpu.backend import GPUUnavailableError
from gpu_helpers import SMALL, random_checkpoint


def test_settings_from_the_query_string():
    opts = bench.settings("?name=x1&models=default&lengths=8,64&decode=4&seconds=0.5&budget=10&other=1")
    assert opts == {"name": "x1", "models": ["default"], "lengths": [8, 64], "decode": 4, "seconds": 0.5,
                    "budget": 10.0, "backends": ["webgpu", "numpy"], "folder": ""}
    assert bench.settings("")["models"] == ["default", "gpt2-small"]


@pytest.mark.parametrize("webgpu", [True, False])
def test_report_has_every_figure_for_both_backends(run, webgpu):
    from glassbox.gpu.native import NativeBackend

    checkpoint = random_checkpoint(SMALL, "int8")

    async def load_default():
        return checkpoint

    async def make_engine(c):
        if not webgpu:
            raise GPUUnavailableError("this browser has no WebGPU (navigator.gpu is missing)", "no-webgpu")
        return await Engine.create(await NativeBackend.create(), c)

    opts = bench.settings("?models=default&lengths=4,16,64&decode=3&seconds=0&budget=60")
    report = run(bench.run_benchmark(opts, load_default, make_engine, say=lambda _: None))
    whats = [r["what"] for r in report["rows"]]
    # 64 > n_positions (32): not measured.
    assert whats == ["forward 4 tokens, logits only", "forward 4 tokens, full trace", "forward 16 tokens, logits only",
                     "forward 16 tokens, full trace", "decode 3 tokens with the KV cache"]
    for row in report["rows"]:
        assert row["numpy"] > 0
        if webgpu:
            assert row["webgpu"] > 0 and row["speedup"] > 0
        else:
            assert "webgpu" not in row
    assert (report["adapter"] is not None) == webgpu
    assert (report["webgpu_error"] is None) == webgpu


def test_over_budget_figures_are_skipped_and_say_so(run):
    checkpoint = random_checkpoint(SMALL, "int8")

    async def load_default():
        return checkpoint

    async def make_engine(c):
        raise GPUUnavailableError("no adapter", "no-adapter")

    opts = bench.settings("?models=default&lengths=4,32&decode=3&seconds=0&budget=0.000001")
    rows = run(bench.run_benchmark(opts, load_default, make_engine, say=lambda _: None))["rows"]
    assert rows[0]["numpy"] > 0  # nothing to estimate from: measured
    assert rows[2]["numpy"] is None and rows[2]["numpy_note"].startswith("skipped: estimated")
    assert rows[-1]["numpy"] is None and "skipped" in rows[-1]["numpy_note"]
