"""Convert a GPT-2-family checkpoint on a Hugging Face Hub into a model folder, streaming.

The page runs this (py/app/hub_loader.py); it reads nothing but byte ranges, so memory
never holds the whole float32 file:

1. ``config.json`` (refused unless GPT-2 family: ``convert.config_from_hf``);
2. ``model.safetensors``, or the shards that ``model.safetensors.index.json`` names: the
   first 8 bytes (the header's length N), then the N header bytes, of each file;
3. each tensor's byte range (big row-major matrices, like ``wte``, in blocks of rows), each
   turned into its stored form as it arrives with the converter's own functions
   (``convert.hf_tensor``: dtype and Conv1D transpose; ``weights.store_tensor``: the same
   int8/q4 quantization as ``python -m glassbox convert``). int8 and q4 scale each output row
   on its own, so a block of rows quantizes exactly as the whole matrix would;
4. ``weights.shard_files`` / ``make_manifest``: the same shards and manifest, byte for byte,
   as ``python -m glassbox convert`` writes from the same checkpoint (a test holds to it;
   only the manifest's ``source`` names the repository).

Each finished tensor is kept in the caller's ``store`` (one small safetensors blob per
tensor, under a key made from the checkpoint's headers), so a conversion cut off by a
reload or a lost connection resumes with the tensors still missing. The network and the
store are injected (no js here):

    fetch(url) -> bytes                          a whole small file; raises NotFound on 404
    fetch_range(url, start, end) -> bytes        bytes [start, end) of a file
    store.get(key) -> bytes | None, store.put(key, data), store.delete(key)   (async, optional)

Repository files are ``{hub}/{repo}/resolve/{revision}/{file}`` (the caller follows the
Hub's redirects to its CDN).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np

from . import convert, safetensors, weights
from .config import GPTConfig

DEFAULT_HUB = "https://huggingface.co"
DEFAULT_REVISION = "main"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_REQUEST = 8 * 1024 * 1024  # bytes per range request for matrices fetched in row blocks
MIB = 1024 * 1024
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


class HubError(Exception):
    """A checkpoint that cannot be read or converted; the message is for people."""


class NotFound(HubError):
    """The file does not exist (HTTP 404), or the repository is gated/private (401/403)."""


class Cancelled(HubError):
    """The person cancelled the download."""


def parse_spec(spec: str) -> tuple[str, str]:
    """``repo`` or ``repo@revision`` (e.g. ``openai-community/gpt2``) -> (repo, revision)."""
    repo, _, revision = spec.strip().partition("@")
    revision = revision or DEFAULT_REVISION
    if not _REPO.match(repo) or ".." in repo:
        raise HubError(f"{repo!r} is not a Hub repository id (like openai-community/gpt2 or distilgpt2)")
    if not _REVISION.match(revision) or ".." in revision:
        raise HubError(f"{revision!r} is not a revision (a branch, tag or commit)")
    return repo, revision


def file_url(hub: str, repo: str, revision: str, file: str) -> str:
    return f"{hub.rstrip('/')}/{repo}/resolve/{revision}/{file}"


@dataclass(frozen=True)
class TensorRange:
    """One checkpoint tensor: where its bytes are, and what it becomes."""

    key: str  # the checkpoint's name (e.g. transformer.h.0.attn.c_attn.weight)
    file: str  # which safetensors file
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte range [start, end) in the file
    end: int
    name: str | None  # Glassbox name, None when not kept (buffers, the tied lm_head)

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass
class HubProgress:
    """Bytes and tensors so far, with rate and time left, for the progress bar."""

    total_bytes: int = 0  # bytes of the tensors to fetch (buffers are never fetched)
    done_bytes: int = 0
    fetched_bytes: int = 0  # bytes fetched in this run (not counting resumed tensors)
    total_tensors: int = 0
    done_tensors: int = 0
    resumed_tensors: int = 0  # tensors read back from the store, not fetched
    current: str = ""
    started: float = 0.0
    now: float = 0.0
    stage: str = "config"  # config, headers, tensors, shards, done

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def rate(self) -> float:
        """Bytes per second fetched in this run."""
        elapsed = self.now - self.started
        return self.fetched_bytes / elapsed if elapsed > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        rate = self.rate
        return (self.total_bytes - self.done_bytes) / rate if rate > 0 else None

    def label(self) -> str:
        if self.stage != "tensors":
            return {"config": "Reading config.json", "headers": "Reading the safetensors header",
                    "shards": "Writing the quantized model", "done": "Converted"}[self.stage]
        left = self.seconds_left
        eta = "" if left is None else f", {_duration(left)} left"
        rate = f" at {self.rate / MIB:.1f} MiB/s" if self.rate else ""
        resumed = f"; {self.resumed_tensors} kept from before" if self.resumed_tensors else ""
        return (f"Downloading and quantizing: {self.done_bytes / MIB:.1f} of {self.total_bytes / MIB:.1f} MiB"
                f"{rate}{eta} (tensor {min(self.done_tensors + 1, self.total_tensors)} of "
                f"{self.total_tensors}{resumed})")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@dataclass
class Result:
    """A converted model folder: its manifest, and the files (shards and bundled tokenizer
    files) that ``put_file`` received, by name."""

    manifest: dict
    config: GPTConfig
    hf_config: dict
    files: list[str] = field(default_factory=list)


def check_config(data: bytes) -> tuple[dict, GPTConfig]:
    """config.json's bytes -> (the dict, GPTConfig); HubError unless it is GPT-2 family."""
    try:
        hf = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HubError(f"config.json is not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise HubError("config.json is not a JSON object")
    try:
        return hf, convert.config_from_hf(hf)
    except (convert.ConvertError, KeyError, TypeError, ValueError) as e:
        detail = f"config.json lacks {e}" if isinstance(e, KeyError) else str(e)
        raise HubError(f"This checkpoint cannot run in Glassbox: {detail}") from None


def plan(headers: list[tuple[str, list, int]], config: GPTConfig) -> list[TensorRange]:
    """Each file's (name, header entries, data start) -> the tensors in the converter's order
    (files sorted by name, each in data order), checked against the config's shapes."""
    ranges = []
    for file, entries, data_start in sorted(headers, key=lambda h: h[0]):
        for key, dtype, shape, begin, end in entries:
            name = key.removeprefix("transformer.")
            kept = None if name == "lm_head.weight" or name.endswith(convert.BUFFERS) else name
            ranges.append(TensorRange(key, file, dtype, tuple(shape), data_start + begin, data_start + end, kept))
    shapes = {}
    for t in ranges:
        if t.name is None:
            continue
        if t.name in shapes:
            raise HubError(f"tensor {t.name} appears twice in the checkpoint")
        shapes[t.name] = t.shape[::-1] if convert.is_conv1d(t.key) and len(t.shape) == 2 else t.shape
    try:
        weights.check_shapes(shapes, config)
    except weights.WeightsError as e:
        raise HubError(f"the checkpoint's tensors do not match its config.json: {e}") from None
    return ranges


def fingerprint(headers: list[tuple[str, bytes]], scheme: str, group: int) -> str:
    """A short key for this checkpoint and quantization: resume entries are kept under it."""
    h = hashlib.sha256(f"{scheme}/{group}".encode())
    for file, raw in sorted(headers):
        h.update(file.encode() + b"\0" + raw)
    return h.hexdigest()[:24]


class Converter:
    """One conversion from a repository (see the module docstring)."""

    def __init__(self, fetch: Callable[[str], Awaitable[bytes]],
                 fetch_range: Callable[[str, int, int], Awaitable[bytes]],
                 hub: str, repo: str, revision: str = DEFAULT_REVISION, scheme: str = "int8",
                 group: int = 32, vocab: dict[str, bytes] | None = None, store=None,
                 progress: Callable[[HubProgress], None] | None = None,
                 cancelled: Callable[[], bool] | None = None, clock: Callable[[], float] = time.monotonic,
                 max_request: int = MAX_REQUEST):
        self.fetch, self.fetch_range = fetch, fetch_range
        self.hub, self.repo, self.revision = hub, repo, revision
        self.scheme, self.group = scheme, group
        self.vocab = vocab or {}  # GPT-2's shared encoder.json and vocab.bpe (vendor/gpt2)
        self.store = store
        self.on_progress = progress
        self.cancelled = cancelled or (lambda: False)
        self.clock = clock
        self.max_request = max_request
        self.state = HubProgress()
        self.requests = 0

    def url(self, file: str) -> str:
        return file_url(self.hub, self.repo, self.revision, file)

    def _report(self) -> None:
        self.state.now = self.clock()
        if self.on_progress:
            self.on_progress(self.state)

    async def _range(self, file: str, start: int, end: int) -> bytes:
        if self.cancelled():
            raise Cancelled("Download cancelled; the tensors finished so far are kept for next time.")
        data = await self.fetch_range(self.url(file), start, end)
        self.requests += 1
        if len(data) != end - start:
            raise HubError(f"{file}: asked for bytes {start}-{end - 1} and got {len(data)} bytes instead of "
                           f"{end - start} (the server ignored the Range header or the file is truncated)")
        return data

    async def _optional(self, file: str) -> bytes | None:
        try:
            return await self.fetch(self.url(file))
        except NotFound:
            return None

    async def read_config(self) -> tuple[dict, GPTConfig]:
        try:
            data = await self.fetch(self.url("config.json"))
        except NotFound:
            raise NotFound(f"{self.repo} (revision {self.revision}) was not found on {self.hub}, or it is "
                           "gated or private: config.json did not answer (HTTP 401/403/404)") from None
        return check_config(data)

    async def read_headers(self) -> list[tuple[str, bytes]]:
        """[(file, 8 + N header bytes)] of model.safetensors or of the index's shards."""
        try:
            return [(SINGLE, await self._header(SINGLE))]
        except NotFound:
            pass
        index = await self._optional(INDEX)
        if index is None:
            raise HubError(f"{self.repo} has no {SINGLE} or {INDEX}: Glassbox reads safetensors only "
                           "(convert a pytorch_model.bin with `python -m glassbox convert` on a computer)")
        try:
            files = sorted(set(json.loads(index)["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise HubError(f"{INDEX} is malformed ({e})") from None
        if not files or not all(isinstance(f, str) and f.endswith(".safetensors") and "/" not in f for f in files):
            raise HubError(f"{INDEX} names no usable safetensors files: {files[:5]}")
        return [(f, await self._header(f)) for f in files]

    async def _header(self, file: str) -> bytes:
        first = await self._range(file, 0, 8)
        try:
            n = safetensors.header_length(first)
        except ValueError as e:
            raise HubError(f"{file}: {e}") from None
        return first + await self._range(file, 8, 8 + n)

    def _blocks(self, t: TensorRange):
        """(shape, byte ranges) of the pieces a tensor is converted in: blocks of whole rows for
        a big row-major matrix (each quantized on its own: the scales are per row), else the
        whole tensor, fetched in requests of at most max_request bytes and joined."""
        if len(t.shape) == 2 and t.shape[0] and not convert.is_conv1d(t.key) and t.nbytes > self.max_request:
            row = t.nbytes // t.shape[0]
            step = max(1, self.max_request // row)
            for first in range(0, t.shape[0], step):
                count = min(step, t.shape[0] - first)
                start = t.start + first * row
                yield (count, t.shape[1]), [(start, start + count * row)]
        else:
            yield t.shape, [(s, min(t.end, s + self.max_request)) for s in range(t.start, t.end, self.max_request)]

    async def _tensor(self, t: TensorRange, matrix: bool | None) -> tuple[dict[str, np.ndarray], str]:
        """Fetch one tensor -> (its stored form, sha256 of its float32 values in the Glassbox
        layout). ``matrix=None``: only the digest (the tied lm_head's check)."""
        digest = hashlib.sha256()
        parts: list[dict[str, np.ndarray]] = []
        for shape, ranges in self._blocks(t):
            raw = bytearray()
            for start, end in ranges:
                raw += await self._range(t.file, start, end)
                self._advance(end - start)
            try:
                value = safetensors.decode(raw, t.dtype, shape, t.key)
            except ValueError as e:
                raise HubError(f"{t.file}: {e}") from None
            if matrix is None:
                digest.update(np.ascontiguousarray(value, dtype="<f4"))
                continue
            name, value = convert.hf_tensor(t.key, value)
            digest.update(np.ascontiguousarray(value, dtype="<f4"))
            # issue 16 (hw20): a turn for the page between hashing a block and quantizing it
            # (together up to ~300 ms of one main-thread task for an 8 MiB block of wte)
            await asyncio.sleep(0)
            parts.append(weights.store_tensor(name, value, matrix, self.scheme, self.group))
        if len(parts) <= 1:
            return (parts[0] if parts else {}), digest.hexdigest()
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}, digest.hexdigest()

    def _advance(self, n: int) -> None:
        self.state.done_bytes += n
        self.state.fetched_bytes += n
        self._report()

    async def run(self, put_file: Callable[[str, bytes], Awaitable[None]]) -> Result:
        """Convert; ``put_file(name, data)`` receives each shard and bundled tokenizer file."""
        state = self.state
        state.started = self.clock()
        self._report()
        hf, config = await self.read_config()
        state.stage = "headers"
        self._report()
        headers = await self.read_headers()
        parsed = []
        for file, raw in headers:
            try:
                parsed.append((file, *_entries(raw)))
            except ValueError as e:
                raise HubError(f"{file}: {e}") from None
        tensors = plan(parsed, config)
        kept = [t for t in tensors if t.name is not None]
        lm_head = next((t for t in tensors if t.key.removeprefix("transformer.") == "lm_head.weight"), None)
        state.total_bytes = sum(t.nbytes for t in kept) + (lm_head.nbytes if lm_head else 0)
        state.total_tensors = len(kept)
        prefix = fingerprint(headers, self.scheme, self.group) + "/"
        matrices = set(weights.matrix_names(config))

        # Tokenizer files first (small): the checkpoint's own, unless they say what GPT-2's do.
        tokenizer, bundled = {}, {}
        for hf_name, gb_name in convert.TOKENIZER_FILES.items():
            own = await self._optional(hf_name)
            shared = self.vocab.get(gb_name)
            if own is None and shared is None:
                raise HubError(f"{self.repo} has no {hf_name}, and GPT-2's {gb_name} was not given")
            tokenizer[gb_name], data = convert.tokenizer_entry(gb_name, own, shared)
            if data is not None:
                bundled[gb_name] = data

        state.stage = "tensors"
        self._report()
        stored: dict[str, np.ndarray] = {}
        digests = {}
        for t in kept:
            state.current = t.name
            key = prefix + t.name
            blob = await self._get(key)
            if blob is not None:
                part, meta = safetensors.load_with_metadata(blob)
                digests[t.name] = meta.get("sha256_f32", "")
                stored.update(part)
                state.resumed_tensors += 1
                state.done_bytes += t.nbytes
            else:
                part, digests[t.name] = await self._tensor(t, t.name in matrices)
                stored.update(part)
                await self._put(key, safetensors.save(part, {"sha256_f32": digests[t.name]}))
            state.done_tensors += 1
            self._report()
        if lm_head is not None:  # GPT-2 ties it to wte: the same float32 values, or refused
            if lm_head.shape != tuple(weights.expected_shapes(config)["wte.weight"]) or \
                    (await self._tensor(lm_head, None))[1] != digests.get("wte.weight"):
                raise HubError(convert.UNTIED)

        state.stage = "shards"
        self._report()
        # Same order as the converter: params in checkpoint order, each followed by its scale.
        ordered = {}
        for t in kept:
            ordered[t.name] = stored.pop(t.name)
            if t.name + ".scale" in stored:
                ordered[t.name + ".scale"] = stored.pop(t.name + ".scale")
        del stored
        result = Result(manifest={}, config=config, hf_config=hf)
        shards, split = [], {}
        for name, data in bundled.items():
            await put_file(name, data)
            result.files.append(name)
        for file, data, split in weights.shard_files(ordered, weights.MAX_SHARD_BYTES):
            # hashed in steps (issue 16, hw20): one 32 MiB shard was a ~300 ms task on the page
            shards.append({"file": file, "bytes": len(data), "sha256": await weights.sha256_hex_steps(data)})
            await put_file(file, data)
            result.files.append(file)
            del data
        source = convert.source_entry(f"hf:{self.repo}@{self.revision}", hf)
        result.manifest = weights.make_manifest(config, self.scheme, self.group, tokenizer, shards, split, source)
        for t in kept:  # the folder holds it all now: the resume entries can go
            await self._delete(prefix + t.name)
        state.stage = "done"
        self._report()
        return result

    async def _get(self, key: str) -> bytes | None:
        if self.store is None:
            return None
        try:
            return await self.store.get(key)
        except Exception:  # noqa: BLE001  (an unreadable entry is a missing one)
            return None

    async def _put(self, key: str, data: bytes) -> None:
        if self.store is None:
            return
        try:
            await self.store.put(key, data)
        except Exception:  # noqa: BLE001  (storage full: go on without resume points)
            self.store = None

    async def _delete(self, key: str) -> None:
        if self.store is not None:
            try:
                await self.store.delete(key)
            except Exception:  # noqa: BLE001
                pass


def _entries(raw: bytes) -> tuple[list, int]:
    entries, _metadata, start = safetensors.read_header(raw)
    return entries, start


def stored_bytes(config: GPTConfig, scheme: str, group: int = 32) -> int:
    """About how many bytes a converted model keeps on the device (shards, without headers)."""
    total = 0
    matrices = set(weights.matrix_names(config))
    for name, shape in weights.expected_shapes(config).items():
        count = int(np.prod(shape))
        if name in matrices and scheme == "int8":
            total += count + 4 * shape[0]
        elif name in matrices and scheme == "q4":
            total += count // 2 + 4 * shape[0] * (shape[1] // group)
        else:
            total += 4 * count
    return total
