"""The Trace: every intermediate tensor of one forward pass, under stable names.

The numpy reference, the GPU engine, the tests and the views all use these names. Per layer
``l`` the names are ``h.{l}.<name>``; shapes use the legend in ``glassbox/__init__``
(T = N without a KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import GPTConfig

# Model-level tensors, in computation order, with shapes.
GLOBAL_NAMES = {
    "tok_emb": "[N, D] token embedding rows wte[ids]",
    "pos_emb": "[N, D] position embedding rows wpe[start:start+N]",
    "emb": "[N, D] tok_emb + pos_emb, the residual stream entering layer 0",
}
# Per-layer tensors, in computation order, with shapes.
LAYER_NAMES = {
    "ln_1.mean": "[N] mean of each residual row",
    "ln_1.var": "[N] biased variance of each residual row",
    "ln_1": "[N, D] layer norm 1 output",
    "q": "[H, N, K] queries per head",
    "k": "[H, N, K] keys per head (this run's tokens)",
    "v": "[H, N, K] values per head (this run's tokens)",
    "scores": "[H, N, T] raw scores Q K^T",
    "scaled": "[H, N, T] scores / sqrt(K)",
    "masked": "[H, N, T] scaled with future cells set to MASK_VALUE",
    "att": "[H, N, T] softmax over keys; each row sums to 1",
    "head_out": "[H, N, K] att @ V per head",
    "attn_concat": "[N, D] heads concatenated",
    "attn_proj": "[N, D] attention output projection (c_proj)",
    "res_1": "[N, D] residual after attention: x + attn_proj",
    "ln_2.mean": "[N] mean of each res_1 row",
    "ln_2.var": "[N] biased variance of each res_1 row",
    "ln_2": "[N, D] layer norm 2 output",
    "mlp_fc": "[N, F] MLP expansion (c_fc), before GELU",
    "mlp_gelu": "[N, F] GELU(mlp_fc)",
    "mlp_proj": "[N, D] MLP projection (c_proj)",
    "res_2": "[N, D] residual after the MLP: res_1 + mlp_proj; the block's output",
}
FINAL_NAMES = {
    "ln_f.mean": "[N] mean of each final residual row",
    "ln_f.var": "[N] biased variance of each final residual row",
    "ln_f": "[N, D] final layer norm output",
    "logits": "[N, V] ln_f @ wte^T",
}


def layer_name(layer: int, name: str) -> str:
    """The trace key of a per-layer tensor: layer_name(3, 'att') == 'h.3.att'."""
    return f"h.{layer}.{name}"


def all_names(config: GPTConfig) -> list[str]:
    """Every trace name of a full forward, in computation order."""
    names = list(GLOBAL_NAMES)
    for layer in range(config.n_layer):
        names += [layer_name(layer, n) for n in LAYER_NAMES]
    return names + list(FINAL_NAMES)


def layer_of(name: str) -> int | None:
    """The layer of a per-layer trace name ('h.3.att' -> 3), None for the others."""
    return int(name.split(".", 2)[1]) if name.startswith("h.") else None


def check_names(config: GPTConfig, names) -> list[str]:
    """``names`` as a list, or ValueError naming the first that is not a trace name of this
    model (e.g. 'h.9.q' in a 4-layer model)."""
    names = list(names)
    known = set(all_names(config))
    for name in names:
        if name not in known:
            raise ValueError(f"{name!r} is not a trace tensor of this model ({config.n_layer} layers; "
                             "names like 'emb', 'h.0.q', 'logits')")
    return names


def capture_all(name: str) -> bool:
    return True


def capture_logits(name: str) -> bool:
    return name == "logits"


def capture_layer(layer: int):
    """Keep the embeddings, one layer's tensors, ln_f and the logits."""
    prefix = layer_name(layer, "")

    def want(name: str) -> bool:
        return not name.startswith("h.") or name.startswith(prefix)

    return want


