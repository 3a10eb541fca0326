"""Light mode for small devices: which mode, why, and a runner that keeps one layer's tensors.

Pure Python, no ``js`` import (tests run it under CPython); py/app/device.py reads the device
and draws the choice on the page.

``decide(DeviceFacts)`` picks ``light`` or ``full``:

* a choice made by hand (the page's switch, kept in localStorage) or ``?mode=light|full`` wins;
* otherwise light when any of these holds: the browser reports at most LIGHT_MEMORY_GB of
  memory (navigator.deviceMemory); the WebGPU adapter's maxStorageBufferBindingSize or
  maxBufferSize is under LIGHT_BUFFER_BYTES (phones usually offer the 128/256 MiB baseline;
  desktops 1 GiB or more); the screen's short side is under LIGHT_SCREEN_PX CSS pixels.

Light mode loads the q4 weights (weights/mini -> weights/mini-q4, 40% fewer bytes; generally
``<default>-q4`` where weights/index.json lists it) unless the URL names a model, and runs the model through ``LightRunner``: each run
captures only the viewed layer (``glassbox.trace.capture_layer``) plus every layer's [N, D]
outputs that the map draws (SUMMARY_NAMES). Selecting another layer calls
``LightRunner.view_layer(trace, layer)``, which computes that layer's tensors (one pass
through the blocks up to it) and drops the previous layer's, so at most one layer's
attention grids [H, N, T] and MLP activations [N, F] are held at a time. Reading the trace
never computes anything: a tensor of a layer not computed raises a KeyError that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

import numpy as np

from glassbox import reference
from glassbox.config import GPTConfig
from glassbox.trace import LAYER_NAMES, SUMMARY_NAMES, Trace, layer_name, view_capture
from glassbox.trace import LayerTrace as PartialTrace

from . import runner as runners

MODES = ("light", "full")
LIGHT_MEMORY_GB = 4
LIGHT_BUFFER_BYTES = 256 * 1024 * 1024
LIGHT_SCREEN_PX = 600
LIGHT_SUFFIX = "-q4"  # light mode's weights: weights/<default>-q4 where weights/index.json lists it
# Per-layer tensors kept for every layer in light mode: [N, D] each, drawn by the overview
# (glassbox.trace.SUMMARY_NAMES: every partial trace holds them, issue 16).
assert SUMMARY_NAMES == ("attn_proj", "mlp_proj", "res_1", "res_2")

MIB = 1024 * 1024


@dataclass(frozen=True)
class DeviceFacts:
    """What the browser tells about the device (None where it tells nothing)."""

    memory_gb: float | None = None  # navigator.deviceMemory
    max_binding: int | None = None  # adapter.limits.maxStorageBufferBindingSize
    max_buffer: int | None = None  # adapter.limits.maxBufferSize
    screen: tuple[int, int] | None = None  # screen.width, screen.height (CSS px)
    webgpu: bool = False
    stored: str | None = None  # localStorage choice made with the switch
    query: str | None = None  # ?mode=


@dataclass(frozen=True)
class Mode:
    name: str  # "light" or "full"
    why: str  # one sentence for people
    by: str  # "hand", "url" or "device"
    reasons: tuple[str, ...] = field(default=())

    @property
    def light(self) -> bool:
        return self.name == "light"

    def model_name(self, default: str, asked: bool, models=()) -> str:
        """The weights folder to load: ``default`` (the URL's or weights/index.json's); in
        light mode without a ?model= choice, its q4 variant ``<default>-q4`` where listed."""
        return light_model(default, models) if self.light and not asked else default


def light_model(default: str, models=()) -> str:
    """The light variant of model ``default`` among ``models`` (itself when there is none)."""
    if default.endswith(LIGHT_SUFFIX):
        return default
    return default + LIGHT_SUFFIX if default + LIGHT_SUFFIX in models else default


def _gb(value: float) -> str:
    return f"{value:g} GB"


def device_reasons(facts: DeviceFacts) -> tuple[list[str], list[str]]:
    """(reasons for light mode, facts that speak for full mode), in words."""
    light, full = [], []
    if facts.memory_gb is not None:
        if facts.memory_gb <= LIGHT_MEMORY_GB:
            light.append(f"the browser reports {_gb(facts.memory_gb)} of memory (at most {LIGHT_MEMORY_GB} GB)")
        else:
            full.append(f"{_gb(facts.memory_gb)} of memory")
    limits = [(n, v) for n, v in (("storage buffers", facts.max_binding), ("buffers", facts.max_buffer)) if v]
    small = [(n, v) for n, v in limits if v < LIGHT_BUFFER_BYTES]
    if small:
        n, v = min(small, key=lambda nv: nv[1])
        light.append(f"the WebGPU adapter allows {n} of only {v // MIB} MiB (under {LIGHT_BUFFER_BYTES // MIB} MiB)")
    elif limits:
        full.append(f"WebGPU buffers up to {min(v for _, v in limits) // MIB} MiB")
    elif facts.webgpu is False:
        full.append("no WebGPU (numpy runs the model)")
    if facts.screen:
        w, h = facts.screen
        if min(w, h) < LIGHT_SCREEN_PX:
            light.append(f"the screen is phone-sized ({w}×{h} px)")
        else:
            full.append(f"a {w}×{h} px screen")
    return light, full


def decide(facts: DeviceFacts) -> Mode:
    """Light or full mode for this device, and why."""
    light, full = device_reasons(facts)
    for by, choice in (("url", facts.query), ("hand", facts.stored)):
        if choice in MODES:
            where = "the address asks for it (?mode=)" if by == "url" else "you chose it with the switch"
            return Mode(choice, f"{choice.capitalize()} mode because {where}.", by, tuple(light or full))
    if light:
        return Mode("light", f"Light mode because {_join(light)}.", "device", tuple(light))
    if full:
        return Mode("full", f"Full mode: this device reports {_join(full)}.", "device", tuple(full))
    return Mode("full", "Full mode: the browser tells nothing that calls for light mode.", "device")


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def parse_facts(memory, max_binding, max_buffer, width, height, webgpu, stored, query) -> DeviceFacts:
    """DeviceFacts from raw browser values (None, numbers, or strings), tolerating junk."""

    def number(value):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if np.isfinite(value) and value > 0 else None

    w, h = number(width), number(height)
    binding, buffer = number(max_binding), number(max_buffer)
    return DeviceFacts(
        memory_gb=number(memory),
        max_binding=int(binding) if binding else None,
        max_buffer=int(buffer) if buffer else None,
        screen=(int(w), int(h)) if w and h else None,
        webgpu=bool(webgpu),
        stored=stored if stored in MODES else None,
        query=query if query in MODES else None,
    )


# ----- the light runner -------------------------------------------------------------------

def light_capture(layer: int):
    """capture_layer(layer), plus every layer's SUMMARY_NAMES (glassbox.trace.view_capture)."""
    return view_capture(layer)


