"""A fake Hugging Face Hub for tests, on 127.0.0.1 only (standard library).

The Hub's layout: ``GET /{repo}/resolve/{revision}/{file}`` answers 302 to a second path,
``/cdn/{repo}/{revision}/{file}`` (the real Hub redirects to its CDN), which serves the file
with ``Range: bytes=a-b`` support (206 + Content-Range). Both answer CORS (``Access-Control-
Allow-Origin: *``, preflight for the Range header) unless the repo is listed in ``no_cors``.
A missing repo or file is 404. Every request is recorded as (method, path, Range header).

    hub = FakeHub({"org/tiny": "/path/to/saved/checkpoint"})
    hub.start(); hub.url   # http://127.0.0.1:PORT
    hub.cut_after = 5      # the 6th and later range reads of a .safetensors (at the CDN) drop the connection

Used by tests/e2e/test_hub.py (the page) and usable by hand:
``python tests/fake_hub.py REPO=FOLDER ...`` serves until Ctrl+C.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class FakeHub:
    def __init__(self, repos: dict[str, str], host: str = "127.0.0.1"):
        self.repos = dict(repos)  # repo id -> local folder
        self.no_cors: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut_after: int | None = None  # range requests served before connections drop
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _cors(self, repo):
                if repo not in hub.no_cors:
                    self.send_header("Access-Control-Allow-Origin", "*")
                    self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges")

            def _split(self):
                path = unquote(urlsplit(self.path).path)
                m = re.match(r"^/(?:cdn/)?(.+?)/(?:resolve/)?([^/]+)/([^/]+)$", path)
                return path, m

            def do_OPTIONS(self):
                path, m = self._split()
                with hub.lock:
                    hub.requests.append(("OPTIONS", path, None))
                self.send_response(204)
                self._cors(m.group(1) if m else "")
                self.send_header("Access-Control-Allow-Methods", "GET, HEAD")
                self.send_header("Access-Control-Allow-Headers", "Range")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                path, m = self._split()
                rng = self.headers.get("Range")
                with hub.lock:
                    hub.requests.append(("GET", path, rng))
                if not m:
                    return self._send(404, b"not found", "")
                repo, revision, file = m.groups()
                folder = hub.repos.get(repo)
                target = os.path.join(folder, file) if folder else None
                if target is None or not os.path.isfile(target) or "/" in file:
                    return self._send(404, b"Entry not found", repo)
                if not path.startswith("/cdn/"):
                    if "/resolve/" not in path:
                        return self._send(404, b"not found", repo)
                    self.send_response(302)
                    self._cors(repo)
                    self.send_header("Location", f"/cdn/{repo}/{revision}/{file}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                with open(target, "rb") as f:
                    data = f.read()
                if rng is None:
                    return self._send(200, data, repo)
                r = _RANGE.match(rng)
                if not r:
                    return self._send(416, b"bad range", repo)
                start = int(r.group(1))
                end = min(len(data) - 1, int(r.group(2))) if r.group(2) else len(data) - 1
                if file.endswith(".safetensors"):
                    with hub.lock:
                        served = sum(1 for x in hub.requests
                                     if x[2] and x[1].startswith("/cdn/") and x[1].endswith(".safetensors")) - 1
                    if hub.cut_after is not None and served >= hub.cut_after:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return None
                self.send_response(206)
                self._cors(repo)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                self.wfile.write(data[start:end + 1])
                return None

            def _send(self, status, body, repo):
                self.send_response(status)
                self._cors(repo)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def start(self) -> "FakeHub":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


if __name__ == "__main__":
    hub = FakeHub(dict(arg.split("=", 1) for arg in sys.argv[1:])).start()
    print(f"fake hub on {hub.url}", flush=True)
    threading.Event().wait()
