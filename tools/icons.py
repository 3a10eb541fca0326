#!/usr/bin/env python3
"""Draw Glassbox's app icons (web/icons/): PNG written with zlib, plus the same as SVG.

    python3 tools/icons.py           # (re)write the icons
    python3 tools/icons.py --check   # exit 1 if a file differs from what this script draws

The picture: a dark rounded square holding a "glass box" (a light outline) filled with a
4x4 heat map in Glassbox's diverging colours (blue, near-white, orange), the look of every
tensor on the page. ``icon-maskable-512.png`` fills the whole square and keeps the box
inside the central safe zone, so launchers may crop it to any shape. Deterministic output;
standard library only; nothing third-party.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "web" / "icons"

INK = (0x1D, 0x23, 0x30)
GLASS = (0xE8, 0xEE, 0xF8)
# A 4x4 map of values in [-1, 1], coloured blue (-) .. near-white (0) .. orange (+).
CELLS = (
    (-0.9, -0.2, 0.4, 0.1),
    (0.3, 0.95, -0.5, -0.1),
    (-0.4, 0.1, 0.7, -0.8),
    (0.6, -0.7, -0.05, 0.85),
)
BLUE, WHITE, ORANGE = (0x2C, 0x7B, 0xB6), (0xF7, 0xF7, 0xF7), (0xE6, 0x6B, 0x1A)


def colour(value: float) -> tuple[int, int, int]:
    end = ORANGE if value > 0 else BLUE
    t = min(abs(value), 1.0)
    return tuple(round(w + (e - w) * t) for w, e in zip(WHITE, end))


def layout(size: int, maskable: bool) -> dict:
    """Geometry in pixels: background corner radius, box rectangle, border and cell size."""
    box = round(size * (0.50 if maskable else 0.66))
    border = max(1, round(size * 0.035))
    gap = max(1, round(size * 0.012))
    inner = box - 2 * border - 5 * gap
    cell = inner // 4
    box = 4 * cell + 5 * gap + 2 * border  # exact fit
    x0 = (size - box) // 2
    return {"radius": 0 if maskable else round(size * 0.18), "x0": x0, "box": box,
            "border": border, "gap": gap, "cell": cell}


def pixels(size: int, maskable: bool) -> list[bytearray]:
    """Rows of RGBA bytes."""
    g = layout(size, maskable)
    r, x0, box, border, gap, cell = g["radius"], g["x0"], g["box"], g["border"], g["gap"], g["cell"]
    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            # Rounded-corner coverage, 4x4 supersampled (only near the corners).
            alpha = 255
            if r:
                cx = r if x < r else (size - 1 - r if x > size - 1 - r else x)
                cy = r if y < r else (size - 1 - r if y > size - 1 - r else y)
                if (cx, cy) != (x, y):
                    hits = sum(((x + (i + 0.5) / 4 - cx - 0.5) ** 2 + (y + (j + 0.5) / 4 - cy - 0.5) ** 2) <= r * r
                               for i in range(4) for j in range(4))
                    alpha = round(255 * hits / 16)
            rgb = INK
            bx, by = x - x0, y - x0
            if 0 <= bx < box and 0 <= by < box:
                if bx < border or by < border or bx >= box - border or by >= box - border:
                    rgb = GLASS
                else:
                    ix, iy = bx - border, by - border
                    col, cx_in = divmod(ix - gap, cell + gap) if ix >= gap else (-1, 0)
                    rowi, cy_in = divmod(iy - gap, cell + gap) if iy >= gap else (-1, 0)
                    if 0 <= col < 4 and 0 <= rowi < 4 and cx_in < cell and cy_in < cell:
                        rgb = colour(CELLS[rowi][col])
            row += bytes(rgb) + bytes([alpha])
        rows.append(row)
    return rows


def png(rows: list[bytearray]) -> bytes:
    height, width = len(rows), len(rows[0]) // 4

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def svg() -> str:
    size = 512
    g = layout(size, False)
    x0, box, border, gap, cell = g["x0"], g["box"], g["border"], g["gap"], g["cell"]
    hexc = lambda c: "#%02x%02x%02x" % c  # noqa: E731
    inner = box - 2 * border
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}">',
             f'<rect width="{size}" height="{size}" rx="{g["radius"]}" fill="{hexc(INK)}"/>',
             f'<rect x="{x0}" y="{x0}" width="{box}" height="{box}" fill="{hexc(GLASS)}"/>',
             f'<rect x="{x0 + border}" y="{x0 + border}" width="{inner}" height="{inner}" fill="{hexc(INK)}"/>']
    for r, values in enumerate(CELLS):
        for c, value in enumerate(values):
            x = x0 + border + gap + c * (cell + gap)
            y = x0 + border + gap + r * (cell + gap)
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{hexc(colour(value))}"/>')
    parts.append("</svg>\n")
    return "\n".join(parts)


def outputs() -> dict[str, bytes]:
    return {
        "icon-192.png": png(pixels(192, False)),
        "icon-512.png": png(pixels(512, False)),
        "icon-maskable-512.png": png(pixels(512, True)),
        "icon.svg": svg().encode(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for name, data in outputs().items():
        path = OUT / name
        if path.is_file() and path.read_bytes() == data:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if args.check and stale:
        print(f"icons out of date: {stale}; run python3 tools/icons.py", file=sys.stderr)
        return 1
    print(f"icons: {len(stale)} written" if stale else "icons: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
