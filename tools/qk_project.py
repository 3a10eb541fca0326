"""Ship the query/key map's corpus and precomputed t-SNE / UMAP maps beside a model.

    python tools/qk_project.py weights/mini weights/mini-q4

For each model folder this writes

* ``qk-corpus.json`` — the corpus: sentences (text + GPT-2 token ids) drawn from the pages
  that the default model's training held out (``tools/corpus.py``: Python 3.11 documentation,
  Debian ``python3.11-doc``, PSF licence; those pages were never trained on);
* ``qk-projections.safetensors`` — for every layer l and head h, ``tsne.l.h`` and
  ``umap.l.h``: [2P, 2] float16 map coordinates of the corpus's queries then keys, aligned as
  ``glassbox.qk.project`` aligns them (keys translated to the queries' centroid, no scaling);
* ``qk.json`` — the sidecar listing both files with bytes and sha256 (checked on load, like
  the shards), the corpus's provenance and the projection settings;
* ``manifest.json``'s ``"qk"`` entry — the three files with bytes and sha256, so the page's
  model store keeps them with the model (offline visits get the map too).

Sentence choice (deterministic): the held-out pages' paragraphs are split into sentences at
``. ! ?`` followed by a capital; a sentence is kept when it has 5 to 16 tokens, at least 80%
letters and spaces, and no parentheses, underscores or backquotes (inline code); candidates are
ordered by the sha256 of their text and taken until ``--tokens`` tokens. Fixed seeds (0) for
t-SNE (scikit-learn, Barnes-Hut, PCA init) and UMAP (umap-learn).

Settings and cost (``TSNE_OPTIONS``, ``UMAP_OPTIONS``). Each head's map is fitted to its 2P
points (P = 3,694 corpus tokens: 7,388 points of K = 32 dimensions), one thread per process
(``OMP_NUM_THREADS=1``). Barnes-Hut t-SNE (O(P log P) per iteration; exact t-SNE is O(P^2))
with 400 iterations (the first 250 with early exaggeration, scikit-learn's fixed schedule),
PCA init and ``angle`` 0.8: with the default 0.5 one head took 28 s on one idle core of this
2-core machine, and 120-240 s a head once six sessions shared it (load 8-18), which would
have put the 32 heads of two model folders past an hour; scikit-learn documents the method as
"not very sensitive to changes in this parameter in the range of 0.2 - 0.8", and 0.8 cuts the
far-field work of each iteration (the cost that dominates at this size): 20 s of CPU per head
instead of about 28 s. UMAP with 200 epochs:
12 s per head on an idle core, plus about 40 s of numba compilation once per process. UMAP
starts from PCA, not from its default spectral layout: the corpus has about 700 exact
duplicate points per head (a sentence's first token has no context, so every sentence that
starts with "The" gives the same query and the same key), their disconnected groups make the
spectral eigen-solver fail ("too small an eigengap"), and umap-learn then falls back to a
random start; PCA is deterministic, cheap and keeps the large-scale layout, as for t-SNE.
On a shared machine run one process per folder and method, or per layer (``--save-only
FILE --methods tsne --layers L``, then ``--merge FILE ...``), rather than more threads.
The maps shipped in weights/mini and weights/mini-q4 were made with these settings (their
qk.json records them): 35-50 s per t-SNE head and 13-20 s per UMAP head on this 2-core
machine at load 4-8, one process per folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))
sys.path.insert(0, str(ROOT / "tools"))

from glassbox import qk, safetensors, weights  # noqa: E402
from glassbox.model import load  # noqa: E402

CORPUS_FILE = "qk-corpus.json"
PROJECTIONS_FILE = "qk-projections.safetensors"
SEED = 0
TSNE_OPTIONS = {"perplexity": 30.0, "max_iter": 400, "init": "pca", "learning_rate": "auto", "method": "barnes_hut",
                "angle": 0.8}
UMAP_OPTIONS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "euclidean", "n_epochs": 200, "init": "pca"}
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def candidate_sentences(heldout: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(page, sentence) pairs from the held-out pages that read as plain prose."""
    out = []
    for rel, text in heldout:
        for paragraph in text.split("\n\n"):
            for s in _SPLIT.split(paragraph.strip()):
                s = s.strip()
                if not s or s[-1] not in ".!?" or any(c in s for c in "()_`[]{}<>=*/\\"):
                    continue
                if sum(c.isalpha() or c == " " for c in s) < 0.8 * len(s):
                    continue
                out.append((rel, s))
    return out


