"""Binding: the explainer's DOM side (the only explainer code that imports ``js``).

* ``show(slot, view)`` writes a view's HTML in one ``innerHTML`` (TeX placeholders already
  swapped for KaTeX's HTML), then paints each heat map with one ``putImageData`` from its
  numpy RGBA buffer, and keeps the map's values for hover.
* One delegated listener per event type on the explainer's root turns clicks, changes and
  key presses on ``[data-action]`` elements into ``Explainer.handle(action, value, data)``.
* Hover, tap and keyboard reading of maps: a pointer over (or a tap on) a ``canvas[data-heat]``
  or an attention cell shows a tooltip with the exact value (the cell under the pointer is
  found from the canvas's on-screen box, so CSS scaling and device pixel ratio do not matter);
  a tooltip about an attention cell carries ``data-q``/``data-k``, and the cell's query and
  key rows light up in the Q and K maps; a focused map or matrix moves a cursor with the
  arrow keys and announces each cell in a live region. A tap on a canvas with a
  ``data-action`` also sends that action with the cell as "row,col".
"""

from __future__ import annotations

import html as htmllib
import re

import js
from pyodide.ffi import create_once_callable, create_proxy, to_js

from .views.common import Heat, token_label
from .views.controls import selector

_TEX = re.compile(r'<span class="(tex(?: tex-display)?)" data-tex="([^"]*)" data-display="([01])">[^<]*</span>')
ARROWS = {"ArrowUp": (-1, 0), "ArrowDown": (1, 0), "ArrowLeft": (0, -1), "ArrowRight": (0, 1),
          "Home": (0, -10**9), "End": (0, 10**9), "PageUp": (-10, 0), "PageDown": (10, 0)}


SPLIT_PARSE_CHARS = 100_000  # a view's HTML longer than this is parsed and inserted in two tasks


