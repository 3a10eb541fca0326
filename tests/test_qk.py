"""The joint query/key map (glassbox/qk.py): alignment keeps attention, PCA is scikit-learn's,
out-of-sample placement, the shipped corpus and maps, and the `qk` command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from glassbox import qk, reference, weights
from glassbox.config import GPTConfig

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MINI = os.path.join(ROOT, "weights", "mini")


@pytest.fixture(scope="module")
def small():
    config = GPTConfig(n_layer=3, n_head=4, n_embd=32, n_positions=32, vocab_size=97)
    params = weights.random_params(config, seed=3, scale=0.3)  # large weights: peaked, non-trivial attention
    rng = np.random.default_rng(1)
    sentences = [rng.integers(0, 97, size=n) for n in (5, 9, 13, 7)]
    return config, params, qk.collect(params, config, sentences), sentences


def _att(q, k):
    """Causal softmax(q k^T / sqrt(K)) of one head with reference.attention. q, k [n, K] -> [n, n]"""
    v = np.zeros_like(q)
    return reference.attention(q[None].astype(np.float32), k[None].astype(np.float32), v[None].astype(np.float32))["att"][0]


@pytest.mark.parametrize("translate,scale", [(True, False), (True, True), (False, True)])
def test_alignment_leaves_every_attention_weight_unchanged(small, translate, scale):
    config, params, data, sentences = small
    checked = 0
    for layer in range(config.n_layer):
        for head in range(config.n_head):
            q, k = data.head(layer, head)
            align = qk.fit_alignment(q, k, translate, scale)
            assert np.abs(align.shift).max() > 0.01 or not translate  # a real move, not a no-op
            aq, ak = align.apply(q, k)
            for s in range(data.n_sentences):
                rows = data.sentence_rows(s)
                real = data.att[s][layer, head]
                # float32 softmax of scores that differ by float rounding: 1e-5 absolute covers
                # the ~1e-6 relative change of scores of size ~10 (scale 0.3 weights).
                np.testing.assert_allclose(_att(aq[rows], ak[rows]), real, atol=1e-5, rtol=0)
                checked += 1
    assert checked == config.n_layer * config.n_head * len(sentences)


def test_alignment_puts_key_centroid_on_query_centroid_and_equal_norms(small):
    _, _, data, _ = small
    q, k = data.head(1, 2)
    aq, ak = qk.fit_alignment(q, k, True, True).apply(q, k)
    a = qk.fit_alignment(q, k, True, False)
    tq, tk = a.apply(q, k)
    np.testing.assert_allclose(tk.mean(0), tq.mean(0), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(aq, axis=1).mean(), np.linalg.norm(ak, axis=1).mean(), rtol=1e-9)


def test_trace_and_blocks_agree(small):
    config, params, data, sentences = small
    trace = reference.forward(params, config, sentences[2])
    q, k, att = qk.from_trace(trace)
    rows = data.sentence_rows(2)
    np.testing.assert_array_equal(q, data.q[:, :, rows])
    np.testing.assert_array_equal(att, data.att[2])


def test_pca_equals_scikit_learn_up_to_axis_sign(small):
    from sklearn.decomposition import PCA

    config, _, data, _ = small
    for layer in range(config.n_layer):
        for head in range(config.n_head):
            q, k = data.head(layer, head)
            x = qk.head_points(data, layer, head, qk.fit_alignment(q, k))
            ours = qk.pca(x)
            theirs = PCA(n_components=2, svd_solver="full").fit_transform(x)
            for axis in range(2):
                sign = np.sign(ours[:, axis] @ theirs[:, axis])
                # float64 SVD on both sides: agreement to rounding of the data's scale
                np.testing.assert_allclose(ours[:, axis], sign * theirs[:, axis], atol=1e-9 * np.abs(x).max())


def test_pca_sign_is_deterministic():
    x = np.random.default_rng(0).normal(size=(50, 6))
    a, b = qk.pca(x), qk.pca(-x)
    np.testing.assert_allclose(a, qk.pca(x))
    np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-12)  # same axes, signs fixed by the loadings


def test_place_is_mean_of_nearest_corpus_points():
    corpus = np.array([[0.0, 0], [1, 0], [0, 1], [10, 10], [11, 10]])
    xy = np.array([[0.0, 0], [2, 0], [0, 2], [50, 50], [52, 50]])
    got = qk.place(np.array([[0.1, 0.1], [10.5, 10.0]]), corpus, xy, k=2)
    np.testing.assert_allclose(got[1], [51, 50])
    np.testing.assert_allclose(got[0], [1.0, 0.0])  # (0,0) and the earlier of two tied points
    # identical corpus vectors: the earlier wins, whatever float noise the query carries
    dup = np.array([[1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    for noise in (1e-9, -1e-9):
        assert qk.place(np.array([[1.0 + noise, 1.0]]), dup, np.array([[0.0, 0], [9, 9], [7, 7]]), k=1).tolist() == [[0.0, 0.0]]


def test_project_tsne_places_text_among_fixed_corpus(small):
    config, params, data, sentences = small
    C = int(np.sum(data.sentence < 3))
    fixed = qk.Projections(tensors={f"tsne.{l}.{h}": np.random.default_rng(l * 9 + h).normal(size=(2 * C, 2))
                                    for l in range(config.n_layer) for h in range(config.n_head)},
                           methods=("tsne",), translate=True, scale=False)
    xy = qk.project(data, 1, 3, "tsne", fixed=fixed, n_corpus=C)
    P = data.n_tokens
    np.testing.assert_array_equal(xy[:C], fixed.coords("tsne", 1, 3)[:C])
    np.testing.assert_array_equal(xy[P:P + C], fixed.coords("tsne", 1, 3)[C:])
    assert np.isfinite(xy).all()
    with pytest.raises(ValueError, match="only PCA"):
        qk.project(data, 1, 3, "tsne", scale=True, fixed=fixed, n_corpus=C)
    with pytest.raises(ValueError, match="does not exist"):
        qk.project(data, 3, 0)


@pytest.mark.parametrize("name", ["mini", "mini-q4"])
def test_shipped_corpus_and_maps_are_verified(name):
    side, corpus, fixed = qk.load_folder(os.path.join(ROOT, "weights", name))
    assert 150 <= len(corpus.sentences) <= 400 and 1500 <= corpus.meta["tokens"] <= 5000
    assert side["corpus"]["tokens"] == sum(len(s["ids"]) for s in corpus.sentences)
    assert set(fixed.methods) == {"tsne", "umap"}
    for method in fixed.methods:  # every head of the 4x4 model, every corpus point
        for layer in range(4):
            for head in range(4):
                xy = fixed.coords(method, layer, head)
                assert xy.shape == (2 * corpus.meta["tokens"], 2) and np.isfinite(xy).all() and xy.std() > 0
    # held-out pages only: none of the corpus's pages was trained on
    card = open(os.path.join(MINI, "MODEL_CARD.md"), encoding="utf-8").read()
    assert all(f"`{s['page']}`" in card.split("Held-out pages")[1] for s in corpus.sentences)


def test_tampered_corpus_is_refused(tmp_path):
    side = qk.parse_sidecar(open(os.path.join(MINI, qk.SIDECAR), "rb").read())
    data = bytearray(open(os.path.join(MINI, side["corpus"]["file"]), "rb").read())
    data[100] ^= 1
    with pytest.raises(weights.WeightsError, match="sha256"):
        qk.parse_corpus(side, bytes(data))


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    return subprocess.run([sys.executable, "-m", "glassbox", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_cli_points_of_texts():
    r = run_cli("qk", MINI, "The file is opened.", "A list is sorted.", "--layer", "1", "--head", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    pts = out["points"]
    assert {p["kind"] for p in pts} == {"q", "k"} and {p["sentence"] for p in pts} == {0, 1}
    assert set(pts[0]) >= {"kind", "sentence", "position", "token_id", "x", "y"}
    n = len(pts) // 2
    assert [p["token_id"] for p in pts[:n]] == [p["token_id"] for p in pts[n:]]
    # the same functions in-process give the same coordinates
    from glassbox.model import load

    model = load(MINI, vocab_dir=os.path.join(ROOT, "vendor", "gpt2"))
    data = qk.collect(model.params, model.config, [model.prompt(t).ids for t in ("The file is opened.", "A list is sorted.")])
    np.testing.assert_allclose([[p["x"], p["y"]] for p in pts], qk.project(data, 1, 2), atol=1e-9)


def test_cli_refuses_bad_head():
    r = run_cli("qk", MINI, "Hello there.", "--layer", "4", "--head", "0", "--json")
    assert r.returncode == 2 and "0-based" in r.stderr
