"""The model in a Web Worker (issue 16): the messages between the page and the worker.

No ``js`` import: both ends are plain Python, so CPython tests drive them with a fake worker
(tests/test_worker_protocol.py). The JavaScript glue is thin: py/app/worker_client.py on the
page and py/app/worker.py in the worker turn a message ``(head, arrays)`` into one
``postMessage({head: JSON, buffers: [ArrayBuffer, ...]}, transfer=buffers)`` and back, one
ArrayBuffer per tensor, transferred (never copied element by element, never cloned).

Page -> worker (``head["op"]``, each with an ``id``; the worker answers each with a ``reply``):

==============  ==========================================================================
``run``         ``ids``, ``layer``: the partial trace of that sequence (the worker's runner.run;
                see "What crosses" below)
``extend``      ``ids`` after ``known`` (the positions the page believes are cached), ``layer``:
                the partial step trace of the new tokens. A worker whose cache does not hold
                exactly ``known`` (after a Stop, a failure) first runs ``known`` again.
``layer``       ``ids``, ``layer``: every tensor of that layer for that sequence (the page's
                ``await runner.fetch_layer(trace, layer)``), from what the worker kept
``truncate``    ``n``: forget positions >= n (no reply needed; answered anyway, in order)
``tensors``     ``ids``, ``names``: those trace tensors of ``ids`` from an empty cache
                (issue 12's corpus; the worker's runner.tensors, else glassbox.reference)
``describe``    the runner's type, backend, losses, calibration (tests, the console)
``destroy``     destroy the GPU device behind the engine's back (the device-loss test)
``qk_pca``      ``layout`` + one buffer of points [G, M, K]: the Q/K map's PCA on the worker's
                WebGPU device (issue 12; glassbox.gpu.qk_pca), the coordinates [G, M, 2] back
``backend``     ``backend``: the reader's switch (issue 15; gpu_light.choose_backend there)
``stop``        ``upto``: abandon every request with an id below it (between blocks)
``slow``        ``ms``: wait that long at every block boundary (tests land a Stop mid-run)
``lab``         issue 16 (x16): ``name`` (one of app/lab.FUNCTIONS, a whitelist), ``args``
                (JSON): an experiment or factors computation on the worker's numpy reference;
                ``fields`` (JSON) and ``layout`` + one buffer per result array back; a long one
                sends ``progress`` (``done``, ``total``) and checks Stop about every 0.1 s (a
                ``run`` or ``extend`` arriving meanwhile stops it too: the tokens changed)
==============  ==========================================================================

Worker -> page: ``reply`` (``id``, ``ok``, the trace's tensors or ``error``/``kind``),
``progress`` (``id``, ``label``, ``fraction``: once per block), ``status`` (``backend``,
``cause``, ``reason``, ``name``: which backend runs and why, as gpu_runner.Status says).

What crosses (issue 16): a run or a step sends a partial trace (glassbox.trace.LayerTrace) —
the embeddings, ln_f, every layer's SUMMARY_NAMES (the map's [N, D] tensors), every tensor of
the layer the reader views, and the last logits row (the only one the views read) — never the
whole trace. The worker keeps what its runner computed (numpy: the full trace, joined step by
step with runner.append_rows; WebGPU: what the GPU kept) and answers ``layer`` from it; a
sequence it no longer holds is run again from an empty cache (the runner's ``tensors``), the
KV cache untouched.

Stop answers at once on the page: ``WorkerRunner.stop()`` fails every request in flight with
``Stopped`` (the run controller shows the previous trace) and posts ``stop``; the worker checks
between blocks and drops the stopped request's work.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import numpy as np

from glassbox.config import GPTConfig
from glassbox.model import InputError
from glassbox.trace import LAYER_NAMES, LayerTrace, Trace, layer_name, layer_only, needs_layer

from . import runner as runners

from .lab import LabError

Post = Callable[[dict, list], None]  # post(head, arrays)


class Stopped(Exception):
    """The page stopped this request (Stop): its result, if any, is dropped."""


class WorkerError(RuntimeError):
    """The worker failed a request (its message says how)."""


# Exceptions that keep their type across the boundary (the run controller words them).
_KINDS = {"InputError": InputError, "ValueError": ValueError, "Stopped": Stopped}
_KINDS["LabError"] = LabError  # issue 16 (x16): a refused lab request stays a ValueError on the page


# ----- tensors ------------------------------------------------------------------------------

def pack(tensors: dict[str, np.ndarray]) -> tuple[dict, list[np.ndarray]]:
    """(layout, arrays): names, shapes and dtypes in the head, one C-contiguous array each."""
    names = list(tensors)
    arrays = [np.ascontiguousarray(tensors[n]) for n in names]
    return ({"names": names, "shapes": [list(a.shape) for a in arrays], "dtypes": [a.dtype.str for a in arrays]},
            arrays)


def unpack(layout: dict, arrays: list) -> dict[str, np.ndarray]:
    """The inverse of pack; ``arrays`` may be numpy arrays or flat byte buffers."""
    out = {}
    for name, shape, dtype, data in zip(layout["names"], layout["shapes"], layout["dtypes"], arrays, strict=True):
        a = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.dtype(dtype))
        out[name] = a.view(np.dtype(dtype)).reshape(shape)
    return out


def trace_message(trace: Trace) -> tuple[dict, list[np.ndarray]]:
    layout, arrays = pack(trace.tensors)
    head = {"ids": [int(i) for i in trace.ids], "start": int(trace.start), **layout}
    if isinstance(trace, LayerTrace):
        head.update(viewed=trace.viewed, logits_start=int(trace.logits_start))
    return {"trace": head}, arrays


def trace_from(head: dict, arrays: list, config: GPTConfig) -> Trace:
    t = head["trace"]
    ids, start, tensors = np.asarray(t["ids"], dtype=np.int64), int(t["start"]), unpack(t, arrays)
    if "viewed" in t:
        return LayerTrace(config, ids, start, tensors, viewed=t["viewed"], logits_start=int(t["logits_start"]))
    return Trace(config=config, ids=ids, start=start, tensors=tensors)


def nbytes(arrays) -> int:
    """The bytes of a message's buffers (bench: what crosses)."""
    return int(sum(np.asarray(a).nbytes if isinstance(a, np.ndarray) else len(a) for a in arrays))