def choose(heldout, tokenizer, budget: int, lo: int = 5, hi: int = 16) -> list[dict]:
    pool = sorted(set(candidate_sentences(heldout)), key=lambda p: hashlib.sha256(p[1].encode()).hexdigest())
    chosen, total, seen = [], 0, set()
    for rel, s in pool:
        if s in seen:
            continue
        ids = tokenizer.encode(s)
        if lo <= len(ids) <= hi and total + len(ids) <= budget:
            chosen.append({"text": s, "page": rel, "ids": ids})
            seen.add(s)
            total += len(ids)
    return chosen


def build_corpus(tokenizer, budget: int, cache_dir: str) -> dict:
    from corpus import build_corpus as build_doc_corpus  # tools/corpus.py

    doc = build_doc_corpus(cache_dir)
    sentences = choose(doc["heldout"], tokenizer, budget)
    meta = doc["meta"]
    return {
        "source": f"Python 3.11 documentation, Debian {meta['package']} {meta['version']} "
                  f"(sha256 {meta['deb_sha256']}): sentences of the pages tools/corpus.py holds out of training",
        "license": meta["license"] + "; Copyright (c) 2001-2023 Python Software Foundation",
        "selection": "tools/qk_project.py (module docstring)",
        "tokens": sum(len(s["ids"]) for s in sentences),
        "sentences": sentences,
    }


def embed_all(data: qk.QKSet, config, method: str, layers=None) -> dict[str, np.ndarray]:
    """Every head's t-SNE or UMAP map of the corpus (aligned: translate on, scale off)."""
    out = {}
    for layer in (range(config.n_layer) if layers is None else layers):
        for head in range(config.n_head):
            q, k = data.head(layer, head)
            x = qk.head_points(data, layer, head, qk.fit_alignment(q, k, True, False)).astype(np.float32)
            started = time.perf_counter()
            if method == "tsne":
                from sklearn.manifold import TSNE
                xy = TSNE(n_components=2, random_state=SEED, **TSNE_OPTIONS).fit_transform(x)
            else:
                import umap
                xy = umap.UMAP(n_components=2, random_state=SEED, **UMAP_OPTIONS).fit_transform(x)
            out[f"{method}.{layer}.{head}"] = np.ascontiguousarray(xy, dtype=np.float16)
            print(f"  {method} layer {layer} head {head}: {time.perf_counter() - started:.1f} s", flush=True)
    return out


def write_sidecar(folder: Path, side: dict) -> None:
    """qk.json, and the model manifest's "qk" entry listing it and its files."""
    data = (json.dumps(side, indent=1) + "\n").encode()
    (folder / qk.SIDECAR).write_bytes(data)
    path = folder / weights.MANIFEST
    manifest = json.loads(path.read_text())
    manifest[qk.MANIFEST_KEY] = {"files": [{"file": qk.SIDECAR, "bytes": len(data), "sha256": weights.sha256_hex(data)},
                                           *qk.sidecar_files(side)]}
    path.write_text(json.dumps(manifest, indent=1) + "\n")


def entry(folder: Path, name: str, data: bytes) -> dict:
    (folder / name).write_bytes(data)
    return {"file": name, "bytes": len(data), "sha256": weights.sha256_hex(data)}


def corpus_qk(folder: Path, corpus_doc: dict, vocab_dir: str):
    model = load(str(folder), vocab_dir=vocab_dir)
    started = time.perf_counter()
    data = qk.collect(model.params, model.config, [s["ids"] for s in corpus_doc["sentences"]])
    print(f"{folder}: q/k of {data.n_tokens} tokens in {time.perf_counter() - started:.1f} s", flush=True)
    return model, data


def save_only(folder: Path, corpus_doc: dict, methods: list[str], vocab_dir: str, out: Path, layers=None) -> None:
    """Compute maps into ``out`` alone (to run methods or layers in parallel processes; see --merge)."""
    model, data = corpus_qk(folder, corpus_doc, vocab_dir)
    tensors = {}
    for method in methods:
        tensors.update(embed_all(data, model.config, method, layers))
    out.write_bytes(safetensors.save(tensors, {"seed": str(SEED)}))
    print(f"wrote {out}", flush=True)


