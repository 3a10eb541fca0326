"""Training corpus for the embedded default model: English prose from the Python documentation.

Source: the Debian 12 package ``python3.11-doc`` (the Python 3.11 documentation as HTML, PSF
License Agreement; see the package's copyright file and ``html/license.html``). The ``.deb`` is
fetched with ``apt-get download`` into a cache folder (``build/corpus/`` by default) and its
sha256 is checked against the pinned value below on every run, so a re-run either reproduces
the same text exactly or stops with a clear message.

What is kept: the text of ``<p>`` elements inside the main body of each page (Sphinx's
``div role="main"``) from the tutorial, howto, library and language reference, FAQ, glossary,
"What's New", "Using Python" and installing guides. What is dropped: code (``<pre>`` blocks,
doctest sessions), tables, tables of contents, navigation bars, sidebars, footers, headings,
admonition titles, rubrics, footnote markers, the index/search/contents pages, the C API and
extending guides (mostly C) and the changelog (a list of issue numbers). A paragraph survives
only if it looks like prose (enough words, mostly letters, no shell/REPL prompt), and only at
its first occurrence (pages in sorted path order), which drops boilerplate repeated across
pages and keeps it from leaking into the held-out pages. Inline code
inside a sentence (``the open() function``) stays: it is part of the sentence.

Typography is normalised to ASCII where GPT-2 users type ASCII: curly quotes become straight
quotes, the ellipsis becomes "...", dashes stay as they are, non-breaking spaces become spaces.

Split: a document (one HTML page) is held out when the first 8 hex digits of
sha256(relative path) are 0 modulo 20 (about 5% of pages), so the split does not depend on the
order in which files are listed or on anything but the page's path.

Run ``python tools/corpus.py`` to (re)build ``build/corpus/{train,heldout}.txt`` and
``build/corpus/corpus.json``; ``tools/train.py`` calls :func:`build_corpus` itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

from vendor import sha256_file  # tools/vendor.py (this script's folder is on sys.path)

PACKAGE = "python3.11-doc"
VERSION = "3.11.2-6+deb12u9"
DEB_NAME = "python3.11-doc_3.11.2-6+deb12u9_all.deb"
DEB_SHA256 = "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be"
LICENSE = "PSF License Agreement (Python 3.11 documentation); code snippets also 0BSD"
HTML_ROOT = "usr/share/doc/python3.11/html"

# Sections (first path component under html/) that are read; files directly under html/ are
# read only when listed in TOP_LEVEL.
SECTIONS = ("tutorial", "howto", "library", "reference", "faq", "whatsnew", "using", "installing")
TOP_LEVEL = ("glossary.html",)
SKIP_FILES = {"whatsnew/changelog.html"}

HELDOUT_MODULUS = 20  # 1 page in 20, about 5%

MIN_WORDS = 8
MIN_LETTER_FRACTION = 0.72

# Containers whose text never counts as prose (matched on tag or on class words).
_SKIP_TAGS = {"pre", "table", "script", "style", "nav", "footer", "h1", "h2", "h3", "h4", "h5",
              "h6", "dt", "caption", "figure", "math"}
_SKIP_CLASSES = {"headerlink", "footnote-reference", "linenos", "admonition-title", "rubric",
                 "toctree-wrapper", "contents", "sphinxsidebar", "related", "footer",
                 "highlight", "doctest", "productionlist", "sig", "citation", "footnote",
                 "seealso", "topic", "field-list", "option-list",
                 "audit-hook", "impl-detail-title", "mathjax", "math"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
         "source", "track", "wbr"}

_TRANSLATE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\u2026": "...", "\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u200b": "",
    "\u00b6": "",  # pilcrow from permalinks
})


class _ProseParser(HTMLParser):
    """Collects the text of <p> elements inside div[role=main], outside skipped containers."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, is_main, is_skip)
        self.main_depth = 0
        self.skip_depth = 0
        self.in_p = False
        self.buf: list[str] = []
        self.paragraphs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        is_main = tag == "div" and a.get("role") == "main"
        is_skip = tag in _SKIP_TAGS or bool(classes & _SKIP_CLASSES)
        if tag == "p" and self.in_p:  # an unclosed <p> (never in Sphinx output, but be safe)
            self._end_p()
        self.stack.append((tag, is_main, is_skip))
        self.main_depth += is_main
        self.skip_depth += is_skip
        if tag == "p" and self.main_depth and not self.skip_depth:
            self.in_p = True
            self.buf = []

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        # Pop to the matching open tag (tolerates unclosed inline tags).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                break
        else:
            return
        while len(self.stack) > i:
            t, is_main, is_skip = self.stack.pop()
            if t == "p" and self.in_p:
                self._end_p()
            self.main_depth -= is_main
            self.skip_depth -= is_skip

    def handle_data(self, data):
        if self.in_p and not self.skip_depth:
            self.buf.append(data)

    def _end_p(self):
        self.in_p = False
        self.paragraphs.append("".join(self.buf))
        self.buf = []


def normalize(text: str) -> str:
    """NFC, ASCII quotes, collapsed whitespace."""
    text = unicodedata.normalize("NFC", text).translate(_TRANSLATE)
    return re.sub(r"\s+", " ", text).strip()


_PROMPT = re.compile(r"^(>>>|\.\.\.|\$ |% |C:\\|#!)")


