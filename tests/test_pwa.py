"""The offline app's pure parts under CPython: precache list, icons and manifest, light-mode
decision and runner, and the model loader's store logic (browser objects replaced by fakes).
The same code runs in the page in tests/e2e/test_offline.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import icons  # noqa: E402
import precache  # noqa: E402
import serve  # noqa: E402
from app import lightmode, loader  # noqa: E402
from glassbox import reference, weights  # noqa: E402
from glassbox.config import GPTConfig  # noqa: E402
from glassbox.trace import LAYER_NAMES, layer_name  # noqa: E402

MIB = 1024 * 1024


# ----- precache list ------------------------------------------------------------------------

def test_precache_list_is_current():
    """sw-precache.js is what tools/precache.py writes for the files as they are now."""
    target = ROOT / precache.OUTPUT
    assert target.is_file(), "sw-precache.js is missing: run python3 tools/precache.py (make does)"
    assert target.read_text(encoding="utf-8") == precache.render(precache.manifest(ROOT)), (
        "sw-precache.js is out of date: run python3 tools/precache.py (make serve / make test do)")


def test_precache_list_covers_the_app_shell_and_runtime():
    files = precache.manifest(ROOT)["files"]
    for needed in ("index.html", "pyscript.toml", "manifest.webmanifest", "web/shell.js", "web/pwa.js",
                   "web/icons/icon-192.png", "py/app/main.py", "py/app/loader.py", "py/glassbox/reference.py",
                   "weights/index.json", "vendor/pyscript/core.js", "vendor/pyodide/pyodide.asm.wasm",
                   "vendor/pyodide/python_stdlib.zip", "vendor/pyodide/pyodide-lock.json",
                   "vendor/pyodide/numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl",
                   "vendor/gpt2/encoder.json", "vendor/gpt2/vocab.bpe", "vendor/katex/katex.min.js"):
        assert needed in files, needed
    assert any(p.startswith("shaders/") for p in files)
    assert not [p for p in files if p.endswith((".map", ".pyc", ".part")) or "__pycache__" in p]
    assert not [p for p in files if p.startswith("weights/") and p != "weights/index.json"], \
        "model weights belong to the loader's cache, not the app's"
    assert "sw.js" not in files and precache.OUTPUT not in files
    # Every file the page maps into Python's file system is kept offline.
    import tomllib

    mapped = tomllib.loads((ROOT / "pyscript.toml").read_text(encoding="utf-8"))["files"]
    assert {p.removeprefix("./") for p in mapped} <= set(files)


def test_precache_version_follows_every_file_and_the_worker(tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "index.html").write_text("<p>one</p>")
    (tmp_path / "web" / "a.css").write_text("a {}")
    (tmp_path / "sw.js").write_text("// worker 1")
    first = precache.manifest(tmp_path)
    assert set(first["files"]) == {"index.html", "web/a.css"}
    assert first["files"]["web/a.css"] == hashlib.sha256(b"a {}").hexdigest()
    assert re.fullmatch(r"[0-9a-f]{16}", first["version"])
    (tmp_path / "web" / "a.css").write_text("a { color: red }")
    second = precache.manifest(tmp_path)
    assert second["version"] != first["version"]
    assert {p for p in first["files"] if first["files"][p] != second["files"][p]} == {"web/a.css"}
    (tmp_path / "sw.js").write_text("// worker 2")
    assert precache.manifest(tmp_path)["version"] != second["version"]
    assert precache.parse(precache.render(second)) == second


def test_dev_server_serves_the_precache_list_live(tmp_path):
    (tmp_path / "index.html").write_text("one")
    server, _ = serve.serve_in_thread(tmp_path)
    url = f"http://127.0.0.1:{server.server_address[1]}/{precache.OUTPUT}"
    try:
        def get():
            with urllib.request.urlopen(url) as response:
                assert response.headers["Content-Type"].startswith("text/javascript")
                return precache.parse(response.read().decode())

        before = get()
        assert before == precache.manifest(tmp_path)
        (tmp_path / "index.html").write_text("two!")  # other size: seen even within one mtime tick
        after = get()
        assert after["files"]["index.html"] == hashlib.sha256(b"two!").hexdigest()
        assert after["version"] != before["version"]
    finally:
        server.shutdown()
        server.server_close()


def test_precache_tool_check_mode(tmp_path, capsys):
    (tmp_path / "index.html").write_text("x")
    assert precache.main(["--root", str(tmp_path), "--check"]) == 1
    assert precache.main(["--root", str(tmp_path)]) == 0
    assert precache.main(["--root", str(tmp_path), "--check"]) == 0


# ----- manifest, icons, wiring ------------------------------------------------------------

def test_icons_are_current_and_valid_png():
    for name, data in icons.outputs().items():
        path = ROOT / "web" / "icons" / name
        assert path.is_file() and path.read_bytes() == data, f"run python3 tools/icons.py ({name})"
        if name.endswith(".png"):
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            assert (width, height) == ((192, 192) if "192" in name else (512, 512))


def test_web_manifest_names_existing_icons_and_is_installable():
    manifest = json.loads((ROOT / "manifest.webmanifest").read_text(encoding="utf-8"))
    for key in ("name", "short_name", "start_url", "display", "icons", "theme_color", "background_color"):
        assert manifest.get(key), key
    assert manifest["display"] in ("standalone", "fullscreen", "minimal-ui")
    sizes = {icon["sizes"] for icon in manifest["icons"]}
    assert {"192x192", "512x512"} <= sizes
    assert any(icon.get("purpose") == "maskable" for icon in manifest["icons"])
    for icon in manifest["icons"]:
        assert (ROOT / icon["src"]).is_file(), icon["src"]
    html = (ROOT / "index.html").read_text(encoding="utf-8")
    assert 'rel="manifest" href="./manifest.webmanifest"' in html
    assert 'src="./web/pwa.js"' in html and 'href="./web/pwa.css"' in html


def test_worker_page_and_loader_agree_on_names():
    sw = (ROOT / "sw.js").read_text(encoding="utf-8")
    assert f'MODEL_PREFIX + "{loader.MODEL_CACHE.removeprefix("glassbox-models-")}"' in sw
    assert 'importScripts("./sw-precache.js")' in sw
    pwa = (ROOT / "web" / "pwa.js").read_text(encoding="utf-8")
    device = (ROOT / "py" / "app" / "device.py").read_text(encoding="utf-8")
    key = re.search(r'MODE_KEY = "([^"]+)"', device).group(1)
    assert f'MODE_KEY = "{key}"' in pwa
    assert 'register("./sw.js"' in pwa


# ----- light mode -----------------------------------------------------------------------------

PHONE = lightmode.DeviceFacts(memory_gb=8, max_binding=1 << 30, max_buffer=1 << 30, screen=(360, 740), webgpu=True)
DESKTOP = lightmode.DeviceFacts(memory_gb=16, max_binding=1 << 30, max_buffer=1 << 30, screen=(1920, 1080), webgpu=True)


def test_light_mode_decision_from_the_device():
    assert lightmode.decide(DESKTOP).name == "full"
    assert "16 GB" in lightmode.decide(DESKTOP).why and "1024 MiB" in lightmode.decide(DESKTOP).why
    phone = lightmode.decide(PHONE)
    assert (phone.name, phone.by) == ("light", "device") and "360×740" in phone.why
    small_memory = lightmode.decide(lightmode.DeviceFacts(memory_gb=2, screen=(1280, 800)))
    assert small_memory.light and "2 GB" in small_memory.why
    small_gpu = lightmode.decide(lightmode.DeviceFacts(memory_gb=8, max_binding=128 * MIB, max_buffer=256 * MIB,
                                                       screen=(1280, 800), webgpu=True))
    assert small_gpu.light and "128 MiB" in small_gpu.why
    several = lightmode.decide(lightmode.DeviceFacts(memory_gb=1, screen=(320, 640)))
    assert len(several.reasons) == 2 and " and " in several.why
    assert lightmode.decide(lightmode.DeviceFacts()).name == "full"  # the browser tells nothing


def test_light_mode_choice_by_hand_or_address_wins():
    by_hand = lightmode.decide(lightmode.DeviceFacts(**{**PHONE.__dict__, "stored": "full"}))
    assert (by_hand.name, by_hand.by) == ("full", "hand") and "switch" in by_hand.why
    by_url = lightmode.decide(lightmode.DeviceFacts(**{**DESKTOP.__dict__, "stored": "full", "query": "light"}))
    assert (by_url.name, by_url.by) == ("light", "url")
    facts = lightmode.parse_facts("4", "134217728", None, 360, "740", True, "bogus", "")
    assert facts == lightmode.DeviceFacts(memory_gb=4, max_binding=128 * MIB, max_buffer=None,
                                          screen=(360, 740), webgpu=True, stored=None, query=None)
    assert lightmode.parse_facts(None, "NaN", -1, None, None, False, None, None) == lightmode.DeviceFacts()


def test_light_mode_picks_q4_weights_unless_the_address_names_a_model():
    light, full = lightmode.decide(PHONE), lightmode.decide(DESKTOP)
    models = ["mini", "mini-q4"]
    assert light.model_name("mini", False, models) == "mini-q4"
    assert light.model_name("mini", True, models) == "mini"  # ?model=mini
    assert light.model_name("gpt2", False, models) == "gpt2"  # no gpt2-q4 listed
    assert light.model_name("gpt2", False, models + ["gpt2-q4"]) == "gpt2-q4"
    assert full.model_name("mini", False, models) == "mini"


def test_mode_card_says_mode_why_and_offers_the_switch():
    mode = lightmode.decide(PHONE)
    html = lightmode.card(mode, "mini-q4")
    assert 'data-mode="light"' in html and 'data-pwa="mode"' in html and "Switch to full mode" in html
    assert "360×740" in html and "weights/mini-q4" in html
    loaded = loader.Progress(total_bytes=4 * MIB, total_shards=2, done_shards=2, cached_shards=1,
                             stored=True, persisted=False)
    html = lightmode.card(mode, "mini-q4", loaded, ["Not enough storage <x>"])
    assert "1 of 2 shards read from this device" in html and "sha256" in html
    assert "persistent" in html and "Not enough storage &lt;x&gt;" in html


TINY = GPTConfig(n_layer=3, n_head=2, n_embd=16, n_positions=32, vocab_size=64, n_inner=32)


def test_light_runner_keeps_one_layer_and_recomputes_others_exactly():
    params = weights.random_params(TINY, seed=3)
    ids = np.array([5, 9, 2, 40, 7], dtype=np.int64)
    full = reference.forward(params, TINY, ids)
    runner = lightmode.LightRunner(params, TINY)
    trace = asyncio.run(runner.run(ids))
    assert isinstance(trace, lightmode.LayerTrace) and trace.viewed == 0
    held = {n.split(".")[1] for n in trace.tensors if n.endswith(".att")}
    assert held == {"0"}, "light mode captures the viewed layer only"
    for layer in range(TINY.n_layer):  # the overview's [N, D] summaries stay for every layer
        for short in lightmode.SUMMARY_NAMES:
            assert layer_name(layer, short) in trace.tensors
    np.testing.assert_allclose(trace.logits, full.logits, rtol=1e-5, atol=1e-6)  # logits in row chunks
    with pytest.raises(KeyError, match="not computed"):
        trace["h.2.att"]  # reading never computes: selecting a layer does (runner.view_layer)
    assert trace.viewed == 0
    for layer in (2, 1, 0):
        runner.view_layer(trace, layer)
        for short in LAYER_NAMES:
            name = layer_name(layer, short)
            assert name in trace
            np.testing.assert_allclose(trace[name], full[name], rtol=1e-6, atol=1e-6, err_msg=name)
        assert trace.viewed == layer
        assert {n.split(".")[1] for n in trace.tensors if n.endswith(".att")} == {str(layer)}
    assert runner.layer == 0
    runner.view_layer(trace, 2)
    assert runner.layer == 2 and "h.2.att" in asyncio.run(runner.run(ids)).tensors  # next run: the viewed layer
    assert not hasattr(runner, "extend"), "no KV cache: generation re-runs the sequence"
    with pytest.raises(KeyError):
        trace["h.9.att"]


# ----- the loader's store, with fakes -------------------------------------------------------

class FakeNet:
    """Files by URL; records requests; can fail a request or serve bad bytes on purpose."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[str] = []
        self.offline = False
        self.abort: set[str] = set()  # fail once
        self.corrupt: set[str] = set()

    async def __call__(self, url, on_chunk=None):
        self.requests.append(url)
        if self.offline or url in self.abort:
            self.abort.discard(url)
            raise loader.NetworkError(f"could not fetch {url}: unreachable")
        if url not in self.files:
            raise loader.LoadError(f"could not fetch {url}: HTTP 404 Not Found")
        data = self.files[url]
        if url in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if on_chunk:
            for i in range(0, len(data), 1 << 16):
                on_chunk(len(data[i:i + (1 << 16)]))
        return data