class Binding:
    """The page for an Explainer: slots, heat maps, tooltips, events."""

    def __init__(self, page, document=None, window=None, frame_slot: str = "explainer"):
        self.page = page  # dom.Page: page state goes through web/shell.js
        self.document = document or js.document
        self.window = window or js.window
        self.frame_slot = frame_slot
        self.explainer = None
        self.root = None
        self.heats: dict[str, Heat] = {}
        self.slot_heats: dict[str, list[str]] = {}
        self.cursors: dict[str, tuple[int, int]] = {}
        self.tex_cache: dict[tuple[str, bool], str] = {}
        self._drawing: dict[str, int] = {}  # slot -> the number of its latest drawing (show_async steps)
        self._proxies = []
        self._highlighted = None

    # ----- writing ------------------------------------------------------------------------------
    def _slot(self, slot: str):
        element = self.document.querySelector(f'[data-slot="{slot}"]')
        if element is None:
            raise ValueError(f"the page has no slot {slot!r}")
        return element

    def show_frame(self, html: str) -> None:
        root = self._slot(self.frame_slot)
        root.innerHTML = self.render_tex(html)
        self.root = root
        self.document.documentElement.dataset.explainer = "on"

    def attach(self, explainer) -> None:
        self.explainer = explainer
        for name, handler in (("click", self._on_click), ("change", self._on_change), ("input", self._on_input),
                              ("keydown", self._on_keydown), ("pointermove", self._on_pointer),
                              ("pointerleave", self._on_leave), ("focusin", self._on_focus),
                              ("focusout", self._on_blur)):
            proxy = create_proxy(self._guarded(handler))
            self._proxies.append(proxy)
            self.root.addEventListener(name, proxy)
        # issue 16 (hw20): a weight popover gets its map when it first opens ("beforetoggle"
        # does not bubble: listened to in the capture phase).
        toggle = create_proxy(self._guarded(self._on_beforetoggle))
        self._proxies.append(toggle)
        self.root.addEventListener("beforetoggle", toggle, True)
        # A tooltip belongs to where the pointer or cursor was: scrolling or resizing hides it.
        hide = create_proxy(lambda event: self.hide_tooltip(cursor=True))
        self._proxies.append(hide)
        passive = to_js({"passive": True}, dict_converter=js.Object.fromEntries)
        self.window.addEventListener("scroll", hide, passive)
        self.window.addEventListener("resize", hide, passive)

    def _guarded(self, handler):
        """An event handler that never lets an exception escape into the page (the shell
        would take any uncaught error for a failed boot): it is shown beside the input."""

        def run(event):
            try:
                handler(event)
            except Exception as exc:  # noqa: BLE001
                if self.explainer is not None:
                    self.explainer._fail(exc)

        return run

    def render_tex(self, html: str) -> str:
        """Swap every TeX placeholder for KaTeX's HTML (kept as text when KaTeX is missing)."""
        katex = getattr(self.window, "katex", None)
        if katex is None or "data-tex=" not in html:
            return html

        def swap(match: re.Match) -> str:
            cls, source, display = match.group(1), htmllib.unescape(match.group(2)), match.group(3) == "1"
            key = (source, display)
            rendered = self.tex_cache.get(key)
            if rendered is None:
                options = to_js({"displayMode": display, "throwOnError": False, "output": "htmlAndMathml"},
                                dict_converter=js.Object.fromEntries)
                rendered = str(katex.renderToString(source, options))
                self.tex_cache[key] = rendered
            # A display formula may scroll sideways on a phone: focusable, so keys can scroll it (issue 16).
            focus = ' tabindex="0"' if display else ""
            return f'<span class="{cls} katex-done"{focus}>{rendered}</span>'

        return _TEX.sub(swap, html)

    def show(self, slot: str, view) -> None:
        for _ in self._show_steps(slot, view):
            pass

    async def show_async(self, slot: str, view) -> None:
        """show, giving the page a turn after parsing the HTML, after putting it in the page and
        after the heat maps: a 256-token attention view is ~0.5 MB of HTML, and one task for
        all of it took ~300 ms (issue 16)."""
        import asyncio

        for _ in self._show_steps(slot, view):
            await asyncio.sleep(0)

    def _show_steps(self, slot: str, view):
        """Draw ``view`` into ``slot`` in steps (a yield between them). A later drawing of the
        same slot that starts meanwhile wins: this one stops at its next step."""
        element = self._slot(slot)
        drawing = self._drawing[slot] = self._drawing.get(slot, 0) + 1
        template = None
        if len(view.html) > SPLIT_PARSE_CHARS:
            # parsed into an inert <template> in one task, moved into the page in the next
            template = self.document.createElement("template")
            template.innerHTML = self.render_tex(view.html)
            yield
            if self._drawing[slot] != drawing:
                return
        active = self.document.activeElement
        active_id = active.id if active is not None and active.id and element.contains(active) else ""
        if template is not None:
            element.replaceChildren(template.content)
        else:
            element.innerHTML = self.render_tex(view.html)
        yield
        if self._drawing[slot] != drawing:
            return
        for key in self.slot_heats.pop(slot, []):
            self.heats.pop(key, None)
        self.slot_heats[slot] = self._paint_heats(element, view.heats)
        yield
        if self._drawing[slot] != drawing:
            return
        for box in element.querySelectorAll("[data-keep-in-view]"):
            self._scroll_to_selected(box)
        if active_id:
            again = self.document.getElementById(active_id)
            if again is not None:
                again.focus()

    def _on_beforetoggle(self, event) -> None:
        """issue 16 (hw20): a weight popover is opening: the explainer fills in its map if it
        has none yet (drawn without one, or an earlier attempt failed)."""
        target = event.target
        if self.explainer is not None and str(getattr(event, "newState", "")) == "open" \
                and target.matches(".weights-pop"):
            self.explainer.handle("weights-open", str(target.id))

    def fill_popover(self, pop_id: str, view) -> None:
        """issue 16 (hw20): put ``view`` (views.weights.popover_body and its map) below the head
        of popover ``pop_id`` and paint the map; it is forgotten with its slot's next drawing."""
        element = self.document.getElementById(pop_id)
        if element is None:
            return
        head = element.querySelector(".pop-head")
        element.innerHTML = (head.outerHTML if head is not None else "") + view.html
        element.removeAttribute("data-lazy")
        slot = element.closest("[data-slot]")
        keys = self.slot_heats.setdefault(str(slot.getAttribute("data-slot")) if slot is not None else "", [])
        keys += self._paint_heats(element, view.heats)

    def _paint_heats(self, element, heats) -> list[str]:
        """Paint each heat map into its canvases below ``element`` (one map may be drawn in more
        than one place) and keep it for hover and touch; the keys of those drawn."""
        keys = []
        for heat in heats:
            canvases = element.querySelectorAll(f'canvas[data-heat="{heat.key}"]')
            if not canvases.length:
                continue
            for canvas in canvases:
                self.paint(canvas, heat)
            self.heats[heat.key] = heat
            keys.append(heat.key)
        return keys

    def _scroll_to_selected(self, box) -> None:
        """Scroll a box (not the page) so that its selected item (``.on``) is in the middle."""
        chosen = box.querySelector('[aria-pressed="true"]')
        if chosen is None:
            return
        inner, outer = chosen.getBoundingClientRect(), box.getBoundingClientRect()
        middle = float(inner.top) - float(outer.top) + float(box.scrollTop) + float(inner.height) / 2
        box.scrollTop = max(0.0, middle - float(box.clientHeight) / 2)

    def paint(self, canvas, heat: Heat) -> None:
        """All of a map's pixels in one call: numpy RGBA -> ImageData -> canvas."""
        rgba = heat.rgba
        h, w = int(rgba.shape[0]), int(rgba.shape[1])
        data = js.Uint8ClampedArray.new(h * w * 4)
        data.assign(rgba.tobytes())
        canvas.width, canvas.height = w, h
        canvas.getContext("2d").putImageData(js.ImageData.new(data, w, h), 0, 0)

    def set_state(self, state: str) -> None:
        self.page.set_state(state)

    def _each(self, name: str):
        """The elements a controller names (views/controls.ELEMENTS; issue 10: controllers
        write no selectors)."""
        return self.document.querySelectorAll(selector(name))

    def set_text(self, name: str, text: str) -> None:
        for element in self._each(name):
            element.textContent = text

    def set_value(self, name: str, value: str) -> None:
        for element in self._each(name):
            element.value = value

    def set_attr(self, name: str, attr: str, value: str) -> None:
        for element in self._each(name):
            element.setAttribute(attr, value)

    def set_prop(self, name: str, prop: str, value) -> None:
        for element in self._each(name):
            setattr(element, prop, value)

    def focus(self, name: str) -> None:
        element = self.document.querySelector(selector(name))
        if element is not None:
            element.focus(to_js({"preventScroll": True}, dict_converter=js.Object.fromEntries))

    def download(self, filename: str, data: bytes, mime: str) -> None:
        """Save ``data`` as a file (issue 14's exports): a Blob, a temporary link, one click."""
        array = js.Uint8Array.new(len(data))
        array.assign(data)
        blob = js.Blob.new([array], to_js({"type": mime}, dict_converter=js.Object.fromEntries))
        url = js.URL.createObjectURL(blob)
        link = self.document.createElement("a")
        link.href, link.download = url, filename
        self.document.body.appendChild(link)
        link.click()
        link.remove()
        self.window.setTimeout(create_once_callable(lambda: js.URL.revokeObjectURL(url)), 10_000)

    def reveal(self, name: str) -> None:
        """Scroll the named element into view (smoothly unless reduced motion is asked for)."""
        element = self.document.querySelector(selector(name))
        if element is not None:
            behavior = "auto" if self.reduced_motion() else "smooth"
            element.scrollIntoView(to_js({"block": "start", "behavior": behavior}, dict_converter=js.Object.fromEntries))

    def scroll_to_end(self, name: str) -> None:
        for element in self._each(name):
            element.scrollTop = element.scrollHeight

    def store(self, key: str, value: str) -> None:
        """Keep a value on this device (localStorage 'glassbox-KEY'); storage may be off."""
        try:
            self.window.localStorage.setItem(f"glassbox-{key}", value)
        except Exception:  # noqa: BLE001  (private mode, quota: not kept, nothing breaks)
            pass

    def reduced_motion(self) -> bool:
        return bool(self.window.matchMedia("(prefers-reduced-motion: reduce)").matches)

    def open_details(self, name: str) -> None:
        for element in self._each(name):
            element.open = True

    def show_popover(self, name: str) -> None:
        element = self.document.querySelector(selector(name))
        if element is not None:
            try:
                element.showPopover()
            except Exception:  # noqa: BLE001  (already open, or no popover support)
                pass

    def hide_popovers(self) -> None:
        try:
            for element in self._each_css(".weights-pop:popover-open"):
                element.hidePopover()
        except Exception:  # noqa: BLE001  (a browser without :popover-open)
            pass

    def highlight(self, name: str | None) -> None:
        if self._highlighted is not None:
            self._highlighted.removeAttribute("data-tour-active")
            self._highlighted = None
        if not name:
            return
        element = self.document.querySelector(selector(name))
        if element is None:
            return
        element.setAttribute("data-tour-active", "true")
        self._highlighted = element
        behavior = "auto" if self.reduced_motion() else "smooth"
        tall = float(element.getBoundingClientRect().height) > 0.6 * float(self.window.innerHeight)
        narrow = float(self.window.innerWidth) <= 600  # the tour is a bottom sheet there: keep the target above it
        element.scrollIntoView(to_js({"block": "start" if tall or narrow else "center", "behavior": behavior},
                                     dict_converter=js.Object.fromEntries))

    # ----- events -------------------------------------------------------------------------------
    def _dataset(self, element) -> dict:
        return {str(k): str(v) for k, v in (tuple(e) for e in js.Object.entries(element.dataset))}

    def _dispatch(self, element, value: str = "") -> None:
        action = str(element.getAttribute("data-action"))
        try:
            self.explainer.handle(action, value, self._dataset(element))
        except Exception as exc:  # noqa: BLE001  (an event must never take the page down)
            self.explainer._fail(exc)

    def _on_click(self, event) -> None:
        target = event.target
        element = target.closest("[data-action]")
        if (target.matches("canvas[data-heat]") or target.matches('[data-testid="attention-cell"]')) \
                and (element is None or element == target):
            self._read_cell(event, tapped=True)  # a tap reads the cell under the finger
            return
        if element is None and target.closest("svg") is not None:
            # SVG pictures (the map's ribbons, histogram bars) say what they are in a <title>,
            # which a mouse shows on hover but a finger never sees: a tap shows it as a tooltip.
            title = target.querySelector(":scope > title")
            if title is not None:
                self.show_tooltip(str(title.textContent), float(event.clientX), float(event.clientY))
                return
        if element is None or element.tagName in ("SELECT", "INPUT", "TEXTAREA"):
            return
        action = str(element.getAttribute("data-action"))
        value = ""
        if action == "run":
            value = str(self.document.getElementById("prompt").value)
        elif action == "console-run":
            value = str(self.document.getElementById("console-input").value)
        self._dispatch(element, value)

    def _on_change(self, event) -> None:
        element = event.target
        if element.tagName == "SELECT" and element.hasAttribute("data-action"):
            self._dispatch(element, str(element.value))

    def _on_input(self, event) -> None:
        element = event.target
        if element.tagName in ("INPUT", "TEXTAREA") and element.hasAttribute("data-action"):
            self._dispatch(element, str(element.value))

    def _on_keydown(self, event) -> None:
        target = event.target
        key = str(event.key)
        if target.id == "prompt" and key == "Enter" and not event.shiftKey and not event.isComposing:
            event.preventDefault()
            self.explainer.handle("run", str(target.value))
            return
        if target.id == "console-input" and key == "Enter" and (event.ctrlKey or event.metaKey):
            event.preventDefault()
            self.explainer.handle("console-run", str(target.value))
            return
        if key == "Escape":
            self.hide_tooltip()
            if self.explainer.tour_index is not None:
                self.explainer.handle("tour-end")
            return
        if key in ARROWS and (target.matches("canvas[data-heat]") or target.matches("svg[data-grid]")):
            event.preventDefault()
            self._move_cursor(target, *ARROWS[key])
            return
        if key == "Enter" and target.matches("canvas[data-heat][data-action]"):
            key_name = str(target.getAttribute("data-heat"))
            if key_name in self.heats:
                event.preventDefault()
                r, c = self.cursors.get(key_name, (0, 0))
                self._dispatch(target, f"{r},{c}")
            return
        if key in ("Enter", " ") and target.hasAttribute("data-action") and target.getAttribute("role") == "button" \
                and target.tagName not in ("BUTTON", "A"):
            event.preventDefault()
            self._dispatch(target)

    # ----- tooltips and map cursors ----------------------------------------------------------
    def _tooltip(self):
        return self.document.getElementById("tooltip")

    def show_tooltip(self, text: str, x: float, y: float, qk: tuple[int, int] | None = None) -> None:
        tip = self._tooltip()
        if tip is None:
            return
        tip.textContent = text
        if qk is None:
            tip.removeAttribute("data-q")
            tip.removeAttribute("data-k")
        else:
            tip.setAttribute("data-q", str(qk[0]))
            tip.setAttribute("data-k", str(qk[1]))
        tip.hidden = False
        width = float(self.window.innerWidth)
        tip_w = float(tip.offsetWidth)
        left = min(max(4.0, x + 14), max(4.0, width - tip_w - 4))
        top = y + 16
        if top + float(tip.offsetHeight) > float(self.window.innerHeight) - 4:
            top = y - float(tip.offsetHeight) - 10
        tip.style.left = f"{left:.0f}px"
        tip.style.top = f"{max(top, 4):.0f}px"

    def hide_tooltip(self, cursor: bool = False) -> None:
        tip = self._tooltip()
        if tip is not None:
            tip.hidden = True
        if cursor:
            mark = self.document.getElementById("cell-cursor")
            if mark is not None:
                mark.hidden = True

    def _announce(self, text: str) -> None:
        live = self.document.getElementById("live")
        if live is not None:
            live.textContent = text

    def _cell_text(self, cell) -> str:
        """Hover text of an attention cell, from its attributes and the tokens."""
        tokens = self.explainer.tokens
        q, k = int(cell.getAttribute("data-q")), int(cell.getAttribute("data-k"))
        value = float(cell.getAttribute("data-value"))
        qt = token_label(tokens[q]) if q < len(tokens) else ""
        kt = token_label(tokens[k]) if k < len(tokens) else ""
        if cell.getAttribute("data-masked") == "true":
            return f"query {q} ‘{qt}’ → key {k} ‘{kt}’: masked (a future token), weight 0"
        return f"query {q} ‘{qt}’ → key {k} ‘{kt}’: attention {value:.5g}"

    def _heat_cell(self, canvas, heat: Heat, x: float, y: float) -> tuple[int, int]:
        """The (row, col) of a heat map under viewport point (x, y): from the canvas's box on
        screen (its CSS size, borders excluded), whatever its pixel size or the device's ratio."""
        rows, cols = heat.shape
        rect = canvas.getBoundingClientRect()
        left = float(rect.left) + float(canvas.clientLeft)
        top = float(rect.top) + float(canvas.clientTop)
        w, h = float(canvas.clientWidth) or 1.0, float(canvas.clientHeight) or 1.0
        c = min(cols - 1, max(0, int((x - left) / w * cols)))
        r = min(rows - 1, max(0, int((y - top) / h * rows)))
        return r, c

    def _read_cell(self, event, tapped: bool = False) -> None:
        """Tooltip (and Q/K row marks) for the map cell or attention cell under the pointer."""
        target = event.target
        x, y = float(event.clientX), float(event.clientY)
        if target.matches("canvas[data-heat]"):
            heat = self.heats.get(str(target.getAttribute("data-heat")))
            if heat is None:
                return
            r, c = self._heat_cell(target, heat, x, y)
            if tapped and target.hasAttribute("data-action"):
                self._dispatch(target, f"{r},{c}")  # may redraw the window; the marks follow
            qk = heat.cell_qk(r, c)
            self.show_tooltip(heat.describe(r, c), x, y, qk)
            self._mark(qk if heat.marks else None)
        elif target.matches('[data-testid="attention-cell"]'):
            qk = (int(target.getAttribute("data-q")), int(target.getAttribute("data-k")))
            self.show_tooltip(self._cell_text(target), x, y, qk)
            self._mark(qk)

    def _mark(self, qk: tuple[int, int] | None) -> None:
        """Light up the query's row in the Q map and the key's row in the K map (and their
        labels in the zoomed window); None clears the marks."""
        for old in self._each_css(".qlabel.hl, .klabel.hl"):
            old.classList.remove("hl")
        for kind in ("q", "k"):
            mark = self.document.querySelector(f'[data-mark="{kind}"]')
            if mark is None:
                continue
            canvas = mark.parentElement.querySelector("canvas[data-heat]")
            heat = self.heats.get(str(canvas.getAttribute("data-heat"))) if canvas is not None else None
            if qk is None or heat is None:
                mark.hidden = True
                continue
            start = self.explainer.trace.start if self.explainer.trace is not None else 0
            row = (qk[0] if kind == "q" else qk[1]) - start
            rows = heat.shape[0]
            height = float(canvas.clientHeight) / max(rows, 1)
            mark.style.top = f"{row * height:.1f}px"
            mark.style.height = f"{max(height, 2):.1f}px"
            mark.hidden = not 0 <= row < rows
            box = mark.closest(".map-body")  # a long map scrolls in its box: bring the row into it
            if box is not None and not mark.hidden:
                box.scrollTop = max(0.0, row * height - float(box.clientHeight) / 2)
        if qk is not None:
            for cls, pos in (("qlabel", qk[0]), ("klabel", qk[1])):
                for label in self._each_css(f'svg[data-grid] .{cls}[data-{cls[0]}="{pos}"]'):
                    label.classList.add("hl")
            tokens = self.explainer.tokens
            start = self.explainer.trace.start if self.explainer.trace is not None else 0
            qt, kt = (token_label(tokens[p - start]) if 0 <= p - start < len(tokens) else "" for p in qk)
            for line in self._each_css('[data-testid="attention-selection"]'):
                line.textContent = (f"Query {qk[0]} ‘{qt}’ reads key {qk[1]} ‘{kt}’: their rows are marked in the "
                                    f"Q and K maps above.")

    def _each_css(self, css: str):
        return self.document.querySelectorAll(css)

    def _on_pointer(self, event) -> None:
        target = event.target
        if target.matches("canvas[data-heat]") or target.matches('[data-testid="attention-cell"]'):
            self._read_cell(event)
        elif not target.matches("#tooltip"):
            self.hide_tooltip()

    def _on_leave(self, event) -> None:
        if str(getattr(event, "pointerType", "")) == "touch":
            return  # a finger lifting is not a pointer leaving: keep the tapped cell's tooltip
        self.hide_tooltip()

    def _on_focus(self, event) -> None:
        target = event.target
        if target.matches("canvas[data-heat]") or target.matches("svg[data-grid]"):
            self._move_cursor(target, 0, 0)

    def _on_blur(self, event) -> None:
        target = event.target
        if target.matches("canvas[data-heat]") or target.matches("svg[data-grid]"):
            self.hide_tooltip()
            cursor = self.document.getElementById("cell-cursor")
            if cursor is not None:
                cursor.hidden = True
            mark = target.querySelector(".grid-cursor") if target.matches("svg[data-grid]") else None
            if mark is not None:
                mark.setAttribute("visibility", "hidden")

    def _move_cursor(self, target, dr: int, dc: int) -> None:
        if target.matches("canvas[data-heat]"):
            key = str(target.getAttribute("data-heat"))
            heat = self.heats.get(key)
            if heat is None:
                return
            rows, cols = heat.shape
            r, c = self.cursors.get(key, (0, 0))
            r, c = min(max(r + dr, 0), rows - 1), min(max(c + dc, 0), cols - 1)
            self.cursors[key] = (r, c)
            rect = target.getBoundingClientRect()
            cw, ch = float(rect.width) / cols, float(rect.height) / rows
            x, y = float(rect.left) + c * cw, float(rect.top) + r * ch
            cursor = self.document.getElementById("cell-cursor")
            if cursor is not None:
                cursor.hidden = False
                cursor.style.left = f"{x - 2:.1f}px"
                cursor.style.top = f"{y - 2:.1f}px"
                cursor.style.width = f"{max(cw, 3) + 4:.1f}px"
                cursor.style.height = f"{max(ch, 3) + 4:.1f}px"
            text = heat.describe(r, c)
            qk = heat.cell_qk(r, c)
            self.show_tooltip(text, x + cw, y + ch, qk)
            self._mark(qk if heat.marks else None)
            self._announce(text)
            return
        # the zoomed window of the attention matrix: cells are elements (absolute positions)
        start = int(target.getAttribute("data-start"))
        r0, c0 = start + int(target.getAttribute("data-r0")), start + int(target.getAttribute("data-c0"))
        r1, c1 = r0 + int(target.getAttribute("data-rows")) - 1, c0 + int(target.getAttribute("data-cols")) - 1
        key = f"grid.{target.getAttribute('data-layer')}.{target.getAttribute('data-head')}"
        q, k = self.cursors.get(key, (r1, c0))
        q, k = min(max(q + dr, r0), r1), min(max(k + dc, c0), c1)
        self.cursors[key] = (q, k)
        cell = target.querySelector(f'[data-q="{q}"][data-k="{k}"]')
        if cell is None:
            return
        mark = target.querySelector(".grid-cursor")
        if mark is not None:
            for name in ("x", "y", "width", "height"):
                mark.setAttribute(name, cell.getAttribute(name))
            mark.setAttribute("visibility", "visible")
        rect = cell.getBoundingClientRect()
        text = self._cell_text(cell)
        self.show_tooltip(text, float(rect.right), float(rect.bottom), (q, k))
        self._mark((q, k))
        self._announce(text)
