"""Precompressed copies (tools/compress.py) and how tools/serve.py sends them (issue 16).

The copies beside the served files must decode to exactly the originals whose sha256 the
service worker's list (sw-precache.js) holds; the dev server must pick br, then gzip, by the
request's Accept-Encoding, keep the original's Content-Type, say Vary, and fall back to the
original for Range requests, for clients that accept neither, and for stale copies.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

import brotli
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import compress  # noqa: E402
import precache  # noqa: E402
import serve  # noqa: E402

DECODE = {".br": brotli.decompress, ".gz": gzip.decompress}
WASM = "vendor/pyodide/pyodide.asm.wasm"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----- the copies in this checkout ----------------------------------------------------------

def test_every_copy_decodes_to_the_original_listed_in_the_precache():
    """Each .br/.gz beside a precached file decodes to the bytes whose sha256 sw-precache.js
    lists, and each beside a model file to that file's bytes; none is missing or stale."""
    target = ROOT / precache.OUTPUT
    assert target.is_file(), "sw-precache.js is missing: run make vendor"
    listed = precache.parse(target.read_text(encoding="utf-8"))["files"]
    assert compress.stale(ROOT) == [], "stale or missing compressed copies: run python3 tools/compress.py"
    checked = 0
    for rel in compress.candidates(ROOT):
        original = ROOT / rel
        for copy in compress.copy_paths(original):
            if not copy.exists():
                continue
            decoded = DECODE[copy.suffix](copy.read_bytes())
            expected = listed.get(rel) or sha256(original.read_bytes())
            assert sha256(decoded) == expected, f"{copy.relative_to(ROOT)} does not decode to {rel}"
            assert copy.stat().st_size < original.stat().st_size
            checked += 1
    assert (ROOT / (WASM + ".br")).is_file() and (ROOT / (WASM + ".gz")).is_file()
    assert checked > 40


def test_copies_are_not_listed_for_offline_use():
    assert not [p for p in precache.wanted_paths(ROOT) if p.endswith((".br", ".gz"))]


# ----- the tool -------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    """A small site: compressible text and wasm, an incompressible model file, a tiny file."""
    (tmp_path / "web").mkdir()
    (tmp_path / "weights" / "m").mkdir(parents=True)
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>" + "<p>glassbox</p>" * 400)
    (tmp_path / "web" / "app.css").write_text("body { margin: 0 }\n" * 200)
    (tmp_path / "web" / "tiny.js").write_text("x = 1\n")
    (tmp_path / "weights" / "m" / "model.safetensors").write_bytes(os.urandom(8000))
    (tmp_path / "weights" / "m" / "manifest.json").write_text('{"a": [' + "0, " * 1000 + "0]}")
    return tmp_path


def test_compress_writes_reproducible_copies_and_skips_what_does_not_shrink(tree):
    sizes = compress.compress(tree, log=lambda _line: None)
    assert set(sizes) == {"index.html", "web/app.css", "weights/m/model.safetensors",
                          "weights/m/manifest.json"}  # tiny.js is under MIN_BYTES
    assert sizes["weights/m/model.safetensors"][1:] == (None, None)  # random bytes: served as is
    assert not (tree / "weights" / "m" / "model.safetensors.br").exists()
    page = (tree / "index.html").read_bytes()
    br, gz = (tree / "index.html.br").read_bytes(), (tree / "index.html.gz").read_bytes()
    assert brotli.decompress(br) == page and gzip.decompress(gz) == page
    assert gz == compress.gzip_bytes(page) and gz[4:8] == b"\0\0\0\0"  # mtime 0: same bytes anywhere
    assert (tree / "index.html.br").stat().st_mtime_ns == (tree / "index.html").stat().st_mtime_ns
    assert compress.stale(tree) == [] and compress.main(["--root", str(tree), "--check"]) == 0


