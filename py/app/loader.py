"""Load a model folder over HTTP in the page: manifest, tokenizer files, shards, with progress,
kept on the device (Cache API) so the next visit, or the retry after an interruption, only
downloads what is missing.

    model = await load_model("./weights/mini/", progress)   # progress(Progress) as bytes arrive

Every byte is checked before it is used or stored: each shard's size and sha256 against the
manifest (glassbox.weights.verify_shard names the file and both hashes on a mismatch), each
tokenizer file against its entry. A file that fails is reported and never stored.

The store is the cache MODEL_CACHE (``glassbox-models-v1``; sw.js deletes caches of other
versions), one entry per file URL:

* a stored file is read back and hashed again before use; a damaged one is deleted and
  downloaded again;
* each shard is stored as soon as it is verified, so an interrupted download resumes with
  the shards still missing;
* the manifest is stored last, once every file it names is stored; without the network the
  stored manifest is used (that is how the page loads offline); files of the folder that the
  current manifest no longer names are deleted;
* before downloading, navigator.storage.estimate() is asked whether the files fit: if not,
  the model is loaded for this visit only and ``Progress.notes`` says why; persistent
  storage is requested (navigator.storage.persist()) so the browser does not evict it.

The browser parts (fetch, caches, navigator.storage) sit behind three small classes that
tests replace with fakes (``fetch=``, ``store=``, ``storage=``), so the logic runs under
CPython as well.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from glassbox import factors, qk, weights
from glassbox.model import Model, tokenizer_steps
from glassbox.tokenizer import run_steps

VOCAB_URL = "./vendor/gpt2/"
MODEL_CACHE = "glassbox-models-v1"  # sw.js MODEL_CACHE
# Room left beside the files when deciding whether they fit (browsers round estimates).
STORAGE_MARGIN = 16 * 1024 * 1024
MIB = 1024 * 1024


class LoadError(Exception):
    """A model that could not be fetched or verified; the message is for people."""


class NetworkError(LoadError):
    """The request never got an answer (offline, server down), as opposed to an HTTP error."""


@dataclass
class Progress:
    """What has arrived so far, for a progress bar: bytes and shards; and what to tell people."""

    done_bytes: int = 0
    total_bytes: int = 0
    done_shards: int = 0
    total_shards: int = 0
    current: str = ""
    cached_shards: int = 0  # shards read back from this device instead of downloaded
    stored: bool = False  # the model is kept on this device (all of it, after loading)
    persisted: bool | None = None  # navigator.storage.persist()'s answer; None: not asked
    offline: bool = False  # the manifest came from the store: the network did not answer
    dictionary_bytes: int = 0  # the factors dictionary (issue 13): fetched when its panel first opens
    qk_bytes: int = 0  # the query/key map's files (issue 12): fetched when the map is first built
    notes: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 0.0

    def label(self) -> str:
        verb = "Checking stored weights" if self.cached_shards == self.total_shards else "Downloading weights"
        where = f"; {self.cached_shards} from this device" if self.cached_shards else ""
        return (f"{verb}: {self.done_bytes / MIB:.1f} of {self.total_bytes / MIB:.1f} MiB "
                f"(shard {min(self.done_shards + 1, self.total_shards)} of {self.total_shards}{where})")


# ----- the browser side ----------------------------------------------------------------------

class BrowserFetch:
    """GET with js.fetch; NetworkError when there is no answer, LoadError on an HTTP error."""

    async def __call__(self, url: str, on_chunk: Callable[[int], None] | None = None) -> bytes:
        import js
        from pyodide.ffi import JsException

        try:
            response = await js.fetch(url)
        except JsException as e:
            raise NetworkError(f"could not fetch {url}: the network or server is unreachable ({e})") from None
        if not response.ok:
            raise LoadError(f"could not fetch {url}: HTTP {response.status} {response.statusText}")
        try:
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
        except JsException as e:
            raise NetworkError(f"the download of {url} broke off ({e})") from None


async def fetch_bytes(url: str, on_chunk: Callable[[int], None] | None = None) -> bytes:
    """GET ``url`` and return its body; ``on_chunk(n)`` is told of each n bytes received."""
    return await BrowserFetch()(url, on_chunk)


class BrowserStore:
    """The Cache API cache MODEL_CACHE; absolute URLs as keys."""

    def __init__(self, cache):
        self.cache = cache

    @classmethod
    async def open(cls, name: str = MODEL_CACHE) -> "BrowserStore | None":
        """The store, or None where the browser has no Cache API here (not a secure context)."""
        import js

        caches = getattr(js, "caches", None)
        if caches is None:
            return None
        try:
            return cls(await caches.open(name))
        except Exception:  # noqa: BLE001  (a browser that refuses storage: load without it)
            return None

    @staticmethod
    def absolute(url: str) -> str:
        import js

        return str(js.URL.new(url, js.location.href).href)

    async def get(self, url: str) -> bytes | None:
        response = await self.cache.match(self.absolute(url))
        if response is None:
            return None
        return (await response.arrayBuffer()).to_bytes()

    async def put(self, url: str, data: bytes) -> None:
        import js
        from pyodide.ffi import to_js

        init = to_js({"headers": {"Content-Type": "application/octet-stream",
                                  "Content-Length": str(len(data))}},
                     dict_converter=js.Object.fromEntries)
        # issue 16 (hw20): the bytes are copied to JavaScript in steps (one to_js of a 32 MiB
        # shard was a 100-150 ms main-thread task), each a new browser task.
        body = js.Uint8Array.new(len(data))
        view = memoryview(data).cast("B")
        for start in range(0, len(view), weights.HASH_STEP):
            end = min(len(view), start + weights.HASH_STEP)
            body.subarray(start, end).assign(view[start:end])
            if end < len(view):
                await asyncio.sleep(0)
        await self.cache.put(self.absolute(url), js.Response.new(body, init))

    async def delete(self, url: str) -> None:
        await self.cache.delete(self.absolute(url))

    async def keys(self) -> list[str]:
        return [str(request.url) for request in await self.cache.keys()]


class BrowserStorage:
    """navigator.storage: how much fits, and persistence."""

    async def estimate(self) -> tuple[int, int] | None:
        """(usage, quota) in bytes, or None when the browser does not say."""
        import js

        storage = getattr(js.navigator, "storage", None)
        if storage is None or not hasattr(storage, "estimate"):
            return None
        estimate = await storage.estimate()
        return int(estimate.usage or 0), int(estimate.quota or 0)

    async def persist(self) -> bool | None:
        """True when storage is (now) persistent, False when refused, None when unsupported."""
        import js

        storage = getattr(js.navigator, "storage", None)
        if storage is None or not hasattr(storage, "persist"):
            return None
        if await storage.persisted():
            return True
        return bool(await storage.persist())


# ----- the logic --------------------------------------------------------------------------

def shortage(need: int, usage: int, quota: int, margin: int = STORAGE_MARGIN) -> str | None:
    """A sentence explaining why ``need`` bytes will not fit, or None when they do."""
    free = max(0, quota - usage)
    if need + margin <= free:
        return None
    return (f"Not enough storage to keep the model on this device: it needs {need / MIB:.1f} MiB, "
            f"and the browser allows this site {free / MIB:.1f} MiB more (using {usage / MIB:.1f} of "
            f"{quota / MIB:.1f} MiB). The model is loaded for this visit only and will be downloaded "
            "again next time; free up space on the device, or remove other sites' data, to keep it.")


def verify_file(name: str, entry: dict, data: bytes, what: str = "file") -> None:
    """LoadError naming the file and both hashes unless size and sha256 match the entry."""
    weights.verify_bytes(f"{what} {name}", entry, data, LoadError, size_optional=True)


async def verify_file_steps(name: str, entry: dict, data: bytes, what: str = "file") -> None:
    """verify_file, hashing in steps (weights.sha256_hex_steps) so that checking a 32 MiB shard
    is not one long main-thread task (issue 16, hw20); the same check and message."""
    weights.verify_bytes(f"{what} {name}", entry, data, LoadError, size_optional=True,
                         actual=await weights.sha256_hex_steps(data))


async def load_model(base_url: str, progress: Callable[[Progress], None] | None = None, *,
                     fetch: Callable[..., Awaitable[bytes]] | None = None,
                     store: BrowserStore | None | bool = True,
                     storage: BrowserStorage | None = None) -> Model:
    """Fetch (or read back), verify and build the model in folder ``base_url``.

    ``store=True`` uses the browser's cache, ``store=None``/``False`` none; tests pass fakes
    for ``fetch``, ``store`` and ``storage``.
    """
    if not base_url.endswith("/"):
        base_url += "/"
    fetch = fetch or BrowserFetch()
    if store is True:
        store = await BrowserStore.open()
    store = store or None
    storage = storage or BrowserStorage()
    state = Progress()

    def report() -> None:
        if progress:
            progress(state)

    def note(text: str) -> None:
        state.notes.append(text)
        report()

    async def stored(url: str) -> bytes | None:
        if store is None:
            return None
        try:
            return await store.get(url)
        except Exception:  # noqa: BLE001  (an unreadable entry is a missing one)
            return None

    keep = store is not None

    async def put(url: str, data: bytes) -> None:
        nonlocal keep
        if not keep:
            return
        try:
            await store.put(url, data)
        except Exception as e:  # noqa: BLE001  (quota exceeded, storage switched off...)
            keep = False
            note(f"The model could not be kept on this device ({type(e).__name__}: {e}); "
                 "it is loaded for this visit only.")

    # 1. The manifest: the network's, else (offline) the stored one.
    manifest_url = base_url + weights.MANIFEST
    try:
        manifest_bytes = await fetch(manifest_url)
    except NetworkError as e:
        manifest_bytes = await stored(manifest_url)
        if manifest_bytes is None:
            raise LoadError(f"{e}; and this model is not stored on this device yet: connect once to "
                            "download it") from None
        state.offline = True
        note("Offline: using the copy of the model stored on this device.")
    try:
        manifest = weights.parse_manifest(manifest_bytes, manifest_url)
    except weights.WeightsError as e:
        raise LoadError(str(e)) from None

    tokenizer = [((base_url if entry.get("bundled", True) else VOCAB_URL) + name, name, entry)
                 for name, entry in manifest["tokenizer"].items()]
    shards = [(base_url + entry["file"], entry["file"], entry) for entry in manifest["shards"]]
    state.total_bytes = sum(entry["bytes"] for _, _, entry in shards)
    # Issue 13: the factors dictionary is not downloaded now, but counted and kept when stored;
    # issue 12: so are the query/key map's files (fetched when the map is first built).
    dictionary = [(base_url + entry["file"], entry["file"], entry) for entry in factors.entries(manifest)]
    try:
        qk_files = [(base_url + entry["file"], entry["file"], entry) for entry in qk.manifest_entries(manifest)]
    except weights.WeightsError as e:
        raise LoadError(str(e)) from None
    extras = dictionary + qk_files
    state.dictionary_bytes = sum(entry["bytes"] for _, _, entry in dictionary)
    state.qk_bytes = sum(entry["bytes"] for _, _, entry in qk_files)
    state.total_shards = len(shards)

    # 2. What this device already holds, checked again (a damaged copy is dropped).
    have: dict[str, bytes] = {}
    for url, name, entry in tokenizer + shards:
        data = await stored(url)
        if data is None:
            continue
        try:
            await verify_file_steps(name, entry, data)  # issue 16 (hw20): in steps
        except LoadError:
            note(f"The stored copy of {name} was damaged; it is downloaded again.")
            if store is not None:
                await store.delete(url)
            continue
        have[url] = data

    # 3. Room for the rest, and persistence.
    need = sum(entry.get("bytes", 0) for url, _, entry in tokenizer + shards if url not in have) + state.dictionary_bytes \
        + state.qk_bytes
    if keep and need:
        try:
            estimate = await storage.estimate()
        except Exception:  # noqa: BLE001
            estimate = None
        if estimate is not None:
            why = shortage(need, *estimate)
            if why:
                keep = False
                note(why)
    if keep:
        try:
            state.persisted = await storage.persist()
        except Exception:  # noqa: BLE001
            state.persisted = None

    # 4. Tokenizer files, then shards one by one: verify, store, use.
    files = {}
    for url, name, entry in tokenizer:
        data = have.get(url)
        if data is None:
            data = await fetch(url)
            verify_file(name, entry, data, "tokenizer file")
            await put(url, data)
        files[name] = data

    shard_bytes = {}
    for url, name, entry in shards:
        state.current = name
        data = have.get(url)
        if data is not None:
            state.cached_shards += 1
            state.done_bytes += len(data)
        else:
            before = state.done_bytes

            def on_chunk(n: int) -> None:
                state.done_bytes += n
                report()

            try:
                data = await fetch(url, on_chunk)
            except NetworkError as e:
                raise LoadError(f"{e}. The shards downloaded so far are kept: reload to resume "
                                "from shard " f"{state.done_shards + 1} of {state.total_shards}.") from None
            state.done_bytes = before + len(data)
            try:
                weights.verify_shard(entry, data, actual=await weights.sha256_hex_steps(data))  # hw20: in steps
            except weights.WeightsError as e:
                raise LoadError(f"{e}. It was not used or stored; reload to download it again "
                                "(if it fails again, the file on the server is damaged).") from None
            await put(url, data)
        shard_bytes[name] = data
        state.done_shards += 1
        report()

    # 5. The manifest last (so a stored manifest always has its files), then tidy up.
    if keep:
        await put(manifest_url, manifest_bytes)
    if keep and store is not None:
        wanted = {store_key(store, u) for u, _, _ in tokenizer + shards + extras} | {store_key(store, manifest_url)}
        folder = store_key(store, base_url)
        for key in await store.keys():
            if key.startswith(folder) and key not in wanted:
                await store.delete(key)
    state.stored = keep
    report()

    return await build_model_steps(base_url, manifest, shard_bytes, files)  # issue 16 (hw20): in steps


def build_model(base_url: str, manifest: dict, shard_bytes: dict[str, bytes], files: dict[str, bytes]) -> Model:
    """The Model from verified shards and tokenizer files, named after its folder (also the
    model worker's Hub load, app/hub_worker.py: issue 16 h16)."""
    return run_steps(_model_steps(base_url, manifest, shard_bytes, files))


async def build_model_steps(base_url: str, manifest: dict, shard_bytes: dict[str, bytes],
                            files: dict[str, bytes]) -> Model:
    """build_model with a turn for the page between its steps (the tokenizer in steps of
    tokenizer.BUILD_STEP: in one go GPT-2's vocabulary was a ~0.5 s main-thread task; issue
    16, hw20). The same Model and errors."""
    steps = _model_steps(base_url, manifest, shard_bytes, files)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        await asyncio.sleep(0)


def _model_steps(base_url: str, manifest: dict, shard_bytes: dict[str, bytes], files: dict[str, bytes]):
    try:
        checkpoint = weights.from_shards(manifest, shard_bytes, verified=True)
        yield
        tokenizer_model = yield from tokenizer_steps(manifest, files)
    except weights.WeightsError as e:
        raise LoadError(str(e)) from None
    return Model(checkpoint, tokenizer_model, base_url.rstrip("/").rsplit("/", 1)[-1])


def store_key(store, url: str) -> str:
    """The key a store files ``url`` under (absolute for the browser's cache)."""
    absolute = getattr(store, "absolute", None)
    return absolute(url) if absolute else url


async def fetch_kept(url: str, entry: dict, fetch: Callable[..., Awaitable[bytes]], store,
                     what: str = "file") -> bytes:
    """A file the manifest lists but the model load does not fetch (the factors dictionary,
    the query/key map's files): read back from ``store`` when an intact copy is there, else
    fetched and checked against the entry's sha256 before use or storage (a damaged stored
    copy is fetched again; a damaged download raises LoadError by name; no room: used for
    this visit only)."""
    if store:
        try:
            blob = await store.get(url)
            if blob is not None:
                verify_file(entry["file"], entry, blob, what)
                return blob
        except Exception:  # noqa: BLE001  (unreadable or damaged: fetch it again)
            pass
    blob = await fetch(url)
    verify_file(entry["file"], entry, blob, what)
    if store:
        try:
            await store.put(url, blob)
        except Exception:  # noqa: BLE001  (no room: used for this visit only)
            pass
    return blob


def model_file_fetch(base_url: str, manifest: dict, *, fetch: Callable[..., Awaitable[bytes]] | None = None,
                     store: "BrowserStore | None | bool" = True) -> Callable[[str], Awaitable[bytes]]:
    """``fetch(url) -> bytes`` for the query/key map's files (issue 12): the ones the model's
    manifest lists go through ``fetch_kept`` (this device's model store first, so the map
    works offline once built online); any other URL is fetched as is."""
    if not base_url.endswith("/"):
        base_url += "/"
    entries = {base_url + entry["file"]: entry for entry in qk.manifest_entries(manifest)}
    fetch = fetch or BrowserFetch()
    opened = []

    async def get(url: str) -> bytes:
        entry = entries.get(url)
        if entry is None:
            return await fetch(url)
        if not opened:
            opened.append(await BrowserStore.open() if store is True else store)
        return await fetch_kept(url, entry, fetch, opened[0], "query/key map file")

    return get


async def load_dictionary(base_url: str, manifest: dict, *, fetch: Callable[..., Awaitable[bytes]] | None = None,
                          store: BrowserStore | None | bool = True) -> "factors.Dictionary":
    """The factors dictionary of the model in ``base_url`` (issue 13): read back from this
    device or fetched, each file checked against the manifest's sha256 before use or storage
    (a damaged stored copy is fetched again; a damaged download raises LoadError by name)."""
    if not base_url.endswith("/"):
        base_url += "/"
    fetch = fetch or BrowserFetch()
    if store is True:
        store = await BrowserStore.open()
    found = factors.entries(manifest)
    if not found:
        raise LoadError("this model has no factors dictionary (its manifest.json lists none)")
    data = [await fetch_kept(base_url + entry["file"], entry, fetch, store, "dictionary file") for entry in found]
    try:
        return factors.from_bytes(manifest, *data, verified=True)
    except factors.DictionaryError as e:
        raise LoadError(str(e)) from None