def layer_tensors(params, config: GPTConfig, ids: np.ndarray, layer: int) -> dict[str, np.ndarray]:
    """Every tensor of one layer for ``ids`` (positions 0..N-1): the blocks up to it, no more."""
    kept: dict[str, np.ndarray] = {}
    prefix = layer_name(layer, "")

    def keep(name: str, value: np.ndarray) -> None:
        if name.startswith(prefix):
            kept[name] = value

    x = reference.embed(params, np.asarray(ids, dtype=np.int64), 0, lambda *_: None)
    for index in range(layer + 1):
        x = reference.block(x, params, index, config, None, keep)
    return kept


class LayerTrace(PartialTrace):
    """glassbox.trace.LayerTrace (summaries + one layer) that computes another layer with
    numpy on ``view_layer`` (light mode on the page's own thread; the model worker does the
    same in the worker, issue 16)."""

    def __init__(self, trace: Trace, params, layer: int):
        super().__init__(trace.config, trace.ids, trace.start, trace.tensors, viewed=layer,
                         logits_start=getattr(trace, "logits_start", 0))
        self._params = params

    def view_layer(self, layer: int) -> None:
        """Compute ``layer``'s tensors and drop the previously viewed layer's (not the summaries)."""
        if layer == self.viewed:
            return
        if self.start != 0:
            raise ValueError("only a trace of the whole sequence can compute another layer")
        self.set_layer(layer, layer_tensors(self._params, self.config, self.ids, layer))

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.tensors and name.startswith("h.") and name.split(".", 2)[2:] and \
                name.split(".", 2)[2] in LAYER_NAMES:
            raise KeyError(f"light mode keeps layer {self.viewed + 1}'s tensors only: {name!r} is not computed "
                           f"(select its layer, or call explainer.runner.view_layer(trace, layer))")
        return super().__getitem__(name)


