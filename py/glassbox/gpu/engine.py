"""GPT-2's forward on WebGPU: the same steps, names and shapes as ``glassbox.reference.forward``.

The engine uploads the checkpoint once (int8 / q4 matrices stay packed; kernels dequantize),
keeps each KV cache on the GPU, and for every forward:

1. writes the Params uniform (N, T, start) and the token ids;
2. encodes every step in one command encoder: embedding, then per layer
   ln_1 -> c_attn -> attention (appends to the KV cache) -> c_proj + residual -> ln_2 ->
   c_fc + GELU -> c_proj + residual, then ln_f and the logits against the tied wte
   (attention: attention.wgsl where the layer's four [H, N, T] stages are read back, else
   flash_attention.wgsl for prompts and attention_decode.wgsl, split over keys, for a few tokens;
   on GPUs, ln_1 and ln_2 run inside c_attn's and c_fc's prologue where the layer's ln tensors
   are not read back and that matmul is matmul_splitk or matmul_prefill: Engine(fuse_ln=...));
3. copies the trace tensors the caller asked for into readback buffers (after the segment
   that produced them: the embeddings, each layer, the end), submits once, maps once.

Reading back only what is shown (issue 15): ``forward(..., keep=True)`` also keeps every
other tensor of the run on the GPU — GPU-to-GPU copies of the tensors a later segment
overwrites, the rest left in place in the scratch buffers — until the next forward;
``await read_layer(l)`` / ``read_kept(capture)`` then read them without recomputing.
``forward_top`` reads back the K largest logits of the last row (top_k.wgsl) instead of the
logits [N, V]: a decode step's readback is a few hundred bytes (glassbox.gpu.sampler samples
from it exactly as glassbox.sampling does where that is possible).

Pipelines are cached by kernel + entry point + override constants, bind groups by the exact
buffers they bind; scratch buffers only grow, so a decode loop rebuilds nothing.

Within WebGPU's default limits: at most 8 storage buffers per kernel, 16 KiB workgroup memory,
and no binding over the 128 MiB binding limit: wte is cut into vocabulary chunks (fp32 GPT-2's
is 154 MB) and the logits [N, V] are written in row blocks.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import reference
from ..trace import FINAL_NAMES, GLOBAL_NAMES, LAYER_NAMES, Trace, all_names, capture_layer
from . import kernels as K
from .backend import Backend, Buffer, Copy, Dispatch, GPUError, software_adapter

# Which GPU buffer ("role") holds each trace tensor. q/k/v are views of the c_attn output
# qkv [N, 3D]; head_out is attn_concat [N, D] seen as [H, N, K]; emb and res_2 both live in
# the residual stream buffer x (copied before the next layer overwrites it).
GLOBAL_SOURCES = {"tok_emb": "tok", "pos_emb": "pos", "emb": "x"}
LAYER_SOURCES = {
    "ln_1.mean": "mean1", "ln_1.var": "var1", "ln_1": "ln1", "q": "qkv", "k": "qkv", "v": "qkv",
    "scores": "scores", "scaled": "scaled", "masked": "masked", "att": "att", "head_out": "concat",
    "attn_concat": "concat", "attn_proj": "proj", "res_1": "r1", "ln_2.mean": "mean2", "ln_2.var": "var2",
    "ln_2": "ln2", "mlp_fc": "fc", "mlp_gelu": "gelu", "mlp_proj": "mproj", "res_2": "x",
}
FINAL_SOURCES = {"ln_f.mean": "meanf", "ln_f.var": "varf", "ln_f": "lnf", "logits": "logits"}
STAGES = ("scores", "scaled", "masked", "att")
# Buffers only a capture needs: without one, attention skips its stages and the matmuls their
# pre-epilogue output.
CAPTURE_ONLY = set(STAGES) | {"proj", "fc", "mproj"}
assert set(GLOBAL_SOURCES) == set(GLOBAL_NAMES) and set(LAYER_SOURCES) == set(LAYER_NAMES)
assert set(FINAL_SOURCES) == set(FINAL_NAMES)

MATRICES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # each layer's (issue 15, matmul)
READBACK_ALIGN = 256  # offsets of regions inside a readback buffer (mapAsync needs 8)
TOP_K = 64  # logits forward_top reads back by default
KEEP_LIMIT = 256 * 1024 * 1024  # bytes of GPU-to-GPU copies keep=True may hold (default)
# Roles written once per forward: a kept run leaves them in place (no copy). Every other role
# is rewritten by the next layer, so a kept run copies it out after its segment — except in
# the last layer, which nothing overwrites before the next forward.
WRITTEN_ONCE = {"tok", "pos", "lnf", "meanf", "varf", "logits"}
MAX_PLANS = 32  # forward plans kept (by N, T when attention stages are read or T's decode grid, cache, captures)

Capture = Callable[[str], bool] | str | int | None


def capture_predicate(capture: Capture) -> Callable[[str], bool]:
    """None or 'all' -> everything; 'logits' -> logits only; 'none' -> nothing (forward still
    reads the logits; forward_top only its top-k); an int -> that layer (with the
    embeddings, ln_f and logits, as trace.capture_layer); a callable is used as is."""
    if capture is None or capture == "all":
        return lambda name: True
    if capture == "logits":
        return lambda name: name == "logits"
    if capture == "none":
        return lambda name: False
    if isinstance(capture, int) and not isinstance(capture, bool):
        return capture_layer(capture)
    if callable(capture):
        return capture
    raise ValueError(f"capture must be None, 'all', 'logits', 'none', a layer number or a callable, got {capture!r}")


@dataclass
class _Matrix:
    words: Buffer  # [out, in / EPW] u32 words
    scale: Buffer  # the scales, or the dummy for fp32
    n_out: int
    n_in: int


@dataclass
class _Plan:
    """One forward's commands and readback layout, reusable while its buffers live."""

    commands: list
    copies: list  # ((segment, role), (readback buffer, offset, size)) in readback order
    shapes: dict[str, tuple[int, ...]]
    ids: Buffer
    kept: dict = None  # keep=True: (segment, role) -> (GPU buffer, offset, size) holding it
    top: tuple | None = None  # forward_top: the readback region of top_k.wgsl's top
    recording: object = None  # backend.record(commands), replayed by every run


