"""The query/key map's page side (issue 12): canvas pixels, the lines' SVG, pointer, wheel and
keys on the large canvas. The only qk code that imports ``js``; state lives in ``qkmap.QKMap``."""

from __future__ import annotations

import js
from pyodide.ffi import create_proxy, to_js

from .loader import model_file_fetch
from .qkmap import QKMap

CLICK_SLOP = 4  # pointer travel (CSS px) below which a press is a click, not a drag


class QKDom:
    def __init__(self, document=None):
        self.document = document or js.document
        self._proxies = []
        self._drag = None

    def paint(self, selector: str, rgba) -> None:
        """One canvas's pixels in one call: numpy RGBA [h, w, 4] -> ImageData -> putImageData."""
        canvas = self.document.querySelector(selector)
        if canvas is None:
            return
        h, w = int(rgba.shape[0]), int(rgba.shape[1])
        data = js.Uint8ClampedArray.new(h * w * 4)
        data.assign(rgba.tobytes())
        canvas.getContext("2d").putImageData(js.ImageData.new(data, w, h), 0, 0)

    def set_lines(self, svg: str) -> None:
        lines = self.document.querySelector('[data-testid="qk-lines"]')
        if lines is not None:
            lines.innerHTML = svg

    # ----- events on the large canvas -------------------------------------------------------------
    def attach(self, root, qkmap: QKMap, on_error) -> None:
        def guarded(handler):
            def run(event):
                if not event.target.matches("#qk-canvas"):
                    return
                try:
                    handler(event)
                except Exception as exc:  # noqa: BLE001  (an event must never take the page down)
                    on_error(exc)
            return run

        def canvas_xy(event):
            c = event.target
            sx = float(c.width) / max(float(c.clientWidth), 1.0)
            sy = float(c.height) / max(float(c.clientHeight), 1.0)
            return float(event.offsetX) * sx, float(event.offsetY) * sy, sx

        def down(event):
            x, y, _ = canvas_xy(event)
            self._drag = (x, y, float(event.clientX), float(event.clientY), False)
            event.target.setPointerCapture(event.pointerId)

        def move(event):
            event.stopPropagation()  # the explainer's root listener would hide the tooltip
            x, y, _ = canvas_xy(event)
            if self._drag is None:
                qkmap.hover(x, y, float(event.clientX), float(event.clientY))
                return
            x0, y0, cx0, cy0, moved = self._drag
            if moved or abs(float(event.clientX) - cx0) + abs(float(event.clientY) - cy0) > CLICK_SLOP:
                qkmap.pan(x - x0, y - y0)
                self._drag = (x, y, cx0, cy0, True)

        def up(event):
            drag, self._drag = self._drag, None
            if drag is not None and not drag[4]:
                x, y, _ = canvas_xy(event)
                qkmap.click(x, y)

        def wheel(event):
            event.preventDefault()
            x, y, _ = canvas_xy(event)
            qkmap.zoom_at(1.25 if float(event.deltaY) < 0 else 0.8, x, y)

        def key(event):
            if qkmap.key(str(event.key)):
                event.preventDefault()

        options = to_js({"passive": False}, dict_converter=js.Object.fromEntries)
        for name, handler in (("pointerdown", down), ("pointermove", move), ("pointerup", up),
                              ("pointercancel", lambda e: setattr(self, "_drag", None)), ("keydown", key)):
            proxy = create_proxy(guarded(handler))
            self._proxies.append(proxy)
            root.addEventListener(name, proxy)
        proxy = create_proxy(guarded(wheel))
        self._proxies.append(proxy)
        root.addEventListener("wheel", proxy, options)


def attach_qk(explainer, binding, base_url: str) -> QKMap:
    """Give the explainer its query/key map (issue 12): mount the section, wire its events."""
    dom = QKDom(binding.document)
    fetch = model_file_fetch(base_url, explainer.model.checkpoint.manifest)  # kept in the model store
    qkmap = QKMap(binding, dom, explainer.model, base_url, fetch, runner=lambda: explainer.runner)

    def follow(layer: int, head: int) -> None:
        explainer.select_layer(layer)
        explainer.select_head(head)

    qkmap.on_select = follow
    explainer.qk = explainer.add_panel(qkmap)
    qkmap.mount()
    dom.attach(binding._slot(qkmap.slot), qkmap, explainer._fail)
    return qkmap
