"""The query/key map's PCA on WebGPU (issue 12): every head's exact PCA, the heavy part on the GPU.

Shapes: G heads (L*H, layer-major), M points per head (queries then keys), K head size.

    pca = await QKPCA.create(backend)        # any Backend: native (wgpu-py) or the page's
    xy = await pca.project(points)           # points [G, M, K] -> [G, M, 2]

Per batch of heads that fits one binding:

1. the CPU centres each head's points (float64 mean, then float32) and uploads them;
2. ``qk_cov.wgsl`` computes every head's scatter matrix X^T X [K, K] in one dispatch (one
   workgroup of K invocations per row and head, two-level float32 sums); one readback;
3. numpy solves the small K x K eigenproblems (``np.linalg.eigh`` via ``glassbox.qk.pca_axes``,
   K = 32 or 64: microseconds; not worth a GPU kernel) and fixes each axis's sign exactly as
   ``glassbox.qk.pca`` does;
4. ``qk_project.wgsl`` projects every point onto its head's two axes in one dispatch; one
   readback.

The result equals ``glassbox.qk.pca`` per head up to float32 rounding: the points are centred
in float64 and rounded once to float32 (relative 6e-8); each scatter entry is a sum of M
products taken as partial sums of BLOCK = 64 points added into a total, so its relative error
stays within ~(64 + M/64) eps (~1e-5 for M = 7,400) of the entry's scale; an axis moves by
about that over the relative gap between the 2nd and 3rd eigenvalues; the projection is a
K-term float32 dot product. tests/gpu/test_qk_pca.py holds it to 1e-4 of the map's extent
(far below a pixel of the 560-pixel head view) on lavapipe.

Standard library + numpy, and the Backend interface only (no ``wgpu``, ``js`` or ``pyscript``).
"""

from __future__ import annotations

import math

import numpy as np

from .. import qk
from .backend import Backend, Copy, Dispatch, GPUError
from .kernels import Kernel

COV = Kernel("qk_cov", (("params", "uniform"), ("x", "read"), ("cov", "read_write")))
PROJECT = Kernel("qk_project", (("params", "uniform"), ("x", "read"), ("axes", "read"), ("out", "read_write")))
KERNELS = (COV, PROJECT)
WG = 64  # qk_project's workgroup size (qk_cov's is K)
COV_BLOCK = 64  # qk_cov: points per float32 partial sum
MAX_K = 256  # qk_cov's workgroup is K invocations: WebGPU's default limit is 256
READBACK_ALIGN = 256


class QKPCA:
    """PCA of many heads' point sets on one Backend. Build with ``await QKPCA.create(backend)``."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._layouts = {k.name: backend.create_layout(k.kinds) for k in KERNELS}
        self._pipelines: dict = {}
        self.batches = 0  # dispatch batches of the last project() (heads split by the binding limit)

    @classmethod
    async def create(cls, backend: Backend) -> "QKPCA":
        return cls(backend)

    async def _pipeline(self, kernel: Kernel, head_size: int):
        key = (kernel.name, head_size)
        if key not in self._pipelines:
            constants = {"K": head_size, "WG": WG} if kernel is PROJECT else {"K": head_size, "BLOCK": COV_BLOCK}
            self._pipelines[key] = await self.backend.create_pipeline(
                kernel.source(), "main", constants, self._layouts[kernel.name], kernel.name)
        return self._pipelines[key]

    def heads_per_batch(self, m: int, k: int) -> int:
        """Heads whose points [G, M, K] float32 fit one storage binding (and one buffer)."""
        limit = min(self.backend.limits["max_storage_buffer_binding_size"], self.backend.limits["max_buffer_size"])
        g = limit // (4 * m * k)
        if g < 1:
            raise GPUError(f"one head's {m} points of size {k} ({4 * m * k} bytes) do not fit a binding ({limit})")
        return min(g, self.backend.limits["max_compute_workgroups_per_dimension"])

    async def project(self, points: np.ndarray) -> np.ndarray:
        """Exact PCA of every head: points [G, M, K] -> scores [G, M, 2] (float64), each head
        as ``glassbox.qk.pca(points[g])`` computes it (see the module docstring)."""
        points = np.asarray(points)
        if points.ndim != 3 or points.shape[1] < 2:
            raise ValueError(f"points must be [G, M, K] with M >= 2, got shape {points.shape}")
        G, M, Kh = points.shape
        if Kh > MAX_K:
            raise GPUError(f"qk_cov runs one invocation per column: head size {Kh} is over {MAX_K}")
        out = np.empty((G, M, 2))
        step = self.heads_per_batch(M, Kh)
        self.batches = 0
        for g0 in range(0, G, step):
            out[g0:g0 + step] = await self._batch(points[g0:g0 + step])
            self.batches += 1
        return out

    async def _batch(self, points: np.ndarray) -> np.ndarray:
        be = self.backend
        G, M, Kh = points.shape
        centred = points.astype(np.float64)
        centred -= centred.mean(axis=1, keepdims=True)
        x = be.create_buffer(4 * G * M * Kh, "storage", "qk.x")
        be.write_buffer(x, np.ascontiguousarray(centred, dtype=np.float32))
        params = be.create_buffer(16, "uniform", "qk.params")
        be.write_buffer(params, np.array([M, G, 0, 0], dtype=np.uint32))

        cov = be.create_buffer(4 * G * Kh * Kh, "storage", "qk.cov")
        scatter = await self._run(COV, Kh, (Kh, G, 1), [(params, 0, 16), (x, 0, x.size), (cov, 0, cov.size)], cov)
        axes = np.stack([qk.pca_axes(s) for s in scatter.reshape(G, Kh, Kh)])  # [G, K, 2]

        axes_buffer = be.create_buffer(4 * G * Kh * 2, "storage", "qk.axes")
        be.write_buffer(axes_buffer, np.ascontiguousarray(axes, dtype=np.float32))
        xy = be.create_buffer(4 * G * M * 2, "storage", "qk.xy")
        scores = await self._run(PROJECT, Kh, (math.ceil(M / WG), G, 1),
                                 [(params, 0, 16), (x, 0, x.size), (axes_buffer, 0, axes_buffer.size), (xy, 0, xy.size)],
                                 xy)
        return scores.reshape(G, M, 2).astype(np.float64)

    async def _run(self, kernel: Kernel, head_size: int, grid, entries, result) -> np.ndarray:
        """One dispatch, a copy of ``result`` into a readback buffer, one submit, one read."""
        be = self.backend
        group = be.create_bind_group(self._layouts[kernel.name], entries)
        staging = be.create_buffer(-(-result.size // READBACK_ALIGN) * READBACK_ALIGN, "readback", "qk.readback")
        be.submit([Dispatch(await self._pipeline(kernel, head_size), group, grid),
                   Copy(result, 0, staging, 0, result.size)])
        (data,) = await be.read([(staging, 0, result.size)])
        return np.frombuffer(data, dtype=np.float32).copy()
