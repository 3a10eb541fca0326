"""Experiments on the model: logit lens, head ablation, activation patching, direct logit attribution.

Small pure functions over the numpy reference (``reference.py``); the command line
(``lens``, ``ablate``, ``patch``, ``attribute``) and the page's Experiments panel call the same
ones. Shapes use the legend in ``glassbox/__init__``; S = L + 1 residual streams.

Residual streams: stream 0 is ``emb`` (after the embedding), stream l (1..L) is
``h.{l-1}.res_2`` (after block l-1). Layers and heads are numbered from 0, as in the trace.

Every next-token quantity is at temperature 1 over the whole vocabulary, at the last position.
A re-run after an edit starts from the clean run's stream at the first edited layer: the
blocks before it see nothing of the edit, so they are not run again.

* Logit lens: each stream through the final layer norm and the unembedding.
* Ablation: a head's output (``head_out``, before ``c_proj``) set to zero, or to its mean over
  the positions of the input (the clean run's ``head_out`` averaged over the N positions).
* Patching: a stream's row at one position, or one head's output at every position, copied
  from the clean run into the corrupted run (prompts of equal length). "Recovered" is
  (log p - log p_corrupted) / (log p_clean - log p_corrupted) of the target token: 0 = no
  effect, 1 = the clean prediction's log-probability is back.
* Direct logit attribution: the final layer norm's scale 1/sigma at the position is frozen
  (sigma from the actual run), which makes ln_f linear in the residual stream; the stream is
  the sum of tok_emb, pos_emb, every head's projected output, every attention c_proj bias and
  every MLP output, so the logit is the sum of ((c - mean(c)) / sigma) . (g * wte[t]) over those
  components c, plus ln_f's bias . wte[t].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import reference
from .config import GPTConfig
from .errors import OptionsError
from .tokenizer import run_steps
from .trace import Trace, layer_name

Params = reference.Params


def _drop(name: str, value: np.ndarray) -> None:
    """A ``keep`` that keeps nothing (re-runs only need the final stream)."""


# ----- streams and next-token numbers ----------------------------------------------------------
def stream_name(stream: int) -> str:
    """The trace name of residual stream ``stream``: 0 -> 'emb', l -> 'h.{l-1}.res_2'."""
    return "emb" if stream == 0 else layer_name(stream - 1, "res_2")


def residual_streams(trace: Trace) -> np.ndarray:
    """Every residual stream of a run. -> [S, N, D]"""
    return np.stack([trace[stream_name(s)] for s in range(trace.config.n_layer + 1)])


def final_logits(params: Params, config: GPTConfig, x: np.ndarray) -> np.ndarray:
    """ln_f then the unembedding, as in the model's last step. [N, D] -> [N, V]"""
    return reference.unembed(params, reference.final_norm(params, config, x, _drop))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """[..., V] -> [..., V] in float64 (differences of small log-probabilities stay exact)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def top_tokens(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable ids and their probabilities (temperature 1, whole vocabulary).
    [..., V] -> [..., k] ids, [..., k] probs"""
    logp = log_softmax(logits)
    k = min(k, logp.shape[-1])
    ids = np.argpartition(-logp, k - 1, axis=-1)[..., :k]  # the k best, unordered (no full sort of V)
    best = np.take_along_axis(logp, ids, axis=-1)
    order = np.lexsort((ids, -best), axis=-1)  # most probable first; ties by id
    ids = np.take_along_axis(ids, order, axis=-1)
    return ids, np.exp(np.take_along_axis(logp, ids, axis=-1))


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """KL(p || q) in nats between two next-token distributions. [V], [V] -> scalar"""
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return float(np.sum(np.exp(lp) * (lp - lq)))


