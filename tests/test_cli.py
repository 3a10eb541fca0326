"""The command-line interface, end to end on a converted random checkpoint with GPT-2's vocabulary."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from glassbox import safetensors
from glassbox.cli import DEFAULT_VOCAB, ROOT, main
from hf_helpers import random_hf_model


def run_cli(*args, stdin=None):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    return subprocess.run([sys.executable, "-m", "glassbox", *args], capture_output=True, text=True,
                          input=stdin, env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    if not os.path.exists(os.path.join(DEFAULT_VOCAB, "encoder.json")):
        pytest.fail(f"GPT-2 vocabulary missing at {DEFAULT_VOCAB}: run `python3 tools/vendor.py`")
    base = tmp_path_factory.mktemp("cli")
    random_hf_model(n_layer=2, n_head=2, n_embd=32, n_positions=24, vocab_size=50257, seed=3).save_pretrained(base / "hf")
    out = base / "model"
    r = run_cli("convert", str(base / "hf"), str(out), "--quant", "int8")
    assert r.returncode == 0, r.stderr
    assert "quantization int8" in r.stdout
    return str(out)


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("convert", "predict", "generate", "trace", "tokenize"):
        assert cmd in r.stdout


def test_tokenize_json_and_stdin(model_dir):
    r = run_cli("tokenize", model_dir, "hello world", "--json")
    assert json.loads(r.stdout)["ids"] == [31373, 995]
    r = run_cli("tokenize", model_dir, stdin="hello world")
    assert r.stdout.split()[:1] == ["31373"]


def test_predict_json_matches_library(model_dir):
    from glassbox.model import load
    from glassbox.sampling import distribution

    r = run_cli("predict", model_dir, "The cat sat", "--json", "--backend", "numpy", "--top-k", "5", "--rows", "5")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    model = load(model_dir, DEFAULT_VOCAB)
    dist = distribution(model.forward(model.prompt("The cat sat").ids).logits[-1], 1.0, 5, 1.0)
    assert [row["id"] for row in out["predictions"]] == dist.top(5).tolist()
    np.testing.assert_allclose([row["probability"] for row in out["predictions"]], dist.probs[dist.top(5)], rtol=1e-6)
    assert out["backend"] == "numpy" and sum(row["probability"] for row in out["predictions"]) == pytest.approx(1, abs=1e-5)


def test_generate_is_seeded(model_dir):
    a = run_cli("generate", model_dir, "Once upon", "-n", "5", "--seed", "1", "--backend", "numpy")
    b = run_cli("generate", model_dir, "Once upon", "-n", "5", "--seed", "1", "--backend", "numpy")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("Once upon")


def test_trace_file_holds_every_tensor(model_dir, tmp_path):
    out = tmp_path / "t.safetensors"
    r = run_cli("trace", model_dir, "a b c", "--out", str(out), "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    tensors, meta = safetensors.load_with_metadata(out.read_bytes())
    assert tensors["h.1.att"].shape == (2, 3, 3) and tensors["logits"].shape == (3, 50257)
    assert tensors["ids"].tolist() == [64, 275, 269] and meta["text"] == "a b c"


def test_bad_input_messages(model_dir, tmp_path, capsys):
    assert main(["predict", model_dir, "", "--backend", "numpy"]) == 2
    assert "text is empty" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "hi", "--backend", "numpy"]) == 2
    assert "not a Glassbox model folder" in capsys.readouterr().err


def test_long_text_keeps_last_tokens(model_dir, capsys):
    # 24-token context: 40 tokens of input keep the last 24 and say so.
    assert main(["predict", model_dir, " a" * 40, "--backend", "numpy", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tokens"]) == 24 and out["dropped"] == 16
