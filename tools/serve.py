#!/usr/bin/env python3
"""Glassbox's development server: the repository as a static site, on 127.0.0.1.

    python3 tools/serve.py [--host 127.0.0.1] [--port 8000] [--root .] [--no-isolation]

What any static host must do for Glassbox is what this server does: serve the files with
the MIME types in ``MIME_TYPES`` (above all ``.wasm`` as application/wasm and ``.mjs``/``.js``
as text/javascript). ``Cache-Control: no-cache`` here makes the browser revalidate every file
(cheap 304s), so edits show on reload.

Cross-origin isolation (issue 16): by default every response carries
``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy: credentialless``,
so the page is cross-origin isolated (``crossOriginIsolated``). Glassbox does not depend on it
(a host without these headers works the same, and sw.js adds them to the responses it serves
from its cache from the second visit on); what it removes is Chrome's deprecation report
"SharedArrayBuffer will require cross-origin isolation", which Pyodide's runtime raises at
start outside isolation (Lighthouse's best-practices audit counts it). Everything the page
loads is same-origin or a CORS fetch (Hub models), which either COEP value allows. COEP
``credentialless`` rather than ``require-corp``: the two differ only for cross-origin no-cors
requests, and the page makes one, the Hub loader's probe that tells "answered without CORS
headers" from "did not answer" (py/app/hub_loader.py); require-corp would block its answer
(no ``Cross-Origin-Resource-Policy``), credentialless lets it through without cookies. A
browser that does not know ``credentialless`` treats the page as not isolated, which it
tolerates. ``--no-isolation`` leaves both headers out (what a
plain static host does on a first visit).

One addition for benchmarks: ``POST /bench-results?name=NAME`` with a JSON body writes it to
``bench/raw/NAME.json`` under the root (a page can report its timings from any machine).
And one for the service worker: ``GET /sw-precache.js`` is computed from the files as they
are now (tools/precache.py), so an edited file reaches the page as an offline-copy update
instead of staying hidden behind a stale list; a static host serves the generated file.

What it refuses (every request gets an HTTP answer, and the server keeps serving): anything
but a regular file inside the root (a symlink that resolves outside it is 404), directory
listings (a folder serves its index.html or 404), dotfiles and dot-folders (``.git``,
``.venv``, ``.cache``: 404), malformed paths (NUL or control bytes, bad percent-escapes,
``..``: 400), and for the POST endpoint a missing (411), malformed (400) or too large (413)
``Content-Length``, a body shorter than announced, and a body that is not JSON, holds NaN or
infinity, or nests deeper than MAX_JSON_DEPTH (400).

Precompressed copies (issue 16): when tools/compress.py (``make vendor``) has written
``NAME.br`` / ``NAME.gz`` beside a file and the request's ``Accept-Encoding`` allows it
(brotli preferred), the copy is sent with ``Content-Encoding``, the ORIGINAL's Content-Type
and ``Vary: Accept-Encoding``; a copy is used only while its mtime equals the original's (the
mark compress.py leaves), so an edited file is never shadowed by a stale copy. A request with
a ``Range`` header gets the original (this server answers ranges with the whole file, 200).
The copies themselves are served too when asked for by name.

Tests import ``make_server(root, host, port)`` and run it in a thread on a free port.
Standard library only.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import re
import sys
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from precache import Live  # tools/precache.py (this folder is on sys.path: script or tests)

ROOT = Path(__file__).resolve().parent.parent

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".wgsl": "text/plain; charset=utf-8",
    ".py": "text/plain; charset=utf-8",
    ".toml": "text/plain; charset=utf-8",
    ".bpe": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".safetensors": "application/octet-stream",
    ".bin": "application/octet-stream",
    ".so": "application/octet-stream",  # wasm/linear_i8.so (a WebAssembly side module)
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
}
# Cross-origin isolation (issue 16): sw.js adds the same pair to the responses it serves.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "credentialless",
}
BENCH_ENDPOINT = "/bench-results"
PRECACHE_PATH = "/sw-precache.js"
BENCH_DIR = Path("bench") / "raw"
BENCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_BENCH_BYTES = 16 << 20
MAX_JSON_DEPTH = 64  # bench reports nest a few levels; a deeper body is refused
BODY_TIMEOUT_S = 10  # a client that announces more bytes than it sends gets 400 after this
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Refused(Exception):
    """A request answered with an HTTP error: ``status`` and a short ``reason``."""

    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def site_path(root: Path, url_path: str) -> Path:
    """The regular file inside ``root`` that ``url_path`` (still percent-encoded) names, or
    the folder it names; raise Refused otherwise (see the module docstring)."""
    if not url_path.startswith("/"):
        raise Refused(HTTPStatus.BAD_REQUEST, "the path must start with /")
    if BAD_ESCAPE.search(url_path):
        raise Refused(HTTPStatus.BAD_REQUEST, "the path has a malformed %-escape")
    try:
        text = unquote(url_path, errors="strict")
    except UnicodeDecodeError:
        raise Refused(HTTPStatus.BAD_REQUEST, "the path's %-escapes are not UTF-8") from None
    if CONTROL.search(text):
        raise Refused(HTTPStatus.BAD_REQUEST, "the path holds NUL or control characters")
    parts = [part for part in text.split("/") if part]
    if any(part == ".." for part in parts):
        raise Refused(HTTPStatus.BAD_REQUEST, "the path climbs out with ..")
    if any(part.startswith(".") for part in parts):
        raise Refused(HTTPStatus.NOT_FOUND, "dotfiles and dot-folders are not served")
    root = root.resolve()
    try:
        real = root.joinpath(*parts).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise Refused(HTTPStatus.NOT_FOUND, "no such file") from None
    if real != root and root not in real.parents:
        raise Refused(HTTPStatus.NOT_FOUND, "no such file")  # a symlink out of the site
    if not (real.is_file() or real.is_dir()):
        raise Refused(HTTPStatus.NOT_FOUND, "no such file")
    return real


def json_depth(value) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iterative: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def accepted_encodings(header: str | None) -> set[str]:
    """The content codings an Accept-Encoding header allows (q > 0), lower case; '*' kept."""
    found = set()
    for item in (header or "").split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name.strip() and q > 0:
            found.add(name.strip().lower())
    return found


# (Content-Encoding, suffix of tools/compress.py's copy), best first.
PRECOMPRESSED = (("br", ".br"), ("gzip", ".gz"))


def precompressed(real: Path, accept: str | None) -> tuple[str | None, Path | None, bool]:
    """(coding, copy) of the best current precompressed copy of ``real`` that ``accept``
    allows, or (None, None); and whether any current copy exists (then the answer varies
    with Accept-Encoding)."""
    allowed = accepted_encodings(accept)
    try:
        mtime = real.stat().st_mtime_ns
    except OSError:
        return None, None, False
    varies = False
    for coding, suffix in PRECOMPRESSED:
        copy = real.with_name(real.name + suffix)
        try:
            current = copy.is_file() and copy.stat().st_mtime_ns == mtime
        except OSError:
            current = False
        varies |= current
        if current and (coding in allowed or "*" in allowed):
            return coding, copy, True
    return None, None, varies


class Handler(SimpleHTTPRequestHandler):
    """Static files with Glassbox's MIME types, no-cache, and the bench-results endpoint."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}
    quiet = False
    precache = None  # a tools/precache.Live for the root (make_server sets it)
    isolated = True  # send COOP/COEP (cross-origin isolation; off with --no-isolation)

    def send_head(self):
        url_path = urlsplit(self.path).path
        if self.precache is not None and url_path == PRECACHE_PATH:
            payload = self.precache().encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", MIME_TYPES[".js"])
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            return io.BytesIO(payload)
        try:
            real = site_path(Path(self.directory), url_path)
            if real.is_dir() and url_path.endswith("/"):
                real = site_path(Path(self.directory), url_path + "index.html")
                if not real.is_file():
                    raise Refused(HTTPStatus.NOT_FOUND, "no index.html here (folders are not listed)")
            elif real.is_file() and url_path.endswith("/"):
                raise Refused(HTTPStatus.NOT_FOUND, "no such folder")
        except Refused as refused:
            self.send_error(refused.status, refused.reason)
            return None
        self._checked = str(real)  # what translate_path answers for this request
        self._coding, self._vary, self._type = None, False, None
        if real.is_file() and "Range" not in self.headers:
            coding, copy, self._vary = precompressed(real, self.headers.get("Accept-Encoding"))
            if copy is not None:
                self._checked, self._coding, self._type = str(copy), coding, self.guess_type(str(real))
        return super().send_head()

    def guess_type(self, path):
        # A precompressed copy is sent with its original's type (send_head sets _type).
        return getattr(self, "_type", None) or super().guess_type(path)

    def send_response(self, code, message=None):
        self._status = code
        super().send_response(code, message)

    def translate_path(self, path: str) -> str:
        # Only send_head's checked path is ever served; anything else names no file (404).
        checked, self._checked = getattr(self, "_checked", None), None
        return checked or str(Path(self.directory) / "unchecked-path" / "none")

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND, "folders are not listed")
        return None

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        if getattr(self, "_vary", False):
            self.send_header("Vary", "Accept-Encoding")
            if self._coding and getattr(self, "_status", None) == HTTPStatus.OK:
                self.send_header("Content-Encoding", self._coding)
        self._coding, self._vary, self._type = None, False, None
        if self.isolated:
            for name, value in ISOLATION_HEADERS.items():
                self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (base-class signature)
        if not self.quiet:
            super().log_message(format, *args)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != BENCH_ENDPOINT:
            self.send_error(HTTPStatus.NOT_FOUND, "only POST /bench-results is accepted")
            return
        name = parse_qs(url.query).get("name", [""])[0]
        if not BENCH_NAME.fullmatch(name):
            self.reply_json(HTTPStatus.BAD_REQUEST,
                            {"error": "need ?name= of letters, digits, '.', '_' or '-'"})
            return
        try:
            data = self.read_json_body()
        except Refused as refused:
            self.close_connection = True  # the unread rest of a body must not become a request
            self.reply_json(refused.status, {"error": refused.reason})
            return
        target = Path(self.directory) / BENCH_DIR / f"{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        self.reply_json(HTTPStatus.CREATED, {"written": f"{BENCH_DIR.as_posix()}/{name}.json"})

    def read_json_body(self):
        """The request's JSON body, or Refused with a 4xx and a short reason."""
        header = self.headers.get("Content-Length")
        if header is None:
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if not header.strip().isdigit():
            raise Refused(HTTPStatus.BAD_REQUEST, f"Content-Length must be a whole number, got {header[:40]!r}")
        length = int(header)
        if length == 0:
            raise Refused(HTTPStatus.BAD_REQUEST, f"body must be 1..{MAX_BENCH_BYTES} bytes of JSON, got none")
        if length > MAX_BENCH_BYTES:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body must be at most {MAX_BENCH_BYTES} bytes")
        self.connection.settimeout(BODY_TIMEOUT_S)
        try:
            body = self.rfile.read(length)
        except OSError:  # the timeout included
            body = b""
        if len(body) != length:
            raise Refused(HTTPStatus.BAD_REQUEST, f"body shorter than its Content-Length ({len(body)} of {length} bytes)")
        try:
            data = json.loads(body, parse_constant=_no_constants)
        except RecursionError:
            raise Refused(HTTPStatus.BAD_REQUEST, f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise Refused(HTTPStatus.BAD_REQUEST, f"body is not JSON: {str(exc)[:120]}") from None
        if json_depth(data) > MAX_JSON_DEPTH:
            raise Refused(HTTPStatus.BAD_REQUEST, f"body nests deeper than {MAX_JSON_DEPTH} levels")
        return data

    def reply_json(self, status: HTTPStatus, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A browser that drops a connection mid-transfer is normal, not a server error.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def make_server(root: Path | str = ROOT, host: str = "127.0.0.1", port: int = 8000,
                quiet: bool = False, isolated: bool = True) -> Server:
    """A bound (not yet serving) server for root; port 0 picks a free port (see .server_port)."""
    bound = type("BoundHandler", (Handler,), {"quiet": quiet, "precache": Live(Path(root)), "isolated": isolated})
    handler = partial(bound, directory=str(root))
    return Server((host, port), handler)


def serve_in_thread(root: Path | str = ROOT, host: str = "127.0.0.1", port: int = 0,
                    quiet: bool = True, isolated: bool = True) -> tuple[Server, threading.Thread]:
    """Start a server in a daemon thread; stop it with server.shutdown()."""
    server = make_server(root, host, port, quiet, isolated)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="glassbox-serve", daemon=True)
    thread.start()
    return server, thread


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Serve Glassbox for development.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    isolation = parser.add_mutually_exclusive_group()
    isolation.add_argument("--no-isolation", dest="isolated", action="store_false",
                           help="leave out COOP/COEP (the page then is not cross-origin isolated; it still works)")
    isolation.add_argument("--isolated", dest="isolated", action="store_true",
                           help="send COOP same-origin and COEP credentialless (the default)")
    parser.set_defaults(isolated=True)
    args = parser.parse_args(argv)
    try:
        server = make_server(args.root, args.host, args.port, args.quiet, args.isolated)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"serve: port {args.port} on {args.host} is already in use; "
                  f"choose another with --port (make serve PORT=...)", file=sys.stderr)
            return 2
        print(f"serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"Glassbox: serving {args.root} at http://{host}:{port}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