def merge(folder: Path, parts: list[Path]) -> None:
    """Add the maps in ``parts`` (from --save-only) to the folder's shipped maps and sidecar."""
    side = qk.parse_sidecar((folder / qk.SIDECAR).read_bytes())
    qk.parse_corpus(side, (folder / side["corpus"]["file"]).read_bytes())
    tensors = {}
    if side.get("projections"):
        tensors.update(qk.parse_projections(side, (folder / side["projections"]["file"]).read_bytes()).tensors)
    for part in parts:
        tensors.update(safetensors.load(part.read_bytes()))
    methods = [m for m in ("tsne", "umap") if any(name.startswith(m + ".") for name in tensors)]
    options = {"tsne": TSNE_OPTIONS, "umap": UMAP_OPTIONS}
    side["projections"] = {**entry(folder, PROJECTIONS_FILE, safetensors.save(dict(sorted(tensors.items())), {"seed": str(SEED)})),
                           "methods": methods, "translate": True, "scale": False, "seed": SEED,
                           "dtype": "float16", **{m: options[m] for m in methods}, "neighbours": qk.NEIGHBOURS}
    write_sidecar(folder, side)
    print(f"wrote {folder / qk.SIDECAR}: {', '.join(methods)}", flush=True)


def ship(folder: Path, corpus_doc: dict, methods: list[str], vocab_dir: str) -> None:
    corpus_bytes = (json.dumps(corpus_doc, ensure_ascii=False, indent=0) + "\n").encode()
    side = {
        "format": qk.FORMAT, "format_version": qk.FORMAT_VERSION,
        "corpus": {**entry(folder, CORPUS_FILE, corpus_bytes), "sentences": len(corpus_doc["sentences"]),
                   "tokens": corpus_doc["tokens"]},
    }
    write_sidecar(folder, side)  # the corpus alone first (PCA)
    if methods:
        model, data = corpus_qk(folder, corpus_doc, vocab_dir)
        tensors = {}
        for method in methods:
            tensors.update(embed_all(data, model.config, method))
        side["projections"] = {**entry(folder, PROJECTIONS_FILE, safetensors.save(tensors, {"seed": str(SEED)})),
                               "methods": methods, "translate": True, "scale": False, "seed": SEED,
                               "dtype": "float16", "tsne": TSNE_OPTIONS, "umap": UMAP_OPTIONS, "neighbours": qk.NEIGHBOURS}
        write_sidecar(folder, side)
    print(f"wrote {folder / qk.SIDECAR}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", help="model folders (weights/mini ...)")
    ap.add_argument("--tokens", type=int, default=3700, help="corpus size in tokens (default 3700)")
    ap.add_argument("--methods", default="tsne,umap", help="comma-separated; empty ships the corpus only (PCA)")
    ap.add_argument("--corpus-from", help="reuse the corpus of this qk-corpus.json instead of rebuilding it")
    ap.add_argument("--cache-dir", default=str(ROOT / "build" / "corpus"))
    ap.add_argument("--vocab-dir", default=str(ROOT / "vendor" / "gpt2"))
    ap.add_argument("--save-only", help="write the maps of the (one) folder to this file, nothing else")
    ap.add_argument("--layers", type=int, nargs="+", help="with --save-only: only these layers")
    ap.add_argument("--merge", nargs="+", help="add these --save-only files to the (one) folder's maps")
    args = ap.parse_args(argv)
    if args.merge:
        merge(Path(args.folders[0]), [Path(p) for p in args.merge])
        return
    methods = [m for m in args.methods.split(",") if m]
    if not set(methods) <= {"tsne", "umap"}:  # "" ships no maps
        raise SystemExit("--methods takes tsne and/or umap")
    tokenizer = load(args.folders[0], vocab_dir=args.vocab_dir).tokenizer
    if args.corpus_from:
        corpus_doc = json.loads(Path(args.corpus_from).read_text(encoding="utf-8"))
    else:
        corpus_doc = build_corpus(tokenizer, args.tokens, args.cache_dir)
    print(f"corpus: {len(corpus_doc['sentences'])} sentences, {corpus_doc['tokens']} tokens", flush=True)
    if args.save_only:
        save_only(Path(args.folders[0]), corpus_doc, methods, args.vocab_dir, Path(args.save_only), args.layers)
        return
    for folder in args.folders:
        ship(Path(folder), corpus_doc, methods, args.vocab_dir)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
