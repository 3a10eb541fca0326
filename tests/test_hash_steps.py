"""Work split into steps so that a page's main thread gets a turn between them (issue 16, hw20):
weights.sha256_hex_steps equals hashlib's sha256; loader.verify_file_steps says what
verify_file says; the tokenizer and the page's model built in steps are the ones built at once."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest

from glassbox import weights
from glassbox.tokenizer import Tokenizer, run_steps

from app.loader import LoadError, build_model, build_model_steps, verify_file, verify_file_steps


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 17])
def test_hash_in_steps_equals_hashlib_and_pauses_between_steps(size):
    data = bytes((i * 131 + 7) % 256 for i in range(size))
    pauses = []

    async def pause():
        pauses.append(1)

    assert asyncio.run(weights.sha256_hex_steps(data, 4096, pause)) == hashlib.sha256(data).hexdigest()
    assert len(pauses) == max(0, -(-size // 4096) - 1)  # between steps, none after the last
    # The default pause (asyncio.sleep(0)) and step, and a bytearray / memoryview of other item size.
    assert asyncio.run(weights.sha256_hex_steps(bytearray(data))) == hashlib.sha256(data).hexdigest()
    if size % 4 == 0:
        wide = memoryview(data).cast("I")
        assert asyncio.run(weights.sha256_hex_steps(wide, 4096, pause)) == hashlib.sha256(data).hexdigest()


def test_hash_steps_refuse_a_step_that_is_not_positive():
    with pytest.raises(ValueError, match="step must be positive"):
        asyncio.run(weights.sha256_hex_steps(b"x", 0))


def test_verify_in_steps_names_the_file_and_both_hashes_like_verify_file():
    data = b"shard bytes " * 1000
    entry = {"file": "model-0001.safetensors", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    asyncio.run(verify_file_steps(entry["file"], entry, data))  # intact: nothing raised
    broken = data[:-1] + b"X"
    with pytest.raises(LoadError) as slow:
        verify_file(entry["file"], entry, broken)
    with pytest.raises(LoadError) as steps:
        asyncio.run(verify_file_steps(entry["file"], entry, broken))
    assert str(steps.value) == str(slow.value)
    assert entry["sha256"] in str(steps.value) and hashlib.sha256(broken).hexdigest() in str(steps.value)
    assert "model-0001.safetensors" in str(steps.value)
    with pytest.raises(weights.WeightsError, match=hashlib.sha256(broken).hexdigest()):
        weights.verify_shard(entry, broken, actual=asyncio.run(weights.sha256_hex_steps(broken, 1024)))


# ----- the tokenizer and the model built in steps ------------------------------------------------
VOCAB = Path(__file__).resolve().parents[1] / "vendor" / "gpt2"
MINI = Path(__file__).resolve().parents[1] / "weights" / "mini"


def test_the_tokenizer_built_in_steps_is_the_one_built_at_once():
    encoder, merges = (VOCAB / "encoder.json").read_bytes(), (VOCAB / "vocab.bpe").read_bytes()
    whole = Tokenizer.from_bytes(encoder, merges)
    steps = Tokenizer.from_bytes_steps(encoder, merges, step=5000)
    count = 0
    while True:
        try:
            next(steps)
            count += 1
        except StopIteration as done:
            stepped = done.value
            break
    assert count >= 3 * 50000 // 5000  # merges read, merges indexed, tokens made: each in steps
    assert stepped._encoder == whole._encoder and stepped._merges == whole._merges
    assert stepped._bytes == whole._bytes and stepped.vocab_size == whole.vocab_size == 50257
    assert stepped.eot_id == whole.eot_id
    text = "Glassbox shows every tensor, naïvely: ½ of 12345 ü's\n\n  done."
    assert stepped.encode(text) == whole.encode(text)
    # The same refusals, from the step that meets them.
    with pytest.raises(ValueError, match="vocab.bpe line 2"):
        run_steps(Tokenizer.from_bytes_steps(encoder, b"#version: 0.2\nbroken\n"))
    with pytest.raises(ValueError, match="not valid JSON"):
        run_steps(Tokenizer.from_bytes_steps(b"{", merges))


def test_the_page_builds_the_same_model_in_steps_with_the_same_errors():
    manifest = weights.parse_manifest((MINI / weights.MANIFEST).read_bytes(), "mini/manifest.json")
    shards = {e["file"]: (MINI / e["file"]).read_bytes() for e in manifest["shards"]}
    files = {name: ((MINI if entry.get("bundled", True) else VOCAB) / name).read_bytes()
             for name, entry in manifest["tokenizer"].items()}
    whole = build_model("./weights/mini/", manifest, shards, files)
    stepped = asyncio.run(build_model_steps("./weights/mini/", manifest, shards, files))
    assert stepped.name == whole.name == "mini"
    assert stepped.checkpoint.tensors.keys() == whole.checkpoint.tensors.keys()
    for name, value in whole.checkpoint.tensors.items():
        np.testing.assert_array_equal(stepped.checkpoint.tensors[name], value)
    assert stepped.tokenizer.encode("The lighthouse") == whole.tokenizer.encode("The lighthouse")
    bad = dict(files, **{"encoder.json": files["encoder.json"] + b" "})
    with pytest.raises(LoadError) as at_once:
        build_model("./weights/mini/", manifest, shards, bad)
    with pytest.raises(LoadError) as in_steps:
        asyncio.run(build_model_steps("./weights/mini/", manifest, shards, bad))
    assert str(in_steps.value) == str(at_once.value) and "encoder.json" in str(in_steps.value)
