"""Command-line interface: ``python -m glassbox {convert,predict,generate,trace,tokenize,lens,ablate,patch,attribute,factors,qk}``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .errors import BackendError, GlassboxError, InputError, OptionsError, one_line
from .model import Model, check_text, default_model_dir, load
from .sampling import GREEDY_BELOW, MAX_TEMPERATURE, check_options

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_VOCAB = os.path.join(ROOT, "vendor", "gpt2")


def _model(args) -> Model:
    path = default_model_dir(ROOT) if args.model == "default" else args.model
    return load(path, vocab_dir=args.vocab_dir)


# ----- backends: numpy, or WebGPU through wgpu-py with numpy where it cannot run

def _gpu_failures() -> tuple[type[BaseException], ...]:
    """The errors that mean "the GPU path cannot run this": the engine's own (no wgpu-py, no
    adapter, a refused device, a shape the kernels do not take, a buffer over a limit, a lost
    device) and wgpu-py's (a driver refusing a shader or an allocation)."""
    from .gpu import GPUError

    try:
        import wgpu
        return GPUError, wgpu.GPUError
    except ImportError:
        return (GPUError,)


class _Backend:
    """The backend ``--backend`` asks for. ``auto`` falls back to numpy, saying why in one line
    on stderr, whenever the GPU path cannot run (at start or for one input); ``gpu`` raises
    BackendError with that line instead; ``numpy`` never touches wgpu."""

    def __init__(self, model: Model, requested: str):
        self.model, self.requested, self.engine = model, requested, None
        self.described = "numpy"
        if requested == "numpy":
            return
        try:
            from .gpu import native  # imported here: numpy-only use never needs wgpu

            self.engine = native.create_engine_sync(model.checkpoint)
            self.described = self.engine.describe()
        except _gpu_failures() as e:
            self._fall_back(e)

    def _fall_back(self, error: BaseException) -> None:
        reason = one_line(error)
        if self.requested == "gpu":
            raise BackendError(f"--backend gpu cannot run here: {reason} (--backend numpy runs the numpy reference)")
        print(f"note: numpy runs the model: the GPU path cannot ({reason})", file=sys.stderr)
        self.engine, self.described = None, "numpy"

    def forward(self, ids, capture=None):
        if self.engine is not None:
            from .gpu import native

            try:
                return native.run_sync(self.engine.forward(ids, capture=capture))
            except _gpu_failures() as e:
                self._fall_back(e)
        return self.model.forward(ids, capture=capture)

    def generate(self, prompt, n: int, rng_for, temperature: float, top_k: int, top_p: float) -> list[int]:
        """``n`` sampled tokens after ``prompt``; ``rng_for()`` gives a fresh seeded generator (a
        fallback in the middle of generation starts again on numpy with the same seed)."""
        if self.engine is not None:
            from .gpu import native, sampler  # issue 15 (g15): sampler reads back the top-k only

            rng = rng_for()
            try:
                return native.run_sync(sampler.generate(self.engine, prompt.ids, n, temperature, top_k, top_p, rng))
            except _gpu_failures() as e:
                self._fall_back(e)
        return self.model.generate_ids(prompt, n, rng_for(), temperature, top_k, top_p)


def cmd_convert(args) -> int:
    from .convert import convert

    manifest = convert(args.src, args.out, args.quant, vocab_dir=args.vocab_dir, group=args.group)
    total = sum(s["bytes"] for s in manifest["shards"])
    print(f"wrote {args.out}: {len(manifest['shards'])} shard(s), {total / 1e6:.1f} MB, quantization {args.quant}")
    return 0


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=1.0,
                   help=f"softmax temperature in [0, {MAX_TEMPERATURE:g}] (default 1.0); below {GREEDY_BELOW:g}, "
                        "0 included, sampling is greedy: always the most likely token")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="keep the smallest set with this much probability (1 = off)")


def _print_json(value) -> None:
    """Strict JSON on stdout: NaN and infinity are refused (no JSON parser reads them)."""
    print(json.dumps(value, ensure_ascii=False, allow_nan=False))


def cmd_predict(args) -> int:
    from .sampling import distribution

    model = _model(args)
    prompt = model.prompt(args.text)
    backend = _Backend(model, args.backend)
    trace = backend.forward(prompt.ids, capture=lambda name: False)
    described = backend.described
    dist = distribution(trace.logits[-1], args.temperature, args.top_k, args.top_p)
    rows = []
    for tid in dist.top(args.rows):
        rows.append({"id": int(tid), "token": model.tokenizer.display([int(tid)])[0],
                     "logit": float(dist.logits[tid]), "probability": float(dist.probs[tid])})
    if args.json:
        _print_json({"backend": described, "tokens": prompt.ids.tolist(), "dropped": prompt.dropped,
                     "predictions": rows})
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
    model = _model(args)
    prompt = model.prompt(args.text)
    backend = _Backend(model, args.backend)
    out = backend.generate(prompt, args.n, lambda: np.random.default_rng(args.seed),
                           args.temperature, args.top_k, args.top_p)
    _note_dropped(prompt.dropped, model)
    print(f"[{backend.described}]", file=sys.stderr)
    print(model.tokenizer.decode(prompt.ids.tolist() + out))
    return 0


def cmd_trace(args) -> int:
    model = _model(args)
    prompt = model.prompt(args.text)
    _note_dropped(prompt.dropped, model)
    backend = _Backend(model, args.backend)
    trace = backend.forward(prompt.ids)
    described = backend.described
    meta = {"backend": described, "model": model.name, "config": json.dumps(model.config.to_dict()),
            "text": args.text}
    try:
        with open(args.out, "wb") as f:
            f.write(trace.to_safetensors(meta))
    except OSError as e:
        raise OptionsError(f"--out {args.out}: cannot write it ({e.strerror or e})") from None
    print(f"wrote {len(trace) + 1} tensors to {args.out} ({described})")
    return 0


