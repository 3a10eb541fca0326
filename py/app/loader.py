"""Load a model folder over HTTP in the page: manifest, tokenizer files, shards, with progress.

Every byte is checked before use: each shard's size and sha256 against the manifest
(glassbox.weights.verify_shard names the file and both hashes on a mismatch), the tokenizer
files against theirs. Progress reports bytes and shards as they arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import js
from pyodide.ffi import JsException

from glassbox import weights
from glassbox.model import Model, tokenizer_from_files

VOCAB_URL = "./vendor/gpt2/"


class LoadError(Exception):
    """A model that could not be fetched or verified; the message is for people."""


@dataclass
class Progress:
    """What has arrived so far, for a progress bar: bytes and shards."""

    done_bytes: int = 0
    total_bytes: int = 0
    done_shards: int = 0
    total_shards: int = 0
    current: str = ""

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 0.0

    def label(self) -> str:
        mb = 1024 * 1024
        return (f"Downloading weights: {self.done_bytes / mb:.1f} of {self.total_bytes / mb:.1f} MiB "
                f"(shard {min(self.done_shards + 1, self.total_shards)} of {self.total_shards})")


async def fetch_bytes(url: str, on_chunk: Callable[[int], None] | None = None) -> bytes:
    """GET ``url`` and return its body; ``on_chunk(n)`` is told of each n bytes received."""
    try:
        response = await js.fetch(url)
    except JsException as e:
        raise LoadError(f"could not fetch {url}: the network or server is unreachable ({e})") from None
    if not response.ok:
        raise LoadError(f"could not fetch {url}: HTTP {response.status} {response.statusText}")
    if on_chunk is None or response.body is None:
        return (await response.arrayBuffer()).to_bytes()
    reader = response.body.getReader()
    parts = []
    while True:
        chunk = await reader.read()
        if chunk.done:
            break
        data = chunk.value.to_bytes()
        parts.append(data)
        on_chunk(len(data))
    return b"".join(parts)


async def load_model(base_url: str, progress: Callable[[Progress], None] | None = None) -> Model:
    """Fetch, verify and build the model in folder ``base_url`` (ending in '/')."""
    if not base_url.endswith("/"):
        base_url += "/"
    manifest_url = base_url + weights.MANIFEST
    try:
        manifest = weights.parse_manifest(await fetch_bytes(manifest_url), manifest_url)
    except weights.WeightsError as e:
        raise LoadError(str(e)) from None

    files = {}
    for name, entry in manifest["tokenizer"].items():
        files[name] = await fetch_bytes((base_url if entry.get("bundled", True) else VOCAB_URL) + name)

    state = Progress(total_bytes=sum(s["bytes"] for s in manifest["shards"]), total_shards=len(manifest["shards"]))
    shards = {}
    for entry in manifest["shards"]:
        state.current = entry["file"]

        def on_chunk(n: int) -> None:
            state.done_bytes += n
            if progress:
                progress(state)

        data = await fetch_bytes(base_url + entry["file"], on_chunk)
        try:
            weights.verify_shard(entry, data)
        except weights.WeightsError as e:
            raise LoadError(str(e)) from None
        shards[entry["file"]] = data
        state.done_shards += 1
        if progress:
            progress(state)
    try:
        checkpoint = weights.from_shards(manifest, shards, verified=True)
        tokenizer = tokenizer_from_files(manifest, files)
    except weights.WeightsError as e:
        raise LoadError(str(e)) from None
    return Model(checkpoint, tokenizer, base_url.rstrip("/").rsplit("/", 1)[-1])
