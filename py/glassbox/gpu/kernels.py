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

    def source(self, features: frozenset[str] | set[str] = frozenset()) -> str:
        """The WGSL text with its ``// #include NAME`` lines replaced by shaders/NAME.wgsl and
        its ``// #if NAME`` blocks resolved for ``features`` (see preprocess)."""
        return preprocess(include((SHADER_DIR / f"{self.name}.wgsl").read_text(encoding="utf-8")), features)

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
MATMUL_SPLITK = Kernel("matmul_splitk", (
    ("params", "uniform"), ("x", "read"), ("res", "read"), ("w", "read"), ("scale", "read"), ("bias", "read"),
    ("pre", "read_write"), ("out", "read_write"), ("part", "read_write")))
MATMUL_PREFILL = Kernel("matmul_prefill", MATMUL.bindings)

# Shader variants (issue 15, matmul): names a WGSL file tests with "// #if NAME".
#   packed4x8         the WGSL language feature packed_4x8_integer_dot_product (unpack4xI8)
#   subgroups         subgroup built-ins (WebGPU feature "subgroups", wgpu-native "subgroup")
#   subgroups-enable  the "enable subgroups;" directive (Chrome needs it; naga rejects it)
SHADER_FEATURES = ("packed4x8", "subgroups", "subgroups-enable")
_IF = re.compile(r"^\s*// #(if|else|endif)\b\s*(\S*)")


_INCLUDE = re.compile(r"^// #include (\w+)[ \t]*$", re.M)


def include(source: str, seen: set[str] | None = None) -> str:
    """Each ``// #include NAME`` line replaced by the text of shaders/NAME.wgsl, itself with its
    includes expanded; a file already pasted into this source is pasted once only (params.wgsl,
    the Params uniform; matmul_common.wgsl and attention_common.wgsl, what the matmul and the
    attention kernels share; issue 15, engine)."""
    seen = set() if seen is None else seen

    def text(m: re.Match) -> str:
        name = m.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return include((SHADER_DIR / f"{name}.wgsl").read_text(encoding="utf-8"), seen)
    return _INCLUDE.sub(text, source)


def preprocess(source: str, features: frozenset[str] | set[str] = frozenset()) -> str:
    """Keep the lines of ``// #if NAME`` blocks (up to ``// #else``) when NAME is in features,
    else those of the ``// #else`` part; blocks do not nest. The marker lines are dropped."""
    unknown = set(features) - set(SHADER_FEATURES)
    if unknown:
        raise ValueError(f"unknown shader features {sorted(unknown)}; known: {SHADER_FEATURES}")
    kept, state = [], None  # state: None outside a block, else whether lines are kept
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        m = _IF.match(line)
        if m is None:
            if state is not False:
                kept.append(line)
            continue
        word, name = m.groups()
        if (word == "if") != (state is None) or (word == "if" and name not in SHADER_FEATURES):
            raise ValueError(f"line {number}: unexpected or unknown '{line.strip()}'")
        state = (name in features) if word == "if" else (not state if word == "else" else None)
    if state is not None:
        raise ValueError("an '// #if' block is not closed")
    return "".join(kept)


# issue 15, attention: the kernels for layers whose attention stages are not captured.
FLASH_ATTENTION = Kernel("flash_attention", (
    ("params", "uniform"), ("qkv", "read"), ("k_cache", "read_write"), ("v_cache", "read_write"),
    ("out", "read_write")))
ATTENTION_DECODE = Kernel("attention_decode", (
    ("params", "uniform"), ("qkv", "read"), ("k_cache", "read_write"), ("v_cache", "read_write"),
    ("partials", "read_write"), ("out", "read_write")))
TOP_K = Kernel("top_k", (  # issue 15 (g15): sampling on the GPU
    ("params", "uniform"), ("logits", "read"), ("top", "read_write")))
KERNELS = (EMBEDDING, LAYER_NORM, MATMUL, ATTENTION, MATMUL_SPLITK, MATMUL_PREFILL, FLASH_ATTENTION,
           ATTENTION_DECODE, TOP_K)

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


