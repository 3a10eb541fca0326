"""Command-line interface: ``python -m glassbox {convert,predict,generate,trace,tokenize}``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import safetensors, weights
from .model import InputError, Model, default_model_dir, load

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_VOCAB = os.path.join(ROOT, "vendor", "gpt2")


def _model(args) -> Model:
    path = default_model_dir(ROOT) if args.model == "default" else args.model
    return load(path, vocab_dir=args.vocab_dir)


def _forward_engine(model: Model, backend: str):
    """A callable ids -> Trace for the chosen backend, and the backend's description."""
    if backend == "numpy":
        return (lambda ids, capture=None: model.forward(ids, capture=capture)), "numpy"
    from .gpu import native  # imported here: numpy-only use never needs wgpu

    engine = native.create_engine_sync(model.checkpoint)
    return (lambda ids, capture=None: native.run_sync(engine.forward(ids, capture=capture))), engine.describe()


def _pick_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        from .gpu import native
        return "gpu" if native.adapter_available() else "numpy"
    except ImportError:
        return "numpy"


def cmd_convert(args) -> int:
    from .convert import convert

    manifest = convert(args.src, args.out, args.quant, vocab_dir=args.vocab_dir, group=args.group)
    total = sum(s["bytes"] for s in manifest["shards"])
    print(f"wrote {args.out}: {len(manifest['shards'])} shard(s), {total / 1e6:.1f} MB, quantization {args.quant}")
    return 0


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="keep the smallest set with this much probability (1 = off)")


def cmd_predict(args) -> int:
    from .sampling import distribution

    model = _model(args)
    prompt = model.prompt(args.text)
    backend = _pick_backend(args.backend)
    run, described = _forward_engine(model, backend)
    trace = run(prompt.ids, capture=lambda name: False)
    dist = distribution(trace.logits[-1], args.temperature, args.top_k, args.top_p)
    rows = []
    for tid in dist.top(args.rows):
        rows.append({"id": int(tid), "token": model.tokenizer.display([int(tid)])[0],
                     "logit": float(dist.logits[tid]), "probability": float(dist.probs[tid])})
    if args.json:
        print(json.dumps({"backend": described, "tokens": prompt.ids.tolist(), "dropped": prompt.dropped,
                          "predictions": rows}, ensure_ascii=False))
        return 0
    _note_dropped(prompt.dropped, model)
    print(f"backend: {described}; {prompt.ids.size} tokens")
    print(f"{'id':>6}  {'token':<20} {'logit':>9}  {'prob':>7}")
    for r in rows:
        print(f"{r['id']:>6}  {r['token']!r:<20} {r['logit']:>9.3f}  {r['probability']:>7.2%}")
    return 0


def _note_dropped(dropped: int, model: Model) -> None:
    if dropped:
        print(f"note: the text is longer than the context ({model.config.n_positions} tokens); "
              f"the first {dropped} tokens were dropped", file=sys.stderr)


def cmd_generate(args) -> int:
    from .sampling import distribution, sample

    model = _model(args)
    rng = np.random.default_rng(args.seed)
    backend = _pick_backend(args.backend)
    if backend == "numpy":
        prompt, out = model.generate(args.text, args.n, rng, args.temperature, args.top_k, args.top_p)
        described = "numpy"
    else:
        from .gpu import native

        prompt = model.prompt(args.text)
        engine = native.create_engine_sync(model.checkpoint)
        described = engine.describe()
        out = native.run_sync(engine.generate(prompt.ids, args.n, lambda logits: sample(
            distribution(logits, args.temperature, args.top_k, args.top_p), rng)))
    _note_dropped(prompt.dropped, model)
    print(f"[{described}]", file=sys.stderr)
    print(model.tokenizer.decode(prompt.ids.tolist() + out))
    return 0


def cmd_trace(args) -> int:
    model = _model(args)
    prompt = model.prompt(args.text)
    _note_dropped(prompt.dropped, model)
    run, described = _forward_engine(model, _pick_backend(args.backend))
    trace = run(prompt.ids)
    tensors = {name: np.ascontiguousarray(value) for name, value in trace.tensors.items()}
    tensors["ids"] = prompt.ids.astype(np.int64)
    meta = {"backend": described, "model": model.name, "config": json.dumps(model.config.to_dict()),
            "text": args.text}
    with open(args.out, "wb") as f:
        f.write(safetensors.save(tensors, meta))
    print(f"wrote {len(tensors)} tensors to {args.out} ({described})")
    return 0


def cmd_tokenize(args) -> int:
    model = _model(args)
    text = args.text if args.text is not None else sys.stdin.read()
    ids = model.tokenizer.encode(text)
    shown = model.tokenizer.display(ids)
    if args.json:
        print(json.dumps({"ids": ids, "tokens": shown}, ensure_ascii=False))
    else:
        for i, s in zip(ids, shown):
            print(f"{i:>6}  {s}")
    return 0


