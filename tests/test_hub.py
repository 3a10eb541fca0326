"""The streaming Hub converter (glassbox.hub) against `python -m glassbox convert`.

Checkpoints are random-init GPT2LMHeadModels that transformers' save_pretrained wrote (one
file and sharded); the "Hub" is their folder, read by byte range through the same injected
functions the page uses, with every request recorded.
"""

from __future__ import annotations

import asyncio
import json
import os

import numpy as np
import pytest

from glassbox import convert, hub, safetensors, weights
from hf_helpers import random_hf_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(ROOT, "vendor", "gpt2")
HUB = "http://hub.test"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"single": folder, "sharded": folder} written by save_pretrained."""
    model = random_hf_model(n_layer=2, n_head=4, n_embd=64, n_positions=32, vocab_size=300)
    root = tmp_path_factory.mktemp("hf")
    model.save_pretrained(root / "single")
    model.save_pretrained(root / "sharded", max_shard_size="60KB")
    assert os.path.exists(root / "sharded" / hub.INDEX), os.listdir(root / "sharded")
    assert not os.path.exists(root / "single" / hub.INDEX)
    return {"single": str(root / "single"), "sharded": str(root / "sharded")}


class FolderHub:
    """fetch / fetch_range over a local folder laid out as {HUB}/{repo}/resolve/{rev}/{file}."""

    def __init__(self, folder: str, fail_after: int | None = None):
        self.folder = folder
        self.requests: list[tuple[str, int | None, int | None]] = []
        self.fail_after = fail_after

    def _path(self, url: str) -> str:
        prefix = f"{HUB}/org/model/resolve/main/"
        assert url.startswith(prefix), url
        path = os.path.join(self.folder, url[len(prefix):])
        if not os.path.exists(path):
            raise hub.NotFound(url)
        return path

    async def fetch(self, url: str) -> bytes:
        self.requests.append((url, None, None))
        with open(self._path(url), "rb") as f:
            return f.read()

    async def fetch_range(self, url: str, start: int, end: int) -> bytes:
        if self.fail_after is not None and sum(r[1] is not None for r in self.requests) >= self.fail_after:
            raise ConnectionError("the network went away")
        self.requests.append((url, start, end))
        with open(self._path(url), "rb") as f:
            f.seek(start)
            return f.read(end - start)


class DictStore:
    def __init__(self):
        self.data = {}

    async def get(self, key):
        return self.data.get(key)

    async def put(self, key, data):
        self.data[key] = bytes(data)

    async def delete(self, key):
        self.data.pop(key, None)


def vocab():
    return {name: open(os.path.join(VOCAB, name), "rb").read() for name in ("encoder.json", "vocab.bpe")}


def run_hub(folder, scheme="int8", store=None, fail_after=None, max_request=hub.MAX_REQUEST):
    source = FolderHub(folder, fail_after)
    files = {}

    async def put_file(name, data):
        files[name] = bytes(data)

    converter = hub.Converter(source.fetch, source.fetch_range, HUB, "org/model", scheme=scheme,
                              vocab=vocab(), store=store, max_request=max_request)
    result = asyncio.run(converter.run(put_file))
    return result, files, source


def cli_folder(folder, out, scheme="int8"):
    manifest = convert.convert(folder, str(out), scheme, vocab_dir=VOCAB)
    files = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
    return manifest, files


@pytest.mark.parametrize("kind,scheme,max_request", [
    ("single", "int8", hub.MAX_REQUEST),
    ("single", "int8", 4096),  # wte and wpe in many row blocks
    ("sharded", "int8", 4096),
    ("single", "q4", 4096),
])
def test_same_folder_as_the_converter(checkpoints, tmp_path, kind, scheme, max_request):
    """Shards byte for byte, manifest equal but for the source; only ranges of the weights."""
    manifest, files = cli_folder(checkpoints[kind], tmp_path / "cli", scheme)
    result, hub_files, source = run_hub(checkpoints[kind], scheme, max_request=max_request)
    shard_names = [s["file"] for s in manifest["shards"]]
    assert [s["file"] for s in result.manifest["shards"]] == shard_names
    for name in shard_names:
        assert hub_files[name] == files[name], name
    assert {k: v for k, v in result.manifest.items() if k != "source"} == \
        {k: v for k, v in manifest.items() if k != "source"}
    assert result.manifest["source"]["checkpoint"] == "hf:org/model@main"
    assert weights.manifest_text(manifest) == files["manifest.json"].decode()
    # Every safetensors request was a byte range, none larger than max_request (+ the header).
    st = [r for r in source.requests if r[0].endswith(".safetensors")]
    assert st and all(r[1] is not None for r in st)
    assert all(r[2] - r[1] <= max(max_request, 8 * 1024) for r in st if r[1] >= 8)
    if max_request == 4096:
        assert sum("model" in r[0] for r in st) > 2 * len(hub_files)


def test_resume_fetches_only_missing_tensors(checkpoints):
    store = DictStore()
    with pytest.raises(ConnectionError):
        run_hub(checkpoints["single"], store=store, fail_after=12)
    kept = [k for k in store.data]
    assert kept, "no tensor was kept before the break"
    result, files, source = run_hub(checkpoints["single"], store=store)
    clean, clean_files, clean_source = run_hub(checkpoints["single"])
    assert files == clean_files
    ranges = [r for r in source.requests if r[1] is not None and r[1] >= 8]
    clean_ranges = [r for r in clean_source.requests if r[1] is not None and r[1] >= 8]
    assert len(ranges) < len(clean_ranges)
    # None of the finished tensors was fetched again.
    header = open(os.path.join(checkpoints["single"], "model.safetensors"), "rb").read()
    entries, _, start = safetensors.read_header(header)
    done = {k.split("/", 1)[1] for k in kept}
    for name, _dtype, _shape, begin, end in entries:
        if name.removeprefix("transformer.") in done:
            assert not any(start + begin <= r[1] < start + end for r in ranges), name
    assert store.data == {}, "the resume entries are removed once the folder is made"


def test_refusals(checkpoints, tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    with pytest.raises(hub.HubError, match="not a GPT-2-family checkpoint: model_type is 'bert'"):
        run_hub(str(bert))
    with pytest.raises(hub.NotFound, match="was not found .* gated or private"):
        run_hub(str(tmp_path / "missing"))
    bin_only = tmp_path / "bin"
    bin_only.mkdir()
    (bin_only / "config.json").write_text(open(os.path.join(checkpoints["single"], "config.json")).read())
    with pytest.raises(hub.HubError, match="no model.safetensors or model.safetensors.index.json"):
        run_hub(str(bin_only))


def test_untied_lm_head_refused(checkpoints, tmp_path):
    folder = tmp_path / "untied"
    folder.mkdir()
    (folder / "config.json").write_text(open(os.path.join(checkpoints["single"], "config.json")).read())
    state = safetensors.load(open(os.path.join(checkpoints["single"], "model.safetensors"), "rb").read())
    state = {k: np.array(v) for k, v in state.items()}
    wte = state["transformer.wte.weight"]
    (folder / "model.safetensors").write_bytes(safetensors.save({**state, "lm_head.weight": wte}))
    run_hub(str(folder))  # tied (equal): accepted
    (folder / "model.safetensors").write_bytes(safetensors.save({**state, "lm_head.weight": wte + 1}))
    with pytest.raises(hub.HubError, match="untied"):
        run_hub(str(folder))


def test_spec_and_sizes():
    assert hub.parse_spec("openai-community/gpt2") == ("openai-community/gpt2", "main")
    assert hub.parse_spec("gpt2@v1") == ("gpt2", "v1")
    for bad in ("", "../x", "a b", "a/b/c", "x@../y"):
        with pytest.raises(hub.HubError):
            hub.parse_spec(bad)
    assert hub.file_url("https://huggingface.co/", "gpt2", "main", "config.json") == \
        "https://huggingface.co/gpt2/resolve/main/config.json"
    config = convert.config_from_hf({"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 64,
                                     "n_positions": 32, "vocab_size": 300})
    stored = weights.quantize_params(weights.random_params(config), config, "int8")
    assert hub.stored_bytes(config, "int8") == sum(v.nbytes for v in stored.values())
    stored = weights.quantize_params(weights.random_params(config), config, "q4")
    assert hub.stored_bytes(config, "q4") == sum(v.nbytes for v in stored.values())


def test_cancel_keeps_finished_tensors_and_progress_says_rate_and_time_left(checkpoints):
    source = FolderHub(checkpoints["single"])
    store, seen = DictStore(), []
    clock = iter(range(10_000))

    def progress(state):
        seen.append((state.stage, state.done_bytes, state.rate, state.seconds_left, state.label()))

    converter = hub.Converter(source.fetch, source.fetch_range, HUB, "org/model", vocab=vocab(), store=store,
                              progress=progress, cancelled=lambda: len(store.data) >= 3,
                              clock=lambda: float(next(clock)))

    async def put_file(name, data):
        raise AssertionError("nothing is written after a cancel")

    with pytest.raises(hub.Cancelled, match="kept for next time"):
        asyncio.run(converter.run(put_file))
    assert len(store.data) == 3
    tensors = [s for s in seen if s[0] == "tensors" and s[1]]
    assert tensors and all(rate > 0 and left is not None for _, _, rate, left, _ in tensors)
    assert "MiB/s" in tensors[-1][4] and "left" in tensors[-1][4] and "of" in tensors[-1][4]
