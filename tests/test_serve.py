"""tools/serve.py: MIME types a static host must send, dev caching, busy port, bench results."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import serve  # noqa: E402

FILES = {
    "index.html": "text/html",
    "app.wasm": "application/wasm",
    "mod.mjs": "text/javascript",
    "script.js": "text/javascript",
    "site.webmanifest": "application/manifest+json",
    "kernel.wgsl": "text/plain",
    "data.json": "application/json",
    "model.safetensors": "application/octet-stream",
    "pkg.whl": "application/zip",
    "code.py": "text/plain",
}


@pytest.fixture
def site(tmp_path):
    for name in FILES:
        (tmp_path / name).write_bytes(b"x")
    server, _ = serve.serve_in_thread(tmp_path)
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def post(url: str, body: bytes):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.parametrize("name", sorted(FILES))
def test_mime_types_and_cache_headers(site, name):
    _, base = site
    with urllib.request.urlopen(f"{base}/{name}") as response:
        assert response.headers.get_content_type() == FILES[name]
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.read() == b"x"


ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "credentialless"}


def test_cross_origin_isolation_headers_by_default_and_not_with_the_flag(site, tmp_path):
    # issue 16: every answer of the default server (files, errors, the live precache list).
    _, base = site
    for path in ("/index.html", "/app.wasm", "/sw-precache.js"):
        with urllib.request.urlopen(f"{base}{path}") as response:
            assert {name: response.headers[name] for name in ISOLATION} == ISOLATION, path
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/missing.js")
    assert missing.value.code == 404 and missing.value.headers["Cross-Origin-Embedder-Policy"] == "credentialless"
    assert serve.ISOLATION_HEADERS == ISOLATION
    server, _ = serve.serve_in_thread(tmp_path, isolated=False)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/index.html") as response:
            assert response.read() == b"x"
            assert not any(name in response.headers for name in ISOLATION)
    finally:
        server.shutdown()
        server.server_close()


def test_no_isolation_flag_of_the_command_line(monkeypatch):
    made = []

    def record(*args):  # what main() asks for, then a bind failure (main answers 2)
        made.append(args)
        raise OSError("not binding in this test")

    monkeypatch.setattr(serve, "make_server", record)
    assert serve.main(["--port", "0"]) == 2 and serve.main(["--port", "0", "--no-isolation"]) == 2
    assert [args[-1] for args in made] == [True, False]


def test_binds_loopback_by_default():
    server = serve.make_server(port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


def test_busy_port_exits_2_with_one_clear_line(site):
    _, base = site
    port = base.rsplit(":", 1)[1]
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "serve.py"), "--port", port],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "already in use" in lines[0]


def test_bench_results_are_written(site):
    root, base = site
    status, reply = post(f"{base}/bench-results?name=h100-matmul", b'{"gflops": [1.5, 2.5]}')
    assert status == 201 and reply == {"written": "bench/raw/h100-matmul.json"}
    assert json.loads((root / "bench" / "raw" / "h100-matmul.json").read_text()) == {"gflops": [1.5, 2.5]}


@pytest.mark.parametrize("query, body", [
    ("name=../escape", b"{}"),
    ("name=", b"{}"),
    ("", b"{}"),
    ("name=ok", b"not json"),
])
def test_bench_results_reject_bad_requests(site, query, body):
    root, base = site
    status, reply = post(f"{base}/bench-results?{query}", body)
    assert status == 400 and "error" in reply
    assert not (root / "bench").exists() or not any((root / "bench").rglob("*.json"))


def test_post_elsewhere_is_404(site):
    _, base = site
    request = urllib.request.Request(f"{base}/index.html", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 404


# ----- what the server refuses (issue 9): every request gets a 4xx, nothing outside the root

SECRET = b"secret bytes from outside the site"


def raw(base: str, request: bytes) -> tuple[int, bytes]:
    """Send raw request bytes (no client-side clean-up of the path); return status and body."""
    import socket

    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(base: str, path: str) -> tuple[int, bytes]:
    return raw(base, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))


@pytest.fixture
def guarded(tmp_path):
    """A site with symlinks out of it, dotfiles, a folder without index.html, and a secret
    file beside it that must never be served."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(b"<p>home</p>")
    (root / "sub" / "page.txt").write_bytes(b"inside")
    (root / "app").mkdir()
    (root / "app" / "index.html").write_bytes(b"<p>app</p>")
    (root / "link-out.txt").symlink_to(outside / "secret.txt")
    (root / "dir-out").symlink_to(outside)
    (root / "link-in.txt").symlink_to(root / "sub" / "page.txt")
    for hidden in (".git", ".venv", ".cache"):
        (root / hidden).mkdir()
        (root / hidden / "config").write_bytes(SECRET)
    (root / ".env").write_bytes(SECRET)
    (root / "sub" / ".secret").write_bytes(SECRET)
    server, _ = serve.serve_in_thread(root)
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def still_serving(base: str) -> None:
    assert get(base, "/index.html") == (200, b"<p>home</p>")