# matmul_splitk.wgsl (issue 15, matmul): WG invocations per workgroup, SPLITK_LANES per output
# row (8 x 16 bytes = 128 contiguous bytes of a row per step), and slices of inputs holding
# SPLITK_BLOCKS 16-byte blocks per row: each lane loads SPLITK_BLOCKS / SPLITK_LANES of them.
SPLITK_WG = 64
SPLITK_LANES = 8
SPLITK_BLOCKS = 16
SPLITK_MAX_TOKENS = 4  # matmul_splitk.wgsl MAX_TOKENS


def splitk_block(scheme: str) -> int:
    """Weights in one 16-byte block: 4 fp32, 16 int8 or 32 q4."""
    return 4 * ELEMENTS_PER_WORD[scheme]


def splitk_slice(n_in: int, scheme: str) -> int:
    """KS, the inputs per slice: SPLITK_BLOCKS blocks, at most the (block-rounded) row."""
    unit = splitk_block(scheme)
    return min(SPLITK_BLOCKS * unit, -(-n_in // unit) * unit)


def splitk_fits(rows: int, n_in: int, scheme: str) -> bool:
    """Whether matmul_splitk.wgsl takes this matmul: decode-sized and rows in 16-byte blocks."""
    return 1 <= rows <= SPLITK_MAX_TOKENS and n_in % splitk_block(scheme) == 0


def splitk_part_bytes(n_in: int, n_out: int, scheme: str) -> int:
    """Bytes of the part buffer [ceil(IN / KS), OUT] vec4<f32>."""
    return 16 * math.ceil(n_in / splitk_slice(n_in, scheme)) * n_out


def splitk_launches(n_in: int, n_out: int, scheme: str, lanes: int = SPLITK_LANES
                    ) -> list[tuple[str, dict, tuple[int, int, int]]]:
    """The two dispatches of matmul_splitk.wgsl: partial sums per slice, then their reduction."""
    ks = splitk_slice(n_in, scheme)
    extra = {"KS": ks, "LANES": lanes, "WG": SPLITK_WG}
    return [("partial", extra, (math.ceil(n_out * lanes / SPLITK_WG), math.ceil(n_in / ks), 1)),
            ("reduce", extra, (math.ceil(n_out / SPLITK_WG), 1, 1))]


# matmul_prefill.wgsl (issue 15, matmul): 64 x 64 tiles; runs of at least this many tokens
# (shorter prompts keep matmul.wgsl's 16-token tiles, which waste less of a 64-token tile).
PREFILL_MIN_TOKENS = 17
PREFILL_TILE = 64


def prefill_fits(rows: int, n_in: int, scheme: str, min_tokens: int = PREFILL_MIN_TOKENS) -> bool:
    """Whether matmul_prefill.wgsl takes this matmul: enough tokens, rows in 16-byte blocks."""
    return rows >= min_tokens and n_in % splitk_block(scheme) == 0


def prefill_launch(rows: int, n_out: int) -> tuple[str, dict, tuple[int, int, int]]:
    return "main", {}, (math.ceil(n_out / PREFILL_TILE), math.ceil(rows / PREFILL_TILE), 1)


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


# ----- issue 15, attention: flash prefill and split-over-keys decode (no [H, N, T] stages)

DECODE_MAX_TOKENS = 4   # runs of up to this many tokens use attention_decode.wgsl, longer ones flash
DECODE_SPLITS = 32      # key chunks per (query, head): 32 x 12 heads fill a GPU at T = 1024
DECODE_MIN_KEYS = 32    # ... but chunks of at least 32 keys: a short context uses fewer splits
DECODE_MAX_CHUNK = 32   # ... and of at most 32 keys (unless MIN_KEYS is more): more splits for a longer C
DECODE_WG = 64
FLASH_TILES = (16, 8, 4)  # flash_attention.wgsl B, largest first: B x B invocations
FLASH_MAX_CPL = 16        # flash_attention.wgsl MAX_CPL


def flash_workgroup_bytes(head_size: int, tile: int) -> int:
    """flash_attention.wgsl's workgroup memory: Qs, Vs [B, K], Ks [B, K + 1], S and P [B, B]."""
    return 4 * (tile * (3 * head_size + 1) + 2 * tile * tile)


def flash_tile(head_size: int, limits: dict) -> int:
    """The largest tile B whose workgroup memory, B*B invocations (WebGPU's default allows
    256) and channels per lane fit."""
    for tile in FLASH_TILES:
        if (flash_workgroup_bytes(head_size, tile) <= limits["max_compute_workgroup_storage_size"]
                and tile * tile <= limits.get("max_compute_invocations_per_workgroup", 256)
                and -(-head_size // tile) <= FLASH_MAX_CPL):
            return tile
    raise ValueError(f"flash attention: no tile fits head size {head_size} within the workgroup limits")


def flash_attention_launch(n: int, n_head: int, head_size: int, tile: int) -> tuple[str, dict, tuple[int, int, int]]:
    return "main", {"B": tile, "CPL": -(-head_size // tile)}, (math.ceil(n / tile), n_head, 1)


def decode_splits(context: int, splits: int = DECODE_SPLITS, min_keys: int = DECODE_MIN_KEYS) -> dict:
    """attention_decode.wgsl's SPLITS, MIN_KEYS and CHUNK (the most keys one chunk holds).
    A context over splits x DECODE_MAX_CHUNK keys gets more splits, so that CHUNK x head size
    stays within workgroup memory."""
    splits = max(1, min(max(splits, -(-context // DECODE_MAX_CHUNK)), context))
    return {"SPLITS": splits, "MIN_KEYS": min_keys, "CHUNK": min(context, max(min_keys, -(-context // splits)))}


def decode_workgroup_bytes(head_size: int, context: int, splits: int = DECODE_SPLITS,
                           min_keys: int = DECODE_MIN_KEYS) -> int:
    """attention_decode.wgsl's workgroup memory: q_row [K], Ks [CHUNK, K + 1], row and P [CHUNK]."""
    chunk = decode_splits(context, splits, min_keys)["CHUNK"]
    return 4 * (head_size + chunk * (head_size + 3))


def decode_grid(t: int, context: int, splits: int = DECODE_SPLITS, min_keys: int = DECODE_MIN_KEYS) -> int:
    """Split workgroups per (query, head) for T = t: the splits holding keys, ceil(t / chunk),
    rounded up to a power of two (one plan serves a bucket of T), at most SPLITS (issue 15,
    engine: the grid shrinks with T)."""
    constants = decode_splits(context, splits, min_keys)
    chunk = max(constants["MIN_KEYS"], -(-t // constants["SPLITS"]))
    used = -(-t // chunk)
    return min(constants["SPLITS"], 1 << (used - 1).bit_length())


def attention_decode_launches(n: int, n_head: int, context: int, splits: int = DECODE_SPLITS,
                              min_keys: int = DECODE_MIN_KEYS, t: int | None = None):
    """The split pass then the combine pass: two (entry, constants, workgroups). With ``t``,
    the split pass launches decode_grid(t) workgroups per (query, head), else SPLITS."""
    constants = {**decode_splits(context, splits, min_keys), "WG": DECODE_WG}
    count = constants["SPLITS"] if t is None else decode_grid(t, context, splits, min_keys)
    return (("split", constants, (count, n_head, n)), ("combine", constants, (n_head, n, 1)))


def decode_partials_floats(n: int, n_head: int, head_size: int, context: int, splits: int = DECODE_SPLITS) -> int:
    """attention_decode.wgsl's partials [N, H, SPLITS, K + 2]."""
    return n * n_head * decode_splits(context, splits)["SPLITS"] * (head_size + 2)


# ----- issue 15, attention: the f16 KV cache option (WebGPU's "shader-f16" feature)

CACHE_KERNELS = ("attention", "flash_attention", "attention_decode")  # the kernels that bind the KV cache
F16_FEATURE = "shader-f16"
_CACHE_ALIAS = "alias CacheT = f32;"


def cache_variant(kernel: Kernel, f16: bool, features: frozenset[str] | set[str] = frozenset()) -> str:
    """The kernel's source with its KV cache elements f16 (``enable f16;`` and CacheT = f16; it
    converts on every cache read and write) or unchanged (f32); ``features`` as Kernel.source."""
    source = kernel.source(features)
    if not f16 or kernel.name not in CACHE_KERNELS:
        return source
    if _CACHE_ALIAS not in source:
        raise ValueError(f"{kernel.name}.wgsl does not declare '{_CACHE_ALIAS}'")
    return "enable f16;\n" + source.replace(_CACHE_ALIAS, "alias CacheT = f16;")