@dataclass
class Trace:
    """Named tensors of one forward pass over ``ids`` at positions ``start .. start+N-1``."""

    config: GPTConfig
    ids: np.ndarray
    start: int = 0
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"trace has no tensor {name!r} (captured: {len(self.tensors)} tensors)") from None

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self.tensors[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def names(self) -> list[str]:
        return list(self.tensors)

    def keys(self) -> list[str]:
        """The tensor names, like a dict's keys (``trace.keys()`` in the page's console)."""
        return list(self.tensors)

    def layer(self, layer: int) -> dict[str, np.ndarray]:
        """One layer's tensors keyed by their short names ('att', 'q', ...)."""
        prefix = layer_name(layer, "")
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    @property
    def logits(self) -> np.ndarray:
        return self["logits"]

    def to_safetensors(self, metadata: dict[str, str]) -> bytes:
        """The file ``python -m glassbox trace`` writes: every tensor under its trace name,
        plus ``ids`` [N] int64, and ``metadata`` (text, model, backend, config)."""
        from . import safetensors

        tensors = {name: np.ascontiguousarray(value) for name, value in self.tensors.items()}
        tensors["ids"] = np.asarray(self.ids, dtype=np.int64)
        return safetensors.save(tensors, metadata)


# ----- partial traces (issue 16): what a view shows, the rest fetched on demand -----------------

# Per-layer [N, D] tensors every partial trace holds for every layer: the model map (overview)
# draws res_1/res_2 and the norms of attn_proj/mlp_proj; the block view reads the previous
# layer's res_2; the factors panel codes emb and res_2.
SUMMARY_NAMES = ("attn_proj", "mlp_proj", "res_1", "res_2")


def view_capture(layer: int):
    """What a partial trace captures: the embeddings, ln_f and the logits, every layer's
    SUMMARY_NAMES, and every tensor of ``layer`` (the one the views show)."""
    prefix = layer_name(layer, "")

    def want(name: str) -> bool:
        return not name.startswith("h.") or name.startswith(prefix) or name.split(".", 2)[2] in SUMMARY_NAMES

    return want


def layer_only(layer: int):
    """One layer's tensors other than the SUMMARY_NAMES a partial trace already holds."""
    prefix = layer_name(layer, "")
    return lambda name: name.startswith(prefix) and name[len(prefix):] not in SUMMARY_NAMES


def needs_layer(trace, layer: int) -> bool:
    """Whether a fetch must bring ``layer`` (0-based) into ``trace``: False for a full trace or
    a partial one that holds it; ValueError for a layer the model does not have."""
    layer = int(layer)
    if not 0 <= layer < trace.config.n_layer:
        raise ValueError(f"layer {layer + 1} does not exist (the model has {trace.config.n_layer})")
    return isinstance(trace, LayerTrace) and not trace.holds(layer)


class LayerTrace(Trace):
    """A partial Trace (issue 16): the globals, every layer's SUMMARY_NAMES and all tensors of
    one layer, ``viewed`` (None: none in full, e.g. after joining a step of another layer).

    ``logits_start``: the position of the first logits row held ("logits" is [N - logits_start, V];
    a run through the model worker keeps only the last row, the one the views read).
    Reading a tensor of another layer raises a KeyError that says how to get it: the page's
    runner fetches a layer with ``await runner.fetch_layer(trace, layer)`` (selecting a layer
    on the map does that); reading never computes.
    """

    def __init__(self, config, ids, start: int = 0, tensors=None, viewed: int | None = 0, logits_start: int = 0):
        super().__init__(config=config, ids=ids, start=start, tensors=dict(tensors or {}))
        self.viewed = viewed
        self.logits_start = int(logits_start)

    @classmethod
    def select(cls, trace: Trace, layer: int, last_logits: bool = False) -> "LayerTrace":
        """The partial trace of ``trace`` (full, or partial holding ``layer``) for ``layer``;
        with ``last_logits`` only the last logits row is kept."""
        want = view_capture(layer)
        tensors = {n: v for n, v in trace.tensors.items() if want(n)}
        missing = [n for n in all_names(trace.config) if want(n) and n not in tensors and n != "logits"]
        if missing:
            raise ValueError(f"the trace lacks {missing[0]!r}: it cannot show layer {layer + 1}")
        start = int(getattr(trace, "logits_start", 0))
        if last_logits and "logits" in tensors and tensors["logits"].shape[0] > 1:
            start += tensors["logits"].shape[0] - 1
            tensors["logits"] = tensors["logits"][-1:]
        return cls(trace.config, trace.ids, trace.start, tensors, viewed=layer, logits_start=start)

    def holds(self, layer: int) -> bool:
        """Whether every tensor of ``layer`` is here."""
        return all(layer_name(layer, n) in self.tensors for n in LAYER_NAMES)

    def set_layer(self, layer: int, tensors: dict[str, np.ndarray]) -> None:
        """Hold ``layer``'s ``tensors`` (its full set, all positions) instead of the viewed
        layer's (the summaries stay)."""
        prefix = layer_name(layer, "")
        fresh = {n: v for n, v in tensors.items() if n.startswith(prefix)}
        missing = [layer_name(layer, n) for n in LAYER_NAMES if layer_name(layer, n) not in fresh
                   and n not in SUMMARY_NAMES]
        if missing:
            raise ValueError(f"layer {layer + 1}'s tensors lack {missing[0]!r}")
        if self.viewed is not None and self.viewed != layer:
            old = layer_name(self.viewed, "")
            for name in [n for n in self.tensors if n.startswith(old) and n[len(old):] not in SUMMARY_NAMES]:
                del self.tensors[name]
        self.tensors.update(fresh)
        self.viewed = layer

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.tensors and name.startswith("h.") and name.split(".", 2)[2:] and \
                name.split(".", 2)[2] in LAYER_NAMES:
            held = "no layer in full" if self.viewed is None else f"layer {self.viewed + 1}'s tensors in full"
            raise KeyError(f"this trace holds {held} (plus every layer's {', '.join(SUMMARY_NAMES)}): {name!r} is "
                           f"not here. Select its layer on the map, or `await explainer.select_layer(l)` in the "
                           f"console, to fetch it")
        return super().__getitem__(name)
