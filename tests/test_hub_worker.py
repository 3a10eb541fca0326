"""The model worker's load of a Hub model (app/hub_worker.py, issue 16 h16) under CPython.

The page's side is played by the real streaming converter (glassbox.hub.Converter, as
tests/test_hub.py runs it, over a random-init checkpoint that transformers' save_pretrained
wrote) putting the converted folder into a fake model store keyed by URL, as hub_loader's
put_file does into the Cache API; the worker's side is hub_worker.load_stored reading it back
with the manifest the page verified. The model it builds must be the CLI converter's model
(`python -m glassbox convert` of the same checkpoint, loaded by glassbox.model.load): the same
bytes, so the logits are compared exactly. Damaged, truncated or missing files must fail with
the file's name and both hashes, and nothing is fetched for the folder (no second download).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re

import numpy as np
import pytest

from glassbox import convert, hub, model as glassbox_model, weights
from hf_helpers import random_hf_model

from app.hub_worker import NOT_STORED, load_stored
from app.loader import LoadError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(ROOT, "vendor", "gpt2")
HUB = "http://hub.test"
FOLDER = "http://127.0.0.1:8000/hub/hub.test/org/model/main/"
VOCAB_URL = "http://127.0.0.1:8000/vendor/gpt2/"


class Store:
    """The model store (a fake Cache API cache): URL -> bytes, counting reads."""

    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.reads: list[str] = []

    async def get(self, url):
        self.reads.append(url)
        return self.data.get(url)

    async def put(self, url, data):
        self.data[url] = bytes(data)


class Site:
    """fetch(url) for the files the folder does not bundle (vendor/gpt2)."""

    def __init__(self, damage: str | None = None):
        self.requests: list[str] = []
        self.damage = damage

    async def __call__(self, url, on_chunk=None):
        self.requests.append(url)
        assert url.startswith(VOCAB_URL), url
        data = open(os.path.join(VOCAB, url[len(VOCAB_URL):]), "rb").read()
        return data[:-1] if url.endswith(self.damage or "\0") else data


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(store holding the page's converted folder, its manifest text, the CLI model)."""
    root = tmp_path_factory.mktemp("hubworker")
    random_hf_model(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=50257,
                    seed=16).save_pretrained(root / "hf")

    async def fetch(url):
        path = root / "hf" / url.split("/resolve/main/")[1]
        if not path.exists():
            raise hub.NotFound(url)
        return path.read_bytes()

    async def fetch_range(url, start, end):
        with open(root / "hf" / url.split("/resolve/main/")[1], "rb") as f:
            f.seek(start)
            return f.read(end - start)

    store = Store()
    vocab = {name: open(os.path.join(VOCAB, name), "rb").read() for name in ("encoder.json", "vocab.bpe")}
    converter = hub.Converter(fetch, fetch_range, HUB, "org/model", scheme="int8", vocab=vocab)
    result = asyncio.run(converter.run(lambda name, data: store.put(FOLDER + name, data)))
    convert.convert(str(root / "hf"), str(root / "cli"), "int8", vocab_dir=VOCAB)
    return store, weights.manifest_text(result.manifest), glassbox_model.load(str(root / "cli"), VOCAB)


def load(store, manifest_text, site=None, progress=None):
    return asyncio.run(load_stored(FOLDER, manifest_text, store, progress, fetch=site or Site(),
                                   vocab_url=VOCAB_URL))


def copy(store: Store) -> Store:
    other = Store()
    other.data = dict(store.data)
    return other


def test_the_worker_builds_the_cli_converters_model_from_the_store(converted):
    store, manifest_text, cli = converted
    site, seen = Site(), []
    model = load(copy(store), manifest_text, site, lambda s: seen.append((s.done_shards, s.total_shards, s.label())))
    # Only the shared vocabulary came from the site; every shard from the store.
    assert sorted(site.requests) == [VOCAB_URL + "encoder.json", VOCAB_URL + "vocab.bpe"]
    shards = [e["file"] for e in model.checkpoint.manifest["shards"]]
    assert len(shards) >= 1
    assert model.checkpoint.manifest == cli.checkpoint.manifest | {"source": model.checkpoint.manifest["source"]}
    text = "The worker reads the same bytes"
    assert model.tokenizer.encode(text) == cli.tokenizer.encode(text)
    ids = np.array(cli.tokenizer.encode(text))
    # Same shard bytes, same numpy functions: the logits are equal, not merely close.
    np.testing.assert_array_equal(model.forward(ids).logits, cli.forward(ids).logits)
    # Progress: once per shard, read from this device, ending complete.
    assert [s[:2] for s in seen] == [(i + 1, len(shards)) for i in range(len(shards))]
    assert seen[-1][2].startswith("Checking stored weights") and "from this device" in seen[-1][2]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_stored_shard_names_the_file_and_both_hashes(converted, damage):
    store, manifest_text, _ = converted
    bad = copy(store)
    entry = weights.parse_manifest(manifest_text.encode(), "m")["shards"][-1]
    url = FOLDER + entry["file"]
    data = bytearray(bad.data[url])
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        data = data[: len(data) - 100]
    bad.data[url] = bytes(data)
    with pytest.raises(LoadError) as caught:
        load(bad, manifest_text)
    message = str(caught.value)
    assert f"shard {entry['file']} is corrupted or truncated" in message
    assert entry["sha256"] in message and hashlib.sha256(bytes(data)).hexdigest() in message
    assert f"got {len(data)} bytes" in message and "model store" in message


def test_the_pages_manifest_is_the_reference_not_the_stores(converted):
    """The worker checks against the manifest the page verified and never reads the store's."""
    store, manifest_text, _ = converted
    manifest = weights.parse_manifest(manifest_text.encode(), "m")
    entry = manifest["shards"][0]
    other = copy(store)
    other.data[FOLDER + weights.MANIFEST] = b"{}"  # never read
    other.data[FOLDER + entry["file"]] = b"\0" * entry["bytes"]  # the right size, other bytes
    with pytest.raises(LoadError, match=f"shard {entry['file']} is corrupted"):
        load(other, manifest_text)
    assert FOLDER + weights.MANIFEST not in other.reads


def test_a_missing_shard_or_no_store_says_the_worker_reads_only_the_store(converted):
    store, manifest_text, _ = converted
    entry = weights.parse_manifest(manifest_text.encode(), "m")["shards"][0]
    partial = copy(store)
    del partial.data[FOLDER + entry["file"]]
    with pytest.raises(LoadError, match=re.escape(f"shard {entry['file']} {NOT_STORED}")):
        load(partial, manifest_text)
    with pytest.raises(LoadError, match=re.escape(NOT_STORED)):
        load(None, manifest_text)


def test_a_damaged_vocabulary_and_a_bad_manifest_are_refused(converted):
    store, manifest_text, _ = converted
    with pytest.raises(LoadError, match="tokenizer file vocab.bpe is corrupted or truncated"):
        load(copy(store), manifest_text, Site(damage="vocab.bpe"))
    with pytest.raises(LoadError, match="manifest"):
        load(copy(store), "{not json")