def resume(params: Params, config: GPTConfig, clean: Trace, first: int,
           edit: reference.Edit | None = None) -> np.ndarray:
    """Logits [V] at the last position of a run that equals ``clean`` before block ``first``:
    stream ``first`` of ``clean`` (edited, if ``edit`` changes it) through blocks first..L-1."""
    x = clean[stream_name(first)]
    if edit is not None:
        x = edit(stream_name(first), x)
    for layer in range(first, config.n_layer):
        x = reference.block(x, params, layer, config, None, _drop, edit)
    return final_logits(params, config, x[-1:])[0]


def clean_logits(params: Params, config: GPTConfig, trace: Trace) -> np.ndarray:
    """The unedited run's last-position logits [V], computed as ``resume`` computes them."""
    return final_logits(params, config, trace[stream_name(config.n_layer)][-1:])[0]


# ----- 1. logit lens ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Lens:
    ids: np.ndarray  # [S, N, k] top token ids of each stream at each position
    probs: np.ndarray  # [S, N, k] their probabilities


def logit_lens(params: Params, config: GPTConfig, trace: Trace, k: int = 5) -> Lens:
    """Each residual stream through ln_f and the unembedding: its top k tokens everywhere.
    The last stream gives the model's own output."""
    rows = [top_tokens(final_logits(params, config, x), k) for x in residual_streams(trace)]
    return Lens(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))


# ----- 2. head ablation ------------------------------------------------------------------------
def parse_heads(spec: str, config: GPTConfig) -> list[tuple[int, int]]:
    """'0.1,3.2' -> [(0, 1), (3, 2)] (layer.head, 0-based), range-checked against the model."""
    heads = []
    for part in (p.strip() for p in spec.split(",")):
        layer, dot, head = part.partition(".")
        if not dot or not layer.isdigit() or not head.isdigit():
            raise OptionsError(f"bad head {part!r}: write LAYER.HEAD, 0-based, e.g. 0.1,3.2")
        layer, head = int(layer), int(head)
        if layer >= config.n_layer or head >= config.n_head:
            raise OptionsError(f"head {part} does not exist: layers are 0..{config.n_layer - 1}, "
                             f"heads 0..{config.n_head - 1}")
        heads.append((layer, head))
    return sorted(set(heads))


def head_means(trace: Trace) -> np.ndarray:
    """Each head's output averaged over the positions of the input. -> [L, H, K]"""
    return np.stack([trace[layer_name(l, "head_out")].mean(axis=1) for l in range(trace.config.n_layer)])


def ablation_edit(heads, means: np.ndarray | None = None) -> reference.Edit:
    """An edit that zeroes (or, with ``means`` [L, H, K], mean-replaces) these heads' outputs."""
    by_layer: dict[str, list[tuple[int, int]]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer_name(layer, "head_out"), []).append((layer, head))

    def edit(name: str, value: np.ndarray) -> np.ndarray:
        if name not in by_layer:
            return value
        value = value.copy()
        for layer, head in by_layer[name]:
            value[head] = 0.0 if means is None else means[layer, head]
        return value

    return edit


def ablate(params: Params, config: GPTConfig, trace: Trace, heads, mean: bool = False,
           means: np.ndarray | None = None) -> np.ndarray:
    """Last-position logits [V] with ``heads`` [(layer, head), ...] ablated (zero or mean;
    ``means`` [L, H, K] saves computing head_means(trace) again)."""
    heads = list(heads)
    if not heads:
        return clean_logits(params, config, trace)
    if mean and means is None:
        means = head_means(trace)
    edit = ablation_edit(heads, means if mean else None)
    return resume(params, config, trace, min(layer for layer, _ in heads), edit)


@dataclass(frozen=True)
class Effect:
    """How an edit changed the next-token distribution, for one target token."""

    kl: float  # KL(before || after), nats
    target: int
    logp_before: float
    logp_after: float

    @property
    def dlogp(self) -> float:
        return self.logp_after - self.logp_before


def effect(before: np.ndarray, after: np.ndarray, target: int) -> Effect:
    lb, la = log_softmax(before), log_softmax(after)
    return Effect(kl_divergence(before, after), int(target), float(lb[target]), float(la[target]))


