"""--backend on the command line against the real native adapter (lavapipe in CI), issue 9:
``gpu`` runs where it can and otherwise exits 2 with one line; ``auto`` falls back to numpy
and says why in one line. The cases that need a missing wgpu-py or adapter are simulated in
tests/test_inputs.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from glassbox import weights
from glassbox.cli import ROOT, main
from glassbox.config import GPTConfig
from glassbox.gpu import native

TOKENIZER = json.loads(open(os.path.join(ROOT, "weights", "mini", "manifest.json")).read())["tokenizer"]
FITS = GPTConfig(n_layer=1, n_head=2, n_embd=32, n_positions=16, vocab_size=50257, n_inner=64)
ODD = GPTConfig(n_layer=1, n_head=2, n_embd=30, n_positions=16, vocab_size=50257, n_inner=60)  # D % 4 != 0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-gpu")
    for name, config in (("fits", FITS), ("odd", ODD)):
        weights.write_folder(str(base / name), config, weights.random_params(config, seed=2), "int8", TOKENIZER)
    return base


def cli(*args, tmp_path):
    """The CLI in a fresh process (so a traceback anywhere would show), with a private
    XDG_RUNTIME_DIR so the Vulkan loader has nothing of its own to print."""
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py"), "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run([sys.executable, "-m", "glassbox", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_gpu_runs_where_it_can(backend, models, capsys):
    assert main(["predict", str(models / "fits"), "The cat", "--backend", "gpu", "--json", "--rows", "5"]) == 0
    gpu = json.loads(capsys.readouterr().out)
    assert gpu["backend"] == backend.info.describe()
    assert main(["predict", str(models / "fits"), "The cat", "--backend", "numpy", "--json", "--rows", "5"]) == 0
    ref = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose([r["logit"] for r in gpu["predictions"]], [r["logit"] for r in ref["predictions"]],
                               atol=1e-3, rtol=1e-3)  # float32 sums in another order; top-5 of random weights


def test_auto_falls_back_on_a_shape_the_kernels_do_not_take(backend, models, tmp_path):
    r = cli("predict", str(models / "odd"), "hi", "--json", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    line = one_line(r.stderr)
    assert line.startswith("note: numpy runs the model") and "D (30)" in line
    assert json.loads(r.stdout)["backend"] == "numpy"


def test_gpu_refuses_a_shape_the_kernels_do_not_take(backend, models, tmp_path):
    for command in (["predict", str(models / "odd"), "hi"], ["generate", str(models / "odd"), "hi", "-n", "2"],
                    ["trace", str(models / "odd"), "hi", "--out", str(tmp_path / "t.safetensors")]):
        r = cli(*command, "--backend", "gpu", tmp_path=tmp_path)
        assert r.returncode == 2 and r.stdout == ""
        line = one_line(r.stderr)
        assert line.startswith("error: --backend gpu cannot run here") and "D (30)" in line


@pytest.mark.parametrize("requested, code", [("auto", 0), ("gpu", 2)])
def test_a_buffer_over_the_device_limit(backend, models, monkeypatch, capsys, requested, code):
    # The real adapter, reporting a binding limit lowered below one row of logits [V] floats.
    plan = native.plan_limits
    monkeypatch.setattr(native, "plan_limits", lambda raw: {**plan(raw), "max_storage_buffer_binding_size": 65536})
    assert main(["predict", str(models / "fits"), "hi", "--backend", requested, "--json"]) == code
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert "does not fit a binding" in line
    if code == 0:
        assert json.loads(captured.out)["backend"] == "numpy" and line.startswith("note: numpy runs the model")


@pytest.mark.parametrize("sampling", [["--temperature", "0"], ["--temperature", "0.8", "--top-k", "10", "--seed", "3"],
                                      ["--temperature", "1", "--seed", "3"]])
def test_generate_on_gpu_samples_from_the_top_k(backend, models, capsys, monkeypatch, sampling):
    """Issue 15 (g15): --backend gpu generates through glassbox.gpu.sampler (the top-k read
    back per step; the full row only where top-k is off) and draws the tokens numpy draws."""
    from glassbox.gpu import sampler

    used = []
    real = sampler.generate
    monkeypatch.setattr(sampler, "generate", lambda *a, **k: used.append(a[3:6]) or real(*a, **k))
    texts = {}
    for requested in ("gpu", "numpy"):
        assert main(["generate", str(models / "fits"), "The cat", "-n", "6", "--backend", requested, *sampling]) == 0
        texts[requested] = capsys.readouterr().out
    assert len(used) == 1, "the GPU path did not sample through glassbox.gpu.sampler"
    # Random weights, fixed seed: the float32 logits differ from numpy's by ~1e-5, far below
    # the gaps between the tokens drawn here, so the draws agree.
    assert texts["gpu"] == texts["numpy"]