# ----- issue 12: the joint query/key map (glassbox/qk.py) ---------------------------------------
def cmd_qk(args) -> int:
    from . import qk

    path = default_model_dir(ROOT) if args.model == "default" else args.model
    model = load(path, vocab_dir=args.vocab_dir)
    texts = [model.prompt(t).ids for t in args.text]
    with_corpus = not texts or args.with_corpus
    if texts and args.method != "pca" and not with_corpus:
        raise ValueError("t-SNE/UMAP place texts among the precomputed corpus map: add --with-corpus")
    corpus, fixed = (qk.load_folder(path)[1:]) if with_corpus else (None, None)
    sentences = (corpus.ids if corpus else []) + texts
    data = qk.collect(model.params, model.config, sentences)
    n_corpus = len(corpus.sentences) if corpus else 0
    xy = qk.project(data, args.layer, args.head, args.method, not args.no_translate, args.scale,
                    fixed=fixed, n_corpus=int(np.sum(data.sentence < n_corpus)))
    points = qk.points_json(data, xy, model.tokenizer.display(data.token_id.tolist()), first_text=n_corpus)
    if args.json:
        print(json.dumps({"model": model.name, "layer": args.layer, "head": args.head, "method": args.method,
                          "translate": not args.no_translate, "scale": args.scale, "points": points}, ensure_ascii=False))
    else:
        for p in points:
            print(f"{p['kind']} s{p['sentence']:<4} p{p['position']:<4} {p['x']:>10.4f} {p['y']:>10.4f}  {p['token']!r}")
    return 0


def _qk_parser(sub) -> None:
    s = sub.add_parser("qk", help="every token's query and key of one head in a 2-D map (AttentionViz)")
    s.add_argument("model", help="model folder, or 'default'")
    s.add_argument("text", nargs="*", help="texts whose tokens to map (default: the model's corpus)")
    s.add_argument("--layer", type=int, required=True, help="0-based, as in the trace names")
    s.add_argument("--head", type=int, required=True, help="0-based")
    s.add_argument("--method", choices=["pca", "tsne", "umap"], default="pca")
    s.add_argument("--no-translate", action="store_true", help="keep keys where they are (no centroid alignment)")
    s.add_argument("--scale", action="store_true", help="queries / c, keys * c, c = sqrt(mean|q| / mean|k|)")
    s.add_argument("--with-corpus", action="store_true", help="map the texts among the corpus (as the page does)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_qk)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m glassbox", description="GPT-2 with every tensor visible.")
    p.add_argument("--vocab-dir", default=os.environ.get("GLASSBOX_VOCAB", DEFAULT_VOCAB),
                   help="where GPT-2's encoder.json and vocab.bpe are (default: vendor/gpt2)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a Hugging Face GPT-2-family checkpoint")
    c.add_argument("src", help="checkpoint folder or hub id (gpt2, distilgpt2, gpt2-medium, ...)")
    c.add_argument("out", help="output model folder, e.g. weights/gpt2")
    c.add_argument("--quant", choices=["none", "int8", "q4"], default="int8")
    c.add_argument("--group", type=int, default=32, help="q4 group size (default 32)")
    c.set_defaults(func=cmd_convert)

    def model_cmd(name, help_text, func):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("model", help="model folder, or 'default' (weights/gpt2 if present, else weights/mini)")
        s.set_defaults(func=func)
        return s

    for name, help_text, func in (("predict", "the next-token table", cmd_predict),
                                  ("generate", "sample a continuation", cmd_generate),
                                  ("trace", "every intermediate tensor to a .safetensors file", cmd_trace)):
        s = model_cmd(name, help_text, func)
        s.add_argument("text")
        s.add_argument("--backend", choices=["auto", "numpy", "gpu"], default="auto",
                       help="gpu = WebGPU through wgpu-py; auto picks gpu when an adapter exists")
        if name != "trace":
            _sampling_args(s)
    sub.choices["predict"].add_argument("--rows", type=int, default=10, help="how many rows (default 10)")
    sub.choices["predict"].add_argument("--json", action="store_true")
    sub.choices["generate"].add_argument("-n", type=int, default=20, help="tokens to generate")
    sub.choices["generate"].add_argument("--seed", type=int, default=None)
    sub.choices["trace"].add_argument("--out", required=True, help="output .safetensors file")

    t = model_cmd("tokenize", "token ids and display strings", cmd_tokenize)
    t.add_argument("text", nargs="?", help="text (read from standard input when omitted)")
    t.add_argument("--json", action="store_true")
    _qk_parser(sub)  # issue 12
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, weights.WeightsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
