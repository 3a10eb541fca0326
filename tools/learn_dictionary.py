#!/usr/bin/env python3
"""Learn the transformer-factor dictionary of a model folder (Yun et al. 2021; glassbox/factors.py).

    .venv/bin/python tools/learn_dictionary.py                      # weights/mini, copy to weights/mini-q4
    .venv/bin/python tools/learn_dictionary.py --max-minutes 3 --seed 7

1. Text the model was not trained on: the held-out pages of the training corpus
   (tools/corpus.py: 15 pages of the Python 3.11 documentation, PSF licence, held out by a
   hash of their path and never trained on; fetched offline-reproducibly from Debian's
   python3.11-doc package). Each page is tokenized and followed by <|endoftext|>; the token
   stream is cut into windows of the model's context (256 tokens), of which ``--windows``
   spread evenly are read (the machine is small); every 5th of those is kept apart for
   measuring reconstruction (R²).
2. The numpy reference forward (no logits) gives every residual stream 0..L of every token;
   each stream is divided by its mean norm (factors.py: ``scale``).
3. Φ [D, F] starts as F random training vectors (unit norm) and is learned by alternating,
   over random minibatches of vectors from all streams, non-negative FISTA sparse coding
   (λ fixed) and a dictionary update: Mairal et al.'s (2009) online block-coordinate update
   of each column from the running sums ΣaaT and ΣxaT, then renormalised to unit norm;
   factors left unused are restarted on the worst-reconstructed vector of the batch.
4. With the final Φ: codes of a fixed sample of positions in every stream give each factor's
   importance by stream (mean activation, divided by the curve's maximum), its class
   (factors.classify), its top contexts per stream (target ±10 tokens); codes of the apart
   windows give R² per stream and the mean number of active factors.

Writes dictionary.safetensors and dictionary.json into the model folder (and ``--also``
folders: the light-mode q4 copy gets the same files) and lists both in each manifest.json
with bytes and sha256. Deterministic for a seed on one machine (numpy PCG64; BLAS thread
scheduling may change the last bits elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "py"), str(ROOT / "tools")]

from glassbox import factors, reference  # noqa: E402
from glassbox.model import load  # noqa: E402

EOT = 50256


def progress(label: str, done: int, total: int, started: float) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {time.time() - started:6.1f} s")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def corpus_tokens(model, cache: str) -> tuple[np.ndarray, dict]:
    import corpus  # tools/corpus.py

    c = corpus.build_corpus(cache)
    ids: list[int] = []
    for _, text in c["heldout"]:
        ids += model.tokenizer.encode(text) + [EOT]
    meta = {"source": f"held-out pages of Debian {corpus.PACKAGE} {corpus.VERSION} ({corpus.LICENSE}), "
                      "never used in training (tools/corpus.py)",
            "pages": [r for r, _ in c["heldout"]], "tokens": len(ids)}
    return np.asarray(ids, dtype=np.int64), meta


def windows_of(ids: np.ndarray, window: int, count: int) -> np.ndarray:
    """``count`` whole windows spread evenly over the token stream, joined: [count * window]."""
    total = ids.size // window
    picks = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))
    return np.concatenate([ids[w * window:(w + 1) * window] for w in picks])


def residual_streams(model, ids: np.ndarray, window: int) -> np.ndarray:
    """[S, N', D] float32: every residual stream of every token of the whole windows of ids."""
    params, config = model.params, model.config
    n_win = ids.size // window
    S = factors.n_streams(config.n_layer)
    out = np.zeros((S, n_win * window, config.n_embd), dtype=np.float32)
    started = time.time()
    skip = lambda name, value: None  # noqa: E731
    for w in range(n_win):
        chunk = ids[w * window:(w + 1) * window]
        x = reference.embed(params, chunk, 0, skip)
        out[0, w * window:(w + 1) * window] = x
        for layer in range(config.n_layer):
            x = reference.block(x, params, layer, config, None, skip)
            out[layer + 1, w * window:(w + 1) * window] = x
        progress("residual streams", w + 1, n_win, started)
    return out


def learn(X: np.ndarray, F: int, lam: float, rng: np.random.Generator, batch: int, steps: int,
          iters: int, max_seconds: float) -> tuple[np.ndarray, int]:
    """Φ [D, F] from rows X [M, D] (online dictionary learning with FISTA codes)."""
    D = X.shape[1]
    phi = X[rng.choice(X.shape[0], F, replace=False)].T.astype(np.float32).copy()
    phi /= np.linalg.norm(phi, axis=0, keepdims=True)
    A = np.zeros((F, F), dtype=np.float64)
    B = np.zeros((D, F), dtype=np.float64)
    started = time.time()
    done = 0
    for step in range(steps):
        if time.time() - started > max_seconds:
            sys.stderr.write(f"\nwall-clock cap reached after {step} of {steps} steps\n")
            break
        xb = X[rng.choice(X.shape[0], batch, replace=False)]
        a = factors.fista(phi, xb, lam, max_iter=iters, tol=1e-4, dtype=np.float32)
        rho = min(1.0 - 1.0 / (step + 2), 0.98)  # forget early, poor codes
        A = rho * A + (a.T @ a) / batch
        B = rho * B + (xb.T @ a) / batch
        phi64 = phi.astype(np.float64)
        for j in range(F):
            if A[j, j] < 1e-8:
                continue
            u = phi64[:, j] + (B[:, j] - phi64 @ A[:, j]) / A[j, j]
            norm = np.linalg.norm(u)
            if norm > 1e-12:
                phi64[:, j] = u / norm
        unused = np.flatnonzero(a.sum(axis=0) == 0)
        if unused.size:
            err = np.sum((xb - a @ phi64.T) ** 2, axis=1)
            worst = np.argsort(-err)[:unused.size]
            phi64[:, unused[:worst.size]] = (xb[worst] / np.linalg.norm(xb[worst], axis=1, keepdims=True)).T
            A[unused, :] = A[:, unused] = 0
            B[:, unused] = 0
        phi = phi64.astype(np.float32)
        done = step + 1
        progress("learning", done, steps, started)
    return phi, done


def stats(d: factors.Dictionary, Z: np.ndarray, ids: np.ndarray, sample: np.ndarray, n_ctx: int,
          iters: int) -> None:
    """importance, klass, contexts, context_act of ``d`` from scaled streams Z [S, N, D] at
    positions ``sample``."""
    S, F, R = Z.shape[0], d.n_factors, factors.CONTEXT_RADIUS
    importance = np.zeros((S, F))
    contexts = np.full((F, S, n_ctx, 2 * R + 1), factors.PAD, dtype=np.uint16)
    acts = np.zeros((F, S, n_ctx), dtype=np.float32)
    started = time.time()
    for s in range(S):
        codes = np.zeros((sample.size, F), dtype=np.float32)
        for lo in range(0, sample.size, 2048):
            part = sample[lo:lo + 2048]
            codes[lo:lo + part.size] = factors.fista(d.phi, Z[s, part], d.lam, max_iter=iters, tol=1e-5,
                                                     L=d.L, dtype=np.float32)
        importance[s] = codes.mean(axis=0)
        top = np.argsort(-codes, axis=0, kind="stable")[:n_ctx]  # [n_ctx, F]
        for f in range(F):
            for c, row in enumerate(top[:, f]):
                if codes[row, f] <= 0:
                    break
                p = int(sample[row])
                lo, hi = max(0, p - R), min(ids.size, p + R + 1)
                contexts[f, s, c, lo - (p - R):hi - (p - R)] = ids[lo:hi]
                acts[f, s, c] = codes[row, f]
        progress("factor statistics", s + 1, S, started)
    peak = importance.max(axis=0, keepdims=True)
    d.importance = np.where(peak > 0, importance / np.where(peak > 0, peak, 1), 0).astype(np.float32)
    d.klass = factors.classify(d.importance)
    d.contexts, d.context_act = contexts, acts


def quality(d: factors.Dictionary, Z: np.ndarray, positions: np.ndarray, iters: int) -> tuple[list, list]:
    """(R² per stream, mean active factors per stream) on the windows kept apart."""
    r2, active = [], []
    for s in range(Z.shape[0]):
        x = Z[s, positions].astype(np.float64)
        a = factors.fista(d.phi, x, d.lam, max_iter=iters, tol=1e-5, L=d.L, dtype=np.float32).astype(np.float64)
        err = np.sum((x - a @ d.phi.T.astype(np.float64)) ** 2)
        total = np.sum((x - x.mean(axis=0)) ** 2)
        r2.append(round(float(1 - err / total), 4))
        active.append(round(float((a > 0).sum(axis=1).mean()), 2))
    return r2, active


def write(folder: Path, d: factors.Dictionary) -> None:
    tensor_bytes, meta_bytes = factors.to_bytes(d)
    (folder / "dictionary.safetensors").write_bytes(tensor_bytes)
    (folder / "dictionary.json").write_bytes(meta_bytes)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest[factors.MANIFEST_KEY] = {"tensors": factors.manifest_entry("dictionary.safetensors", tensor_bytes),
                                      "metadata": factors.manifest_entry("dictionary.json", meta_bytes)}
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {folder}/dictionary.safetensors ({len(tensor_bytes)} bytes), dictionary.json, manifest.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "weights" / "mini"))
    p.add_argument("--also", nargs="*", default=[str(ROOT / "weights" / "mini-q4")],
                   help="model folders that get a copy of the same dictionary (light mode's q4 weights)")
    p.add_argument("--vocab-dir", default=str(ROOT / "vendor" / "gpt2"))
    p.add_argument("--cache", default=str(ROOT / "build" / "corpus"), help="where tools/corpus.py keeps the .deb")
    p.add_argument("--factors", type=int, default=512, help="F, the number of factors (default 512 = 4 D)")
    p.add_argument("--lam", type=float, default=0.1, help="λ of the sparse code (streams scaled to mean norm 1)")
    p.add_argument("--windows", type=int, default=60, help="windows of the context length read (spread evenly)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, default=70)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--iters", type=int, default=40, help="FISTA steps per minibatch while learning")
    p.add_argument("--sample", type=int, default=1024, help="positions coded for importance and contexts")
    p.add_argument("--contexts", type=int, default=4, help="top contexts kept per factor and stream")
    p.add_argument("--max-minutes", type=float, default=15.0,
                   help="wall-clock cap of the learning loop (a run it stops is not reproducible: dictionary.json says capped)")
    args = p.parse_args(argv)

    started = time.time()
    rng = np.random.default_rng(args.seed)
    model = load(args.model, vocab_dir=args.vocab_dir)
    ids, corpus_meta = corpus_tokens(model, args.cache)
    window = model.config.n_positions
    ids = windows_of(ids, window, args.windows)
    streams = residual_streams(model, ids, window)
    ids = ids[:streams.shape[1]]
    S, N, D = streams.shape
    scale = np.linalg.norm(streams, axis=2).mean(axis=1).astype(np.float32)  # [S]
    Z = streams / scale[:, None, None]
    apart = (np.arange(N) // window) % 5 == 4
    train_pos, test_pos = np.flatnonzero(~apart), np.flatnonzero(apart)
    X = Z[:, train_pos].reshape(-1, D)
    phi, steps_done = learn(X, args.factors, args.lam, rng, args.batch, args.steps, args.iters,
                            args.max_minutes * 60)
    learn_s = time.time() - started
    d = factors.Dictionary(phi=phi, scale=scale, importance=np.zeros((S, args.factors), np.float32),
                           contexts=np.zeros((args.factors, S, 0, 0), np.uint16),
                           context_act=np.zeros((args.factors, S, 0), np.float32),
                           klass=np.zeros(args.factors, np.uint8), meta={"lambda": args.lam})
    sample = np.sort(rng.choice(train_pos, min(args.sample, train_pos.size), replace=False))
    stats(d, Z, ids, sample, args.contexts, iters=100)
    test_sample = np.sort(rng.choice(test_pos, min(256, test_pos.size), replace=False))
    r2, active = quality(d, Z, test_sample, iters=300)
    counts = np.bincount(d.klass, minlength=len(factors.CLASSES))
    d.meta = {
        "lambda": args.lam, "factors": args.factors, "width": D, "streams": S,
        "streams_named": [factors.stream_name(s) for s in range(S)],
        "scale": [round(float(v), 6) for v in scale],
        "objective": "1/2 |x/scale[s] - phi a|^2 + lambda |a|_1, a >= 0 (FISTA, step 1/L)",
        "corpus": corpus_meta, "window": window, "windows": int(N // window), "seed": args.seed,
        "training": {"steps": steps_done, "steps_planned": args.steps, "capped": steps_done < args.steps, "batch": args.batch,
                     "fista_iters": args.iters, "vectors": int(X.shape[0]), "seconds": round(learn_s, 1),
                     "update": "online block-coordinate (Mairal et al. 2009), unit-norm columns"},
        "statistics": {"positions_per_stream": int(sample.size), "contexts_per_stream": args.contexts,
                       "context_radius": factors.CONTEXT_RADIUS,
                       "importance": "mean activation per stream over those positions, divided by the curve's maximum",
                       "class_rule": "peak stream p of S: p/(S-1) <= 1/3 word-level, <= 2/3 sentence-level, else long-range"},
        "evaluation": {"positions_per_stream": int(test_sample.size), "r2": r2, "mean_active": active,
                       "note": "windows kept apart from learning (every 5th), R^2 = 1 - SSE/SS around the mean"},
        "classes": {name: int(n) for name, n in zip(factors.CLASSES, counts)},
    }
    for folder in [args.model] + list(args.also or []):
        write(Path(folder), d)
    print(json.dumps({k: d.meta[k] for k in ("lambda", "factors", "evaluation", "classes", "training")}, indent=1))
    print(f"total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
