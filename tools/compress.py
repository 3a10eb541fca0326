#!/usr/bin/env python3
"""Write precompressed copies (``NAME.br``, ``NAME.gz``) beside the files the page downloads.

    python3 tools/compress.py [--quiet]  # what `make vendor` (so `make serve/test`) runs
    python3 tools/compress.py --check    # exit 1 if a copy is missing or stale
    python3 tools/compress.py --report   # a Markdown table of original / br / gz sizes

Which files: everything the service worker keeps offline (tools/precache.py's list: the app
shell, py/, shaders/, vendor/ runtime) plus the model files under weights/, when the name ends
in one of COMPRESSIBLE, the file is at least MIN_BYTES, and brotli makes it at most RATIO of
its size (zip archives and wheels, woff2 fonts and PNGs are already compressed: no copy, and
any copy left from before is removed). Pyodide's 9.6 MiB pyodide.asm.wasm becomes about
2.2 MiB as .br and 3.0 MiB as .gz.

Reproducible bytes: brotli at quality 11 from the pinned PyPI ``brotli`` (requirements-build.txt)
and gzip level 9 from Python's zlib with mtime 0 and no file name, so the same input always
gives the same copy. Each copy gets its original's mtime: tools/serve.py sends a copy only
while the mtimes agree, and a rerun redoes a copy whose mtime differs or that does not decode
to its original, so a second run takes a second or two; the first takes minutes (quality 11
is slow; it runs once per changed file).

The copies are build outputs: git-ignored (``*.br``, ``*.gz``), not in the precache list (the
service worker keeps the originals; the browser decodes a compressed response before anyone
sees it), and checked by tests/test_compress.py against the originals' sha256 in
sw-precache.js. tools/serve.py sends a copy when the request's Accept-Encoding allows it; the
README says how other static hosts do the same.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path

from precache import wanted_paths  # tools/precache.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
# (Content-Encoding, file suffix), the server's order of preference.
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))
COMPRESSIBLE = (".wasm", ".js", ".mjs", ".css", ".html", ".json", ".py", ".wgsl", ".toml",
                ".webmanifest", ".svg", ".bpe", ".txt", ".md", ".so", ".safetensors")
MIN_BYTES = 1024
RATIO = 0.9  # a copy must save at least 10 %, else the original is served as it is
BROTLI_QUALITY = 11
TRIAL_QUALITY = 5  # the quick is-it-worth-it check (quality 11 saves a few % more than this)
GZIP_LEVEL = 9
# Kinds that always shrink well below RATIO: a candidate of these kinds without copies is stale.
ALWAYS_SHRINK = (".wasm", ".js", ".mjs", ".css", ".html", ".json", ".py", ".wgsl", ".bpe")


def brotli_bytes(data: bytes, quality: int = BROTLI_QUALITY) -> bytes:
    import brotli  # requirements-build.txt; imported here so --help and serve.py need no brotli

    return brotli.compress(data, quality=quality)


def gzip_bytes(data: bytes) -> bytes:
    """gzip with no name and mtime 0: the same bytes for the same input on any machine."""
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def brotli_decoded(data: bytes) -> bytes:
    import brotli

    return brotli.decompress(data)


COMPRESSORS = {".br": brotli_bytes, ".gz": gzip_bytes}
DECOMPRESSORS = {".br": brotli_decoded, ".gz": gzip.decompress}


def candidates(root: Path = ROOT) -> list[str]:
    """Site-relative paths that may get compressed copies: served, compressible by name, big."""
    paths = set(wanted_paths(root))
    weights = root / "weights"
    if weights.is_dir():
        paths.update(p.relative_to(root).as_posix() for p in weights.rglob("*")
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return sorted(p for p in paths if p.endswith(COMPRESSIBLE) and (root / p).stat().st_size >= MIN_BYTES)


def copy_paths(original: Path) -> list[Path]:
    return [original.with_name(original.name + suffix) for _, suffix in ENCODINGS]


def is_current(original: Path) -> bool:
    """Both copies exist with the original's mtime (the mark compress() leaves) and decode to
    the original's bytes. The decoding (about a second for all files) is what catches a
    changed file that kept its mtime: npm gives every extracted file the same fixed date."""
    mtime = original.stat().st_mtime_ns
    copies = copy_paths(original)
    if not all(copy.is_file() and copy.stat().st_mtime_ns == mtime for copy in copies):
        return False
    data = original.read_bytes()
    try:
        return all(DECOMPRESSORS[copy.suffix](copy.read_bytes()) == data for copy in copies)
    except Exception:  # noqa: BLE001  (a truncated or corrupt copy: brotli.error, zlib.error, EOFError)
        return False


def write_copy(path: Path, data: bytes, mtime_ns: int) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(mtime_ns, mtime_ns))
    os.replace(tmp, path)


def compress(root: Path = ROOT, log=print) -> dict[str, tuple[int, int | None, int | None]]:
    """Bring every candidate's copies up to date; {path: (size, br size, gz size)} (None: no copy)."""
    sizes = {}
    for rel in candidates(root):
        original = root / rel
        size, mtime = original.stat().st_size, original.stat().st_mtime_ns
        if is_current(original):
            sizes[rel] = (size, *(copy.stat().st_size for copy in copy_paths(original)))
            continue
        data = original.read_bytes()
        # A fast trial first, so that an incompressible file costs a second on every run.
        if len(brotli_bytes(data, TRIAL_QUALITY)) > RATIO * size:  # serve the original only
            for copy in copy_paths(original):
                copy.unlink(missing_ok=True)
            sizes[rel] = (size, None, None)
            continue
        small = brotli_bytes(data)
        write_copy(original.with_name(original.name + ".br"), small, mtime)
        big = gzip_bytes(data)
        write_copy(original.with_name(original.name + ".gz"), big, mtime)
        sizes[rel] = (size, len(small), len(big))
        log(f"compress: {rel}: {size} -> br {len(small)} ({len(small) / size:.0%}), gz {len(big)} ({len(big) / size:.0%})")
    return sizes


