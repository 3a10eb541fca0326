"""Run one WGSL kernel on numpy inputs through the Backend interface (the kernel tests)."""

from __future__ import annotations

import numpy as np

from glassbox.gpu import kernels as K
from glassbox.gpu.backend import Backend, Copy, Dispatch


class KernelRunner:
    """Compiles each (kernel, entry, constants) once; uploads inputs and reads outputs per call."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._layouts = {}
        self._pipelines = {}

    async def pipeline(self, kernel: K.Kernel, entry: str, constants: dict, features=frozenset()):
        if kernel.name not in self._layouts:
            self._layouts[kernel.name] = self.backend.create_layout(kernel.kinds)
        key = (kernel.name, entry, tuple(sorted(constants.items())), frozenset(features))
        if key not in self._pipelines:
            self._pipelines[key] = await self.backend.create_pipeline(
                kernel.source(features), entry, constants, self._layouts[kernel.name], kernel.name)
        return self._pipelines[key]

    async def run(self, kernel: K.Kernel, launch, constants: dict, inputs: dict, outputs: dict,
                  params=(1, 1, 0), readback: tuple[str, ...] = (), features=frozenset()) -> dict[str, np.ndarray]:
        """launch: (entry, constants, grid), or a list of them dispatched in order on the same
        bindings (matmul_splitk's two passes); features: shader variants (kernels.preprocess).
        inputs: binding name -> array (uploaded as its bytes; None -> a 16-byte dummy);
        outputs: binding name -> shape (float32, zero-filled first; 0-size -> dummy);
        readback: inputs to read back too (flat float32), e.g. read_write caches.
        One submit (dispatch + copies), one mapping; returns the outputs and readbacks."""
        launches = launch if isinstance(launch, list) else [launch]
        be = self.backend
        pipelines = [(await self.pipeline(kernel, entry, {**constants, **extra}, features), grid)
                     for entry, extra, grid in launches]
        buffers = {"params": be.create_buffer(16, "uniform")}
        be.write_buffer(buffers["params"], K.params_array(*params))
        for name, array in inputs.items():
            data = np.zeros(4, np.float32) if array is None else np.ascontiguousarray(array)
            buffers[name] = be.create_buffer(max(16, data.nbytes), "storage", name)
            be.write_buffer(buffers[name], data)
        for name, shape in outputs.items():
            size = 4 * int(np.prod(shape))
            buffers[name] = be.create_buffer(max(16, size), "storage", name)
        layout = self._layouts[kernel.name]
        group = be.create_bind_group(layout, [(b, 0, b.size) for b in kernel.order(buffers)])
        shapes = {**outputs, **{name: (buffers[name].size // 4,) for name in readback}}
        readback_buffer = be.create_buffer(sum(4 * int(np.prod(s)) + 256 for s in shapes.values()), "readback")
        regions, offset = [], 0
        commands = [Dispatch(pipeline, group, grid) for pipeline, grid in pipelines]
        for name, shape in shapes.items():
            size = 4 * int(np.prod(shape))
            if size:
                commands.append(Copy(buffers[name], 0, readback_buffer, offset, size))
                regions.append((readback_buffer, offset, size))
                offset += -(-size // 256) * 256
        be.submit(commands)
        data = iter(await be.read(regions))
        return {name: np.frombuffer(next(data), np.float32).reshape(shape)
                for name, shape in shapes.items() if int(np.prod(shape))}
