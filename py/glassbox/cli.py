"""Command-line interface: ``python -m glassbox {convert,predict,generate,trace,tokenize}``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import safetensors
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
        from .sampling import distribution, sample

        if self.engine is not None:
            from .gpu import native

            rng = rng_for()
            try:
                return native.run_sync(self.engine.generate(prompt.ids, n, lambda logits: sample(
                    distribution(logits, temperature, top_k, top_p), rng)))
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
    tensors = {name: np.ascontiguousarray(value) for name, value in trace.tensors.items()}
    tensors["ids"] = prompt.ids.astype(np.int64)
    meta = {"backend": described, "model": model.name, "config": json.dumps(model.config.to_dict()),
            "text": args.text}
    try:
        with open(args.out, "wb") as f:
            f.write(safetensors.save(tensors, meta))
    except OSError as e:
        raise OptionsError(f"--out {args.out}: cannot write it ({e.strerror or e})") from None
    print(f"wrote {len(tensors)} tensors to {args.out} ({described})")
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
    return p


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