def sweep_steps(params: Params, config: GPTConfig, trace: Trace, target: int, mean: bool = False):
    """``sweep`` one head at a time: yields (done, total) after each re-run and returns the
    result, so a page can hand control back between re-runs (see ``finish``)."""
    before = clean_logits(params, config, trace)
    means = head_means(trace) if mean else None
    kl = np.zeros((config.n_layer, config.n_head))
    dlogp = np.zeros_like(kl)
    for layer in range(config.n_layer):
        for head in range(config.n_head):
            e = effect(before, ablate(params, config, trace, [(layer, head)], mean, means), target)
            kl[layer, head], dlogp[layer, head] = e.kl, e.dlogp
            yield layer * config.n_head + head + 1, kl.size
    return kl, dlogp


def sweep(params: Params, config: GPTConfig, trace: Trace, target: int, mean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Ablate each head alone: KL [L, H] and Δ log p of ``target`` [L, H]."""
    return finish(sweep_steps(params, config, trace, target, mean))


finish = run_steps  # run a ``*_steps`` generator to its end and return its result (one copy: tokenizer.py)


# ----- 3. activation patching ------------------------------------------------------------------
def check_pair(clean: Trace, corrupt: Trace) -> None:
    if clean.ids.size != corrupt.ids.size:
        raise OptionsError(f"patching needs two prompts of the same length in tokens: the clean one has "
                         f"{clean.ids.size}, the corrupted one {corrupt.ids.size}")


def patch_edit(clean: Trace, streams=(), heads=()) -> reference.Edit:
    """Copy rows of clean streams [(stream, position), ...] and whole head outputs
    [(layer, head), ...] from the clean run into the run being edited."""
    rows: dict[str, list[int]] = {}
    for stream, position in streams:
        rows.setdefault(stream_name(stream), []).append(position)
    outs: dict[str, list[int]] = {}
    for layer, head in heads:
        outs.setdefault(layer_name(layer, "head_out"), []).append(head)

    def edit(name: str, value: np.ndarray) -> np.ndarray:
        if name in rows:
            value = value.copy()
            value[rows[name]] = clean[name][rows[name]]
        if name in outs:
            value = value.copy()
            value[outs[name]] = clean[name][outs[name]]
        return value

    return edit


def patch(params: Params, config: GPTConfig, clean: Trace, corrupt: Trace, streams=(), heads=()) -> np.ndarray:
    """Last-position logits [V] of the corrupted run with these parts patched from the clean run."""
    check_pair(clean, corrupt)
    firsts = [s for s, _ in streams] + [layer for layer, _ in heads]
    if not firsts:
        return clean_logits(params, config, corrupt)
    return resume(params, config, corrupt, min(firsts), patch_edit(clean, streams, heads))


def recovered(logp: np.ndarray, logp_clean: float, logp_corrupt: float) -> np.ndarray:
    """(log p - log p_corrupted) / (log p_clean - log p_corrupted); NaN when the two runs agree."""
    gap = logp_clean - logp_corrupt
    if abs(gap) < 1e-6:
        return np.full_like(np.asarray(logp, dtype=np.float64), np.nan)
    return (np.asarray(logp, dtype=np.float64) - logp_corrupt) / gap


@dataclass(frozen=True)
class Patching:
    target: int
    logp_clean: float
    logp_corrupt: float
    streams: np.ndarray  # [S, N] log p of target with stream s patched at position n
    heads: np.ndarray  # [L, H] log p of target with the head patched at every position

    @property
    def streams_recovered(self) -> np.ndarray:
        return recovered(self.streams, self.logp_clean, self.logp_corrupt)

    @property
    def heads_recovered(self) -> np.ndarray:
        return recovered(self.heads, self.logp_clean, self.logp_corrupt)


def patching_steps(params: Params, config: GPTConfig, clean: Trace, corrupt: Trace, target: int):
    """``patching`` one re-run at a time: yields (done, total) after each, returns the result."""
    check_pair(clean, corrupt)
    logp = lambda logits: float(log_softmax(logits)[target])  # noqa: E731
    S, n = config.n_layer + 1, clean.ids.size
    total = S * n + config.n_layer * config.n_head
    streams = np.zeros((S, n))
    heads = np.zeros((config.n_layer, config.n_head))
    for s in range(S):
        for p in range(n):
            streams[s, p] = logp(patch(params, config, clean, corrupt, streams=[(s, p)]))
            yield s * n + p + 1, total
    for layer in range(config.n_layer):
        for head in range(config.n_head):
            heads[layer, head] = logp(patch(params, config, clean, corrupt, heads=[(layer, head)]))
            yield S * n + layer * config.n_head + head + 1, total
    return Patching(int(target), logp(clean_logits(params, config, clean)),
                    logp(clean_logits(params, config, corrupt)), streams, heads)


def patching(params: Params, config: GPTConfig, clean: Trace, corrupt: Trace, target: int) -> Patching:
    """Patch each (stream, position) and each head in turn; log p of ``target`` for each."""
    return finish(patching_steps(params, config, clean, corrupt, target))


# ----- 4. direct logit attribution -------------------------------------------------------------
@dataclass(frozen=True)
class Attribution:
    token: int
    position: int
    logit: float  # the model's logit of token at position
    names: list[str]  # 'tok_emb', 'pos_emb', 'h.{l}.head.{h}', 'h.{l}.attn_bias', 'h.{l}.mlp', 'ln_f.bias'
    values: np.ndarray  # [len(names)] contributions; they sum to the logit

    @property
    def total(self) -> float:
        return float(self.values.sum())


def attribution(params: Params, config: GPTConfig, trace: Trace, token: int, position: int = -1) -> Attribution:
    """The logit of ``token`` at ``position`` split into the residual stream's components."""
    n = trace.ids.size
    if not -n <= position < n:
        raise OptionsError(f"position {position} is outside the {n} tokens")
    if not 0 <= token < config.vocab_size:
        raise OptionsError(f"token id {token} is outside the vocabulary [0, {config.vocab_size})")
    p = position % n
    K = config.head_size
    x = trace[stream_name(config.n_layer)][p].astype(np.float64)
    sigma = np.sqrt(x.var() + config.layer_norm_epsilon)
    u = params["ln_f.weight"].astype(np.float64) * params["wte.weight"][token].astype(np.float64)  # [D]

    def part(c: np.ndarray) -> float:
        c = np.asarray(c, dtype=np.float64)
        return float(((c - c.mean()) / sigma) @ u)

    names, values = ["tok_emb", "pos_emb"], [part(trace["tok_emb"][p]), part(trace["pos_emb"][p])]
    for layer in range(config.n_layer):
        w = np.asarray(params[f"h.{layer}.attn.c_proj.weight"])  # [D, D] float32 (also from a QuantizedMatrix): column block h*K..(h+1)*K reads head h
        out = trace[layer_name(layer, "head_out")][:, p]  # [H, K]
        for head in range(config.n_head):
            names.append(f"h.{layer}.head.{head}")
            values.append(part(w[:, head * K:(head + 1) * K].astype(np.float64) @ out[head]))
        names += [f"h.{layer}.attn_bias", f"h.{layer}.mlp"]
        values += [part(params[f"h.{layer}.attn.c_proj.bias"]), part(trace[layer_name(layer, "mlp_proj")][p])]
    names.append("ln_f.bias")
    values.append(float(params["ln_f.bias"].astype(np.float64) @ params["wte.weight"][token].astype(np.float64)))
    return Attribution(int(token), p, float(trace.logits[p, token]), names, np.array(values))


# ----- tables ----------------------------------------------------------------------------------
def csv_table(header: list[str], rows) -> str:
    """A CSV text (RFC 4180 quoting) of a header and rows of numbers and strings."""
    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{float(v):.9g}"
        s = str(v)
        return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\n\r') or s != s.strip() else s

    return "".join(",".join(cell(v) for v in row) + "\r\n" for row in [header, *rows])