@pytest.mark.parametrize("path, status", [
    ("/link-out.txt", 404),           # a symlink to a file outside the root
    ("/dir-out/secret.txt", 404),     # through a symlinked folder outside the root
    ("/dir-out/", 404),
    ("/.git/config", 404), ("/.venv/config", 404), ("/.cache/config", 404),
    ("/.env", 404), ("/sub/.secret", 404), ("/%2egit/config", 404), ("/sub/%2Esecret", 404),
    ("/sub/", 404),                   # a folder without index.html: no listing
    ("/../outside/secret.txt", 400), ("/sub/../../outside/secret.txt", 400), ("/%2e%2e/outside/secret.txt", 400),
    ("/..%2foutside%2fsecret.txt", 400),
    ("/index.html%00.txt", 400), ("/a%0Ab", 400), ("/bad%zzescape", 400), ("/bad%e", 400), ("/%ff%fe", 400),
    ("/index.html/", 404),
    ("/missing.txt", 404),
])
def test_refused_paths(guarded, path, status):
    _, base = guarded
    got, body = get(base, path)
    assert got == status, (path, body[:200])
    assert SECRET not in body and b"inside" not in body
    still_serving(base)


def test_raw_nul_byte_in_request_line(guarded):
    _, base = guarded
    status, body = raw(base, b"GET /index\x00.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 400 and SECRET not in body
    still_serving(base)


@pytest.mark.parametrize("path, body", [
    ("/link-in.txt", b"inside"),      # a symlink that stays inside the root is fine
    ("/sub/page.txt", b"inside"),
    ("/app/", b"<p>app</p>"),         # a folder with index.html serves it
    ("/", b"<p>home</p>"),
])
def test_files_inside_are_served(guarded, path, body):
    _, base = guarded
    assert get(base, path) == (200, body)


def test_folder_without_slash_redirects(guarded):
    _, base = guarded
    assert get(base, "/app")[0] == 301


def post_raw(base: str, headers: str, body: bytes = b"") -> tuple[int, dict]:
    status, reply = raw(base, (f"POST /bench-results?name=t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
                               ).encode() + body)
    return status, json.loads(reply)


@pytest.mark.parametrize("headers, body, status", [
    ("", b"", 411),                                       # no Content-Length
    ("Content-Length: abc\r\n", b"{}", 400),
    ("Content-Length: -5\r\n", b"{}", 400),
    ("Content-Length: 1.5\r\n", b"{}", 400),
    ("Content-Length: 0\r\n", b"", 400),
    (f"Content-Length: {serve.MAX_BENCH_BYTES + 1}\r\n", b"{}", 413),
    ("Content-Length: 100\r\n", b'{"short": 1}', 400),    # fewer bytes than announced
    ("Content-Length: 8\r\n", b"not json", 400),
    ("Content-Length: 3\r\n", b"NaN", 400),
    ("Content-Length: 19\r\n", b'{"x": [1, Infinity]}'[:19], 400),
    ("Content-Length: 4\r\n", b"\xff\xfe{}", 400),        # not UTF-8
    (f"Content-Length: {2 * 100_000}\r\n", b"[" * 100_000 + b"]" * 100_000, 400),  # too deep to parse
    (f"Content-Length: {2 * 70}\r\n", b"[" * 70 + b"]" * 70, 400),  # over MAX_JSON_DEPTH
])
def test_post_bodies_refused(guarded, monkeypatch, headers, body, status):
    monkeypatch.setattr(serve, "BODY_TIMEOUT_S", 1)
    root, base = guarded
    got, reply = post_raw(base, headers, body)
    assert got == status and isinstance(reply.get("error"), str) and len(reply["error"]) < 200, reply
    assert not (root / "bench").exists()
    still_serving(base)


def test_post_at_the_depth_limit_is_written(guarded):
    root, base = guarded
    body = b"[" * serve.MAX_JSON_DEPTH + b"]" * serve.MAX_JSON_DEPTH
    assert post_raw(base, f"Content-Length: {len(body)}\r\n", body)[0] == 201
    assert (root / "bench" / "raw" / "t.json").exists()
