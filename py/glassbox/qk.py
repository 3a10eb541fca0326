"""Every head's queries and keys in one joint 2-D map (AttentionViz, IEEE VIS 2023).

Shapes use the legend in ``glassbox/__init__``; here also P = tokens of all sentences
together, M = points of one head's map (2P: every token's query, then every token's key, in
token order), S = sentences.

Steps, each a pure function (the page, the CLI and ``tools/qk_project.py`` call the same ones):

1. **Collect** q and k of every layer and head for a list of sentences: ``sentence_qk`` runs
   the numpy reference blocks (``reference.embed`` + ``reference.block``; no logits, the map
   does not need them) or ``from_trace`` reads them from a Trace any runner made; ``stack``
   joins sentences into a :class:`QKSet`. Each sentence runs alone from position 0.
2. **Align** (the AttentionViz trick, attention-preserving): softmax over one query's row is
   unchanged when a constant is added to every score of that row, and q·(k + t) = q·k + q·t
   adds exactly such a constant, so translating all keys of a head by one vector t changes no
   attention weight. t is chosen so that the keys' centroid equals the queries' centroid:
   then distance in the map reads as attention (near = high score). Optionally queries are
   divided by c and keys multiplied by c, c = sqrt(mean‖q‖ / mean‖k‖) (after translation):
   q·k is unchanged and both clouds get the same mean norm.
3. **Project**: exact PCA (``pca``: SVD of the centred points, each axis's sign fixed so that
   the largest-magnitude entry of its loading vector is positive, as scikit-learn does), live
   for any set of points; or t-SNE / UMAP coordinates of the corpus that
   ``tools/qk_project.py`` precomputed, with any other point placed by ``place``: the mean
   map position of its ``NEIGHBOURS`` nearest corpus points in the aligned K-dimensional space
   (an approximation: t-SNE and UMAP have no exact out-of-sample map).

A model folder ships its corpus and precomputed maps beside the weights, listed with sha256
in ``qk.json`` (``parse_corpus`` and ``parse_projections`` check them, like the shards). The
model's ``manifest.json`` lists the same files under ``"qk"`` (``manifest_entries``), so the
page's model store keeps them with the model, for visits without a network.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from . import reference, safetensors, weights
from .config import GPTConfig
from .errors import OptionsError
from .trace import layer_name

SIDECAR = "qk.json"
MANIFEST_KEY = "qk"  # manifest.json: {"qk": {"files": [{file, bytes, sha256} of qk.json, corpus, maps]}}
FORMAT = "glassbox-qk"
FORMAT_VERSION = 1
METHODS = ("pca", "tsne", "umap")
NEIGHBOURS = 5  # out-of-sample placement: mean map position of this many nearest corpus points


@dataclass
class QKSet:
    """Queries and keys of every layer and head for P tokens of S sentences."""

    q: np.ndarray  # [L, H, P, K]
    k: np.ndarray  # [L, H, P, K]
    sentence: np.ndarray  # [P] sentence index of each token
    position: np.ndarray  # [P] position of each token within its sentence
    token_id: np.ndarray  # [P]
    att: list  # per sentence: [L, H, n, n] attention weights of the real forward

    @property
    def n_tokens(self) -> int:
        return int(self.sentence.size)

    @property
    def n_sentences(self) -> int:
        return len(self.att)

    def head(self, layer: int, head: int) -> tuple[np.ndarray, np.ndarray]:
        """(q [P, K], k [P, K]) of one head."""
        L, H = self.q.shape[:2]
        if not (0 <= layer < L and 0 <= head < H):
            raise OptionsError(f"layer {layer}, head {head} does not exist (the model has {L} layers of {H} heads; both 0-based)")
        return self.q[layer, head], self.k[layer, head]

    def sentence_rows(self, s: int) -> np.ndarray:
        """Token indices [n] of sentence s, in position order."""
        return np.flatnonzero(self.sentence == s)


def sentence_qk(params, config: GPTConfig, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the reference blocks on one sentence. ids [n] -> q, k [L, H, n, K], att [L, H, n, n]."""
    ids = reference.check_ids(config, ids)
    kept: dict[str, np.ndarray] = {}
    wanted = set(qk_names(config.n_layer))

    def keep(name: str, value: np.ndarray) -> None:
        if name in wanted:
            kept[name] = value

    x = reference.embed(params, ids, 0, keep)
    for layer in range(config.n_layer):
        x = reference.block(x, params, layer, config, None, keep)
    return _gather(kept, config.n_layer)