def stale(root: Path = ROOT) -> list[str]:
    """Candidates whose copies are missing or older/newer than the original (not marked current)."""
    out = []
    for rel in candidates(root):
        original = root / rel
        present = [copy.is_file() for copy in copy_paths(original)]
        if any(present) and not is_current(original):
            out.append(rel)
        elif not any(present) and rel.endswith(ALWAYS_SHRINK):
            out.append(rel)  # text and wasm always compress: a missing copy means compress.py did not run
    return out


def report(sizes: dict[str, tuple[int, int | None, int | None]]) -> str:
    """A Markdown table: the biggest files and the totals, original vs br vs gz bytes."""
    def mib(n):
        return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"

    lines = ["| file | original | br | gzip |", "| --- | ---: | ---: | ---: |"]
    for rel, (size, br, gz) in sorted(sizes.items(), key=lambda kv: -kv[1][0])[:12]:
        lines.append(f"| {rel} | {mib(size)} | {mib(br) if br else '(as is)'} | {mib(gz) if gz else '(as is)'} |")
    total = sum(s for s, _, _ in sizes.values())
    total_br = sum(b or s for s, b, _ in sizes.values())
    total_gz = sum(g or s for s, _, g in sizes.values())
    lines.append(f"| all {len(sizes)} files | {mib(total)} | {mib(total_br)} | {mib(total_gz)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether the copies are current")
    parser.add_argument("--report", action="store_true", help="print a Markdown table of the sizes")
    parser.add_argument("--quiet", action="store_true", help="only the summary line, not one per file")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    if args.check:
        bad = stale(args.root)
        if bad:
            print(f"compressed copies missing or stale for {len(bad)} files (first: {bad[0]}): "
                  "run python3 tools/compress.py (make vendor runs it)", file=sys.stderr)
            return 1
        print("compressed copies are current")
        return 0
    sizes = compress(args.root, log=(lambda _line: None) if args.report or args.quiet else print)
    if args.report:
        print(report(sizes))
    else:
        done = sum(1 for _, br, _ in sizes.values() if br)
        print(f"compress: {done} of {len(sizes)} files have .br and .gz copies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