@dataclass(frozen=True)
class Top:
    """The k largest logits of the last row, largest first, lower id first on ties (so
    ``ids[0]`` is np.argmax of the row), and how many of the row's V logits are not finite."""

    values: np.ndarray  # [k] float32 logits (no temperature)
    ids: np.ndarray  # [k] int64 token ids
    nonfinite: int
    vocab_size: int


@dataclass
class _LastRun:
    """What read_kept needs of the last forward run with keep=True."""

    ids: np.ndarray
    start: int
    shapes: dict[str, tuple[int, ...]]
    read: dict  # (segment, role) -> array already read back
    kept: dict  # (segment, role) -> (buffer, offset, size) on the GPU


@dataclass
class _VocabChunk:
    v0: int
    rows: int
    matrix: _Matrix


class GPUCache:
    """Keys and values of every layer on the GPU: k[l], v[l] are [C, D] buffers whose row t
    holds position t (all heads). ``length`` is T, the positions filled so far."""

    def __init__(self, backend: Backend, n_layer: int, nbytes: int):
        self.k = [backend.create_buffer(nbytes, "storage", f"k_cache.{l}") for l in range(n_layer)]
        self.v = [backend.create_buffer(nbytes, "storage", f"v_cache.{l}") for l in range(n_layer)]
        self.length = 0

    def reset(self) -> None:
        self.length = 0


