"""Hashing in steps (issue 16, hw20): weights.sha256_hex_steps equals hashlib's sha256 and
hands control back between steps; loader.verify_file_steps says what verify_file says."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from glassbox import weights

from app.loader import LoadError, verify_file, verify_file_steps


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