# ----- the page's side ----------------------------------------------------------------------

async def _no_step(label: str, fraction: float) -> None:
    return None


class WorkerRunner:
    """The runner contract (runner.py: run, extend, truncate; plus ``tensors``) over messages.

    ``post(head, arrays)`` sends to the worker; the page's glue calls ``receive(head, arrays)``
    for every message back. ``step(label, fraction)`` is the explainer's progress hook;
    ``on_status(head)`` hears which backend runs (status messages).
    """

    def __init__(self, post: Post, config: GPTConfig, step: Callable[[str, float], Awaitable[None]] = _no_step,
                 on_status: Callable[[dict], None] | None = None):
        self.post = post
        self.config = config
        self.step = step
        self.on_status = on_status or (lambda head: None)
        self.ids = np.zeros(0, dtype=np.int64)  # what the worker's cache holds, as far as the page knows
        self.backend = "numpy"
        self.last = "numpy"  # the backend of the last trace (the run status shows it)
        self.reason = ""
        self.cause = "starting"
        self.kind = ""  # the worker-side runner's class name
        self.losses = 0
        self.progress_messages = 0  # progress messages heard (one per block; tests count them)
        self.viewed = 0  # the layer whose tensors runs bring back in full (issue 16; fetch_layer moves it)
        self.fetches = 0  # layers fetched from the worker (tests)
        self._next = 1
        self._pending: dict[int, asyncio.Future] = {}
        self._tasks: set = set()
        self._lab_progress: dict[int, Callable] = {}  # issue 16 (x16): lab requests' progress hooks

    @property
    def name(self) -> str:
        return self.last

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    # ----- messages ---------------------------------------------------------------------------
    def _send(self, op: str, arrays=(), wait: bool = True, **fields) -> asyncio.Future:
        rid, self._next = self._next, self._next + 1
        future = asyncio.get_event_loop().create_future()
        if not wait:  # nobody awaits it: its outcome (a Stop, an error) is read here, not logged
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending[rid] = future
        self.post({"op": op, "id": rid, **fields}, list(arrays))
        return future

    def receive(self, head: dict, arrays: list) -> None:
        """One message from the worker."""
        op = head.get("op")
        if op == "status":
            self.backend, self.cause, self.reason = head["backend"], head["cause"], head["reason"]
            self.kind, self.losses = head.get("kind", self.kind), int(head.get("losses", self.losses))
            self.on_status(head)
        elif op == "progress":
            if head.get("id") in self._pending:  # a stopped request's progress is not shown
                lab = self._lab_progress.get(head.get("id"))  # issue 16 (x16): a lab request's own hook
                self.progress_messages += lab is None
                task = asyncio.ensure_future(self.step(head["label"], float(head["fraction"])) if lab is None
                                             else lab(int(head["done"]), int(head["total"])))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif op == "reply":
            future = self._pending.pop(head.get("id"), None)
            if future is None or future.done():
                return  # stopped: dropped
            if head.get("ok"):
                future.set_result((head, arrays))
            else:
                kind = _KINDS.get(head.get("kind"), WorkerError)
                future.set_exception(kind(head.get("error", "the worker failed")))

    async def _call(self, op: str, **fields) -> tuple[dict, list]:
        return await self._send(op, **fields)

    # ----- the runner contract ----------------------------------------------------------------
    async def run(self, ids) -> Trace:
        ids = np.asarray(ids, dtype=np.int64)
        head, arrays = await self._call("run", ids=ids.tolist(), layer=int(self.viewed))
        self.ids, self.last = ids, head.get("backend", self.backend)
        return trace_from(head, arrays, self.config)

    async def extend(self, ids) -> Trace:
        ids = np.asarray(ids, dtype=np.int64)
        head, arrays = await self._call("extend", ids=ids.tolist(), known=self.ids.tolist(), layer=int(self.viewed))
        self.ids, self.last = np.concatenate([self.ids, ids]), head.get("backend", self.backend)
        return trace_from(head, arrays, self.config)

    async def fetch_layer(self, trace: LayerTrace, layer: int) -> str:
        """Make ``trace`` (a partial trace from this runner) hold every tensor of ``layer``,
        read from the worker (which kept them, or runs the sequence again from an empty cache);
        the next runs bring that layer back in full. Returns "worker", or "" when the trace
        held it already. Nothing is computed on this thread."""
        layer = int(layer)
        wanted = needs_layer(trace, layer)
        self.viewed = layer
        if not wanted:
            return ""
        head, arrays = await self._call("layer", ids=np.asarray(trace.ids, dtype=np.int64).tolist(), layer=layer,
                                        start=int(trace.start))
        trace.set_layer(layer, unpack(head["layout"], arrays))
        self.fetches += 1
        return "worker"

    def truncate(self, n: int) -> None:
        self.ids = self.ids[:max(0, int(n))]
        self._send("truncate", wait=False, n=int(n))

    async def tensors(self, ids, names) -> dict[str, np.ndarray]:
        """Only ``names`` of the trace of ``ids`` (from an empty cache; the page's cache stays)."""
        head, arrays = await self._call("tensors", ids=np.asarray(ids, dtype=np.int64).tolist(), names=list(names))
        return unpack(head["layout"], arrays)

    async def describe(self) -> dict:
        head, _ = await self._call("describe")
        return head["about"]

    @property
    def status(self):
        """Which backend the worker runs now and why (gpu_runner.Status)."""
        from .gpu_runner import Status

        return Status(self.backend, self.cause, self.reason)

    @property
    def qk_pca(self) -> "_RemotePCA":
        """The Q/K map's PCA (issue 12) on the worker's WebGPU device (glassbox.gpu.qk_pca)."""
        return _RemotePCA(self)

    async def choose_backend(self, backend: str):
        """The reader's switch (issue 15, gpu_light.choose_backend) done by the worker's runner;
        the next run starts a new sequence."""
        head, _ = await self._call("backend", backend=backend)
        self.ids = self.ids[:0]
        self.backend, self.cause, self.reason = head["backend"], head["cause"], head["reason"]
        return self.status

    # ----- issue 16 (x16): the experiments' and factors' lab (app/lab.py) ------------------------
    async def lab(self, name: str, args: dict, progress: Callable[[int, int], Awaitable[None]] | None = None
                  ) -> tuple[dict, dict[str, np.ndarray]]:
        """One whitelisted lab function computed by the worker: (fields, named arrays)."""
        future = self._send("lab", name=name, args=args)
        rid = self._next - 1
        if progress is not None:
            self._lab_progress[rid] = progress
        try:
            head, arrays = await future
        finally:
            self._lab_progress.pop(rid, None)
        return head["fields"], unpack(head["layout"], arrays)

    def stop(self) -> int:
        """Abandon every request in flight now (each raises Stopped) and tell the worker.
        Returns how many were abandoned."""
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(Stopped("stopped"))
        self.post({"op": "stop", "upto": self._next}, [])
        return len(pending)

    def destroy_device_for_test(self) -> bool:
        """Destroy the worker's GPU device behind its engine's back (in order, before the next
        request); False when WebGPU does not run there."""
        if self.backend != "webgpu":
            return False
        self._send("destroy", wait=False)
        return True


