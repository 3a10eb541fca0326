"""Transformer factors (glassbox/factors.py): FISTA against an independent solver, the shipped
dictionary's files and hashes, the command line, occlusion."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from glassbox import factors
from glassbox.cli import DEFAULT_VOCAB, ROOT
from glassbox.model import load

MINI = os.path.join(ROOT, "weights", "mini")
TEXT = "The tempfile module creates temporary files and directories."  # a held-out page's subject


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    return subprocess.run([sys.executable, "-m", "glassbox", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def mini():
    model = load(MINI, vocab_dir=DEFAULT_VOCAB)
    return model, factors.load_dictionary(MINI, model.checkpoint.manifest)


def sklearn_objective(phi, x, lam):
    """sklearn's Lasso minimises (1/(2n))‖y − Xw‖² + α‖w‖₁ with n = the rows of X (here the D
    rows of Φ): α = λ/D gives the same minimiser as ½‖x − Φa‖² + λ‖a‖₁. Its objective is then
    evaluated with ours on its solution."""
    D = phi.shape[0]
    solver = Lasso(alpha=lam / D, positive=True, fit_intercept=False, tol=1e-12, max_iter=200000)
    solver.fit(phi.astype(np.float64), x.astype(np.float64))
    return float(factors.objective(phi, x, solver.coef_, lam)), solver.coef_


def test_fista_matches_sklearn_on_random_dictionary(rng):
    phi = rng.standard_normal((32, 96))
    phi /= np.linalg.norm(phi, axis=0)
    for k in range(4):
        x = rng.standard_normal(32)
        for lam in (0.02, 0.2):
            ours = float(factors.objective(phi, x, factors.fista(phi, x, lam), lam))
            theirs, _ = sklearn_objective(phi, x, lam)
            # 1e-4 relative: the bar; both converge far tighter than that here.
            assert abs(ours - theirs) <= 1e-4 * abs(theirs), (k, lam, ours, theirs)


def test_fista_matches_sklearn_on_held_out_vectors(mini):
    """The shipped dictionary on vectors of a text the dictionary never saw, every stream."""
    model, d = mini
    trace = model.forward(model.prompt(TEXT).ids)
    for stream in range(factors.n_streams(model.config.n_layer)):
        for position in (0, 4, trace.ids.size - 1):
            coding = factors.code_position(d, trace, stream, position)
            x = factors.scaled(d, factors.residual(trace, stream)[position], stream)
            theirs, coef = sklearn_objective(d.phi, x, d.lam)
            assert abs(coding.objective - theirs) <= 1e-4 * abs(theirs), (stream, position, coding.objective, theirs)
            assert np.all(coding.code >= 0)
            # The large coefficients agree too (the minimiser is unique for a generic Φ).
            big = coef > 0.05
            np.testing.assert_allclose(coding.code[big], coef[big], rtol=0, atol=5e-3)


def test_fista_single_and_batch_agree(rng):
    phi = rng.standard_normal((16, 40))
    phi /= np.linalg.norm(phi, axis=0)
    X = rng.standard_normal((5, 16))
    batch = factors.fista(phi, X, 0.1)
    for i in range(5):
        np.testing.assert_allclose(factors.fista(phi, X[i], 0.1), batch[i], atol=1e-6)
    with pytest.raises(ValueError, match="width"):
        factors.fista(phi, np.zeros(15), 0.1)
    with pytest.raises(ValueError, match="lambda"):
        factors.fista(phi, X[0], -1)


def test_lipschitz_is_largest_eigenvalue_of_gram(rng):
    phi = rng.standard_normal((8, 20))
    assert factors.lipschitz(phi) == pytest.approx(np.linalg.eigvalsh(phi.T @ phi)[-1], rel=1e-10)


def test_shipped_dictionary_fits_both_default_models(mini):
    model, d = mini
    D, S = model.config.n_embd, model.config.n_layer + 1
    assert d.phi.shape == (D, d.n_factors) and d.n_factors >= 2 * D
    np.testing.assert_allclose(np.linalg.norm(d.phi, axis=0), 1, atol=1e-5)  # unit-norm columns
    assert d.importance.shape == (S, d.n_factors) and np.all(d.importance <= 1 + 1e-6)
    assert d.contexts.shape[:2] == (d.n_factors, S) and d.contexts.shape[3] == 2 * factors.CONTEXT_RADIUS + 1
    assert set(d.meta["evaluation"]) >= {"r2", "mean_active"} and len(d.meta["evaluation"]["r2"]) == S
    np.testing.assert_array_equal(d.klass, factors.classify(d.importance))
    q4 = os.path.join(ROOT, "weights", "mini-q4")
    with open(os.path.join(q4, "manifest.json")) as f:
        light = json.load(f)
    assert light["dictionary"] == model.checkpoint.manifest["dictionary"]  # the same files, same hashes
    np.testing.assert_array_equal(factors.load_dictionary(q4, light).phi, d.phi)


def test_corrupted_dictionary_is_refused_by_name(tmp_path):
    folder = tmp_path / "mini"
    shutil.copytree(MINI, folder)
    path = folder / "dictionary.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with open(folder / "manifest.json") as f:
        manifest = json.load(f)
    with pytest.raises(factors.DictionaryError, match="dictionary.safetensors is corrupted"):
        factors.load_dictionary(str(folder), manifest)
    r = run_cli("--vocab-dir", DEFAULT_VOCAB, "factors", str(folder), TEXT, "--layer", "1", "--position", "0", "--json")
    assert r.returncode == 2 and "dictionary.safetensors is corrupted" in r.stderr
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(factors.DictionaryError, match="dictionary.safetensors is corrupted or truncated"):
        factors.load_dictionary(str(folder), manifest)
    (folder / "dictionary.json").unlink()
    with pytest.raises(factors.DictionaryError, match="dictionary.json is missing"):
        factors.load_dictionary(str(folder), manifest)
    del manifest["dictionary"]
    with pytest.raises(factors.DictionaryError, match="has no dictionary"):
        factors.load_dictionary(str(folder), manifest)


def test_cli_factors_json(mini):
    model, d = mini
    r = run_cli("factors", MINI, TEXT, "--layer", "2", "--position", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"lambda", "objective", "residual_norm", "codes"} <= set(out)
    assert out["lambda"] == d.lam
    weights = [c["weight"] for c in out["codes"]]
    assert weights and all(w > 0 for w in weights) and weights == sorted(weights, reverse=True)
    coding = factors.code_position(d, model.forward(model.prompt(TEXT).ids), 2, 3)
    assert [c["factor"] for c in out["codes"]] == [f for f, _ in coding.nonzero()]
    assert out["objective"] == pytest.approx(coding.objective, rel=1e-12)
    # The residual norm is that of x/scale − Φa, recomputed from the printed codes.
    x = factors.scaled(d, model.forward(model.prompt(TEXT).ids)["h.1.res_2"][3], 2)
    a = np.zeros(d.n_factors)
    for c in out["codes"]:
        a[c["factor"]] = c["weight"]
    assert out["residual_norm"] == pytest.approx(np.linalg.norm(x - d.phi.astype(np.float64) @ a), rel=1e-9)


@pytest.mark.parametrize("args, message", [
    (("--layer", "5", "--position", "0"), "residual streams are 0 (emb) to 4"),
    (("--layer", "0", "--position", "99"), "position 99 does not exist"),
])
def test_cli_factors_bad_input(args, message):
    r = run_cli("factors", MINI, TEXT, *args)
    assert r.returncode == 2 and message in r.stderr


def test_stream_names():
    assert factors.stream_name(0) == "emb" and factors.stream_name(3) == "h.2.res_2"


def test_classify_by_peak():
    imp = np.zeros((5, 5))
    for f, peak in enumerate((0, 1, 2, 3, 4)):
        imp[peak, f] = 1
    assert [factors.CLASSES[k] for k in factors.classify(imp)] == [
        "word-level", "word-level", "sentence-level", "long-range", "long-range"]


def test_occlusion_equals_reruns_without_each_token(mini):
    model, d = mini
    ids = model.prompt("Paths are objects with methods").ids
    stream, position = 3, ids.size - 1
    factor = factors.code_position(d, model.forward(ids), stream, position).nonzero()[0][0]
    got = factors.occlusion(d, model.forward, ids, stream, position, factor)
    assert got.shape == (position + 1,)
    base = factors.code_position(d, model.forward(ids), stream, position).code[factor]
    for i in (0, position):
        kept = np.delete(ids, i)
        x = factors.scaled(d, model.forward(kept)[factors.stream_name(stream)][-1], stream)
        _, coef = sklearn_objective(d.phi, x, d.lam)  # an independent solver for the occluded run
        assert got[i] == pytest.approx(base - coef[factor], abs=2e-3)


# ----- the page's controller under CPython (the same code runs in the page: tests/e2e/test_factors.py)
def test_panel_flow_with_a_fake_page(mini):
    import asyncio
    import re

    from app.explainer import Explainer
    from test_explainer import FakeUI

    model, d = mini

    async def load():
        return factors.load_dictionary(MINI, model.checkpoint.manifest)

    async def go():
        ui = FakeUI()
        ex = Explainer(ui, model)
        ex.factors._load = load
        ex.mount()
        await ex.run.submit(TEXT)
        assert 'data-testid="factors-intro"' in ui.slots["factors"].html
        for slot, stream in (("embedding", 0), ("attention", 1), ("block", 1)):
            assert f'data-action="factors-open" data-stream="{stream}"' in ui.slots[slot].html
        await ex.handle("factors-open", "", {"stream": "2", "position": "3"})
        html = ui.slots["factors"].html
        rows = re.findall(r'data-testid="factor" data-factor="(\d+)" data-weight="([^"]+)"', html)
        want = factors.code_position(d, model.forward(model.prompt(TEXT).ids), 2, 3).nonzero()
        assert [(int(f), float(w)) for f, w in rows] == want
        factor = want[0][0]
        await ex.handle("factors-attribute", "", {"factor": str(factor)})
        html = ui.slots["factors"].html
        values = [float(v) for v in re.findall(r'data-testid="occlusion-token" data-position="\d+" data-value="([^"]+)"', html)]
        np.testing.assert_allclose(values, factors.occlusion(d, model.forward, model.prompt(TEXT).ids[:4], 2, 3, factor),
                                   atol=1e-6)
        ex.handle("factors-search", "temp", {})
        found = ui.slots["factor-browser"].html
        assert "match ‘temp’" in found
        ex.handle("factors-select", "", {"factor": str(factor)})
        assert f'data-testid="factor-detail" data-factor="{factor}"' in ui.slots["factors"].html
        ex.handle("factors-close")
        assert 'data-testid="factors-intro"' in ui.slots["factors"].html

    asyncio.run(go())


def test_panel_shows_only_the_latest_token_asked_for_and_never_mixes_two(mini):
    """Codes come from the model worker (awaited): a factor clicked while another token's code is
    on its way draws the shown coding under its own label; answers that arrive out of order
    show the token asked for last; Close drops a code in flight."""
    import asyncio
    import re

    from app.explainer import Explainer
    from test_explainer import FakeUI

    model, d = mini
    gates: dict[tuple[int, int], asyncio.Event] = {}

    async def go():
        ui = FakeUI()
        ex = Explainer(ui, model)
        ex.factors._load = lambda: asyncio.sleep(0, d)
        ex.mount()
        await ex.run.submit(TEXT)
        panel = ex.factors
        plain = panel.code

        async def gated(stream, position):
            coding = await plain(stream, position)
            gate = gates.get((stream, position))
            if gate is not None:
                await gate.wait()
            return coding

        panel.code = gated

        def shown():
            html = ui.slots["factors"].html
            where = re.search(r'data-testid="factors-panel"[^>]* data-stream="(\d+)" data-position="(\d+)"', html)
            rows = re.findall(r'data-testid="factor" data-factor="(\d+)" data-weight="([^"]+)"', html)
            return (int(where.group(1)), int(where.group(2))), [(int(f), float(w)) for f, w in rows]

        def want(stream, position):
            return factors.code_position(d, model.forward(model.prompt(TEXT).ids), stream, position).nonzero()

        await ex.handle("factors-open", "", {"stream": "2", "position": "3"})
        assert shown() == ((2, 3), want(2, 3))
        gates[1, 5], gates[0, 2] = asyncio.Event(), asyncio.Event()
        slow = ex.handle("factors-open", "", {"stream": "1", "position": "5"})
        fast = ex.handle("factors-open", "", {"stream": "0", "position": "2"})
        await asyncio.sleep(0.05)
        ex.handle("factors-select", "", {"factor": str(want(2, 3)[0][0])})  # draws while both wait
        assert shown()[0] == (2, 3) and shown()[1] == want(2, 3)
        gates[0, 2].set()
        await fast
        assert shown()[0] == (0, 2) and shown()[1] == want(0, 2)
        gates[1, 5].set()
        await slow  # asked before (0, 2): answered later, not shown
        assert shown()[0] == (0, 2) and shown()[1] == want(0, 2)
        gates[3, 1] = asyncio.Event()
        late = ex.handle("factors-open", "", {"stream": "3", "position": "1"})
        await asyncio.sleep(0.05)
        ex.handle("factors-close")
        gates[3, 1].set()
        await late
        assert 'data-testid="factors-intro"' in ui.slots["factors"].html and not panel.open

    asyncio.run(go())


# ----- the page's loader: counted with the model, fetched lazily, verified, kept -----------------
def test_page_loader_counts_fetches_verifies_and_keeps_the_dictionary():
    import asyncio

    from app import loader
    from app.lightmode import storage_text
    from test_pwa import FakeNet, FakeStorage, FakeStore

    base = "./weights/mini/"
    files = {base + p: open(os.path.join(MINI, p), "rb").read()
             for p in ("manifest.json", "model-00001-of-00001.safetensors", "dictionary.safetensors", "dictionary.json")}
    for name in ("encoder.json", "vocab.bpe"):
        files[f"./vendor/gpt2/{name}"] = open(os.path.join(DEFAULT_VOCAB, name), "rb").read()
    manifest = json.loads(files[base + "manifest.json"])
    dict_urls = [base + e["file"] for e in factors.entries(manifest)]
    net, store = FakeNet(files), FakeStore()
    states = []
    model = asyncio.run(loader.load_model(base, states.append, fetch=net, store=store, storage=FakeStorage()))
    assert not set(dict_urls) & set(net.requests), "the dictionary waits for its panel"
    want = sum(e["bytes"] for e in factors.entries(manifest))
    assert states[-1].dictionary_bytes == want
    assert f"factors dictionary ({want / 2**20:.1f} MiB" in storage_text(states[-1])

    d = asyncio.run(loader.load_dictionary(base, model.checkpoint.manifest, fetch=net, store=store))
    assert d.n_factors == factors.load_dictionary(MINI, manifest).n_factors
    assert set(dict_urls) <= set(store.data)
    net.requests.clear()
    asyncio.run(loader.load_dictionary(base, manifest, fetch=net, store=store))
    assert net.requests == [], "read back from the device"
    # Loading the model again keeps the stored dictionary (the tidy-up knows its files).
    asyncio.run(loader.load_model(base, None, fetch=net, store=store, storage=FakeStorage()))
    assert set(dict_urls) <= set(store.data)
    # A damaged stored copy is fetched again; a damaged download is refused by name.
    store.data[dict_urls[0]] = b"x" + store.data[dict_urls[0]][1:]
    asyncio.run(loader.load_dictionary(base, manifest, fetch=net, store=store))
    assert dict_urls[0] in net.requests
    net.corrupt.add(dict_urls[0])
    with pytest.raises(loader.LoadError, match="dictionary file dictionary.safetensors is corrupted"):
        asyncio.run(loader.load_dictionary(base, manifest, fetch=net, store=None))