class FakeStore:
    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.full = False

    async def get(self, url):
        return self.data.get(url)

    async def put(self, url, data):
        if self.full:
            raise RuntimeError("QuotaExceededError")
        self.data[url] = bytes(data)

    async def delete(self, url):
        self.data.pop(url, None)

    async def keys(self):
        return list(self.data)


class FakeStorage:
    def __init__(self, usage=0, quota=1 << 30, persist=True):
        self.usage, self.quota, self.answer = usage, quota, persist
        self.asked = 0

    async def estimate(self):
        return self.usage, self.quota

    async def persist(self):
        self.asked += 1
        return self.answer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A 3-layer model with real GPT-2 vocabulary, cut into several small shards."""
    config = GPTConfig(n_layer=1, n_head=2, n_embd=8, n_positions=16, vocab_size=50257, n_inner=32)
    tokenizer = json.loads((ROOT / "weights" / "mini" / "manifest.json").read_text())["tokenizer"]
    folder = tmp_path_factory.mktemp("models") / "tiny"
    manifest = weights.write_folder(str(folder), config, weights.random_params(config, seed=1), "int8",
                                    tokenizer, max_shard_bytes=200 * 1024)
    assert len(manifest["shards"]) >= 3
    files = {f"./weights/tiny/{p.name}": p.read_bytes() for p in folder.iterdir()}
    for name in ("encoder.json", "vocab.bpe"):
        files[f"./vendor/gpt2/{name}"] = (ROOT / "vendor" / "gpt2" / name).read_bytes()
    return manifest, files


def load(net, store, storage=None, progress=None):
    return asyncio.run(loader.load_model("./weights/tiny/", progress, fetch=net, store=store,
                                         storage=storage or FakeStorage()))


def shard_urls(manifest):
    return [f"./weights/tiny/{s['file']}" for s in manifest["shards"]]


def test_loader_stores_verified_files_and_reads_them_back(tiny_folder):
    manifest, files = tiny_folder
    net, store, storage = FakeNet(files), FakeStore(), FakeStorage()
    seen = []
    model = load(net, store, storage, lambda p: seen.append((p.done_bytes, p.done_shards, p.label())))
    assert model.config.n_layer == 1 and model.tokenizer.encode("hello world") == [31373, 995]
    assert set(store.data) == set(files) and storage.asked == 1
    total = sum(s["bytes"] for s in manifest["shards"])
    assert seen[-1][:2] == (total, len(manifest["shards"]))
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen), "bytes only grow"
    assert f"of {len(manifest['shards'])}" in seen[0][2] and "MiB" in seen[0][2]

    net.requests.clear()
    states = []
    load(net, store, storage, states.append)
    assert net.requests == ["./weights/tiny/manifest.json"], "stored files are not downloaded again"
    assert states[-1].cached_shards == len(manifest["shards"]) and states[-1].stored

    net.offline = True
    states.clear()
    load(net, store, storage, states.append)
    assert states[-1].offline and states[-1].notes[0].startswith("Offline")


def test_loader_refuses_a_corrupt_shard_by_name_and_never_stores_it(tiny_folder):
    manifest, files = tiny_folder
    bad = shard_urls(manifest)[1]
    net, store = FakeNet(files), FakeStore()
    net.corrupt.add(bad)
    with pytest.raises(loader.LoadError) as info:
        load(net, store)
    name = manifest["shards"][1]["file"]
    actual = hashlib.sha256(bytes([files[bad][0] ^ 0xFF]) + files[bad][1:]).hexdigest()
    message = str(info.value)
    assert name in message and manifest["shards"][1]["sha256"] in message and actual in message
    assert bad not in store.data and "./weights/tiny/manifest.json" not in store.data
    assert shard_urls(manifest)[0] in store.data, "the good shard before it is kept"


def test_loader_resumes_an_interrupted_download(tiny_folder):
    manifest, files = tiny_folder
    urls = shard_urls(manifest)
    net, store = FakeNet(files), FakeStore()
    net.abort.add(urls[1])
    with pytest.raises(loader.LoadError, match="reload to resume"):
        load(net, store)
    net.requests.clear()
    load(net, store)
    assert urls[0] not in net.requests, "a finished shard is not fetched again"
    assert [u for u in net.requests if u in urls] == urls[1:]


def test_loader_replaces_a_damaged_stored_copy(tiny_folder):
    manifest, files = tiny_folder
    net, store = FakeNet(files), FakeStore()
    load(net, store)
    first = shard_urls(manifest)[0]
    store.data[first] = b"rot" + store.data[first][3:]
    states = []
    net.requests.clear()
    load(net, store, progress=states.append)
    assert first in net.requests and store.data[first] == files[first]
    assert any("damaged" in n for n in states[-1].notes)


def test_loader_explains_a_storage_shortage_and_still_loads(tiny_folder):
    files = tiny_folder[1]
    net, store = FakeNet(files), FakeStore()
    states = []
    storage = FakeStorage(usage=90 * MIB, quota=100 * MIB)
    model = load(net, store, storage, states.append)
    assert model is not None and store.data == {} and not states[-1].stored
    note = states[-1].notes[0]
    assert "Not enough storage" in note and "this visit only" in note and "MiB" in note
    assert loader.shortage(10 * MIB, 0, 1 << 30) is None


def test_loader_survives_a_store_that_refuses_writes(tiny_folder):
    files = tiny_folder[1]
    net, store = FakeNet(files), FakeStore()
    store.full = True
    states = []
    assert load(net, store, progress=states.append) is not None
    assert not states[-1].stored and any("could not be kept" in n for n in states[-1].notes)


def test_loader_offline_without_a_stored_copy_says_so(tiny_folder):
    files = tiny_folder[1]
    net = FakeNet(files)
    net.offline = True
    with pytest.raises(loader.LoadError, match="not stored on this device"):
        load(net, FakeStore())


def test_loader_forgets_files_the_new_manifest_no_longer_names(tiny_folder, tmp_path):
    files = tiny_folder[1]
    net, store = FakeNet(files), FakeStore()
    load(net, store)
    store.data["./weights/tiny/model-old.safetensors"] = b"old"
    store.data["./weights/other/model.safetensors"] = b"other"
    load(net, store)
    assert "./weights/tiny/model-old.safetensors" not in store.data
    assert "./weights/other/model.safetensors" in store.data


def test_loader_without_a_store_loads_anyway(tiny_folder):
    _, files = tiny_folder
    states = []
    assert asyncio.run(loader.load_model("./weights/tiny", states.append, fetch=FakeNet(files), store=None,
                                         storage=SimpleNamespace())) is not None
    assert not states[-1].stored


def test_query_key_map_files_are_kept_with_the_model_and_read_offline(tiny_folder):
    """Issue 12: the manifest lists the map's files ("qk"); the map fetches them through the
    model store (verified), the model load keeps them, and offline they are read back."""
    manifest, files = tiny_folder
    side, corpus = b'{"format": "glassbox-qk"}', b'{"sentences": []}'
    entries = [{"file": name, "bytes": len(data), "sha256": weights.sha256_hex(data)}
               for name, data in (("qk.json", side), ("qk-corpus.json", corpus))]
    listed = {**manifest, "qk": {"files": entries}}
    files = {**files, "./weights/tiny/manifest.json": json.dumps(listed).encode(),
             "./weights/tiny/qk.json": side, "./weights/tiny/qk-corpus.json": corpus}
    net, store = FakeNet(files), FakeStore()
    load(net, store)
    assert "./weights/tiny/qk.json" not in store.data, "not downloaded with the model"
    get = loader.model_file_fetch("./weights/tiny", listed, fetch=net, store=store)
    assert asyncio.run(get("./weights/tiny/qk.json")) == side
    assert asyncio.run(get("./weights/tiny/qk-corpus.json")) == corpus
    load(net, store)  # a later visit: the model load keeps them (they are in the manifest)
    net.offline = True
    net.requests.clear()
    assert asyncio.run(get("./weights/tiny/qk-corpus.json")) == corpus and net.requests == []
    # a damaged stored copy is fetched again; a damaged download is refused by name
    net.offline = False
    store.data["./weights/tiny/qk.json"] = b"damaged"
    assert asyncio.run(get("./weights/tiny/qk.json")) == side
    net.files["./weights/tiny/qk-corpus.json"] = b"tampered"
    store.data.pop("./weights/tiny/qk-corpus.json")
    with pytest.raises(loader.LoadError, match="qk-corpus.json"):
        asyncio.run(get("./weights/tiny/qk-corpus.json"))


def test_shipped_manifests_list_the_query_key_map_files():
    from glassbox import qk

    for name in ("mini", "mini-q4"):
        folder = ROOT / "weights" / name
        listed = qk.manifest_entries(json.loads((folder / "manifest.json").read_text()))
        assert [e["file"] for e in listed] == ["qk.json", "qk-corpus.json", "qk-projections.safetensors"]
        for entry in listed:
            weights.verify_bytes(entry["file"], entry, (folder / entry["file"]).read_bytes())
