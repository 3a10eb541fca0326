"""Light or full mode on the page: read the device, say which mode and why, follow the model
download (bytes and shards on the progress bar, storage notes in the mode card).

main.py's boot uses it in three lines:

    mode = await DeviceMode.choose(page, app.adapter, chooser.url)   # chooser: hub_loader.ModelChooser
    model = await load_model(mode.model_url, mode.progress)
    explainer = Explainer(..., runner=mode.runner(model))   # None in full mode: the default

The decision itself is lightmode.decide (pure Python, tested under CPython). The switch on
the page (web/pwa.js) stores the choice in localStorage[MODE_KEY] and reloads.
"""

from __future__ import annotations

import json

import js

from . import lightmode
from .loader import Progress, fetch_bytes

MODE_KEY = "glassbox-mode"  # web/pwa.js writes the same key


def _local_choice() -> str | None:
    try:
        return js.localStorage.getItem(MODE_KEY)
    except Exception:  # noqa: BLE001  (storage disabled: no remembered choice)
        return None


def read_facts(adapter) -> lightmode.DeviceFacts:
    """What the browser says about this device: memory, WebGPU limits, screen, choices."""
    query = js.URLSearchParams.new(js.location.search)
    screen = getattr(js.window, "screen", None)
    return lightmode.parse_facts(
        memory=getattr(js.navigator, "deviceMemory", None),
        max_binding=adapter.max_storage_buffer_binding_size if adapter else None,
        max_buffer=adapter.max_buffer_size if adapter else None,
        width=getattr(screen, "width", None),
        height=getattr(screen, "height", None),
        webgpu=adapter is not None,
        stored=_local_choice(),
        query=query.get("mode"),
    )


class DeviceMode:
    """The mode this page runs in, the weights it loads, and the card that says so."""

    def __init__(self, page, mode: lightmode.Mode, model: str):
        self.page = page
        self.mode = mode
        self.model = model
        self.model_url = f"./weights/{model}/"
        self.loaded: Progress | None = None
        self._notes = 0

    @classmethod
    async def choose(cls, page, adapter, default_url: str) -> "DeviceMode":
        """Decide the mode for ``adapter`` (AdapterInfo or None) and show it; ``default_url``
        is the folder the page would load in full mode (hub_loader.ModelChooser.url)."""
        mode = lightmode.decide(read_facts(adapter))
        asked = bool(js.URLSearchParams.new(js.location.search).get("model"))
        name = default_url.rstrip("/").rsplit("/", 1)[-1]
        models: list[str] = []
        if mode.light and not asked:
            try:
                models = json.loads(await fetch_bytes("./weights/index.json")).get("models", [])
            except Exception:  # noqa: BLE001  (no list: keep the default weights)
                models = []
        chosen = cls(page, mode, mode.model_name(name, asked, models))
        js.document.documentElement.dataset.mode = mode.name
        chosen.show()
        return chosen

    def show(self, notes=()) -> None:
        self.page.show("device", lightmode.card(self.mode, self.model, self.loaded, notes))
        section = js.document.getElementById("pwa")
        if section is not None:
            section.hidden = False

    def progress(self, state: Progress) -> None:
        """loader progress: the bar shows this download's bytes and shards; a new note, and
        the end of loading, redraw the card (where the weights came from, kept or not)."""
        self.page.progress(state.label(), state.fraction, exact=True)
        finished = bool(state.total_shards) and state.done_shards == state.total_shards
        if finished:
            self.loaded = state
        if finished or len(state.notes) != self._notes:
            self._notes = len(state.notes)
            self.show(state.notes)

    def runner(self, model):
        """The runner light mode needs (LightRunner), or None for the explainer's default."""
        if not self.mode.light:
            return None
        return lightmode.LightRunner(model.params, model.config)

