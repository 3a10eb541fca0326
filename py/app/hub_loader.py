"""The model picker on the page and loading GPT-2-family checkpoints from the Hub (issue 11).

main.py's start() calls, before anything else loads:

    chooser = await ModelChooser.open(page)      # reads ?model=, ?hub=, the remembered choice
    ...
    model = await chooser.load(mode) if chooser.choice.is_hub else await load_model(...)

The card (picker.render) lives in the slot ``picker``; one delegated click/submit listener
handles its buttons: a local folder or a Hub entry reloads the page with ``?model=...`` (the
simplest way to switch everything that depends on the model), remembering the choice in
localStorage. A Hub model is converted by glassbox.hub.Converter, which is handed the
browser's fetch (Range requests, redirects followed) and the model store (loader.py's cache):
finished tensors are kept under ``./hub-partial/`` for resuming, the finished folder under
``picker.folder_url`` (manifest + verified shards), which loader.load_model then reads like
any folder, so the next visit and offline use ask nothing of the Hub. The model worker
(issue 16, h16) then reads that same stored folder, never the Hub (app/hub_worker.py).
"""

from __future__ import annotations

import asyncio
import json

import js
from pyodide.ffi import JsException, create_proxy, to_js

from glassbox import hub, weights

from . import picker
from .loader import BrowserFetch, BrowserStore, LoadError, NetworkError, fetch_bytes, load_model

CONFIRMED_KEY = "glassbox-hub-ok"  # sessionStorage: the Hub choice the visitor clicked
PARTIAL = "./hub-partial/"  # finished tensors of an unfinished conversion


class HubLoadError(Exception):
    """A Hub model that could not be loaded; the message is for people."""


def _storage(kind: str):
    try:
        return getattr(js.window, kind)
    except Exception:  # noqa: BLE001  (storage switched off)
        return None


def _get(kind: str, key: str) -> str | None:
    store = _storage(kind)
    try:
        return store.getItem(key) if store is not None else None
    except Exception:  # noqa: BLE001
        return None


def _set(kind: str, key: str, value: str | None) -> None:
    store = _storage(kind)
    try:
        if store is not None:
            store.removeItem(key) if value is None else store.setItem(key, value)
    except Exception:  # noqa: BLE001
        pass


def _opts(**kw):
    return to_js(kw, dict_converter=js.Object.fromEntries)


# ----- the browser's network, for glassbox.hub --------------------------------------------------

async def _unreachable(url: str) -> str:
    """Why a request got no answer: offline, the site unreachable, or CORS refused."""
    if getattr(js.navigator, "onLine", True) is False:
        return "the browser is offline: connect to the internet to download a Hub model"
    try:
        await js.fetch(url, _opts(mode="no-cors", cache="no-store"))
    except JsException:
        return f"{url} did not answer: the site is unreachable, or the browser is offline"
    return (f"{url} answered, but without the CORS headers that let this page read it: the Hub "
            "address (?hub=) does not allow pages of other sites to download from it")


async def _get_response(url: str, headers: dict | None = None, first: bool = False):
    try:
        return await js.fetch(url, _opts(headers=_opts(**(headers or {})), redirect="follow", mode="cors"))
    except JsException:
        if first:
            raise HubLoadError(await _unreachable(url)) from None
        raise HubLoadError(f"the download from {url} broke off (the connection was lost). The tensors "
                           "finished so far are kept on this device: reload to resume.") from None


def _check(response, url: str) -> None:
    status = int(response.status)
    if status in (401, 403, 404):
        raise hub.NotFound(f"{url}: HTTP {status}")
    if not response.ok:
        raise HubLoadError(f"{url} answered HTTP {status} {response.statusText}")


class HubNetwork:
    """fetch / fetch_range for glassbox.hub.Converter, counting requests."""

    def __init__(self):
        self.requests = 0

    async def fetch(self, url: str) -> bytes:
        response = await _get_response(url, first=self.requests == 0)
        self.requests += 1
        _check(response, url)
        return (await response.arrayBuffer()).to_bytes()

    async def fetch_range(self, url: str, start: int, end: int) -> bytes:
        response = await _get_response(url, {"Range": f"bytes={start}-{end - 1}"})
        self.requests += 1
        _check(response, url)
        if int(response.status) != 206:
            try:
                await response.body.cancel()
            except Exception:  # noqa: BLE001
                pass
            raise HubLoadError(f"{url} ignored the Range request (HTTP {response.status}): Glassbox reads "
                               "checkpoints by byte range so that the whole float32 file never sits in memory")
        try:
            return (await response.arrayBuffer()).to_bytes()
        except JsException:
            raise HubLoadError(f"the download from {url} broke off. The tensors finished so far are kept "
                               "on this device: reload to resume.") from None


