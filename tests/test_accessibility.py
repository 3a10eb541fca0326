"""The HTML the views generate, checked in CPython for the WCAG rules axe enforces in the browser
(issue 16; tests/e2e/test_axe.py runs axe-core itself on the page):

- every control's accessible name contains its visible text (label-content-name-mismatch);
- a role-less <pre> carries no aria-label (aria-prohibited-attr);
- a role="grid" owns rows that own cells (aria-required-children);
- a box that scrolls is focusable and named (scrollable-region-focusable);
- numbers on heat-map cells have >= 4.5:1 contrast on every colour (color-contrast).
"""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from app.console import run_code
from app.explainer import Explainer
from app.views.common import contrast, diverging, text_on, viridis
from test_explainer import FakeUI, model  # noqa: F401  (the random-weight model fixture)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SVG_VOID = {"rect", "line", "path", "circle", "stop", "use", "ellipse", "polyline", "polygon"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self, visible_only: bool = False) -> str:
        if visible_only and (self.tag == "title" or self.attrs.get("aria-hidden") == "true" or "hidden" in self.attrs
                             or "visually-hidden" in self.attrs.get("class", "").split()):
            return ""
        return "".join(c if isinstance(c, str) else c.text(visible_only) for c in self.children)

    def walk(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.walk()


class Tree(HTMLParser):
    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root = self.at = Node("#root", {}, None)
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.at)
        self.at.children.append(node)
        if tag not in VOID:
            self.at = node

    def handle_startendtag(self, tag, attrs):
        self.at.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.at))

    def handle_endtag(self, tag):
        node = self.at
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.at = node.parent

    def handle_data(self, data):
        self.at.children.append(data)


def words(text: str) -> str:
    """Text as axe compares it: lower case, punctuation dropped, words single-spaced."""
    return " ".join(re.sub(r"[^\w\s␣]", "", text.lower()).split())


@pytest.fixture(scope="module")
def page_html(model):  # noqa: F811
    """The frame and every view of a run, with every view open."""
    ui = FakeUI()
    ui.reduced = True  # the derivation shows every stage at once instead of playing them
    ex = Explainer(ui, model, seed=0, namespace={}, run_code=run_code)
    ex.mount()
    asyncio.run(ex.start())
    ex.handle("open-all")
    ex.handle("derivation")
    return ui.frame + "".join(view.html for view in ui.slots.values())


def test_every_name_contains_the_visible_text(page_html):
    tree = Tree(page_html)
    checked, bad = 0, []
    for node in tree.root.walk():
        label = node.attrs.get("aria-label")
        interactive = node.tag in ("button", "a", "summary") or node.attrs.get("role") in ("button", "link")
        if label is None or not interactive:
            continue
        shown = words(node.text(visible_only=True))
        if len(shown.replace(" ", "")) < 2:  # an icon or a single letter: axe skips those too
            continue
        checked += 1
        if f" {shown} " not in f" {words(label)} ":  # whole words, as axe compares them
            bad.append(f"{node.tag} aria-label={label!r} shows {node.text(visible_only=True)!r}")
    assert checked >= 10, f"only {checked} labelled controls with text found: is the page empty?"
    assert not bad, "\n".join(bad)


def test_structure_rules(page_html):
    tree = Tree(page_html)
    nodes = list(tree.root.walk())
    pres = [n for n in nodes if n.tag == "pre" and "aria-label" in n.attrs and "role" not in n.attrs]
    assert not pres, [n.attrs for n in pres]
    grids = [n for n in nodes if n.attrs.get("role") == "grid"]
    assert grids, "the zoomed attention window is a grid"
    for grid in grids:
        rows = [n for n in grid.walk() if n.attrs.get("role") == "row"]
        assert len(rows) >= 2 and all(r.parent is grid for r in rows)
        for row in rows:
            cells = [c for c in row.children if isinstance(c, Node)]
            roles = {c.attrs.get("role") for c in cells}
            assert cells and roles <= {"gridcell", "rowheader", "columnheader"}, roles
        cells = [n for n in grid.walk() if n.attrs.get("role") == "gridcell"]
        assert all(c.attrs.get("aria-label") or c.text().strip() for c in cells)
    boxes = [n for n in nodes if "table-scroll" in n.attrs.get("class", "").split()]
    assert boxes
    for box in boxes:
        assert box.attrs.get("tabindex") == "0" and box.attrs.get("role") == "region" and box.attrs.get("aria-label")


def test_numbers_on_every_heat_colour_reach_aa_contrast():
    t = np.linspace(0, 1, 257)
    colours = [*viridis(t), *diverging(np.linspace(-1, 1, 257), 1.0),
               *np.random.default_rng(0).integers(0, 256, (2000, 3))]
    worst = min(contrast(c[:3], (0, 0, 0) if text_on(c) == "#000" else (255, 255, 255)) for c in colours)
    assert worst >= 4.5, worst
    # the WCAG formula itself: black on white is 21:1, a colour on itself 1:1
    assert contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast((85, 143, 195), (85, 143, 195)) == pytest.approx(1.0)
