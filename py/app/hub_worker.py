"""The model worker's load of a Hub model (issue 16, h16): the same checkpoint the page has just
converted, read back from this browser's model store, never downloaded a second time.

The page (py/app/hub_loader.py) downloads and converts a Hub checkpoint into a model folder in
the Cache API store ``loader.MODEL_CACHE`` (shards and bundled tokenizer files under
``picker.folder_url``), then loads it from there itself. The worker opens the same cache
(the Cache API exists in workers; same origin, same store) and reads those files back:

    model = await load_stored(folder, manifest_text, store, progress)

``manifest_text`` is the manifest the PAGE loaded and verified (it crosses in the init
message), so the worker trusts nothing that only the store says: every shard and bundled
tokenizer file is checked against the page's manifest, size and sha256, exactly as the
page checks them (weights.verify_bytes). A missing, truncated or corrupted file raises
LoadError naming the file and both hashes; the page then computes on its own thread and
its backend reason says why. Tokenizer files that the folder does not bundle (GPT-2's own
vocabulary in vendor/) come from the site, as on the page.

Why read the store rather than transfer the page's bytes: the page keeps its parameters
(its weights view, experiments and panels read them), and the shards it verified have
already become those parameters; sending them would copy every shard out of the page's
heap into a JavaScript buffer first (the transfer itself is free, the copy is not), a
peak of one more copy of the model on the page's side. The store costs the worker one read
of each shard and one hash, the same as the page's own reload. When the page could not keep
the model (storage full or disabled), the worker has nothing to read, says so, and the page
computes (bench/results.md, "Hub models in the worker").
"""

from __future__ import annotations

from typing import Awaitable, Callable

from glassbox import weights
from glassbox.model import Model

from .loader import VOCAB_URL, LoadError, Progress, build_model

NOT_STORED = ("is not in this browser's model store (the page could not keep the converted model: "
              "storage full or switched off), and the worker reads Hub models only from there")


async def _read(store, url: str, name: str) -> bytes:
    data = None
    if store is not None:
        try:
            data = await store.get(url)
        except Exception:  # noqa: BLE001  (an unreadable entry is a missing one)
            data = None
    if data is None:
        raise LoadError(f"{name} {NOT_STORED}")
    return data


async def load_stored(folder: str, manifest_text: str, store,
                      progress: Callable[[Progress], None] | None = None, *,
                      fetch: Callable[[str], Awaitable[bytes]] | None = None, vocab_url: str = VOCAB_URL) -> Model:
    """The model in ``folder`` (an absolute URL ending in "/") from ``store`` (loader.BrowserStore
    or a fake with ``async get(url) -> bytes | None``), checked against ``manifest_text``.
    ``fetch(url)`` gets the tokenizer files the folder does not bundle (vendor/gpt2)."""
    if not folder.endswith("/"):
        folder += "/"
    try:
        manifest = weights.parse_manifest(manifest_text.encode(), folder + weights.MANIFEST)
    except weights.WeightsError as e:
        raise LoadError(str(e)) from None
    state = Progress(total_shards=len(manifest["shards"]),
                     total_bytes=sum(entry["bytes"] for entry in manifest["shards"]))

    files = {}
    for name, entry in manifest["tokenizer"].items():
        if entry.get("bundled", True):
            data = await _read(store, folder + name, f"tokenizer file {name}")
        else:
            if fetch is None:
                from .loader import BrowserFetch

                fetch = BrowserFetch()
            data = await fetch(vocab_url + name)
        weights.verify_bytes(f"tokenizer file {name}", entry, data, LoadError, size_optional=True)
        files[name] = data

    shards = {}
    for entry in manifest["shards"]:
        name = entry["file"]
        state.current = name
        data = await _read(store, folder + name, f"shard {name}")
        weights.verify_bytes(f"shard {name}", entry, data, LoadError,
                             hint=" (the copy in this browser's model store, read by the model worker)")
        shards[name] = data
        state.cached_shards += 1
        state.done_shards += 1
        state.done_bytes += len(data)
        if progress:
            progress(state)
    return build_model(folder, manifest, shards, files)
