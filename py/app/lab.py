"""The experiments' and factors' computations behind one seam (issue 16, x16). No ``js`` import.

The Experiments panel (experiments_controller.py) and the factors panel (factors.py) only draw
and react; every number they show comes from ``await lab.call(name, **args)``:

    lab = LocalLab(params, config)          # this thread (no worker; CPython tests)
    lab = RemoteLab(worker_runner)           # the model worker (protocol op "lab")
    lens = await lab.call("lens", ids=[...], k=5)

``name`` is one of ``FUNCTIONS``, a fixed whitelist; each wraps one glassbox.experiments or
glassbox.factors function on the float32 numpy reference (the command line's code, so the page's
numbers equal ``python -m glassbox lens|ablate|patch|attribute|factors``; why numpy and not
WebGPU: glassbox/experiments.py). Arguments are JSON (token ids, heads, flags); the traces the
functions need are computed and kept where the function runs (``Bench``), so only ids go in and
only results (small arrays, one transferred buffer each) come back.

Both implementations encode every result to ``(fields, arrays)`` and decode it the same way
(``encode``/``decode``), so the local and the remote answer are the same objects with the same
bytes. Long functions are generators yielding ``(done, total)``: ``drive`` hands control back
about every ``YIELD_SECONDS`` (``report(done, total)``: the panel's progress line locally; a
``progress`` message and a Stop check in the worker).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Awaitable, Callable

import numpy as np

from glassbox import experiments as ex
from glassbox import factors as gf
from glassbox import reference
from glassbox.config import GPTConfig
from glassbox.trace import Trace, all_names
from glassbox.weights import expected_shapes

from .views import weights as weight_views

YIELD_SECONDS = 0.1  # a long computation hands control back (and reports progress) this often


class LabError(ValueError):
    """A request the lab refuses (unknown function, bad arguments): the message says which."""


class Bench:
    """What the lab's functions compute with: the reference parameters, the clean trace of the
    last ids asked about (one full numpy forward, kept), the corrupted run of patching, and the
    factors dictionary (loaded on first use by ``load_dictionary``)."""

    def __init__(self, params, config: GPTConfig, load_dictionary: Callable[[], Awaitable] | None = None,
                 reuse: Callable[[tuple], Trace | None] | None = None,
                 weight: Callable[[str], np.ndarray] | None = None):
        self.params = params
        self.config = config
        self._weight = weight  # one float32 weight by name (Checkpoint.dequantize), for weight maps
        self._load_dictionary = load_dictionary
        self.reuse = reuse or (lambda ids: None)  # a complete numpy trace of these ids, if one exists
        self.dictionary: gf.Dictionary | None = None
        self._clean: tuple[tuple, Trace] | None = None
        self._corrupt: tuple[tuple, Trace] | None = None
        self.calls = 0  # lab functions answered here (the worker's describe reports it; tests read it)

    def ids(self, ids) -> np.ndarray:
        a = np.asarray(ids, dtype=np.int64).reshape(-1)
        if a.size == 0:
            raise LabError("no tokens to experiment on")
        if a.min() < 0 or a.max() >= self.config.vocab_size:
            raise LabError(f"token ids must lie in [0, {self.config.vocab_size})")
        if a.size > self.config.n_positions:
            raise LabError(f"{a.size} tokens: the model reads at most {self.config.n_positions}")
        return a

    def trace(self, ids) -> Trace:
        """The full numpy trace of ``ids`` (kept for the next call on the same ids)."""
        a = self.ids(ids)
        key = tuple(int(i) for i in a)
        if self._clean is None or self._clean[0] != key:
            found = self.reuse(key)
            complete = found is not None and all(n in found for n in all_names(self.config))
            self._clean = (key, found if complete else reference.forward(self.params, self.config, a))
        return self._clean[1]

    def corrupt(self, ids) -> Trace:
        a = self.ids(ids)
        key = tuple(int(i) for i in a)
        if self._corrupt is None or self._corrupt[0] != key:
            self._corrupt = (key, reference.forward(self.params, self.config, a))
        return self._corrupt[1]

    def forward(self, ids: np.ndarray, stream: int) -> Trace:
        """The reference on ``ids`` keeping only residual stream ``stream`` (occlusion's re-runs)."""
        name = gf.stream_name(stream)
        return reference.forward(self.params, self.config, ids, capture=lambda n: n == name)

    def weight(self, name: str) -> np.ndarray:
        """One weight as float32, dequantized now and not kept (the popovers' maps)."""
        if name not in expected_shapes(self.config):
            raise LabError(f"no weight {name!r} in this model")
        if self._weight is None:
            raise LabError("this lab has no weights to draw")
        return self._weight(name)

    async def ensure_dictionary(self) -> gf.Dictionary:
        if self.dictionary is None:
            if self._load_dictionary is None:
                raise LabError("this model has no factors dictionary here")
            self.dictionary = await self._load_dictionary()
        return self.dictionary


# ----- the whitelist --------------------------------------------------------------------------
# Each takes the Bench and JSON arguments; returns a result, or a generator yielding
# (done, total) that returns it.

def _target(b: Bench, target) -> int:
    t = int(target)
    if not 0 <= t < b.config.vocab_size:
        raise LabError(f"token id {t} is outside the vocabulary")
    return t


def _heads(b: Bench, heads) -> list[tuple[int, int]]:
    out = [(int(layer), int(head)) for layer, head in heads]
    for layer, head in out:
        if not (0 <= layer < b.config.n_layer and 0 <= head < b.config.n_head):
            raise LabError(f"head {layer}.{head} does not exist")
    return out


def lab_target(b: Bench, ids) -> int:
    """The clean run's most likely next token (the experiments' default target)."""
    return int(np.argmax(ex.clean_logits(b.params, b.config, b.trace(ids))))


def lab_lens(b: Bench, ids, k: int = 5) -> ex.Lens:
    return ex.logit_lens(b.params, b.config, b.trace(ids), int(k))


def lab_ablate(b: Bench, ids, heads, mean: bool, target: int, k: int = 5) -> tuple:
    """(Effect, top ids before, their probs, top ids after, their probs)."""
    trace = b.trace(ids)
    before = ex.clean_logits(b.params, b.config, trace)
    after = ex.ablate(b.params, b.config, trace, _heads(b, heads), bool(mean))
    return (ex.effect(before, after, _target(b, target)), *ex.top_tokens(before, int(k)),
            *ex.top_tokens(after, int(k)))


def lab_sweep(b: Bench, ids, target: int, mean: bool):
    return (yield from ex.sweep_steps(b.params, b.config, b.trace(ids), _target(b, target), bool(mean)))


def lab_patching(b: Bench, ids, corrupt, target: int):
    return (yield from ex.patching_steps(b.params, b.config, b.trace(ids), b.corrupt(corrupt),
                                         _target(b, target)))


def lab_attribution(b: Bench, ids, target: int) -> ex.Attribution:
    return ex.attribution(b.params, b.config, b.trace(ids), _target(b, target))


def lab_trace(b: Bench, ids) -> Trace:
    return b.trace(ids)


def lab_code(b: Bench, ids, stream: int, position: int) -> gf.Coding:
    """The factors code of residual stream ``stream`` at ``position`` (glassbox.factors.code_position)."""
    a = b.ids(ids)
    if not 0 <= int(stream) < gf.n_streams(b.config.n_layer):
        raise LabError(f"stream {stream} does not exist")
    key = tuple(int(i) for i in a)
    trace = b._clean[1] if b._clean is not None and b._clean[0] == key else b.forward(a, int(stream))
    return gf.code_position(b.dictionary, trace, int(stream), int(position))


def lab_occlusion(b: Bench, ids, stream: int, position: int, factor: int):
    """glassbox.factors.occlusion one re-run at a time: (values [position+1], base activation)."""
    d, stream, position = b.dictionary, int(stream), int(position)
    if not 0 <= int(factor) < d.n_factors:
        raise LabError(f"factor {factor} does not exist")
    a = b.ids(ids)[:position + 1]
    base = float(gf.code_position(d, b.forward(a, stream), stream, position).code[int(factor)])
    kept = gf.occluded(a, position)
    rows = []
    for i, k in enumerate(kept):
        rows.append(None if k is None else gf.residual(b.forward(k, stream), stream)[-1])
        yield i + 1, len(kept)
    return gf.occlusion_values(d, stream, base, rows, int(factor)), base


def lab_weight_map(b: Bench, weight: str, title: str) -> weight_views.WeightHeat:
    """The heat map of weight ``weight`` (a name) as a weight popover draws it (views.weights.weight_heat):
    the whole matrix is dequantized, downsampled and summarised where the lab runs, so in the
    model worker the page's thread never holds it (wte of GPT-2's shape: a 3.6 s task there)."""
    w = b.weight(str(weight))
    if w.ndim != 2:
        raise LabError(f"{weight} is not a matrix")
    return weight_views.weight_heat(f"w.{weight}", str(title), w)


FUNCTIONS: dict[str, Callable] = {
    "target": lab_target, "lens": lab_lens, "ablate": lab_ablate, "sweep": lab_sweep, "patching": lab_patching,
    "attribution": lab_attribution, "trace": lab_trace, "code": lab_code, "occlusion": lab_occlusion,
    "weight_map": lab_weight_map,
}
NEEDS_DICTIONARY = {"code", "occlusion"}


def function(name: str) -> Callable:
    fn = FUNCTIONS.get(name)
    if fn is None:
        raise LabError(f"no lab function {name!r} (known: {', '.join(sorted(FUNCTIONS))})")
    return fn


# ----- results <-> (fields, arrays) ------------------------------------------------------------

def encode(name: str, r) -> tuple[dict, dict[str, np.ndarray]]:
    """A result as JSON fields and named arrays (what crosses to the page)."""
    if name == "target":
        return {"target": int(r)}, {}
    if name == "lens":
        return {}, {"ids": r.ids, "probs": r.probs}
    if name == "ablate":
        e = r[0]
        return ({"kl": e.kl, "target": e.target, "logp_before": e.logp_before, "logp_after": e.logp_after},
                {"before_ids": r[1], "before_probs": r[2], "after_ids": r[3], "after_probs": r[4]})
    if name == "sweep":
        return {}, {"kl": r[0], "dlogp": r[1]}
    if name == "patching":
        return ({"target": r.target, "logp_clean": r.logp_clean, "logp_corrupt": r.logp_corrupt},
                {"streams": r.streams, "heads": r.heads})
    if name == "attribution":
        return {"token": r.token, "position": r.position, "logit": r.logit, "names": list(r.names)}, {"values": r.values}
    if name == "trace":
        return {"ids": [int(i) for i in r.ids], "start": int(r.start), "names": list(r.tensors)}, dict(r.tensors)
    if name == "code":
        return ({"stream": r.stream, "position": r.position, "lam": r.lam, "objective": r.objective,
                 "residual_norm": r.residual_norm, "norm": r.norm}, {"code": r.code})
    if name == "occlusion":
        return {"base": float(r[1])}, {"values": r[0]}
    if name == "weight_map":
        return ({"key": r.key, "title": r.title, "row_spans": r.row_spans, "col_spans": r.col_spans,
                 "scale": float(r.scale), "source_shape": list(r.source_shape), "stats": r.stats},
                {"maxabs": r.values, "mean": r.mean})
    raise LabError(f"no lab function {name!r}")


def decode(name: str, f: dict, a: dict[str, np.ndarray], config: GPTConfig):
    """The inverse of ``encode``: the objects the panels keep."""
    if name == "target":
        return int(f["target"])
    if name == "lens":
        return ex.Lens(a["ids"], a["probs"])
    if name == "ablate":
        return (ex.Effect(float(f["kl"]), int(f["target"]), float(f["logp_before"]), float(f["logp_after"])),
                a["before_ids"], a["before_probs"], a["after_ids"], a["after_probs"])
    if name == "sweep":
        return a["kl"], a["dlogp"]
    if name == "patching":
        return ex.Patching(int(f["target"]), float(f["logp_clean"]), float(f["logp_corrupt"]), a["streams"], a["heads"])
    if name == "attribution":
        return ex.Attribution(int(f["token"]), int(f["position"]), float(f["logit"]), list(f["names"]), a["values"])
    if name == "trace":
        return Trace(config=config, ids=np.asarray(f["ids"], dtype=np.int64), start=int(f["start"]),
                     tensors={n: a[n] for n in f["names"]})
    if name == "code":
        return gf.Coding(int(f["stream"]), int(f["position"]), float(f["lam"]), a["code"], float(f["objective"]),
                         float(f["residual_norm"]), float(f["norm"]))
    if name == "occlusion":
        return a["values"], float(f["base"])
    if name == "weight_map":
        return weight_views.WeightHeat(f["key"], f["title"], a["maxabs"], a["mean"],
                                       [tuple(span) for span in f["row_spans"]], [tuple(span) for span in f["col_spans"]],
                                       float(f["scale"]), tuple(f["source_shape"]), f["stats"])
    raise LabError(f"no lab function {name!r}")


async def drive(steps, report: Callable[[int, int], Awaitable[None]], every: float | None = None):
    """Run a result or a (done, total) generator to its end, awaiting ``report`` about every
    ``every`` seconds (it may raise to abandon the work). Returns the result."""
    if not inspect.isgenerator(steps):
        return steps
    every = YIELD_SECONDS if every is None else every
    last = time.perf_counter()
    while True:
        try:
            done, total = next(steps)
        except StopIteration as end:
            return end.value
        if time.perf_counter() - last > every:
            await report(done, total)
            last = time.perf_counter()


async def compute(bench: Bench, name: str, args: dict, report) -> tuple[dict, dict[str, np.ndarray]]:
    """One whitelisted call on ``bench``, encoded (both the local lab and the worker run this)."""
    fn = function(name)
    if name in NEEDS_DICTIONARY:
        await bench.ensure_dictionary()
    try:
        steps = fn(bench, **args)
    except TypeError as exc:  # missing or unknown arguments
        raise LabError(f"lab function {name!r}: {exc}") from None
    result = await drive(steps, report)
    bench.calls += 1
    return encode(name, result)


async def _no_report(done: int, total: int) -> None:
    await asyncio.sleep(0)


class LocalLab:
    """The lab on this thread: the no-worker fallback (and CPython tests)."""

    where = "page"

    def __init__(self, bench: Bench):
        self.bench = bench

    async def call(self, name: str, progress: Callable[[int, int], Awaitable[None]] | None = None, **args):
        fields, arrays = await compute(self.bench, name, args, progress or _no_report)
        return decode(name, fields, arrays, self.bench.config)


class RemoteLab:
    """The lab in the model worker: one ``lab`` request per call (protocol.WorkerRunner.lab)."""

    where = "worker"

    def __init__(self, runner):
        self.runner = runner

    async def call(self, name: str, progress: Callable[[int, int], Awaitable[None]] | None = None, **args):
        function(name)  # refused here already, without a round trip
        fields, arrays = await self.runner.lab(name, args, progress)
        return decode(name, fields, arrays, self.runner.config)


def attach(current, runner, make_bench: Callable[[], Bench]):
    """The lab a panel computes with: the model worker's when ``runner`` is the worker's
    (protocol.WorkerRunner has ``lab``), else a LocalLab on ``make_bench()``, kept while the
    runner stays on this thread (``current``: the panel's lab so far, or None)."""
    if getattr(runner, "lab", None) is not None:
        return current if isinstance(current, RemoteLab) and current.runner is runner else RemoteLab(runner)
    return current if isinstance(current, LocalLab) else LocalLab(make_bench())