def is_prose(p: str) -> bool:
    """A paragraph that reads as sentences, not as code, a list of names or a heading."""
    words = p.split()
    if len(words) < MIN_WORDS or _PROMPT.match(p):
        return False
    nonspace = [c for c in p if not c.isspace()]
    letters = sum(c.isalpha() for c in nonspace)
    if letters < MIN_LETTER_FRACTION * len(nonspace):
        return False
    if not re.search(r"[.!?:)\"']$", p):
        return False
    # Mostly ASCII (the corpus is English; a few names with accents are fine).
    if sum(ord(c) > 127 for c in p) > 0.05 * len(p):
        return False
    return True


def extract_paragraphs(html: str) -> list[str]:
    parser = _ProseParser()
    parser.feed(html)
    parser.close()
    out = []
    for raw in parser.paragraphs:
        p = normalize(raw)
        if is_prose(p):
            out.append(p)
    return out


def is_heldout(relpath: str) -> bool:
    h = int(hashlib.sha256(relpath.encode("utf-8")).hexdigest()[:8], 16)
    return h % HELDOUT_MODULUS == 0


def fetch_deb(cache_dir: Path) -> Path:
    """The pinned .deb in cache_dir, downloading it with apt-get when absent; sha256 checked."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    deb = cache_dir / DEB_NAME
    if not deb.exists():
        print(f"corpus: apt-get download {PACKAGE}={VERSION} into {cache_dir}", file=sys.stderr)
        try:
            subprocess.run(["apt-get", "download", f"{PACKAGE}={VERSION}"], cwd=cache_dir,
                           check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(
                f"corpus: could not download {PACKAGE}={VERSION} with apt-get ({e}); place "
                f"{DEB_NAME} (sha256 {DEB_SHA256}) in {cache_dir} by hand") from e
    actual = sha256_file(deb)
    if actual != DEB_SHA256:
        raise SystemExit(f"corpus: {deb} has sha256 {actual}, expected {DEB_SHA256}; the "
                         f"package changed or the file is corrupt (delete it to re-download)")
    return deb


def extract_deb(deb: Path, cache_dir: Path) -> Path:
    root = cache_dir / "x"
    marker = root / ".extracted-sha256"
    if not (marker.exists() and marker.read_text().strip() == DEB_SHA256):
        subprocess.run(["rm", "-rf", str(root)], check=True)
        root.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        marker.write_text(DEB_SHA256 + "\n")
    return root / HTML_ROOT


def list_pages(html_root: Path) -> list[str]:
    pages = [p for p in TOP_LEVEL if (html_root / p).exists()]
    for section in SECTIONS:
        for f in (html_root / section).rglob("*.html"):
            rel = f.relative_to(html_root).as_posix()
            if rel not in SKIP_FILES and not f.is_symlink():
                pages.append(rel)
    return sorted(pages)


def build_corpus(cache_dir: str | Path = "build/corpus") -> dict:
    """Fetch, check, extract and split. Returns {'train': [...], 'heldout': [...], 'meta': {...}}
    where each list holds (relpath, text) pairs, text being paragraphs joined by blank lines."""
    cache_dir = Path(cache_dir)
    deb = fetch_deb(cache_dir)
    html_root = extract_deb(deb, cache_dir)
    train, heldout = [], []
    n_par = n_dup = 0
    seen: set[str] = set()
    for rel in list_pages(html_root):
        paragraphs = []
        for p in extract_paragraphs((html_root / rel).read_text(encoding="utf-8")):
            if p in seen:  # boilerplate repeated across pages ("Changed in version 3.6: ...")
                n_dup += 1
                continue
            seen.add(p)
            paragraphs.append(p)
        if not paragraphs:
            continue
        n_par += len(paragraphs)
        (heldout if is_heldout(rel) else train).append((rel, "\n\n".join(paragraphs)))
    text_hash = hashlib.sha256()
    for rel, text in train + heldout:
        text_hash.update(rel.encode() + b"\0" + text.encode() + b"\0")
    meta = {
        "package": PACKAGE, "version": VERSION, "deb": DEB_NAME, "deb_sha256": DEB_SHA256,
        "license": LICENSE, "sections": list(SECTIONS) + list(TOP_LEVEL),
        "documents_train": len(train), "documents_heldout": len(heldout),
        "paragraphs": n_par, "duplicate_paragraphs_dropped": n_dup,
        "chars_train": sum(len(t) for _, t in train),
        "chars_heldout": sum(len(t) for _, t in heldout),
        "words_train": sum(len(t.split()) for _, t in train),
        "words_heldout": sum(len(t.split()) for _, t in heldout),
        "heldout_pages": [r for r, _ in heldout],
        "text_sha256": text_hash.hexdigest(),
    }
    return {"train": train, "heldout": heldout, "meta": meta}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache-dir", default="build/corpus")
    args = ap.parse_args(argv)
    c = build_corpus(args.cache_dir)
    out = Path(args.cache_dir)
    for split in ("train", "heldout"):
        with open(out / f"{split}.txt", "w", encoding="utf-8") as f:
            for rel, text in c[split]:
                f.write(f"### {rel}\n{text}\n\n")
    (out / "corpus.json").write_text(json.dumps(c["meta"], indent=2) + "\n")
    print(json.dumps({k: v for k, v in c["meta"].items() if k != "heldout_pages"}, indent=2))


if __name__ == "__main__":
    main()