def cmd_tokenize(args) -> int:
    model = _model(args)
    if args.text is not None:
        text = args.text
    else:
        try:
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"standard input is not UTF-8 text (byte {e.start + 1} is {e.object[e.start]:#04x})") from None
    ids = model.tokenizer.encode(check_text(text))
    shown = model.tokenizer.display(ids)
    if args.json:
        _print_json({"ids": ids, "tokens": shown})
    else:
        for i, s in zip(ids, shown):
            print(f"{i:>6}  {s}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals (an unknown option, "abc" for a number) on one line, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def check_args(args) -> None:
    """Range-check every numeric option before any work; raise OptionsError naming it."""
    if getattr(args, "rows", 1) < 1:
        raise OptionsError(f"--rows must be at least 1, got {args.rows}")
    if getattr(args, "n", 1) < 1:
        raise OptionsError(f"-n (tokens to generate) must be at least 1, got {args.n}")
    if getattr(args, "seed", None) is not None and args.seed < 0:
        raise OptionsError(f"--seed must be a whole number >= 0, got {args.seed}")
    if getattr(args, "group", 8) < 1:
        raise OptionsError(f"--group (the q4 group size) must be a positive multiple of 8, got {args.group}")
    if hasattr(args, "temperature"):
        try:
            check_options(args.temperature, args.top_k, args.top_p)
        except OptionsError as e:
            raise OptionsError(f"--{e}") from None
    out = getattr(args, "out", None)
    if args.command == "trace":
        folder = os.path.dirname(os.path.abspath(out))
        if os.path.isdir(out) or not os.path.isdir(folder):
            raise OptionsError(f"--out {out}: need a file path in an existing folder")


# ----- factors (issue 13): the sparse code of one residual vector under the model's dictionary -----
def cmd_factors(args) -> int:
    from . import factors

    path = default_model_dir(ROOT) if args.model == "default" else args.model
    model = load(path, vocab_dir=args.vocab_dir)
    dictionary = factors.load_dictionary(path, model.checkpoint.manifest)
    prompt = model.prompt(args.text)
    _note_dropped(prompt.dropped, model)
    coding = factors.code_position(dictionary, model.forward(prompt.ids), args.layer, args.position)
    if args.json:
        print(json.dumps(coding.to_json()))
        return 0
    print(f"layer {args.layer} ({factors.stream_name(args.layer)}), position {args.position}: "
          f"lambda {coding.lam}, objective {coding.objective:.6g}, residual norm {coding.residual_norm:.6g} "
          f"of {coding.norm:.6g}")
    for factor, weight in coding.nonzero():
        print(f"{factor:>6}  {weight:>10.6f}  {dictionary.class_name(factor)}")
    return 0


def _factors_parser(sub) -> None:
    s = sub.add_parser("factors", help="which dictionary factors one residual vector is made of")
    s.add_argument("model", help="model folder, or 'default'")
    s.add_argument("text")
    s.add_argument("--layer", type=int, required=True, help="residual stream: 0 = emb, l = h.{l-1}.res_2")
    s.add_argument("--position", type=int, required=True, help="token position, 0-based")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_factors)

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
    p = _Parser(prog="python -m glassbox", description="GPT-2 with every tensor visible.")
    p.add_argument("--vocab-dir", default=os.environ.get("GLASSBOX_VOCAB", DEFAULT_VOCAB),
                   help="where GPT-2's encoder.json and vocab.bpe are (default: vendor/gpt2)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a Hugging Face GPT-2-family checkpoint")
    c.add_argument("src", help="checkpoint folder or hub id (gpt2, distilgpt2, gpt2-medium, ...)")
    c.add_argument("out", help="output model folder, e.g. weights/gpt2")
    c.add_argument("--quant", choices=["none", "int8", "q4"], default="int8")
    c.add_argument("--group", type=int, default=32,
                   help="q4 group size: a positive multiple of 8 that divides D and F (default 32)")
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
                       help="gpu = WebGPU through wgpu-py (exit 2 with the reason where it cannot run); "
                            "auto (default) runs gpu where it can, else numpy and says why")
        if name != "trace":
            _sampling_args(s)
    sub.choices["predict"].add_argument("--rows", type=int, default=10, help="how many rows, at least 1 (default 10)")
    sub.choices["predict"].add_argument("--json", action="store_true")
    sub.choices["generate"].add_argument("-n", type=int, default=20, help="tokens to generate, at least 1 (default 20)")
    sub.choices["generate"].add_argument("--seed", type=int, default=None, help="random seed, a whole number >= 0")
    sub.choices["trace"].add_argument("--out", required=True, help="output .safetensors file")

    t = model_cmd("tokenize", "token ids and display strings", cmd_tokenize)
    t.add_argument("text", nargs="?", help="text (read from standard input when omitted)")
    t.add_argument("--json", action="store_true")
    _experiment_parsers(model_cmd)  # issue 14
    _factors_parser(sub)  # issue 13

    _qk_parser(sub)  # issue 12
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
        raise OptionsError(f"{what} {value} is out of range: it must be in [{lo}, {hi})")
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
        raise OptionsError("say which heads to ablate (--heads LAYER.HEAD,..., 0-based) or ask for --sweep")
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
    """Run one command. Every refusal (a GlassboxError, or a file the system will not open)
    is caught here, in one place: one line on stderr, exit code 2, no traceback."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or argparse's one-line refusal (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        check_args(args)
        return args.func(args)
    except GlassboxError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{one_line(e.strerror or e)}", file=sys.stderr)
    return 2
