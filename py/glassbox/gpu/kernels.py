"""The WGSL kernels as the Python side sees them: bindings in order, and launch geometry.

Each kernel is one file in ``shaders/``; its bindings here are listed in the same order and
with the same names as the file's ``@binding`` declarations (a test checks that). Sizes are
the legend letters of ``glassbox/__init__``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# py/glassbox/gpu/kernels.py -> repository root; the page keeps the same layout (pyscript.toml).
SHADER_DIR = Path(__file__).resolve().parents[3] / "shaders"

SCHEME_CODES = {"none": 0, "int8": 1, "q4": 2}
ELEMENTS_PER_WORD = {"none": 1, "int8": 4, "q4": 8}

EPILOGUE_NONE, EPILOGUE_GELU, EPILOGUE_RESIDUAL = 0, 1, 2
ROWWISE_MAX_TOKENS = 4  # matmul.wgsl RW_TOKENS
# matmul.wgsl rowwise: RW_LANES invocations per output row, RW_WG per workgroup. 16 lanes read
# 16 adjacent u32 words (64 bytes of a row) per step on a GPU; 16 rows per workgroup.
ROWWISE_LANES = 16
ROWWISE_WG = 256
LAYER_NORM_WG = 128
ATTENTION_WG = 64


@dataclass(frozen=True)
class Kernel:
    name: str  # shaders/<name>.wgsl
    bindings: tuple[tuple[str, str], ...]  # (name, "uniform" | "read" | "read_write") in binding order

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for _, kind in self.bindings)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.bindings)

    def source(self) -> str:
        return (SHADER_DIR / f"{self.name}.wgsl").read_text(encoding="utf-8")

    def order(self, buffers: dict) -> list:
        """The values of ``buffers`` (keyed by binding name) in binding order."""
        if set(buffers) != set(self.names):
            raise KeyError(f"{self.name} binds {self.names}, got {sorted(buffers)}")
        return [buffers[name] for name in self.names]


EMBEDDING = Kernel("embedding", (
    ("params", "uniform"), ("ids", "read"), ("wte", "read"), ("wte_scale", "read"), ("wpe", "read"),
    ("wpe_scale", "read"), ("tok_emb", "read_write"), ("pos_emb", "read_write"), ("emb", "read_write")))
LAYER_NORM = Kernel("layer_norm", (
    ("params", "uniform"), ("x", "read"), ("weight", "read"), ("bias", "read"), ("out", "read_write"),
    ("mean", "read_write"), ("var_", "read_write")))
MATMUL = Kernel("matmul", (
    ("params", "uniform"), ("x", "read"), ("res", "read"), ("w", "read"), ("scale", "read"), ("bias", "read"),
    ("pre", "read_write"), ("out", "read_write")))
ATTENTION = Kernel("attention", (
    ("params", "uniform"), ("qkv", "read"), ("k_cache", "read_write"), ("v_cache", "read_write"),
    ("scores", "read_write"), ("scaled", "read_write"), ("masked", "read_write"), ("att", "read_write"),
    ("out", "read_write")))
TOP_K = Kernel("top_k", (  # issue 15 (g15): sampling on the GPU
    ("params", "uniform"), ("logits", "read"), ("top", "read_write")))
KERNELS = (EMBEDDING, LAYER_NORM, MATMUL, ATTENTION, TOP_K)

_BINDING = re.compile(r"@binding\((\d+)\)\s*var<(uniform|storage,\s*(read|read_write))>\s*(\w+)")


def declared_bindings(source: str) -> list[tuple[str, str]]:
    """(name, kind) of each ``@binding`` in a WGSL source, in binding order."""
    found = []
    for m in _BINDING.finditer(source):
        kind = "uniform" if m.group(2) == "uniform" else m.group(3)
        found.append((int(m.group(1)), m.group(4), kind))
    return [(name, kind) for _, name, kind in sorted(found)]


def params_array(n: int, t: int, start: int) -> np.ndarray:
    """The Params uniform every kernel reads: N, T, start, padding (u32 x 4)."""
    return np.array([n, t, start, 0], dtype=np.uint32)


# ----- launch geometry: (entry point, extra constants, workgroups)

def embedding_launch(n: int, d: int) -> tuple[str, dict, tuple[int, int, int]]:
    return "main", {}, (math.ceil(d / 64), n, 1)


def layer_norm_launch(n: int) -> tuple[str, dict, tuple[int, int, int]]:
    return "main", {"WG": LAYER_NORM_WG}, (n, 1, 1)


def matmul_launch(rows: int, n_out: int, lanes: int = ROWWISE_LANES, workgroup: int = ROWWISE_WG,
                  rowwise_max: int = ROWWISE_MAX_TOKENS) -> tuple[str, dict, tuple[int, int, int]]:
    """Row-parallel entry for decode-sized runs (up to ``rowwise_max`` tokens), 16x4 or 16x16
    tiles for prompts."""
    if rows <= min(rowwise_max, ROWWISE_MAX_TOKENS):
        return "rowwise", {"RW_LANES": lanes, "RW_WG": workgroup}, (math.ceil(n_out * lanes / workgroup), 1, 1)
    rows_y = 4 if rows <= 16 else 16
    return "tiled", {"ROWS_Y": rows_y}, (math.ceil(n_out / 64), math.ceil(rows / (4 * rows_y)), 1)


def matmul_max_out(max_workgroups: int) -> int:
    """The most output rows one matmul dispatch covers within max_workgroups per dimension."""
    return max_workgroups * min(ROWWISE_WG // ROWWISE_LANES, 64)


def attention_launch(n: int, n_head: int) -> tuple[str, dict, tuple[int, int, int]]:
    return "main", {"WG": ATTENTION_WG}, (n, n_head, 1)


TOP_K_WG = 256  # top_k.wgsl WG: one invocation per histogram bin


def top_k_launch(k: int) -> tuple[str, dict, tuple[int, int, int]]:
    """top_k.wgsl: one workgroup selects the k largest logits of the last row."""
    if not 1 <= k <= TOP_K_WG:
        raise ValueError(f"top_k keeps 1..{TOP_K_WG} logits, got {k}")
    return "main", {"KT": k, "WG": TOP_K_WG}, (1, 1, 1)


def top_k_words(k: int) -> int:
    """u32 words of top_k.wgsl's top buffer: k value bits, k ids, the non-finite count."""
    return 2 * k + 1


def attention_workgroup_bytes(head_size: int, context: int) -> int:
    """attention.wgsl's workgroup memory: q_row [K] + row [C] + partial [WG] floats."""
    return 4 * (head_size + context + ATTENTION_WG)
