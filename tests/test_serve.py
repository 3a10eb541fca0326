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
