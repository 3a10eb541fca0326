"""The model map's controller: the layer every view follows, and which detailed views are open.

The map (views/overview.py) draws the model from the live run: tokens -> embedding -> L
blocks, each with its attention and MLP parts -> output probabilities. Each part carries
``data-part``; clicking one opens that part's detailed view in place (selecting the block's
layer) and brings it into view; each open view has a way back to the map. In the default
state no detailed view is open, so the page is the input, the map and the controls.
"""

from __future__ import annotations

from ..views import overview
from ..views.common import View
from ..views.controls import SECTIONS
from .base import Controller

VIEWS = tuple(slot for slot, _ in SECTIONS)  # the detailed views the map opens (views/controls.SECTIONS)


def part_target(part: str, n_layer: int) -> tuple[str, int | None]:
    """(view, layer or None) that map part ``part`` opens: 'embedding', 'output', 'tokens',
    'block-2-attention' (layer 2, counted from 0 like the trace's h.2), 'block-2-mlp'."""
    if part in ("embedding", "output", "experiments", "factors", "qk"):
        return part, None
    if part == "tokens":
        return "input", None
    bits = part.split("-")
    if len(bits) == 3 and bits[0] == "block" and bits[1].isdigit() and bits[2] in ("attention", "mlp"):
        layer = int(bits[1])
        if layer < n_layer:
            return ("attention" if bits[2] == "attention" else "block"), layer
    raise ValueError(f"the map has no part {part!r}")


class MapController(Controller):
    name = "map"
    slot = "overview"
    actions = {
        "layer": lambda c, value, data: c.select_layer(int(data["layer"]) if "layer" in data else int(value) - 1),
        "open-part": lambda c, value, data: c.open_part(data["part"]),
        "close-view": lambda c, value, data: c.close(data["view"]),
        "open-all": lambda c, value, data: c.open_all(not c.all_open),
    }

    def __init__(self, explainer):
        super().__init__(explainer)
        self.open: list[str] = []  # detailed views shown, in the order they were opened
        self._asked = 0  # layers picked; a fetched layer is shown only if it is still the latest pick

    @property
    def all_open(self) -> bool:
        return all(v in self.open for v in VIEWS)

    def view(self):
        ex = self.ex
        if ex.trace is None:
            return None
        return overview.render(ex.trace, ex.tokens, ex.dist, ex.vocab, ex.layer, opened=self.part_open())

    def render(self) -> None:
        """The map, and the small sticky map in the bar."""
        super().render()
        self._show_minimap()

    async def render_async(self) -> None:
        """render in steps (issue 16): the map's view, a turn for the page, its drawing, then
        the small map."""
        await self.render_slot_async()
        self._show_minimap()

    def _show_minimap(self) -> None:
        self.ui.show("minimap", View(overview.mini_map(self.ex.config.n_layer, self.ex.layer, self.part_open())))

    def part_open(self) -> set[str]:
        """The map parts whose view is open (drawn pressed)."""
        parts = set()
        for view in self.open:
            if view == "attention":
                parts.add(f"block-{self.ex.layer}-attention")
            elif view == "block":
                parts.add(f"block-{self.ex.layer}-mlp")
            else:
                parts.add(view)
        return parts

    def select_layer(self, layer: int):
        """Show ``layer``. Light mode on WebGPU (issue 15, app/gpu_light.py) first reads its
        tensors from the GPU: the task that does so is returned (None otherwise)."""
        ex = self.ex
        layer = int(layer)
        if not 0 <= layer < ex.config.n_layer:
            raise ValueError(f"layer {layer + 1} does not exist (the model has {ex.config.n_layer})")
        self._asked += 1
        fetch = getattr(ex.runner, "fetch_layer", None)
        if fetch is not None and ex.trace is not None:
            return ex.spawn(self._fetched(fetch(ex.trace, layer), layer, self._asked))
        self._show_layer(layer)
        return None

    async def _fetched(self, fetching, layer: int, asked: int) -> bool:
        """Show the layer once its tensors came; False (and the error shown) when that failed,
        or when the reader picked another layer meanwhile (the latest pick is shown, whichever
        answer comes last). issue 16: a step that landed meanwhile (continuous generation) may
        have replaced the trace with one that lacks the layer: it is fetched into that one too."""
        from ..protocol import Stopped

        try:
            await fetching
            await self.ex.hold_layer(self.ex.trace, layer)
            if asked != self._asked:
                return False
            self._show_layer(layer)
        except Stopped:
            return False
        except Exception as exc:  # noqa: BLE001  (shown beside the input, as an event's error)
            self.ex.fail(exc)
            return False
        return True

    def _show_layer(self, layer: int) -> None:
        ex = self.ex
        ex.layer = layer
        prepare = getattr(ex.runner, "view_layer", None)  # light mode: compute this layer's tensors now
        if prepare is not None and ex.trace is not None:
            prepare(ex.trace, layer)
            ex.update_namespace()
        self.ui.set_value("layer-select", str(layer + 1))
        self.render(), ex.attention.render(), ex.block.render()
        ex.link_qk()
        self.ui.set_attr("explainer", "data-layer", str(layer))  # s16: drawn (tests wait on it after a fetch)

    def _set_open(self, view: str, shown: bool) -> None:
        if shown and view not in self.open:
            self.open.append(view)
        elif not shown and view in self.open:
            self.open.remove(view)
        self.ui.set_attr(f"view:{view}", "data-open", "true" if shown else "false")
        if view == "qk" and shown:
            self.ex.place_in_qk()

    def open_part(self, part: str) -> None:
        """Open the detailed view of map part ``part`` (selecting its block's layer)."""
        view, layer = part_target(part, self.ex.config.n_layer)
        if layer is not None and layer != self.ex.layer:
            pending = self.select_layer(layer)
            if pending is not None:  # the layer comes from the GPU first (issue 15)
                pending.add_done_callback(lambda task: not task.cancelled() and task.result() and self.open_view(view))
                return
        self.open_view(view)

    def open_view(self, view: str) -> None:
        """Open a detailed view at the selected layer and bring it into view."""
        if view != "input":
            if view not in VIEWS:
                raise ValueError(f"no view {view!r}")
            self._set_open(view, True)
            self.render()
            self.ui.reveal(f"view:{view}")

    def close(self, view: str) -> None:
        if view not in VIEWS:
            raise ValueError(f"no view {view!r}")
        self._set_open(view, False)
        self.render()
        self.ui.reveal("map")

    def open_all(self, shown: bool = True) -> None:
        for view in VIEWS:
            self._set_open(view, shown)
        self.ui.set_attr("open-all", "aria-pressed", "true" if shown else "false")
        self.render()