class LightRunner:
    """The numpy reference, keeping the viewed layer only (see the module docstring).

    It has ``run`` alone (no KV cache ``extend``): generating a token runs the sequence again,
    which needs no per-layer history.
    """

    name = "numpy, light mode"

    def __init__(self, params, config: GPTConfig, step=runners._yield_to_page):
        self.params = params
        self.config = config
        self.step = step
        self.last: LayerTrace | None = None
        self._aimed: int | None = None

    @property
    def layer(self) -> int:
        """The layer the views looked at last (the next run captures it directly)."""
        if self._aimed is not None:
            return self._aimed
        return self.last.viewed if self.last is not None and self.last.viewed is not None else 0

    def aim(self, layer: int) -> None:
        """The layer the next run captures (the model worker's host says which, issue 16)."""
        self._aimed = int(layer)

    def view_layer(self, trace: LayerTrace, layer: int) -> None:
        """Make ``trace`` hold ``layer``'s tensors (one pass through the blocks up to it),
        dropping the previously viewed layer's. Reading a trace never computes: the map
        controller calls this when a layer is selected."""
        self._aimed = int(layer)
        trace.view_layer(layer)

    async def run(self, ids) -> LayerTrace:
        layer = self.layer
        trace = await runners.forward_async(self.params, self.config, ids, None, self.step,
                                            capture=light_capture(layer))
        self.last = LayerTrace(trace, self.params, layer)
        return self.last


# ----- what the page says -----------------------------------------------------------------

def card(mode: Mode, model: str, loaded=None, notes=()) -> str:
    """HTML for the mode card: the mode, why, the switch, the loader's ``notes`` (storage
    shortage, damaged copies...) and, once ``loaded`` (a loader.Progress), where the weights
    came from and whether they are kept on the device."""
    other = "full" if mode.light else "light"
    what = ("q4 weights where available; the trace keeps only the layer you view (others are "
            "computed again when you pick them)" if mode.light
            else "every tensor of every layer is kept")
    lines = [
        (f'<div class="mode-line" data-testid="device-mode" data-mode="{mode.name}">'
         f'<span class="mode-badge">{mode.name.capitalize()} mode</span>'
         f'<span>{escape(model if model.startswith("hf:") else "weights/" + model)}: {what}.</span>'
         f'<button type="button" class="pwa-button" data-pwa="mode" data-mode="{other}" '
         f'data-testid="mode-toggle">Switch to {other} mode</button></div>'),
        f'<p class="mode-why" data-testid="mode-why">{escape(mode.why)}</p>',
    ]
    if loaded is not None:
        lines.append(f'<p class="storage-line" data-testid="storage-status">{escape(storage_text(loaded))}</p>')
    for text in notes:
        if not text.startswith("Offline:"):  # said in the storage line
            lines.append(f'<p class="storage-line warn" data-testid="storage-note">{escape(text)}</p>')
    return "".join(lines)


def storage_text(p) -> str:
    """One sentence: where the weights came from and whether they stay on this device."""
    size = f"{p.total_bytes / MIB:.1f} MiB"
    if p.total_shards and p.cached_shards == p.total_shards:
        source = f"Weights ({size}, {p.total_shards} shard{'s' * (p.total_shards != 1)}) read from this device"
    elif p.cached_shards:
        source = (f"Weights ({size}): {p.cached_shards} of {p.total_shards} shards read from this device, "
                  f"{p.total_shards - p.cached_shards} downloaded")
    else:
        source = f"Weights ({size}, {p.total_shards} shard{'s' * (p.total_shards != 1)}) downloaded"
    source += ", each checked against its sha256"
    if p.offline:
        source += ", without the network"
    if p.dictionary_bytes:  # issue 13
        source += (f"; the factors dictionary ({p.dictionary_bytes / MIB:.1f} MiB, sha256-checked too) is "
                   "downloaded when its panel first opens")
    if getattr(p, "qk_bytes", 0):  # issue 12
        source += (f"; the Q/K map's files ({p.qk_bytes / MIB:.1f} MiB, sha256-checked too) when the map is "
                   "first built")
    if not p.stored:
        return source + "; not kept on this device."
    if p.persisted:
        return source + "; kept on this device in persistent storage."
    if p.persisted is False:
        return source + "; kept on this device (the browser may clear it when space runs short: it did not grant persistent storage)."
    return source + "; kept on this device."
