"""index.html's head and fallbacks for search engines, link previews and browsers without
JavaScript (issue 16): a language, a title and a meta description of a useful length, a
<noscript> message that explains itself and hides the loading screen, and the stylesheet that
reserves the final layout while the page boots."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Head(HTMLParser):
    def __init__(self):
        super().__init__()
        self.lang, self.title, self.description, self.viewport = None, "", None, None
        self.styles: list[str] = []
        self.noscript, self.depth, self.in_title = "", 0, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "title":
            self.in_title = True
        elif tag == "meta" and a.get("name") in ("description", "viewport"):
            setattr(self, a["name"], a.get("content"))
        elif tag == "link" and a.get("rel") == "stylesheet":
            self.styles.append(a["href"])
        elif tag == "noscript":
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "noscript":
            self.depth -= 1
        elif tag == "title":
            self.in_title = False

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        if self.depth:
            self.noscript += data


def parsed() -> Head:
    head = Head()
    head.feed((ROOT / "index.html").read_text(encoding="utf-8"))
    return head


def test_language_title_and_description():
    head = parsed()
    assert head.lang == "en" and "Glassbox" in head.title
    assert head.viewport and "width=device-width" in head.viewport
    # Search engines show about 50-160 characters; it must say what the page is.
    assert head.description and 50 <= len(head.description) <= 200
    assert "GPT-2" in head.description and "browser" in head.description


def test_noscript_explains_and_hides_the_loading_screen():
    text = " ".join(parsed().noscript.split())
    assert "needs JavaScript" in text and "reload" in text
    assert "#status, #status-chip { display: none !important; }" in text  # no endless "Loading the page…"


def test_the_layout_stylesheet_comes_last():
    styles = parsed().styles
    assert styles[-1] == "./web/layout.css" and (ROOT / "web" / "layout.css").is_file()


class Intro(HTMLParser):
    """The text of the loading card's explanation (data-testid=status-intro) and its card."""

    def __init__(self):
        super().__init__()
        self.text, self.inside, self.card = "", False, None
        self.open: list[str | None] = []  # the id of each <section> open around the cursor

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.open.append(a.get("id"))
        if a.get("data-testid") == "status-intro":
            self.inside, self.card = True, (self.open[-1] if self.open else None)

    def handle_endtag(self, tag):
        if tag == "section" and self.open:
            self.open.pop()
        if tag == "p":
            self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.text += data


def test_the_loading_card_says_what_it_loads_from_the_first_paint():
    """Issue 16: the boot's seconds show, statically (painted with the first frame, so it is the
    first screen's largest element: Lighthouse's LCP), what is loading and what the page does.
    It sits in the status card, which the page hides once ready (tests/e2e/test_transfer.py
    checks in the browser that nothing painted later is larger)."""
    intro = Intro()
    intro.feed((ROOT / "index.html").read_text(encoding="utf-8"))
    text = " ".join(intro.text.split())
    assert intro.card == "status", "the explanation belongs to the loading card (#status)"
    assert len(text) > 400, text
    for word in ("Pyodide", "GPT-2", "WebGPU", "numpy", "live run"):
        assert word in text, f"{word!r} missing from the loading card's explanation: {text}"
