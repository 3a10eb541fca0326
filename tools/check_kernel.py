#!/usr/bin/env python3
"""Check a built WebAssembly kernel (wasm/linear_i8.so) before the page may load it.

    python3 tools/check_kernel.py wasm/linear_i8.so

It must be an Emscripten side module (a ``dylink.0`` section first, so Pyodide's dynamic
linker can load it with ctypes.CDLL into the interpreter's memory), export
``glassbox_linear_i8``, and have no memory of its own to disturb the interpreter's: no data
segments, no imported stack pointer (no stack frame in linear memory). Prints the imports,
exports and sha256. Standard library only; exit 1 on a failed check.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

EXPORT = "glassbox_linear_i8"
DATA, DATA_COUNT, IMPORT, EXPORT_SECTION = 11, 12, 2, 7


def _leb(b: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _name(b: bytes, i: int) -> tuple[str, int]:
    n, i = _leb(b, i)
    return b[i:i + n].decode(), i + n


def sections(b: bytes) -> list[tuple[int, str, bytes]]:
    """(id, custom name or "", payload) of each section."""
    if b[:4] != b"\0asm":
        raise ValueError("not a WebAssembly module")
    out, i = [], 8
    while i < len(b):
        sid, j = _leb(b, i)
        size, j = _leb(b, j)
        payload = b[j:j + size]
        out.append((sid, _name(payload, 0)[0] if sid == 0 else "", payload))
        i = j + size
    return out


def _skip_limits(payload: bytes, i: int) -> int:
    """The offset after a limits entry at ``i``: flags, minimum, and a maximum when flags say so."""
    flags, i = _leb(payload, i)
    _, i = _leb(payload, i)
    if flags & 1:
        _, i = _leb(payload, i)
    return i


def imports(payload: bytes) -> list[str]:
    count, i = _leb(payload, 0)
    names = []
    for _ in range(count):
        module, i = _name(payload, i)
        field, i = _name(payload, i)
        kind = payload[i]
        i += 1
        if kind == 0:  # function: type index
            _, i = _leb(payload, i)
        elif kind == 1:  # table: reftype + limits
            i = _skip_limits(payload, i + 1)
        elif kind == 2:  # memory: limits
            i = _skip_limits(payload, i)
        elif kind == 3:  # global: valtype + mutability
            i += 2
        names.append(f"{module}.{field}")
    return names


def exports(payload: bytes) -> list[str]:
    count, i = _leb(payload, 0)
    names = []
    for _ in range(count):
        name, i = _name(payload, i)
        i += 1
        _, i = _leb(payload, i)
        names.append(name)
    return names


def check(path: Path) -> list[str]:
    """Problems found (empty: fine)."""
    data = path.read_bytes()
    secs = sections(data)
    problems = []
    if not secs or secs[0][1] != "dylink.0":
        problems.append("no dylink.0 section first: not an Emscripten side module")
    imp = [n for sid, _, p in secs if sid == IMPORT for n in imports(p)]
    exp = [n for sid, _, p in secs if sid == EXPORT_SECTION for n in exports(p)]
    if EXPORT not in exp:
        problems.append(f"{EXPORT} is not exported (exports: {exp})")
    if any(sid in (DATA, DATA_COUNT) for sid, _, _ in secs):
        problems.append("has data segments: it would write into the interpreter's memory")
    if any(n.endswith("__stack_pointer") for n in imp):
        problems.append("uses a stack frame in linear memory (__stack_pointer imported)")
    print(f"{path}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}\n"
          f"  imports: {', '.join(imp) or 'none'}\n  exports: {', '.join(exp)}")
    return problems


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    problems = check(Path(args[0]))
    for p in problems:
        print(f"check_kernel: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