class PrefixStore:
    """The model store under a URL prefix: keys are the converter's tensor keys."""

    def __init__(self, store: BrowserStore, prefix: str):
        self.store, self.prefix = store, prefix

    async def get(self, key):
        return await self.store.get(self.prefix + key)

    async def put(self, key, data):
        await self.store.put(self.prefix + key, data)

    async def delete(self, key):
        await self.store.delete(self.prefix + key)


class FolderFetch:
    """loader.load_model's fetch for a converted Hub folder: the folder's files from memory
    (this visit's conversion) or the store, never the network; other files (GPT-2's vocabulary
    in vendor/) from the site as usual."""

    def __init__(self, folder: str, store: BrowserStore | None, memory: dict[str, bytes]):
        self.folder, self.store, self.memory = folder, store, memory

    async def __call__(self, url: str, on_chunk=None) -> bytes:
        if url in self.memory:
            data = self.memory.pop(url)
        elif url.startswith(self.folder):
            data = await self.store.get(url) if self.store is not None else None
            if data is None:
                raise NetworkError(f"{url} is not on this device")
        else:
            return await BrowserFetch()(url, on_chunk)
        if on_chunk:
            on_chunk(len(data))
        return data


# ----- the picker ------------------------------------------------------------------------------

class ModelChooser:
    """The model this page loads, the picker card, and the Hub download."""

    def __init__(self, page, choice: picker.Choice, base: str, local: list, default: str):
        self.page = page
        self.choice = choice
        self.base = base
        self.local = local
        self.default = default
        self.stored: set[str] = set()
        self.light, self.why = False, ""
        self.note = ""
        self.cancel = False
        self._answer: asyncio.Future | None = None
        self._proxies = []

    @classmethod
    async def open(cls, page) -> "ModelChooser":
        query = js.URLSearchParams.new(js.location.search)
        index = json.loads(await fetch_bytes("./weights/" + weights.INDEX))
        base = picker.hub_base(query.get("hub"))
        choice = picker.pick(query.get("model"), _get("localStorage", picker.CHOICE_KEY), index["default"])
        if not choice.is_hub and choice.name not in index["models"] and not query.get("model"):
            choice = picker.Choice(name=index["default"])  # a remembered folder that is gone
        local = []
        for name in index["models"]:
            try:
                manifest = json.loads(await fetch_bytes(f"./weights/{name}/{weights.MANIFEST}"))
                local.append((name, sum(s["bytes"] for s in manifest["shards"])))
            except Exception:  # noqa: BLE001  (a size we cannot read is left out)
                local.append((name, None))
        chooser = cls(page, choice, base, local, index["default"])
        if choice.spec != (query.get("model") or "") and (choice.is_hub or query.get("model") or
                                                          choice.name != index["default"]):
            chooser._address(choice)  # the address says what is loaded
        await chooser._find_stored()
        chooser._listen()
        return chooser

    @property
    def url(self) -> str:
        """The folder loader.load_model reads: weights/<name>/ or the Hub model's store folder."""
        return picker.folder_url(self.base, self.choice) if self.choice.is_hub else f"./weights/{self.choice.name}/"

    def _address(self, choice: picker.Choice) -> None:
        url = js.URL.new(js.location.href)
        url.searchParams.set("model", choice.spec)
        js.history.replaceState(js.history.state, "", url.href)

    async def _find_stored(self) -> None:
        store = await BrowserStore.open()
        if store is None:
            return
        root = store.absolute(picker.folder_url(self.base, picker.Choice(repo="x/y")).split("x/y/")[0])
        for key in await store.keys():
            if key.startswith(root) and key.endswith("/" + weights.MANIFEST):
                repo, _, revision = key[len(root):-len(weights.MANIFEST) - 1].rpartition("/")
                self.stored.add(picker.Choice(repo=repo, revision=revision).spec)

    def show(self, confirm: picker.Choice | None = None, downloading: bool = False) -> None:
        self.page.show("picker", picker.render(self.choice, self.base, self.local, self.stored, self.light,
                                               self.why, confirm, self.note, downloading))
        section = js.document.getElementById("models")
        if section is not None:
            section.hidden = False

    def _listen(self) -> None:
        slot = js.document.querySelector('[data-slot="picker"]')
        click, submit = create_proxy(self._on_click), create_proxy(self._on_submit)
        self._proxies += [click, submit]
        slot.addEventListener("click", click)
        slot.addEventListener("submit", submit)

    def _on_click(self, event) -> None:
        target = event.target.closest("button")
        if target is None:
            return
        spec, action = target.getAttribute("data-pick"), target.getAttribute("data-hub")
        if spec:
            self.go(str(spec))
        elif action in ("go", "cancel") and self._answer is not None and not self._answer.done():
            if action == "go":  # a reload (to resume) need not ask again in this tab
                _set("sessionStorage", CONFIRMED_KEY, self.choice.spec)
            self._answer.set_result(action == "go")
        elif action == "stop":
            self.cancel = True
            target.disabled = True
            target.textContent = "Cancelling…"

    def _on_submit(self, event) -> None:
        event.preventDefault()
        value = str(event.target.elements.namedItem("repo").value).strip()
        try:
            choice = picker.parse_choice(picker.HF_PREFIX + value.removeprefix(picker.HF_PREFIX))
        except ValueError as e:
            self.note = str(e)
            self.show()
            return
        self.go(choice.spec)

    def go(self, spec: str | None) -> None:
        """Reload with ``?model=spec`` (None: the default model), remembering the choice."""
        url = js.URL.new(js.location.href)
        if spec:
            url.searchParams.set("model", spec)
            if spec.startswith(picker.HF_PREFIX):
                _set("sessionStorage", CONFIRMED_KEY, spec)  # clicked beside the notice
        else:
            url.searchParams.delete("model")
        _set("localStorage", picker.CHOICE_KEY, spec)
        js.location.assign(url.href)

    # ----- loading a Hub model ---------------------------------------------------------------

    async def load(self, mode):
        """Load the Hub choice: from the store when converted before, else download and convert
        (after the visitor agreed to contact the Hub). ``mode`` is device.DeviceMode."""
        self.light, self.why = mode.mode.light, picker.device_why(mode.mode)
        choice, folder = self.choice, self.url
        store = await BrowserStore.open()
        js.document.documentElement.setAttribute("data-waiting", "hub")  # web/shell.js: no boot timeout now
        try:
            return await self._load(choice, folder, store, mode)
        finally:
            js.document.documentElement.removeAttribute("data-waiting")

    async def _load(self, choice, folder, store, mode):
        if choice.spec not in self.stored:
            if _get("sessionStorage", CONFIRMED_KEY) != choice.spec:
                self._answer = asyncio.get_event_loop().create_future()
                self.show(confirm=choice)
                self.page.progress(f"Waiting for your answer below: download {choice.repo} from the Hub?", None)
                button = js.document.querySelector('[data-testid="hub-go"]')
                if button is not None:
                    button.scrollIntoView(_opts(block="center"))
                    button.focus()
                if not await self._answer:
                    self.go(None)
                    await asyncio.Event().wait()  # the page is going away
            self.show(downloading=True)
            memory = await self._convert(store, folder, mode)
        else:
            self.show()
            memory = {}
        try:
            return await load_model(folder, mode.progress, fetch=FolderFetch(folder, store, memory),
                                    store=store if store is not None else None)
        except LoadError as e:
            raise HubLoadError(f"{choice.spec}: {e}") from None

    async def _convert(self, store, folder: str, mode) -> dict[str, bytes]:
        choice = self.choice
        network = HubNetwork()
        vocab = {name: await fetch_bytes("./vendor/gpt2/" + name) for name in ("encoder.json", "vocab.bpe")}
        memory: dict[str, bytes] = {}
        keep = store is not None

        async def put_file(name: str, data: bytes) -> None:
            nonlocal keep
            url = folder + name
            if keep:
                try:
                    await store.put(url, data)
                    return
                except Exception:  # noqa: BLE001  (quota: this visit only)
                    keep = False
            memory[url] = data

        def progress(state: hub.HubProgress) -> None:
            self.page.progress(state.label(), state.fraction, exact=True)

        converter = hub.Converter(network.fetch, network.fetch_range, self.base, choice.repo, choice.revision,
                                  scheme=picker.SCHEME, vocab=vocab,
                                  store=PrefixStore(store, PARTIAL) if store is not None else None,
                                  progress=progress, cancelled=lambda: self.cancel)
        try:
            result = await converter.run(put_file)
        except hub.Cancelled:
            self.go(None)
            await asyncio.Event().wait()  # the page is going away
        except hub.HubError as e:
            self.note = str(e)
            self.show()
            _set("localStorage", picker.CHOICE_KEY, None)
            raise HubLoadError(f"{choice.repo}: {e}") from None
        except HubLoadError as e:
            self.note = str(e)
            self.show()
            raise
        memory[folder + weights.MANIFEST] = weights.manifest_text(result.manifest).encode()
        self.stored.add(choice.spec)
        self.show()
        return memory
