"""Command-line interface: ``python -m glassbox {convert,predict,generate,trace,tokenize,lens,ablate,patch,attribute}``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import weights
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
    meta = {"backend": described, "model": model.name, "config": json.dumps(model.config.to_dict()),
            "text": args.text}
    with open(args.out, "wb") as f:
        f.write(trace.to_safetensors(meta))
    print(f"wrote {len(trace) + 1} tensors to {args.out} ({described})")
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
    _experiment_parsers(model_cmd)  # issue 14
    return p


# ----- experiments (issue 14): glassbox/experiments.py on the numpy reference -------------------
def _experiment_parsers(model_cmd) -> None:
    s = model_cmd("lens", "logit lens: each residual stream's top tokens at one position", cmd_lens)
    s.add_argument("--json", action="store_true")
    s.add_argument("text")
    s.add_argument("--position", type=int, default=-1, help="0-based token position (default: the last)")
    s.add_argument("--top-k", type=int, default=5, help="tokens per stream (default 5)")
    s = model_cmd("ablate", "the next-token table with attention heads ablated", cmd_ablate)
    s.add_argument("--json", action="store_true")
    s.add_argument("text")
    s.add_argument("--heads", default="", help="LAYER.HEAD,... 0-based, e.g. 0.1,3.2")
    s.add_argument("--mean", action="store_true", help="replace by the mean over the input's positions (default: zero)")
    s.add_argument("--sweep", action="store_true", help="ablate each head alone: KL and Δ log p per head")
    s.add_argument("--top-k", type=int, default=10, help="rows (default 10)")
    s.add_argument("--token", type=int, default=None, help="target token id for Δ log p (default: the clean top token)")
    s = model_cmd("patch", "activation patching from a clean into a corrupted prompt", cmd_patch)
    s.add_argument("--json", action="store_true")
    s.add_argument("clean")
    s.add_argument("corrupted")
    s.add_argument("--token", type=int, default=None, help="target token id (default: the clean top token)")
    s = model_cmd("attribute", "direct logit attribution of one token's logit", cmd_attribute)
    s.add_argument("--json", action="store_true")
    s.add_argument("text")
    s.add_argument("--token", type=int, default=None, help="token id (default: the top token at the position)")
    s.add_argument("--position", type=int, default=-1, help="0-based token position (default: the last)")


def _experiment_run(args, text: str):
    model = _model(args)
    prompt = model.prompt(text)
    _note_dropped(prompt.dropped, model)
    return model, model.forward(prompt.ids)


def _check_range(what: str, value: int, lo: int, hi: int) -> int:
    if not lo <= value < hi:
        raise ValueError(f"{what} {value} is out of range: it must be in [{lo}, {hi})")
    return value


def _target(args, model, logits) -> int:
    if args.token is None:
        return int(np.argmax(logits))
    return _check_range("--token", args.token, 0, model.config.vocab_size)


def cmd_lens(args) -> int:
    from . import experiments

    _check_range("--top-k", args.top_k, 1, 101)
    model, trace = _experiment_run(args, args.text)
    n = trace.ids.size
    position = _check_range("--position", args.position, -n, n) % n
    lens = experiments.logit_lens(model.params, model.config, trace, args.top_k)
    layers = [{"layer": s, "top": [{"id": int(i), "prob": float(p)} for i, p in zip(lens.ids[s, position], lens.probs[s, position])]}
              for s in range(lens.ids.shape[0])]
    if args.json:
        print(json.dumps({"layers": layers}))
        return 0
    print(f"logit lens at position {position} ({model.tokenizer.display([int(trace.ids[position])])[0]!r})")
    for row in layers:
        shown = "  ".join(f"{model.tokenizer.display([r['id']])[0]!r} {r['prob']:.2%}" for r in row["top"])
        print(f"{experiments.stream_name(row['layer']):>10}  {shown}")
    return 0


def cmd_ablate(args) -> int:
    from . import experiments

    _check_range("--top-k", args.top_k, 1, 1001)
    model, trace = _experiment_run(args, args.text)
    params, config = model.params, model.config
    if not args.heads and not args.sweep:
        raise ValueError("say which heads to ablate (--heads LAYER.HEAD,..., 0-based) or ask for --sweep")
    heads = experiments.parse_heads(args.heads, config) if args.heads else []
    before = experiments.clean_logits(params, config, trace)
    target = _target(args, model, before)
    out: dict = {"heads": [list(h) for h in heads], "mean": args.mean}
    if heads:
        after = experiments.ablate(params, config, trace, heads, args.mean)
        ids, probs = experiments.top_tokens(after, args.top_k)
        e = experiments.effect(before, after, target)
        out.update(rows=[{"id": int(i), "prob": float(p)} for i, p in zip(ids, probs)], kl=e.kl,
                   target={"id": target, "logp_before": e.logp_before, "logp_after": e.logp_after})
    if args.sweep:
        kl, dlogp = experiments.sweep(params, config, trace, target, args.mean)
        out["sweep"] = {"target": target, "kl": kl.tolist(), "dlogp": dlogp.tolist()}
    if args.json:
        print(json.dumps(out))
        return 0
    label = lambda i: repr(model.tokenizer.display([int(i)])[0])  # noqa: E731
    how = "mean over the input's positions" if args.mean else "zero"
    if heads:
        print(f"ablated ({how}): {', '.join(f'{l}.{h}' for l, h in heads)}; KL(before||after) = {out['kl']:.4f} nats")
        print(f"target {label(target)}: log p {e.logp_before:.4f} -> {e.logp_after:.4f} (Δ {e.dlogp:+.4f})")
        for r in out["rows"]:
            print(f"{r['id']:>6}  {label(r['id']):<20} {r['prob']:>8.2%}")
    if args.sweep:
        print(f"sweep ({how}), each head alone; KL in nats / Δ log p of {label(target)}")
        for layer in range(config.n_layer):
            print(f"layer {layer}: " + "  ".join(f"{kl[layer, h]:.4f}/{dlogp[layer, h]:+.3f}" for h in range(config.n_head)))
    return 0


def cmd_patch(args) -> int:
    from . import experiments

    model, clean = _experiment_run(args, args.clean)
    corrupt = model.forward(model.prompt(args.corrupted).ids)
    experiments.check_pair(clean, corrupt)
    target = _target(args, model, experiments.clean_logits(model.params, model.config, clean))
    result = experiments.patching(model.params, model.config, clean, corrupt, target)
    nan_none = lambda a: [[None if np.isnan(v) else float(v) for v in row] for row in a]  # noqa: E731
    out = {"target": target, "logp_clean": result.logp_clean, "logp_corrupted": result.logp_corrupt,
           "streams": {"logp": result.streams.tolist(), "recovered": nan_none(result.streams_recovered)},
           "heads": {"logp": result.heads.tolist(), "recovered": nan_none(result.heads_recovered)}}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"target {model.tokenizer.display([target])[0]!r}: log p clean {result.logp_clean:.4f}, "
          f"corrupted {result.logp_corrupt:.4f}; recovered fraction per stream (rows) and position (columns)")
    for s, row in enumerate(result.streams_recovered):
        print(f"{experiments.stream_name(s):>10}  " + " ".join(f"{v:6.2f}" for v in row))
    for layer, row in enumerate(result.heads_recovered):
        print(f"heads of layer {layer}: " + " ".join(f"{v:6.2f}" for v in row))
    return 0


def cmd_attribute(args) -> int:
    from . import experiments

    model, trace = _experiment_run(args, args.text)
    n = trace.ids.size
    position = _check_range("--position", args.position, -n, n) % n
    token = _target(args, model, trace.logits[position])
    a = experiments.attribution(model.params, model.config, trace, token, position)
    if args.json:
        print(json.dumps({"token": token, "position": position, "logit": a.logit, "sum": a.total,
                          "parts": [{"name": k, "value": float(v)} for k, v in zip(a.names, a.values)]}))
        return 0
    print(f"logit of {model.tokenizer.display([token])[0]!r} at position {position}: {a.logit:.4f} "
          f"(sum of the parts {a.total:.4f})")
    for name, value in zip(a.names, a.values):
        print(f"{name:>16}  {value:+9.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, weights.WeightsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
