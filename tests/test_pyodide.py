"""Glassbox's core under Pyodide (the browser's Python) gives CPython's numbers.

tools/run_pyodide.mjs boots the vendored Pyodide 0.27.7 in Node with its numpy 2.0.2 and
runs code against py/. The forward pass below runs on the same float32 weights in both
interpreters and every Trace tensor is compared.

Tolerance: the two numpys differ only in summation order (native numpy calls OpenBLAS for
matmul, Pyodide's numpy has no BLAS) and libm rounding of exp/tanh. For dot products of
length <= 64 that is a few float32 ulps (~1e-7 relative); we allow atol 1e-5 + rtol 1e-4,
~100x that, while a wrong op, layout or dtype shows errors of 1e-3 or more.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from glassbox import reference, weights
from glassbox.config import GPTConfig

pytestmark = pytest.mark.pyodide

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tools" / "run_pyodide.mjs"
ATOL, RTOL = 1e-5, 1e-4
CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=61)


def run_pyodide(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    assert node, "Node 20+ is needed for the Pyodide tests (see README)"
    assert (ROOT / "vendor" / "pyodide" / "pyodide.mjs").is_file(), \
        "vendor/ is missing: run `npm ci && python3 tools/vendor.py` (make test does)"
    return subprocess.run([node, str(RUNNER), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


FORWARD_IN_PYODIDE = """
import json
import sys
import numpy as np
from glassbox import reference
from glassbox.config import GPTConfig

assert sys.platform == "emscripten", sys.platform
data = np.load("/data/in.npz")
config = GPTConfig.from_dict(json.loads(str(data["config"])))
params = {k: data[k] for k in data.files if k not in ("config", "ids")}
trace = reference.forward(params, config, data["ids"])
np.savez("/data/out.npz", **trace.tensors)
print("pyodide numpy", np.__version__, "tensors", len(trace))
"""


def test_reference_forward_matches_cpython(tmp_path, rng):
    # Larger than GPT-2-like weights (scale 0.2) so every op sees values of some size.
    params = weights.random_params(CONFIG, seed=0, scale=0.2)
    ids = rng.integers(0, CONFIG.vocab_size, size=11)
    config = np.array(json.dumps(CONFIG.to_dict()))
    np.savez(tmp_path / "in.npz", config=config, ids=ids, **params)

    result = run_pyodide("--mount", f"{tmp_path}:/data", "-c", FORWARD_IN_PYODIDE)
    assert result.returncode == 0, result.stderr
    assert "pyodide numpy 2.0.2" in result.stdout, result.stdout

    want = reference.forward(params, CONFIG, ids)
    got = np.load(tmp_path / "out.npz")
    assert sorted(got.files) == sorted(want.names())
    for name in want.names():
        g, w = got[name], want[name]
        assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, g.dtype, w.shape, w.dtype)
        err = np.abs(g.astype(np.float64) - w)
        assert (err <= ATOL + RTOL * np.abs(w)).all(), f"{name}: max error {err.max():.3g}"


def test_runner_reports_python_failures_and_exit_codes():
    failed = run_pyodide("-c", "import glassbox.reference\nraise ValueError('seen in pyodide')")
    assert failed.returncode == 1
    assert "ValueError: seen in pyodide" in failed.stderr
    assert run_pyodide("--packages", "", "-c", "import sys; sys.exit(3)").returncode == 3
    ok = run_pyodide("--packages", "", "-c", "import sys; print(sys.argv)", "x", "y")
    assert ok.returncode == 0 and ok.stdout.strip() == "['-c', 'x', 'y']", ok


def test_runner_runs_a_file_with_shaders_in_place(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("import os, glassbox\n"
                      "print(os.path.dirname(glassbox.__file__))\n"
                      "print(os.path.isdir('/glassbox/shaders'))\n")
    result = run_pyodide("--packages", "", str(script))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "/glassbox/py/glassbox"
    assert lines[1] == str(os.path.isdir(ROOT / "shaders"))
