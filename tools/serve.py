#!/usr/bin/env python3
"""Glassbox's development server: the repository as a static site, on 127.0.0.1.

    python3 tools/serve.py [--host 127.0.0.1] [--port 8000] [--root .]

What any static host must do for Glassbox is what this server does: serve the files with
the MIME types in ``MIME_TYPES`` (above all ``.wasm`` as application/wasm and ``.mjs``/``.js``
as text/javascript). No other header is required: the app runs Python on the page's main
thread, so it needs no cross-origin isolation. ``Cache-Control: no-cache`` here makes the
browser revalidate every file (cheap 304s), so edits show on reload.

One addition for benchmarks: ``POST /bench-results?name=NAME`` with a JSON body writes it to
``bench/raw/NAME.json`` under the root (a page can report its timings from any machine).
And one for the service worker: ``GET /sw-precache.js`` is computed from the files as they
are now (tools/precache.py), so an edited file reaches the page as an offline-copy update
instead of staying hidden behind a stale list; a static host serves the generated file.

``--isolated`` adds ``Cross-Origin-Opener-Policy: same-origin`` and
``Cross-Origin-Embedder-Policy: require-corp`` to every response: the page is then
cross-origin isolated (``crossOriginIsolated``), which WebAssembly threads need
(SharedArrayBuffer). Glassbox does not need it; tools/bench_peer.py serves that way so the
peer's WASM backend can use 2 threads.

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
from urllib.parse import parse_qs, urlsplit

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
BENCH_ENDPOINT = "/bench-results"
PRECACHE_PATH = "/sw-precache.js"
BENCH_DIR = Path("bench") / "raw"
BENCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_BENCH_BYTES = 16 << 20


class Handler(SimpleHTTPRequestHandler):
    """Static files with Glassbox's MIME types, no-cache, and the bench-results endpoint."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}
    quiet = False
    precache = None  # a tools/precache.Live for the root (make_server sets it)
    isolated = False  # send COOP/COEP (cross-origin isolation, for WebAssembly threads)

    def send_head(self):
        if self.precache is not None and urlsplit(self.path).path == PRECACHE_PATH:
            payload = self.precache().encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", MIME_TYPES[".js"])
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            return io.BytesIO(payload)
        return super().send_head()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.isolated:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
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
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BENCH_BYTES:
            self.reply_json(HTTPStatus.BAD_REQUEST,
                            {"error": f"body must be 1..{MAX_BENCH_BYTES} bytes of JSON"})
            return
        try:
            data = json.loads(self.rfile.read(length))
        except ValueError as exc:
            self.reply_json(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"})
            return
        target = Path(self.directory) / BENCH_DIR / f"{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        self.reply_json(HTTPStatus.CREATED, {"written": f"{BENCH_DIR.as_posix()}/{name}.json"})

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
                quiet: bool = False, isolated: bool = False) -> Server:
    """A bound (not yet serving) server for root; port 0 picks a free port (see .server_port)."""
    bound = type("BoundHandler", (Handler,), {"quiet": quiet, "precache": Live(Path(root)), "isolated": isolated})
    handler = partial(bound, directory=str(root))
    return Server((host, port), handler)


def serve_in_thread(root: Path | str = ROOT, host: str = "127.0.0.1", port: int = 0,
                    quiet: bool = True, isolated: bool = False) -> tuple[Server, threading.Thread]:
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
    parser.add_argument("--isolated", action="store_true",
                        help="send COOP/COEP so pages are cross-origin isolated (WebAssembly threads)")
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