def test_an_edited_original_makes_its_copies_stale_until_rerun(tree):
    compress.compress(tree, log=lambda _line: None)
    css = tree / "web" / "app.css"
    css.write_text("body { margin: 1px }\n" * 200)
    os.utime(css, ns=(css.stat().st_atime_ns, css.stat().st_mtime_ns + 10**9))
    assert compress.stale(tree) == ["web/app.css"]
    assert compress.main(["--root", str(tree), "--check"]) == 1
    compress.compress(tree, log=lambda _line: None)
    assert brotli.decompress((tree / "web" / "app.css.br").read_bytes()) == css.read_bytes()
    assert compress.stale(tree) == []


def test_a_changed_original_with_its_old_mtime_is_caught_by_decoding(tree):
    """npm extracts every file with one fixed date: a new version can keep the old mtime."""
    compress.compress(tree, log=lambda _line: None)
    page = tree / "index.html"
    stamp = page.stat().st_mtime_ns
    page.write_text("<!doctype html><title>v2</title>" + "<p>changed</p>" * 400)
    os.utime(page, ns=(stamp, stamp))
    assert compress.stale(tree) == ["index.html"]
    compress.compress(tree, log=lambda _line: None)
    assert gzip.decompress((tree / "index.html.gz").read_bytes()) == page.read_bytes()
    assert compress.stale(tree) == []


def test_a_missing_copy_of_text_is_stale(tree):
    compress.compress(tree, log=lambda _line: None)
    (tree / "index.html.gz").unlink()
    (tree / "index.html.br").unlink()
    assert compress.stale(tree) == ["index.html"]


# ----- the server -----------------------------------------------------------------------------

@pytest.fixture
def served(tree):
    compress.compress(tree, log=lambda _line: None)
    server, _ = serve.serve_in_thread(tree)
    yield tree, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str, method: str = "GET", **headers):
    request = urllib.request.Request(url, method=method, headers=headers)
    with urllib.request.urlopen(request) as response:
        return response.status, response.headers, response.read()


@pytest.mark.parametrize("accept, coding", [
    ("gzip, deflate, br, zstd", "br"),
    ("gzip", "gzip"),
    ("br;q=0, gzip;q=0.5", "gzip"),
    ("*", "br"),
    ("identity", None),
    ("", None),
])
def test_server_picks_the_copy_the_client_accepts(served, accept, coding):
    tree, base = served
    original = (tree / "index.html").read_bytes()
    status, headers, body = get(f"{base}/index.html", **({"Accept-Encoding": accept} if accept else {}))
    assert status == 200 and headers.get_content_type() == "text/html"
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Encoding"] == coding
    assert int(headers["Content-Length"]) == len(body)
    decoded = {"br": brotli.decompress, "gzip": gzip.decompress, None: bytes}[coding](body)
    assert decoded == original


def test_head_matches_get_and_range_gets_the_original(served):
    tree, base = served
    _, got, body = get(f"{base}/web/app.css", **{"Accept-Encoding": "br"})
    status, head, empty = get(f"{base}/web/app.css", "HEAD", **{"Accept-Encoding": "br"})
    assert status == 200 and empty == b"" and head["Content-Encoding"] == "br"
    assert head["Content-Length"] == got["Content-Length"] == str(len(body))
    assert head.get_content_type() == "text/css"
    _, ranged, whole = get(f"{base}/web/app.css", **{"Accept-Encoding": "br", "Range": "bytes=0-9"})
    assert ranged["Content-Encoding"] is None and whole == (tree / "web" / "app.css").read_bytes()


def test_server_never_sends_a_stale_copy(served):
    tree, base = served
    css = tree / "web" / "app.css"
    css.write_text("p { color: red }\n" * 300)
    os.utime(css, ns=(css.stat().st_atime_ns, css.stat().st_mtime_ns + 10**9))
    _, headers, body = get(f"{base}/web/app.css", **{"Accept-Encoding": "br, gzip"})
    assert headers["Content-Encoding"] is None and body == css.read_bytes()


def test_files_without_copies_have_no_vary(served):
    _, base = served
    _, headers, body = get(f"{base}/web/tiny.js", **{"Accept-Encoding": "br"})
    assert headers["Content-Encoding"] is None and headers["Vary"] is None and body == b"x = 1\n"
    _, headers, _ = get(f"{base}/weights/m/model.safetensors", **{"Accept-Encoding": "br"})
    assert headers["Content-Encoding"] is None