def from_trace(trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k [L, H, N, K] and att [L, H, N, N] of a Trace of a whole sequence (start 0)."""
    if trace.start != 0:
        raise OptionsError("the map needs the trace of a whole sequence (start 0), not a KV-cache step")
    return _gather(trace.tensors, trace.config.n_layer)


def qk_names(n_layer: int) -> list[str]:
    """The trace names the map needs of a sentence: q, k and att of every layer."""
    return [layer_name(layer, n) for layer in range(n_layer) for n in ("q", "k", "att")]


def from_tensors(tensors, n_layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k [L, H, N, K] and att [L, H, N, N] from named tensors (a runner's ``tensors``)."""
    return _gather(tensors, n_layer)


def _gather(tensors, n_layer: int):
    try:
        return tuple(np.stack([np.asarray(tensors[layer_name(l, n)], dtype=np.float32) for l in range(n_layer)])
                     for n in ("q", "k", "att"))
    except KeyError as e:
        raise OptionsError(f"the trace lacks {e.args[0]}: the map needs q, k and att of every layer") from None


def stack(parts) -> QKSet:
    """Join per-sentence (q, k, att) triples (as ``sentence_qk`` returns) into one QKSet."""
    parts = list(parts)
    if not parts:
        raise OptionsError("the map needs at least one sentence")
    sizes = [p[0].shape[2] for p in parts]
    return QKSet(
        q=np.concatenate([p[0] for p in parts], axis=2), k=np.concatenate([p[1] for p in parts], axis=2),
        sentence=np.repeat(np.arange(len(parts)), sizes), position=np.concatenate([np.arange(n) for n in sizes]),
        token_id=np.zeros(sum(sizes), dtype=np.int64), att=[p[2] for p in parts])


def collect(params, config: GPTConfig, sentences) -> QKSet:
    """QKSet of a list of token-id sequences, each run alone through the reference blocks."""
    sentences = [np.asarray(s, dtype=np.int64) for s in sentences]
    out = stack(sentence_qk(params, config, ids) for ids in sentences)
    out.token_id = np.concatenate(sentences)
    return out


def join(a: QKSet, b: QKSet) -> QKSet:
    """a's sentences, then b's (b's sentence indices shifted after a's)."""
    return QKSet(q=np.concatenate([a.q, b.q], axis=2), k=np.concatenate([a.k, b.k], axis=2),
                 sentence=np.concatenate([a.sentence, b.sentence + a.n_sentences]),
                 position=np.concatenate([a.position, b.position]),
                 token_id=np.concatenate([a.token_id, b.token_id]), att=list(a.att) + list(b.att))


# ----- 2. alignment ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Alignment:
    """k -> (k + shift) * c, q -> q / c. Fitted on one set of points by ``fit_alignment``."""

    shift: np.ndarray  # [K]
    c: float

    def apply(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """q [..., K], k [..., K] -> aligned q, k (float64)."""
        q, k = np.asarray(q, dtype=np.float64), np.asarray(k, dtype=np.float64)
        return q / self.c, (k + self.shift) * self.c


def fit_alignment(q: np.ndarray, k: np.ndarray, translate: bool = True, scale: bool = False) -> Alignment:
    """The alignment of step 2 for q [P, K], k [P, K] (module docstring)."""
    q, k = np.asarray(q, dtype=np.float64), np.asarray(k, dtype=np.float64)
    shift = q.mean(axis=0) - k.mean(axis=0) if translate else np.zeros(q.shape[-1])
    c = 1.0
    if scale:
        nq, nk = np.linalg.norm(q, axis=-1).mean(), np.linalg.norm(k + shift, axis=-1).mean()
        if not (nq > 0 and nk > 0):
            raise OptionsError("cannot scale: queries or keys are all zero")
        c = math.sqrt(nq / nk)
    return Alignment(shift=shift, c=float(c))


# ----- 3. projection ----------------------------------------------------------------------------
def pca(x: np.ndarray, n_components: int = 2) -> np.ndarray:
    """Exact PCA scores. x [M, K] -> [M, n_components] (float64).

    SVD of the centred points; each axis's sign is fixed so that the largest-magnitude entry
    of its loading vector (row of Vt) is positive (ties: the first such entry).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise OptionsError("PCA needs at least two points")
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    vt = vt[:n_components]
    if vt.shape[0] < n_components:  # fewer dimensions than components: pad with zeros
        vt = np.vstack([vt, np.zeros((n_components - vt.shape[0], x.shape[1]))])
    return xc @ _fix_signs(vt).T


def _fix_signs(vt: np.ndarray) -> np.ndarray:
    """Rows of vt [n, K] each flipped so that its largest-magnitude entry (the first such) is positive."""
    signs = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
    signs[signs == 0] = 1.0
    return vt * signs[:, None]


def pca_axes(scatter: np.ndarray, n_components: int = 2) -> np.ndarray:
    """PCA loading vectors from a scatter matrix, with ``pca``'s sign convention.
    scatter [K, K] = Xc^T Xc of centred points Xc [M, K] -> axes [K, n_components] (float64),
    so that ``Xc @ axes`` equals ``pca(X)`` (up to rounding; the GPU path, glassbox.gpu.qk_pca,
    computes the scatter and the product on the GPU and only this K x K eigenproblem here).

    The eigenvectors of Xc^T Xc are the right singular vectors of Xc, in the same order
    (eigenvalues = squared singular values): ``np.linalg.eigh`` (ascending) read backwards.
    """
    scatter = np.asarray(scatter, dtype=np.float64)
    scatter = (scatter + scatter.T) / 2  # exact symmetry for eigh (float32 sums may differ by an ulp)
    _, vectors = np.linalg.eigh(scatter)
    vt = vectors[:, ::-1].T[:n_components]
    if vt.shape[0] < n_components:
        vt = np.vstack([vt, np.zeros((n_components - vt.shape[0], scatter.shape[0]))])
    return _fix_signs(vt).T


def all_head_points(qk: "QKSet", translate: bool = True, scale: bool = False) -> np.ndarray:
    """The aligned points of every head's map (each aligned on all of its points, as ``project``
    does for PCA), heads in layer-major order. -> [L*H, 2P, K] (float64)"""
    L, H = qk.q.shape[:2]
    return np.stack([head_points(qk, layer, head, fit_alignment(*qk.head(layer, head), translate, scale))
                     for layer in range(L) for head in range(H)])


def place(points: np.ndarray, corpus: np.ndarray, corpus_xy: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Out-of-sample placement: each point at the mean map position of its k nearest corpus
    points (Euclidean, in the aligned K-dim space; ties to the earlier point).
    points [A, K], corpus [M, K], corpus_xy [M, 2] -> [A, 2]"""
    points, corpus = np.asarray(points, dtype=np.float64), np.asarray(corpus, dtype=np.float64)
    if points.shape[0] == 0:
        return np.zeros((0, 2))
    k = min(k, corpus.shape[0])
    d2 = np.maximum((points ** 2).sum(1)[:, None] - 2 * points @ corpus.T + (corpus ** 2).sum(1)[None, :], 0.0)
    # Ties go to the earlier corpus point, and distances count as tied within 1e-5 of the row's
    # largest: identical vectors are common (the same first token of many sentences) and float
    # noise between machines must not pick a different one of them.
    coarse = np.round(d2 / (d2.max(axis=1, keepdims=True) + 1e-300) * 1e5)
    nearest = np.argsort(coarse, axis=1, kind="stable")[:, :k]
    return np.asarray(corpus_xy, dtype=np.float64)[nearest].mean(axis=1)


def head_points(qk: QKSet, layer: int, head: int, alignment: Alignment) -> np.ndarray:
    """The aligned points of one head's map: queries then keys. -> [2P, K]"""
    q, k = alignment.apply(*qk.head(layer, head))
    return np.concatenate([q, k])


def project(qk: QKSet, layer: int, head: int, method: str = "pca", translate: bool = True, scale: bool = False,
            fixed: "Projections | None" = None, n_corpus: int = 0) -> np.ndarray:
    """2-D map of one head: [2P, 2], rows in ``head_points`` order.

    pca: fitted on every point of ``qk`` (aligned on all of them). tsne / umap: the first
    ``n_corpus`` tokens are the corpus whose map ``fixed`` holds (aligned on the corpus only,
    with the options the tool used); the other tokens are placed by ``place``.
    """
    if method == "pca":
        q, k = qk.head(layer, head)
        return pca(head_points(qk, layer, head, fit_alignment(q, k, translate, scale)))
    if method not in METHODS:
        raise OptionsError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    if fixed is None or method not in fixed.methods:
        raise OptionsError(f"no precomputed {method} map for this model (run tools/qk_project.py)")
    if (translate, scale) != (fixed.translate, fixed.scale):
        raise OptionsError(f"the {method} maps were precomputed with translate={fixed.translate}, scale={fixed.scale}; "
                         "only PCA can change those options live")
    P, C = qk.n_tokens, n_corpus
    if not 0 < C <= P:
        raise OptionsError("the corpus must be the first tokens of the set")
    corpus_xy = fixed.coords(method, layer, head)
    if corpus_xy.shape[0] != 2 * C:
        raise OptionsError(f"the {method} map has {corpus_xy.shape[0]} points but the corpus {2 * C}")
    q, k = qk.head(layer, head)
    align = fit_alignment(q[:C], k[:C], translate, scale)
    aq, ak = align.apply(q, k)
    corpus = np.concatenate([aq[:C], ak[:C]])
    xy = np.zeros((2 * P, 2))
    xy[:C], xy[P:P + C] = corpus_xy[:C], corpus_xy[C:]
    xy[C:P] = place(aq[C:], corpus, corpus_xy)
    xy[P + C:] = place(ak[C:], corpus, corpus_xy)
    return xy


def points_json(qk: QKSet, xy: np.ndarray, labels=None, first_text: int | None = None) -> list[dict]:
    """One dict per map point (q then k): kind, sentence, position, token_id, x, y (+ token).
    Sentences from ``first_text`` on are marked source 'text', the others 'corpus'."""
    P = qk.n_tokens
    out = []
    for i in range(2 * P):
        j = i % P
        s = int(qk.sentence[j])
        row = {"kind": "q" if i < P else "k", "sentence": s, "position": int(qk.position[j]),
               "token_id": int(qk.token_id[j]), "x": float(xy[i, 0]), "y": float(xy[i, 1])}
        if labels is not None:
            row["token"] = labels[j]
        if first_text is not None:
            row["source"] = "text" if s >= first_text else "corpus"
        out.append(row)
    return out


def attention_of(qk: QKSet, token: int, layer: int, head: int) -> tuple[np.ndarray, np.ndarray]:
    """Token indices [n] of token's sentence and the real attention weights [n] of token's
    query over them (0 for later positions)."""
    s = int(qk.sentence[token])
    rows = qk.sentence_rows(s)
    return rows, np.asarray(qk.att[s][layer, head, int(qk.position[token])], dtype=np.float64)


# ----- the corpus and the precomputed maps beside a model --------------------------------------------
@dataclass
class Corpus:
    sentences: list  # [{"text": str, "ids": [int]}]
    meta: dict

    @property
    def ids(self) -> list[np.ndarray]:
        return [np.asarray(s["ids"], dtype=np.int64) for s in self.sentences]


@dataclass
class Projections:
    tensors: dict  # "<method>.<layer>.<head>" -> [2P, 2]
    methods: tuple
    translate: bool
    scale: bool

    def coords(self, method: str, layer: int, head: int) -> np.ndarray:
        return np.asarray(self.tensors[f"{method}.{layer}.{head}"], dtype=np.float64)


def manifest_entries(manifest: dict) -> list[dict]:
    """The map's files as the model's manifest lists them (qk.json first), or [] when it has none."""
    section = manifest.get(MANIFEST_KEY)
    if not section:
        return []
    try:
        files = list(section["files"])
        if not all({"file", "bytes", "sha256"} <= set(e) for e in files) or files[0]["file"] != SIDECAR:
            raise KeyError
    except (KeyError, TypeError, IndexError):
        raise weights.WeightsError(f"manifest.json's '{MANIFEST_KEY}' entry needs 'files': [{SIDECAR}, ...] "
                                   "each with file, bytes, sha256; re-run tools/qk_project.py") from None
    return files


def sidecar_files(side: dict) -> list[dict]:
    """The entries (file, bytes, sha256) of the files a sidecar lists: corpus, then maps if any."""
    return [{k: side[part][k] for k in ("file", "bytes", "sha256")} for part in ("corpus", "projections")
            if side.get(part)]


def check_file(name: str, entry: dict, data: bytes) -> None:
    weights.verify_bytes(name, entry, data, hint="; re-run tools/qk_project.py")


def parse_sidecar(data: bytes) -> dict:
    side = json.loads(data)
    if side.get("format") != FORMAT or side.get("format_version") != FORMAT_VERSION:
        raise weights.WeightsError(f"{SIDECAR} is not a {FORMAT} v{FORMAT_VERSION} file; re-run tools/qk_project.py")
    return side


def parse_corpus(side: dict, data: bytes) -> Corpus:
    check_file(side["corpus"]["file"], side["corpus"], data)
    doc = json.loads(data)
    return Corpus(sentences=doc["sentences"], meta={k: v for k, v in doc.items() if k != "sentences"})


def parse_projections(side: dict, data: bytes) -> Projections:
    entry = side["projections"]
    check_file(entry["file"], entry, data)
    return Projections(tensors=safetensors.load(data), methods=tuple(entry["methods"]),
                       translate=bool(entry["translate"]), scale=bool(entry["scale"]))


def load_folder(folder: str) -> tuple[dict, Corpus, Projections | None]:
    """The sidecar, corpus and (when shipped) projections of a model folder, all verified."""
    path = os.path.join(folder, SIDECAR)
    if not os.path.exists(path):
        raise weights.WeightsError(f"{folder} has no {SIDECAR}: run tools/qk_project.py to ship a corpus for the map")

    def read(name: str) -> bytes:
        with open(os.path.join(folder, name), "rb") as f:
            return f.read()

    side = parse_sidecar(read(SIDECAR))
    corpus = parse_corpus(side, read(side["corpus"]["file"]))
    proj = parse_projections(side, read(side["projections"]["file"])) if side.get("projections") else None
    return side, corpus, proj