class _RemotePCA:
    """``await project(points [G, M, K]) -> [G, M, 2]`` computed by the worker's QKPCA: the
    points cross once (one transferred buffer), the coordinates come back."""

    def __init__(self, runner: WorkerRunner):
        self.runner = runner

    async def project(self, points: np.ndarray) -> np.ndarray:
        layout, arrays = pack({"points": np.asarray(points)})
        head, out = await self.runner._send("qk_pca", arrays, layout=layout)
        return unpack(head["layout"], out)["xy"]


# ----- the worker's side --------------------------------------------------------------------

def _rows_from(trace: LayerTrace, start: int) -> LayerTrace:
    """The rows from position ``start`` on of a joined partial trace (a step's rows)."""
    out = LayerTrace(trace.config, trace.ids[start:], start, viewed=trace.viewed, logits_start=0)
    for name, value in trace.tensors.items():
        short = name.split(".", 2)[2] if name.startswith("h.") else name
        if name == "logits":
            out[name] = value[max(0, start - trace.logits_start):]
        elif short in runners.HEAD_ROWS or short in runners.ATTENTION_GRIDS:
            out[name] = value[:, start:]
        else:
            out[name] = value[start:]
    return out


class ModelHost:
    """Answers the page's requests with a runner (runner.py's contract), one at a time.

    ``send(head, arrays)`` posts to the page. ``runner`` is built by the worker
    (worker.make_runner); its step hook must be ``self.step`` so that progress reaches the
    page per block and Stop is checked between blocks.
    """

    def __init__(self, send: Post, runner=None, reference_params=None):
        self.send = send
        self.runner = runner
        self.params = reference_params  # for ``tensors`` when the runner has none (float32 or lazy)
        self.cached: list[int] | None = []  # the positions the runner's cache holds; None: unknown
        self.kept: Trace | None = None  # the trace of ``cached`` as the runner gave it (issue 16)
        self.sent: list[tuple[str, int]] = []  # (op, bytes) of the last replies with tensors (bench)
        self.stopped_below = 0
        self.current = 0
        self.delay_s = 0.0  # the ``slow`` test hook
        self.heap = lambda: 0  # the worker's wasm heap in bytes (worker.py sets it)
        self.lab = None  # issue 16 (x16): the lab.Bench the ``lab`` requests compute on (worker.py sets it)
        self.lab_serving = self.lab_replaced = 0  # the lab request computing; one a new run replaced
        self._lock = asyncio.Lock()

    async def step(self, label: str, fraction: float) -> None:
        """The runner's hook between blocks: progress to the page, then a Stop check."""
        rid = self.current
        if rid < self.stopped_below:
            raise Stopped("stopped")
        self.send({"op": "progress", "id": rid, "label": label, "fraction": fraction}, [])
        await asyncio.sleep(self.delay_s)  # lets a stop message in
        if rid < self.stopped_below:
            raise Stopped("stopped")

    def status(self, backend: str, cause: str, reason: str) -> None:
        self.send({"op": "status", "backend": backend, "cause": cause, "reason": reason,
                   "kind": type(self.runner).__name__, "losses": int(getattr(self.runner, "losses", 0))}, [])

    def handle(self, head: dict, arrays: list) -> None:
        """One message from the page; ``stop`` acts at once, the rest queue in order."""
        if head.get("op") == "stop":
            self.stopped_below = max(self.stopped_below, int(head["upto"]))
            return
        if head.get("op") == "slow":
            self.delay_s = max(0.0, float(head["ms"])) / 1e3
            return
        if head.get("op") in ("run", "extend"):  # issue 16 (x16): new tokens end the experiment running
            self.lab_replaced = self.lab_serving
        asyncio.ensure_future(self._serve(head, arrays))

    async def _serve(self, head: dict, arrays: list) -> None:
        async with self._lock:
            rid = int(head.get("id", 0))
            self.current = rid
            if rid < self.stopped_below and head["op"] in ("run", "extend", "tensors", "layer"):
                self.send({"op": "reply", "id": rid, "ok": False, "kind": "Stopped", "error": "stopped"}, [])
                return
            try:
                reply, out = await self._answer(head, arrays)
            except BaseException as exc:  # noqa: BLE001  (every failure goes back to the page)
                if head["op"] in ("run", "extend"):
                    self.cached, self.kept = None, None
                self.send({"op": "reply", "id": rid, "ok": False, "kind": type(exc).__name__,
                           "error": str(exc) or type(exc).__name__}, [])
                if not isinstance(exc, Exception):
                    raise
                return
            if out:
                self.sent = (self.sent + [(head["op"], nbytes(out))])[-16:]
            self.send({"op": "reply", "id": rid, "ok": True, **reply}, out)

    def _backend(self) -> str:
        return str(getattr(self.runner, "name", "numpy"))

    async def _answer(self, head: dict, arrays: list = ()) -> tuple[dict, list]:
        op, runner = head["op"], self.runner
        if op == "run":
            ids, layer = [int(i) for i in head["ids"]], int(head.get("layer", 0))
            self._aim(layer)
            self.cached, self.kept = None, None
            trace = await runner.run(np.asarray(ids, dtype=np.int64))
            self.cached, self.kept = ids, trace
            reply, out = trace_message(await self._partial(trace, layer))
            return {**reply, "backend": self._backend()}, out
        if op == "extend":
            ids, known = [int(i) for i in head["ids"]], [int(i) for i in head["known"]]
            layer = int(head.get("layer", 0))
            self._aim(layer)
            if self.cached != known:  # after a Stop or a failure: bring the cache to what the page has
                self.cached, self.kept = None, None
                self.kept = await runner.run(np.asarray(known, dtype=np.int64))
                self.cached = known
            kept, self.cached, self.kept = self.kept, None, None
            trace = await runner.extend(np.asarray(ids, dtype=np.int64))
            self.cached = known + ids
            self.kept = self._join(kept, trace)
            reply, out = trace_message(await self._partial(trace, layer, kept))
            return {**reply, "backend": self._backend()}, out
        if op == "layer":
            return await self._layer(head)
        if op == "truncate":
            n = int(head["n"])
            runner.truncate(n)
            if self.cached is not None:
                self.cached = self.cached[:n]
            if self.kept is not None:
                self.kept = runners.truncate_rows(self.kept, n) if 0 < n < self.kept.ids.size else (
                    self.kept if n >= self.kept.ids.size else None)
            return {}, []
        if op == "tensors":
            return await self._tensors(head)
        if op == "describe":
            return {"about": self.describe()}, []
        if op == "destroy":
            return {"destroyed": bool(runner.destroy_device_for_test())}, []
        if op == "qk_pca":  # issue 12: the Q/K map's PCA on this worker's WebGPU device
            return await self._qk_pca(head, arrays)
        if op == "lab":  # issue 16 (x16): an experiment or a factors computation
            return await self._lab(head)
        if op == "backend":  # issue 15 (p15): the reader's switch
            from .gpu_light import choose_backend

            self.cached = None
            status = await choose_backend(runner, str(head["backend"]))
            return {"backend": status.backend, "cause": status.cause, "reason": status.reason}, []
        raise ValueError(f"no worker request {op!r}")

    # ----- partial traces (issue 16) --------------------------------------------------------------
    def _aim(self, layer: int) -> None:
        """Tell the runner which layer the page views (GPU and light runners capture it)."""
        if not 0 <= layer < self.runner.config.n_layer:
            raise ValueError(f"layer {layer + 1} does not exist (the model has {self.runner.config.n_layer})")
        aim = getattr(self.runner, "aim", None)
        if aim is not None:
            aim(layer)

    @staticmethod
    def _join(kept: Trace | None, step: Trace) -> Trace | None:
        """The trace of the whole cached sequence after a step (None when it cannot be joined)."""
        if kept is None or kept.start != 0 or step.start != kept.ids.size:
            return None
        try:
            return runners.append_rows(kept, step)
        except (ValueError, KeyError):
            return None

    async def _partial(self, trace: Trace, layer: int, before: Trace | None = None) -> LayerTrace:
        """The partial trace of a run or step for ``layer`` (runner.partial_step); a runner that
        captured another layer (it should not) has it read first."""
        if isinstance(trace, LayerTrace) and not trace.holds(layer):
            whole = self.kept if trace.start else trace
            if whole is None or not isinstance(whole, LayerTrace):
                raise ValueError(f"the worker's runner did not keep layer {layer + 1}")
            await self._fill(whole, layer)
            if trace.start:  # the step's rows of that layer: the joined trace's last rows
                return runners.partial_step(_rows_from(whole, trace.start), layer)
        return runners.partial_step(trace, layer)

    async def _fill(self, kept: Trace, layer: int) -> None:
        """Make ``kept`` (the runner's own trace of the cached sequence) hold ``layer``."""
        fetch = getattr(self.runner, "fetch_layer", None)
        if fetch is not None:
            await fetch(kept, layer)
        elif hasattr(kept, "view_layer"):  # numpy light mode (lightmode.LayerTrace), in this worker
            kept.view_layer(layer)
        else:
            kept.set_layer(layer, await self._fresh(kept.ids, layer))

    async def _fresh(self, ids, layer: int) -> dict[str, np.ndarray]:
        """``layer``'s tensors of ``ids`` run from an empty cache (the KV cache untouched)."""
        _, out = await self._tensors({"ids": np.asarray(ids).tolist(),
                                      "names": [layer_name(layer, n) for n in LAYER_NAMES]})
        names = [layer_name(layer, n) for n in LAYER_NAMES]
        return dict(zip(names, out))

    async def _layer(self, head: dict) -> tuple[dict, list]:
        """Every tensor of ``layer`` (but the summaries the page holds) for the page's ``ids``."""
        ids, layer = np.asarray(head["ids"], dtype=np.int64), int(head["layer"])
        if int(head.get("start", 0)) != 0:
            raise ValueError("only a trace of a whole sequence can fetch another layer")
        self._aim(layer)
        kept, found = self.kept, None
        if kept is not None and kept.start == 0 and kept.ids.size >= ids.size and \
                np.array_equal(kept.ids[:ids.size], ids):
            if kept.ids.size == ids.size and isinstance(kept, LayerTrace) and not kept.holds(layer):
                await self._fill(kept, layer)
            if all(layer_name(layer, n) in kept.tensors for n in LAYER_NAMES):
                whole = kept if kept.ids.size == ids.size else runners.truncate_rows(kept, ids.size)
                found = {n: whole.tensors[n] for n in whole.tensors if layer_only(layer)(n)}
        if found is None:  # a sequence the worker no longer holds (a Stop, a discarded token)
            found = {n: v for n, v in (await self._fresh(ids, layer)).items() if layer_only(layer)(n)}
        layout, out = pack(found)
        return {"layout": layout}, out

    async def _lab(self, head: dict) -> tuple[dict, list]:
        """issue 16 (x16): app/lab.compute on this worker's Bench; progress and a Stop check
        about every lab.YIELD_SECONDS (between two re-runs)."""
        from .lab import compute

        rid = self.current
        if self.lab is None:
            raise ValueError("the worker has no lab (no model loaded)")

        def check() -> None:
            if rid < self.stopped_below:
                raise Stopped("stopped")
            if rid == self.lab_replaced:  # a run or an extend came in: these tokens are gone
                raise Stopped("stopped: a new run changed the tokens")

        async def report(done: int, total: int) -> None:
            check()
            self.send({"op": "progress", "id": rid, "label": "lab", "fraction": done / total, "done": done,
                       "total": total}, [])
            await asyncio.sleep(self.delay_s)  # lets a stop or a run message in
            check()

        check()
        name = str(head.get("name"))
        self.lab_serving = rid
        try:
            fields, arrays = await compute(self.lab, name, dict(head.get("args") or {}), report)
        except (Stopped, LabError, InputError):
            raise
        except Exception as exc:  # noqa: BLE001  (the page's panel shows this sentence)
            raise RuntimeError(f"the worker's {name} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.lab_serving = 0
        layout, out = pack(arrays)
        return {"fields": fields, "layout": layout}, out

    async def _qk_pca(self, head: dict, arrays: list) -> tuple[dict, list]:
        from glassbox.gpu.qk_pca import QKPCA

        engine = getattr(self.runner, "engine", None)
        if engine is None:
            raise ValueError("WebGPU does not run the model in the worker now")
        if getattr(self, "_pca", None) is None or self._pca[0] is not engine.backend:
            self._pca = (engine.backend, QKPCA(engine.backend))
        xy = await self._pca[1].project(unpack(head["layout"], arrays)["points"])
        layout, out = pack({"xy": xy})
        return {"layout": layout}, out

    async def _tensors(self, head: dict) -> tuple[dict, list]:
        ids, names = np.asarray(head["ids"], dtype=np.int64), list(head["names"])
        own = getattr(self.runner, "tensors", None)
        if own is None and hasattr(self.runner, "params"):  # numpy light mode: the same blocks, no cache
            own = lambda i, n: runners.tensors_async(self.runner.params, self.runner.config, i, n)  # noqa: E731
        if own is not None:
            found = await own(ids, names)
        else:  # the reference, from an empty cache (the runner's KV cache is untouched)
            from glassbox import reference

            wanted = set(names)
            trace = reference.forward(self.params, self.runner.config, ids, capture=lambda n: n in wanted)
            missing = wanted - set(trace.tensors)
            if missing:
                raise ValueError(f"no trace tensors named {sorted(missing)}")
            found = {n: trace[n] for n in names}
        layout, out = pack(found)
        return {"layout": layout}, out

    def describe(self) -> dict:
        r = self.runner
        status = getattr(r, "status", None)
        return {"kind": type(r).__name__, "name": self._backend(), "losses": int(getattr(r, "losses", 0)),
                "calibration": getattr(r, "calibration", None),
                "backend": getattr(status, "backend", self._backend()), "cause": getattr(status, "cause", ""),
                "reason": getattr(status, "reason", ""), "cached": None if self.cached is None else len(self.cached),
                "heap_bytes": int(self.heap()),
                # issue 16: the engine's weights scheme, layers read back after a run, what crossed
                "scheme": getattr(getattr(r, "engine", None), "scheme", None),
                "fetches": int(getattr(r, "fetches", 0)), "sent": [list(x) for x in self.sent],
                "readbacks": [list(x) for x in getattr(r, "readbacks", [])],
                "lab_calls": int(getattr(self.lab, "calls", 0))}  # issue 16 (x16)