class Engine:
    """Runs a Checkpoint on a Backend. Build with ``await Engine.create(backend, checkpoint)``.

    ``max_binding`` lowers the bytes per binding planned for the vocabulary-sized tensors
    (wte chunks and logits row blocks) below the device's limit; tests use it to exercise
    the splits on small models.
    """

    def __init__(self, backend: Backend, checkpoint, *, max_binding: int | None = None,
                 rowwise_max_tokens: int | None = None, splitk_max_tokens: int | None = None,
                 prefill_min_tokens: int | None = None, fast_attention: bool = True, kv_cache: str = "f32",
                 keep_limit: int = KEEP_LIMIT, fuse_ln: bool | None = None):
        self.backend = backend
        # issue 15, engine: ln_1 and ln_2 run inside the next matmul's prologue (matmul_common.wgsl
        # LN) where that matmul is matmul_splitk or matmul_prefill and the layer's ln tensors
        # are neither read back nor kept; False keeps layer_norm.wgsl's own dispatch everywhere
        # (tools/bench_fused_ln.py compares the two in one run). None: default_fuse_ln.
        self.fuse_ln = self.default_fuse_ln(backend) if fuse_ln is None else fuse_ln
        self.keep_limit = keep_limit
        # issue 15, attention: kv_cache "f16" halves the KV cache (needs the shader-f16 feature,
        # requested with NativeBackend/BrowserBackend.create(optional_features=["shader-f16"])).
        if kv_cache not in ("f32", "f16"):
            raise ValueError(f"kv_cache must be 'f32' or 'f16', got {kv_cache!r}")
        if kv_cache == "f16" and K.F16_FEATURE not in getattr(backend, "features", ()):
            raise GPUError(f"an f16 KV cache needs the device feature {K.F16_FEATURE!r}, which this device lacks")
        self.kv_cache = kv_cache
        # issue 15, attention: False runs attention.wgsl for every layer, as before flash prefill
        # and split decode existed (tools/bench_attention.py compares the two in one run).
        self.fast_attention = fast_attention
        # Runs of up to this many tokens use matmul's row-parallel entry (decode). SwiftShader
        # runs its 16-lane workgroup reductions slowly: a decode step of the default model took
        # 2.1 s there against 0.44 s with the tiled entry (on llvmpipe rowwise wins, 80 vs 140 ms).
        if rowwise_max_tokens is None:
            rowwise_max_tokens = 0 if backend.info.architecture == "swiftshader" else K.ROWWISE_MAX_TOKENS
        self.rowwise_max_tokens = rowwise_max_tokens
        # Issue 15, matmul: runs of up to this many tokens use matmul_splitk.wgsl (split-K GEMV,
        # 16-byte weight loads) where the row length allows; 0 keeps matmul.wgsl's entries.
        if splitk_max_tokens is None:
            splitk_max_tokens = self.default_splitk_max_tokens(backend)
        self.splitk_max_tokens = min(splitk_max_tokens, K.SPLITK_MAX_TOKENS)
        # Runs of at least this many tokens use matmul_prefill.wgsl (64 x 64 tiles, 16-byte
        # weight loads) where the row length allows (issue 15, matmul). Measured: a 64-token
        # forward of the default model's shape on SwiftShader 2x faster than with matmul.wgsl's
        # tiled entry; per GPT-2-small matmul on lavapipe even within noise (0.7-1.6x).
        self.prefill_min_tokens = K.PREFILL_MIN_TOKENS if prefill_min_tokens is None else prefill_min_tokens
        self.shader_features = frozenset(backend.shader_features)
        self.splitk_lanes = (min(K.SPLITK_LANES, backend.subgroup_min_size) if "subgroups" in self.shader_features
                             else K.SPLITK_LANES)
        self.config = checkpoint.config
        self.scheme = checkpoint.scheme
        self.group = checkpoint.group
        self.limits = dict(backend.limits)
        self._split_binding = min(max_binding or self.limits["max_storage_buffer_binding_size"],
                                  self.limits["max_storage_buffer_binding_size"])
        self._check_fits()
        self._layouts = {k.name: backend.create_layout(k.kinds) for k in K.KERNELS}
        self._shader_code = {k.name: K.cache_variant(k, kv_cache == "f16", self.shader_features) for k in K.KERNELS}
        self._pipelines: dict = {}
        self._labels: dict[int, str] = {}  # id(pipeline) -> "kernel.entry [OUT x IN]" (profile)
        self._bind_groups: dict = {}
        self._scratch: dict[str, Buffer] = {}
        self._readback: list[Buffer] = []
        self._kept: list[Buffer] = []  # keep=True: storage buffers the tensors are copied into
        self._last: _LastRun | None = None
        self.last_plan: _Plan | None = None
        self._plans: dict = {}  # plan key (N, T or 0, KV cache serial, copies) -> _Plan
        self._lock = asyncio.Lock()
        self._params = backend.create_buffer(16, "uniform", "params")
        self._dummy_read = backend.create_buffer(16, "storage", "dummy.read")
        # Distinct writable dummies: one dispatch must not bind one buffer writable twice.
        self._dummy_rw = [backend.create_buffer(16, "storage", f"dummy.rw{i}") for i in range(4)]
        self._upload(checkpoint)
        self._own_cache: GPUCache | None = None

    @staticmethod
    def default_splitk_max_tokens(backend: Backend) -> int:
        """Issue 15, matmul: decode runs (up to K.SPLITK_MAX_TOKENS tokens) use the split-K GEMV
        on every adapter. Measured faster on both software adapters at hand (bench/results.md,
        tools/bench_kernels.py): per GPT-2-small matmul on lavapipe, the variant picked there
        (subgroups) 1.1-4.5x the rowwise entry;
        a decode step of the default model's shape on SwiftShader 2-2.4x the tiled entry it
        used before (rowwise was 2.6-3.4x slower than tiled there). Real GPUs: designed for
        them (192-1152 workgroups of 64 per GPT-2-small layer matmul; an H100 has 132 SMs), not
        measured."""
        return K.SPLITK_MAX_TOKENS

    @staticmethod
    def default_fuse_ln(backend: Backend) -> bool:
        """Issue 15, engine: fuse the layer norms on GPUs, not on CPU adapters. Fusing saves 2 L
        dispatches per forward, but every workgroup of the matmul recomputes its tokens' row
        statistics (two passes over the row and two workgroup reductions): on llvmpipe that
        made c_attn's and c_fc's decode matmul 2.3-2.4x their CPU time with the separate
        layer_norm.wgsl dispatch, prefill's 1.2x (bench/results.md, tools/bench_fused_ln.py
        --kernels), where a dispatch costs little. A GPU runs those workgroups in parallel
        while each saved dispatch is a launch and a pipeline drain: designed for that, not
        measured (no GPU was lent)."""
        return not software_adapter(backend.info)

    @classmethod
    async def create(cls, backend: Backend, checkpoint, **options) -> "Engine":
        return cls(backend, checkpoint, **options)

    def describe(self) -> str:
        return self.backend.info.describe()

    def new_cache(self) -> GPUCache:
        """An empty KV cache on the GPU (L x 2 buffers of C x D f32, or f16). When it is garbage
        collected, the plans and bind groups that use it go too, freeing its memory."""
        c = self.config
        cache = GPUCache(self.backend, c.n_layer, c.n_positions * c.n_embd * (2 if self.kv_cache == "f16" else 4))
        weakref.finalize(cache, _forget_buffers, weakref.ref(self), {b.serial for b in cache.k + cache.v})
        return cache

    def _forget(self, serials: set[int]) -> None:
        """Drop every cached plan and bind group that uses one of these buffers."""
        self._bind_groups = {key: group for key, group in self._bind_groups.items()
                             if serials.isdisjoint(serial for serial, _, _ in key[1])}
        self._plans = {key: plan for key, plan in self._plans.items() if key[2] not in serials}

    # ----- set-up

    def _check_fits(self) -> None:
        c = self.config
        D, F = c.n_embd, c.mlp_width
        per_word = K.ELEMENTS_PER_WORD[self.scheme]
        unit = max(per_word, self.group if self.scheme == "q4" else 1)
        if D % unit or F % unit:
            raise GPUError(f"{self.scheme} kernels need D ({D}) and F ({F}) divisible by {unit}")
        workgroup = K.attention_workgroup_bytes(c.head_size, c.n_positions)
        if workgroup > self.limits["max_compute_workgroup_storage_size"]:
            raise GPUError(f"attention needs {workgroup} bytes of workgroup memory for C={c.n_positions}, "
                           f"over the {self.limits['max_compute_workgroup_storage_size']} limit")
        # issue 15, attention: layers without captured stages run flash prefill / split decode.
        try:
            self._flash_tile = K.flash_tile(c.head_size, self.limits)
        except ValueError as e:
            raise GPUError(str(e)) from None
        workgroup = K.decode_workgroup_bytes(c.head_size, c.n_positions)
        if workgroup > self.limits["max_compute_workgroup_storage_size"]:
            raise GPUError(f"decode attention needs {workgroup} bytes of workgroup memory for C={c.n_positions}, "
                           f"over the {self.limits['max_compute_workgroup_storage_size']} limit")
        if self._logits_block_rows() < 1:
            raise GPUError(f"one row block of logits [*, {c.vocab_size}] does not fit a binding")

    def _upload_array(self, array: np.ndarray, label: str) -> Buffer:
        data = np.ascontiguousarray(array)
        if data.nbytes % 4:
            raise GPUError(f"{label} has {data.nbytes} bytes, not a whole number of u32 words")
        if data.nbytes > self.limits["max_storage_buffer_binding_size"]:
            raise GPUError(f"{label} ({data.nbytes} bytes) is over the binding limit")
        buffer = self.backend.create_buffer(max(data.nbytes, 4), "storage", label)
        self.backend.write_buffer(buffer, data)
        return buffer

    def _matrix(self, q: np.ndarray, scale: np.ndarray | None, label: str) -> _Matrix:
        expected = {"none": np.float32, "int8": np.int8, "q4": np.uint8}[self.scheme]
        if q.dtype != expected:
            raise GPUError(f"{label} is {q.dtype}, expected {np.dtype(expected)} for scheme {self.scheme}")
        n_in = q.shape[1] * (2 if self.scheme == "q4" else 1)
        scale_buffer = self._dummy_read if scale is None else self._upload_array(
            scale.astype(np.float32), label + ".scale")
        return _Matrix(self._upload_array(q, label), scale_buffer, q.shape[0], n_in)

    def _upload(self, checkpoint) -> None:
        c = self.config
        t = checkpoint.tensors
        vector = lambda name: self._upload_array(t[name].astype(np.float32), name)  # noqa: E731
        q, scale = checkpoint.matrix("wte.weight")
        row_bytes = q.nbytes // c.vocab_size
        rows = min(c.vocab_size, self._split_binding // row_bytes,
                   K.matmul_max_out(self.limits["max_compute_workgroups_per_dimension"]))
        self.wte = [_VocabChunk(v0, min(rows, c.vocab_size - v0),
                                self._matrix(q[v0:v0 + rows], None if scale is None else scale[v0:v0 + rows],
                                             f"wte.weight#{v0}"))
                    for v0 in range(0, c.vocab_size, rows)]
        self.wpe = self._matrix(*checkpoint.matrix("wpe.weight"), "wpe.weight")
        self.layers = []
        for layer in range(c.n_layer):
            p = f"h.{layer}."
            self.layers.append({
                "ln_1": (vector(p + "ln_1.weight"), vector(p + "ln_1.bias")),
                "ln_2": (vector(p + "ln_2.weight"), vector(p + "ln_2.bias")),
                # issue 15, engine: [weight; bias] as one buffer for the fused layer norm (LN)
                **{f"{ln}.packed": self._upload_array(np.concatenate(
                    [t[p + ln + ".weight"], t[p + ln + ".bias"]]).astype(np.float32), p + ln + ".packed")
                   for ln in ("ln_1", "ln_2") if self.fuse_ln},
                **{key: (self._matrix(*checkpoint.matrix(p + key + ".weight"), p + key), vector(p + key + ".bias"))
                   for key in MATRICES},
            })
        self.ln_f = (vector("ln_f.weight"), vector("ln_f.bias"))

    # ----- caches of GPU objects

    async def _pipeline(self, kernel: K.Kernel, entry: str, constants: dict):
        key = (kernel.name, entry, tuple(sorted(constants.items())))
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            pipeline = await self.backend.create_pipeline(self._shader_code[kernel.name], entry, constants,
                                                          self._layouts[kernel.name], f"{kernel.name}.{entry}")
            self._pipelines[key] = pipeline
            self._labels[id(pipeline)] = _label(kernel.name, entry, constants)
        return pipeline

    def _bind(self, kernel: K.Kernel, buffers: dict):
        entries = [b if isinstance(b, tuple) else (b, 0, b.size) for b in kernel.order(buffers)]
        key = (kernel.name, tuple((b.serial, offset, size) for b, offset, size in entries))
        group = self._bind_groups.get(key)
        if group is None:
            group = self._bind_groups[key] = self.backend.create_bind_group(self._layouts[kernel.name], entries)
        return group

    def _buffer(self, role: str, nbytes: int) -> Buffer:
        """The scratch buffer of a role, grown (doubling) when a run needs more."""
        limit = self.limits["max_buffer_size" if role == "logits" else "max_storage_buffer_binding_size"]
        if nbytes > limit:
            raise GPUError(f"{role} needs {nbytes} bytes for this run, over the {limit}-byte limit: use fewer tokens")
        buffer = self._scratch.get(role)
        if buffer is None or buffer.size < nbytes:
            size = max(nbytes, 16) if buffer is None else min(max(nbytes, 2 * buffer.size), limit)
            if role in self._scratch:  # every plan binds every scratch buffer
                self._forget({self._scratch[role].serial})
                self._plans.clear()
            buffer = self._scratch[role] = self.backend.create_buffer(size, "storage", role)
        return buffer

    def _readback_regions(self, sizes: list[int], pool: list[Buffer] | None = None,
                          usage: str = "readback") -> list[tuple[Buffer, int, int]]:
        """Place regions of the given sizes in readback buffers (or ``pool``'s buffers of
        ``usage``), each within max_buffer_size."""
        pool = self._readback if pool is None else pool
        limit = self.limits["max_buffer_size"]
        ends = [0]  # bytes used in each readback buffer
        placed = []
        for size in sizes:
            if ends[-1] and ends[-1] + size > limit:
                ends.append(0)
            placed.append((len(ends) - 1, ends[-1], size))
            ends[-1] += -(-size // READBACK_ALIGN) * READBACK_ALIGN
        for i, end in enumerate(ends):
            if i == len(pool):
                pool.append(self.backend.create_buffer(max(end, 16), usage, f"{usage}{i}"))
            elif pool[i].size < end:
                pool[i] = self.backend.create_buffer(min(max(end, 2 * pool[i].size), limit), usage, f"{usage}{i}")
                self._plans.clear()
        return [(pool[i], offset, size) for i, offset, size in placed]

    # ----- the forward pass

    def _logits_block_rows(self) -> int:
        """Tokens per logits dispatch: [rows, V] within a binding, rows a multiple of the row
        count that keeps both bindings' offsets (rows*V*4, rows*D*4) aligned."""
        align = self.limits["min_storage_buffer_offset_alignment"]
        c = self.config
        unit = math.lcm(align // math.gcd(align, 4 * c.vocab_size), align // math.gcd(align, 4 * c.n_embd))
        return self._split_binding // (4 * c.vocab_size) // unit * unit

    def _shapes(self, n: int, t: int) -> dict[str, tuple[int, ...]]:
        c = self.config
        D, F, H = c.n_embd, c.mlp_width, c.n_head
        shapes = {role: (n, D) for role in ("tok", "pos", "x", "ln1", "concat", "proj", "r1", "ln2", "mproj", "lnf")}
        shapes.update({role: (n,) for role in ("mean1", "var1", "mean2", "var2", "meanf", "varf")})
        shapes.update({"qkv": (n, 3 * D), "fc": (n, F), "gelu": (n, F), "logits": (n, c.vocab_size)})
        shapes.update({stage: (H, n, t) for stage in STAGES})
        return shapes

    async def forward(self, ids, cache: GPUCache | None = None, capture: Capture = None, *,
                      keep: bool = False) -> Trace:
        """Run token ids [N] (continuing ``cache`` if given) and return the Trace.

        ``capture`` picks the tensors read back (see capture_predicate); the logits always are.
        ``keep``: keep every other tensor of this run on the GPU for read_kept / read_layer
        (until the next forward).
        """
        _, trace = await self._forward(ids, cache, capture, keep, 0, logits=True)
        return trace

    async def forward_top(self, ids, cache: GPUCache | None = None, capture: Capture = "none", *,
                          k: int = TOP_K, keep: bool = False) -> tuple[Top, Trace]:
        """Like forward, but reads back the k largest logits of the last row (a Top) instead of
        the logits [N, V]; the Trace holds what ``capture`` asks for (the logits only if it
        asks for them)."""
        return await self._forward(ids, cache, capture, keep, k, logits=False)

    async def forward_layers(self, ids, capture: Capture) -> Trace:
        """Run token ids [N] from position 0 (the engine's own cache) and return only the
        tensors ``capture`` picks, stopping after the last layer that holds one of them: no
        ln_f, no logits [N, V] unless a final tensor is asked for (issue 12: the Q/K map's
        corpus reads q, k and att of every layer, and the vocabulary projection was most of
        such a forward's work on a small model). Nothing of it is kept for read_kept beyond
        what it read back."""
        want = capture_predicate(capture)
        names = [name for name in all_names(self.config) if want(name)]
        final = any(self._source(name)[0] == self.config.n_layer for name in names)
        upto = None if final else max((self._source(name)[0] for name in names), default=-1)
        _, trace = await self._forward(ids, None, capture, False, 0, logits=False, upto=upto)
        return trace

    async def read_layer(self, layer: int) -> Trace:
        """Layer ``layer``'s tensors of the last forward run with keep=True, without recomputing."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.config.n_layer:
            raise ValueError(f"layer must be 0..{self.config.n_layer - 1}, got {layer!r}")
        prefix = f"h.{layer}."
        return await self.read_kept(lambda name: name.startswith(prefix))

    async def read_kept(self, capture: Capture = None) -> Trace:
        """The tensors ``capture`` picks (see capture_predicate) of the last forward, read from
        what it kept on the GPU (or already read back). Every forward keeps the tensors no
        later step overwrites (tok_emb, pos_emb, ln_f's, the logits); keep=True keeps all.
        Raises GPUError for a tensor the last forward did not keep."""
        want = capture_predicate(capture)
        async with self._lock:
            last = self._last
            if last is None:
                raise GPUError("nothing is kept: no forward has run since the engine was made (or the last failed)")
            names = [name for name in all_names(self.config) if want(name)]
            keys = sorted({self._source(name) for name in names})
            fetch = [key for key in keys if key not in last.read]
            missing = [name for name in names if self._source(name) not in last.read
                       and self._source(name) not in last.kept]
            if missing:
                raise GPUError(f"{missing[0]} was not kept: run forward with keep=True to read it later")
            regions = self._readback_regions([last.kept[key][2] for key in fetch])
            arrays = dict(last.read)
            if fetch:
                self.backend.submit([Copy(src, offset, dst, dst_offset, size) for key, (src, offset, size), (
                    dst, dst_offset, _) in zip(fetch, (last.kept[key] for key in fetch), regions)])
                data = await self.backend.read(regions)
                arrays.update({key: np.frombuffer(blob, dtype=np.float32).reshape(last.shapes[key[1]])
                               for key, blob in zip(fetch, data)})
        trace = Trace(config=self.config, ids=last.ids, start=last.start)
        for name in names:
            trace[name] = _view(name, arrays[self._source(name)], self.config)
        return trace

    async def read_last_rows(self, name: str = "logits", rows: int = 1) -> np.ndarray:
        """The last ``rows`` rows of a kept [N, ...] tensor of the last forward (issue 16: the
        logits row the views read, [1, V], after a ``forward_top`` that read back none):
        one copy of those rows' bytes, not the whole tensor."""
        async with self._lock:
            last = self._last
            if last is None:
                raise GPUError("nothing is kept: no forward has run since the engine was made (or the last failed)")
            key = self._source(name)
            shape = last.shapes[key[1]]
            rows = max(1, min(int(rows), shape[0]))
            if key in last.read:
                return _view(name, last.read[key], self.config)[-rows:]
            if key not in last.kept:
                raise GPUError(f"{name} was not kept: run forward with keep=True to read it later")
            src, offset, size = last.kept[key]
            row = size // shape[0]
            region = self._readback_regions([rows * row])[0]
            self.backend.submit([Copy(src, offset + (shape[0] - rows) * row, region[0], region[1], rows * row)])
            data = (await self.backend.read([region]))[0]
        return np.frombuffer(data, dtype=np.float32).reshape((rows,) + tuple(shape[1:])).copy()

    async def _forward(self, ids, cache, capture, keep: bool, top: int, logits: bool,
                       upto: int | None = None) -> tuple[Top | None, Trace]:
        """``upto``: run the layers 0..upto only (no ln_f, no logits; forward_layers)."""
        c = self.config
        start = cache.length if cache is not None else 0
        ids = reference.check_ids(c, ids, start)
        want = capture_predicate(capture)
        names = [name for name in all_names(c) if want(name)]
        if logits and "logits" not in names:
            names.append("logits")
        if top and not 1 <= top <= K.TOP_K_WG:
            raise ValueError(f"k must be 1..{K.TOP_K_WG}, got {top}")
        async with self._lock:
            self.backend.check()
            self._last = None
            try:
                if cache is None and self._own_cache is None:
                    self._own_cache = self.new_cache()
                result = await self._run(ids, start, cache or self._own_cache, names, keep, top, upto)
            except GPUError:
                raise
            except Exception as e:
                self.backend.check(e)  # DeviceLostError when the device is what failed
                raise
            if cache is not None:
                cache.length = start + ids.size
        return result

    async def _run(self, ids: np.ndarray, start: int, kv: GPUCache, names: list[str], keep: bool,
                   top: int, upto: int | None = None) -> tuple[Top | None, Trace]:
        n, t = int(ids.size), start + int(ids.size)
        source = {name: self._source(name) for name in names}
        plan = await self._plan(n, t, kv, sorted(set(source.values())), keep, top, upto)
        self.backend.replay(plan.recording, [(self._params, K.params_array(n, t, start)),
                                             (plan.ids, ids.astype(np.uint32))])
        regions = [region for _, region in plan.copies] + ([plan.top] if top else [])
        data = await self.backend.read(regions)
        arrays = {key: np.frombuffer(blob, dtype=np.float32).reshape(plan.shapes[key[1]])
                  for (key, _), blob in zip(plan.copies, data)}
        trace = Trace(config=self.config, ids=ids, start=start)
        for name in names:
            trace[name] = _view(name, arrays[source[name]], self.config)
        self._last = _LastRun(ids, start, plan.shapes, arrays, plan.kept)
        found = None
        if top:
            words = np.frombuffer(data[-1], dtype=np.uint32)
            count = int(np.count_nonzero(words[top:2 * top] != 0xFFFFFFFF))
            found = Top(words[:count].view(np.float32).copy(), words[top:top + count].astype(np.int64),
                        int(words[2 * top]), self.config.vocab_size)
        return found, trace

    def _source(self, name: str) -> tuple[int, str]:
        """(segment, role): the buffer holding a trace tensor and the segment after which it is
        copied out (-1 the embeddings, 0..L-1 a layer, L the end)."""
        if name in GLOBAL_SOURCES:
            return -1, GLOBAL_SOURCES[name]
        if name in FINAL_SOURCES:
            return self.config.n_layer, FINAL_SOURCES[name]
        layer, short = name[2:].split(".", 1)
        return int(layer), LAYER_SOURCES[short]

    async def _plan(self, n: int, t: int, kv: GPUCache, copies: list[tuple[int, str]], keep: bool = False,
                    top: int = 0, upto: int | None = None) -> "_Plan":
        """The commands of a forward over n tokens (T = t), cached: a decode loop reuses one.
        ``upto``: layers 0..upto only, then nothing (no ln_f, no logits)."""
        if upto is not None and (keep or top or any(segment > upto for segment, _ in copies)):
            raise ValueError("a forward that stops after a layer keeps nothing and reads no later tensor")
        stages_needed = keep or any(role in STAGES for _, role in copies)
        # issue 15, engine: a decode plan's split-attention grid depends on T's bucket (K.decode_grid)
        decode = self.fast_attention and n <= K.DECODE_MAX_TOKENS
        span = t if stages_needed else ("grid", K.decode_grid(t, self.config.n_positions)) if decode else 0
        key = (n, span, kv.k[0].serial, tuple(copies), keep, top, upto)
        plan = self._plans.get(key)
        if plan is None:
            plan = await self._build_plan(n, t, kv, copies, keep, top, upto)
            plan.recording = self.backend.record(plan.commands)
            while len(self._plans) >= MAX_PLANS:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        self.last_plan = plan  # the plan of the last forward (benchmarks count its commands)
        return plan

    async def _build_plan(self, n: int, t: int, kv: GPUCache, copies: list[tuple[int, str]], keep: bool = False,
                          top: int = 0, upto: int | None = None) -> "_Plan":
        c = self.config
        D, H, V = c.n_embd, c.n_head, c.vocab_size
        shapes = self._shapes(n, t)
        nbytes = {role: 4 * math.prod(shape) for role, shape in shapes.items()}
        last = c.n_layer if upto is None else upto  # the last segment this forward writes (n_layer: the end)
        kept_keys = [key for key in self._keep_keys(copies) if (keep or key[1] in WRITTEN_ONCE) and key[0] <= last]
        captured = {role for _, role in copies + kept_keys}
        if captured & set(STAGES):
            captured |= set(STAGES)  # attention writes all four stages or none
        buf = {role: self._buffer(role, nbytes[role]) for role in shapes
               if role not in CAPTURE_ONLY or role in captured}
        buf["ids"] = self._buffer("ids", 4 * n)
        top_words = K.top_k_words(top) if top else 0
        placed = self._readback_regions(([4 * top_words] if top else []) + [nbytes[role] for _, role in copies])
        top_region = placed.pop(0) if top else None
        region_of = dict(zip(copies, placed))
        # keep=True (issue 15, g15): where each kept tensor stays — its own scratch buffer when
        # nothing overwrites it before the next forward, else a copy in the kept pool.
        copied = [key for key in kept_keys if not self._kept_in_place(*key)]
        if sum(nbytes[role] for _, role in copied) > self.keep_limit:
            raise GPUError(f"keep=True would hold {sum(nbytes[role] for _, role in copied) / 2**20:.0f} MiB "
                           f"on the GPU for {n} tokens, over the {self.keep_limit / 2**20:.0f} MiB limit: "
                           "capture one layer instead")
        kept_at = dict(zip(copied, self._readback_regions([nbytes[role] for _, role in copied], self._kept,
                                                          "storage")))
        cmds: list = []
        params = self._params
        scheme = {"SCHEME": K.SCHEME_CODES[self.scheme], "GROUP": self.group}
        dummy_rw = self._dummy_rw
        # matmul_splitk's partial sums: one buffer shared by every matmul of the plan (issue 15, matmul)
        matrices = [w[key][0] for w in self.layers for key in MATRICES] + [chunk.matrix for chunk in self.wte]
        part_bytes = max(K.splitk_part_bytes(m.n_in, m.n_out, self.scheme) for m in matrices)

        async def dispatch(kernel, launch, constants, buffers):
            entry, extra, grid = launch
            pipeline = await self._pipeline(kernel, entry, {**constants, **extra})
            cmds.append(Dispatch(pipeline, self._bind(kernel, {"params": params, **buffers}), grid))

        def copy_segment(segment):
            for key, (dst, offset, size) in (*region_of.items(), *kept_at.items()):
                if key[0] == segment:
                    cmds.append(Copy(buf[key[1]], 0, dst, offset, size))

        async def layer_norm(x, weights, out, mean, var):
            await dispatch(K.LAYER_NORM, K.layer_norm_launch(n), {"D": D, "EPS": c.layer_norm_epsilon},
                           {"x": x, "weight": weights[0], "bias": weights[1], "out": out, "mean": mean, "var_": var})

        async def matmul(x, m: _Matrix, bias, out, epilogue=K.EPILOGUE_NONE, res=None, pre=None, rows=n, ln=None,
                         **placement):
            """One matmul: matmul_splitk.wgsl's two passes for decode-sized runs where it fits,
            matmul_prefill.wgsl for prompts, else matmul.wgsl's rowwise or tiled entry (issue 15,
            matmul). ``ln``: x is a layer norm's input and ``ln`` its [weight; bias] buffer,
            normalized in the matmul's prologue (issue 15, engine; only where _fuses_ln)."""
            constants = {"IN": m.n_in, "OUT": m.n_out, **scheme, "HAS_BIAS": bias is not None, "EPILOGUE": epilogue,
                         "STORE_PRE": pre is not None, **placement}
            buffers = {"x": x, "res": res or self._dummy_read, "w": m.words, "scale": m.scale,
                       "bias": bias or self._dummy_read, "pre": pre or dummy_rw[0], "out": out}
            if ln is not None:
                assert res is None and self._fuses_ln(rows, m.n_in), "LN binds res and needs splitk or prefill"
                constants.update(LN=True, EPS=c.layer_norm_epsilon)
                buffers["res"] = ln
            if rows <= self.splitk_max_tokens and K.splitk_fits(rows, m.n_in, self.scheme):
                part = self._buffer("part", part_bytes)
                for launch in K.splitk_launches(m.n_in, m.n_out, self.scheme, self.splitk_lanes):
                    await dispatch(K.MATMUL_SPLITK, launch, constants, {**buffers, "part": part})
                return
            if K.prefill_fits(rows, m.n_in, self.scheme, self.prefill_min_tokens):
                await dispatch(K.MATMUL_PREFILL, K.prefill_launch(rows, m.n_out), constants, buffers)
                return
            await dispatch(K.MATMUL, K.matmul_launch(rows, m.n_out, rowwise_max=self.rowwise_max_tokens), constants,
                           buffers)

        async def attention(layer, capture_stages):
            """issue 15, attention: a layer whose stages are captured runs attention.wgsl (it writes
            the four [H, N, T] stages); otherwise decode-sized runs split over keys
            (attention_decode.wgsl, two passes) and longer ones run flash_attention.wgsl. All three
            append this run's k and v to the cache and give the same head_out."""
            qkv_cache = {"qkv": buf["qkv"], "k_cache": kv.k[layer], "v_cache": kv.v[layer]}
            constants = {"H": H, "K": c.head_size, "SQRT_K": float(np.float32(math.sqrt(c.head_size)))}
            if capture_stages or not self.fast_attention:
                stages = {s: buf[s] if capture_stages else dummy_rw[i] for i, s in enumerate(STAGES)}
                await dispatch(K.ATTENTION, K.attention_launch(n, H), {
                    **constants, "CTX": c.n_positions, "CAPTURE": capture_stages},
                    {**qkv_cache, **stages, "out": buf["concat"]})
            elif n <= K.DECODE_MAX_TOKENS:
                partials = self._buffer("attn_partials", 4 * K.decode_partials_floats(n, H, c.head_size, c.n_positions))
                for launch in K.attention_decode_launches(n, H, c.n_positions, t=t):
                    await dispatch(K.ATTENTION_DECODE, launch, constants,
                                   {**qkv_cache, "partials": partials, "out": buf["concat"]})
            else:
                await dispatch(K.FLASH_ATTENTION, K.flash_attention_launch(n, H, c.head_size, self._flash_tile),
                               constants, {**qkv_cache, "out": buf["concat"]})

        for chunk in self.wte:
            constants = {"D": D, **scheme, "V0": chunk.v0, "VC": chunk.rows}
            await dispatch(K.EMBEDDING, K.embedding_launch(n, D), constants, {
                "ids": buf["ids"], "wte": chunk.matrix.words, "wte_scale": chunk.matrix.scale,
                "wpe": self.wpe.words, "wpe_scale": self.wpe.scale,
                "tok_emb": buf["tok"], "pos_emb": buf["pos"], "emb": buf["x"]})
        copy_segment(-1)

        for layer, w in enumerate(self.layers[:last + 1]):  # every layer, or 0..upto
            kept = {role for seg, role in copies + kept_keys if seg == layer}  # g15: + kept
            maybe = lambda role: buf[role] if role in kept else None  # noqa: E731

            async def normed_matmul(x, ln, roles, matrix, out, epilogue=K.EPILOGUE_NONE, pre=None):
                """layer_norm.wgsl into roles (out, mean, var), then the matmul on its out; or,
                where nobody reads those roles, the matmul with the layer norm in its prologue
                (issue 15, engine)."""
                if self._fuses_ln(n, D) and kept.isdisjoint(roles):
                    await matmul(x, *w[matrix], out, epilogue, pre=pre, ln=w[ln + ".packed"])
                else:
                    await layer_norm(x, w[ln], *(buf[role] for role in roles))
                    await matmul(buf[roles[0]], *w[matrix], out, epilogue, pre=pre)

            await normed_matmul(buf["x"], "ln_1", ("ln1", "mean1", "var1"), "attn.c_attn", buf["qkv"])
            await attention(layer, any(stage in kept for stage in STAGES))
            await matmul(buf["concat"], *w["attn.c_proj"], buf["r1"], K.EPILOGUE_RESIDUAL, res=buf["x"],
                         pre=maybe("proj"))
            await normed_matmul(buf["r1"], "ln_2", ("ln2", "mean2", "var2"), "mlp.c_fc", buf["gelu"], K.EPILOGUE_GELU,
                                pre=maybe("fc"))
            await matmul(buf["gelu"], *w["mlp.c_proj"], buf["x"], K.EPILOGUE_RESIDUAL, res=buf["r1"],
                         pre=maybe("mproj"))
            copy_segment(layer)

        if upto is None:  # the end (forward_layers stops after layer upto)
            await layer_norm(buf["x"], self.ln_f, buf["lnf"], buf["meanf"], buf["varf"])
            block = self._logits_block_rows()
            for r0 in range(0, n, block):
                rows = min(block, n - r0)
                x = (buf["lnf"], 4 * D * r0, min(buf["lnf"].size - 4 * D * r0, 4 * D * block))
                out = (buf["logits"], 4 * V * r0, min(buf["logits"].size - 4 * V * r0, 4 * V * block))
                for chunk in self.wte:
                    await matmul(x, chunk.matrix, None, out, rows=rows, OUT_STRIDE=V, OUT_OFFSET=chunk.v0, ROW0=r0,
                                 ROWS=block)
            if top:  # issue 15 (g15): the last row's top-k, from the logits block holding that row
                r0 = (n - 1) // block * block
                logits_block = (buf["logits"], 4 * V * r0, min(buf["logits"].size - 4 * V * r0, 4 * V * block))
                top_buf = self._buffer("top_k", 4 * top_words)
                await dispatch(K.TOP_K, K.top_k_launch(top), {"V": V, "R0": r0},
                               {"logits": logits_block, "top": top_buf})
                cmds.append(Copy(top_buf, 0, *top_region))
            copy_segment(c.n_layer)
        kept = {key: region for key, region in kept_at.items()}
        kept.update({key: (buf[key[1]], 0, nbytes[key[1]]) for key in kept_keys if key not in kept_at})
        return _Plan(commands=cmds, copies=list(region_of.items()), shapes=shapes, ids=buf["ids"], kept=kept,
                     top=top_region)

    def _fuses_ln(self, rows: int, n_in: int) -> bool:
        """Whether a layer norm over rows x n_in can run in the next matmul's prologue: fusion
        is on and that matmul runs matmul_splitk or matmul_prefill (matmul.wgsl has no LN).
        ln_f is never fused: every forward keeps it for read_kept (WRITTEN_ONCE)."""
        return self.fuse_ln and (
            (rows <= self.splitk_max_tokens and K.splitk_fits(rows, n_in, self.scheme))
            or K.prefill_fits(rows, n_in, self.scheme, self.prefill_min_tokens))

    def _keep_keys(self, copies: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """(segment, role) of every trace tensor a keep=True run holds on the GPU: all those
        not read back."""
        read = set(copies)
        return sorted({self._source(name) for name in all_names(self.config)} - read)

    def _kept_in_place(self, segment: int, role: str) -> bool:
        """Whether a role's scratch buffer still holds a segment's tensor after the forward."""
        return role in WRITTEN_ONCE or segment == self.config.n_layer - 1

    async def profile(self, ids, cache: GPUCache | None = None, capture: Capture = "none", *,
                      top: int = 0) -> list[tuple[str, float]]:
        """One forward (continuing ``cache`` like forward; nothing read back) with each
        dispatch in its own pass between timestamp queries: [(kernel label, GPU ns)] in
        dispatch order. Needs a backend created with the 'timestamp-query' feature."""
        if not self.backend.can_time:
            raise GPUError(f"{self.describe()}: this device has no 'timestamp-query' (request it at creation; "
                           "Chrome also needs --enable-webgpu-developer-features for full resolution)")
        c = self.config
        start = cache.length if cache is not None else 0
        ids = reference.check_ids(c, ids, start)
        want = capture_predicate(capture)
        names = [name for name in all_names(c) if want(name)]
        async with self._lock:
            self.backend.check()
            self._last = None
            kv = cache or self._own_cache or self.new_cache()
            if cache is None:
                self._own_cache = kv
            n, t = int(ids.size), start + int(ids.size)
            plan = await self._plan(n, t, kv, sorted({self._source(name) for name in names}), False, top)
            self.backend.write_buffer(self._params, K.params_array(n, t, start))
            self.backend.write_buffer(plan.ids, ids.astype(np.uint32))
            times = await self.backend.submit_timed(plan.commands)
            if cache is not None:
                cache.length = t
        labels = [self._labels.get(id(cmd.pipeline), "?") for cmd in plan.commands if isinstance(cmd, Dispatch)]
        return list(zip(labels, times))

    async def generate(self, ids, n: int, pick: Callable[[np.ndarray], int]) -> list[int]:
        """Continue ``ids`` by up to ``n`` tokens with the KV cache; ``pick(logits [V]) -> id``.

        Stops early when the context is full, like glassbox.model.Model.generate.
        """
        cache = self.new_cache()
        logits = (await self.forward(ids, cache=cache, capture="logits")).logits[-1]
        out: list[int] = []
        for _ in range(n):
            token = int(pick(logits))
            out.append(token)
            if cache.length >= self.config.n_positions or len(out) == n:
                break
            logits = (await self.forward([token], cache=cache, capture="logits")).logits[-1]
        return out


def _forget_buffers(engine_ref, serials: set[int]) -> None:
    engine = engine_ref()
    if engine is not None:
        engine._forget(serials)


def _label(kernel: str, entry: str, constants: dict) -> str:
    """A dispatch's name in profiles: kernel.entry, with matmul's [OUT x IN]."""
    if "OUT" in constants and "IN" in constants:
        return f"{kernel}.{entry} [{constants['OUT']}x{constants['IN']}]"
    return f"{kernel}.{entry}"


def _view(name: str, array: np.ndarray, config) -> np.ndarray:
    """A trace tensor from its role's buffer contents: q/k/v and head_out regrouped by head."""
    short = name.split(".", 2)[2] if name.startswith("h.") else name
    n = array.shape[0]
    H, Kh, D = config.n_head, config.head_size, config.n_embd
    if short in ("q", "k", "v"):
        part = "qkv".index(short)
        array = array[:, part * D:(part + 1) * D]
    if short in ("q", "k", "v", "head_out"):
        return np.ascontiguousarray(array.reshape(n, H, Kh).transpose(1, 0, 2))
    return array
