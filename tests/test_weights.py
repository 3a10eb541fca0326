"""Model folders: converter, manifest, shards, quantization and every way loading can fail."""

import json
import os

import numpy as np
import pytest

from glassbox import quant, weights
from glassbox.convert import ConvertError, convert
from glassbox.weights import WeightsError
from hf_helpers import glassbox_params, random_hf_model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    random_hf_model(n_layer=2, n_head=2, n_embd=64, n_positions=16, vocab_size=120).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    """Stand-in tokenizer files (the converter only hashes and records them)."""
    path = tmp_path_factory.mktemp("vocab")
    (path / "encoder.json").write_text('{"a": 0}')
    (path / "vocab.bpe").write_text("#version: 0.2\n")
    return str(path)


@pytest.mark.parametrize("scheme", ["none", "int8", "q4"])
def test_convert_round_trip(hf_dir, vocab_dir, tmp_path, scheme):
    from transformers import GPT2LMHeadModel

    manifest = convert(hf_dir, str(tmp_path), scheme, vocab_dir=vocab_dir)
    ckpt = weights.load_folder(str(tmp_path))
    assert ckpt.scheme == scheme and ckpt.config.n_layer == 2
    assert manifest["tokenizer"]["encoder.json"]["bundled"] is False
    params, _ = glassbox_params(GPT2LMHeadModel.from_pretrained(hf_dir))
    got = ckpt.dequantized()
    for name, value in params.items():
        if scheme == "none" or value.ndim == 1:
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        else:
            # Rounding to the nearest level: |error| <= scale / 2 per element.
            q, scale = ckpt.matrix(name)
            half_step = (scale[:, None] if scheme == "int8" else np.repeat(scale, ckpt.group, axis=1)) / 2
            assert (np.abs(got[name] - value) <= half_step * (1 + 1e-5) + 1e-12).all(), name


def test_big_tensor_is_split_across_shards(tmp_path, vocab_dir):
    from transformers import GPT2LMHeadModel

    hf = random_hf_model(n_layer=1, n_head=2, n_embd=64, n_positions=16, vocab_size=3000)
    hf.save_pretrained(tmp_path / "hf")
    params, config = glassbox_params(GPT2LMHeadModel.from_pretrained(tmp_path / "hf"))
    limit = 300_000  # wte alone is 768 KB in float32
    tokenizer = {name: {"sha256": weights.sha256_hex(open(os.path.join(vocab_dir, name), "rb").read())}
                 for name in ("encoder.json", "vocab.bpe")}
    manifest = weights.write_folder(str(tmp_path / "out"), config, params, "none", tokenizer, max_shard_bytes=limit)
    assert len(manifest["shards"]) >= 3 and "wte.weight" in manifest["split"]
    assert all(s["bytes"] <= limit for s in manifest["shards"])
    np.testing.assert_array_equal(weights.load_folder(str(tmp_path / "out")).tensors["wte.weight"], params["wte.weight"])


@pytest.fixture
def folder(hf_dir, vocab_dir, tmp_path):
    convert(hf_dir, str(tmp_path), "int8", vocab_dir=vocab_dir)
    return tmp_path


def shard_path(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    return folder / manifest["shards"][0]["file"], manifest["shards"][0]


def test_truncated_shard_names_file_and_hashes(folder):
    path, entry = shard_path(folder)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError) as e:
        weights.load_folder(str(folder))
    msg = str(e.value)
    assert entry["file"] in msg and entry["sha256"] in msg and "truncated" in msg


def test_corrupted_shard_names_file_and_hashes(folder):
    path, entry = shard_path(folder)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=entry["sha256"]):
        weights.load_folder(str(folder))


def test_missing_shard(folder):
    path, entry = shard_path(folder)
    os.remove(path)
    with pytest.raises(WeightsError, match=f"{entry['file']} is missing"):
        weights.load_folder(str(folder))


def test_unknown_format_version(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="format version 99.*re-run the converter"):
        weights.load_folder(str(folder))


@pytest.mark.parametrize("text, message", [("not json", "not valid JSON"), ('{"format": "x"}', "not a Glassbox model manifest"),
                                           ('{"format": "glassbox-model", "format_version": 1}', "malformed")])
def test_bad_manifest(folder, text, message):
    (folder / "manifest.json").write_text(text)
    with pytest.raises(WeightsError, match=message):
        weights.load_folder(str(folder))


def test_not_a_model_folder(tmp_path):
    with pytest.raises(WeightsError, match="not a Glassbox model folder"):
        weights.load_folder(str(tmp_path))


def test_not_gpt2_family(hf_dir, vocab_dir, tmp_path):
    cfg = json.loads(open(os.path.join(hf_dir, "config.json")).read())
    (tmp_path / "src").mkdir()
    for model_type, act, message in (("llama", "gelu_new", "model_type is 'llama'"), ("gpt2", "relu", "relu")):
        (tmp_path / "src" / "config.json").write_text(json.dumps({**cfg, "model_type": model_type, "activation_function": act}))
        with pytest.raises(ConvertError, match=message):
            convert(str(tmp_path / "src"), str(tmp_path / "out"), "int8", vocab_dir=vocab_dir)


def test_quantization_errors_are_bounded(rng):
    w = rng.normal(size=(48, 64)).astype(np.float32)
    q, s = quant.quantize_int8(w)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert np.abs(quant.dequantize_int8(q, s) - w).max() <= s.max() / 2 * 1.0001
    p, s4 = quant.quantize_q4(w, 32)
    assert p.shape == (48, 32) and s4.shape == (48, 2)
    assert np.abs(quant.dequantize_q4(p, s4) - w).max() <= s4.max() / 2 * 1.0001
    # The nibble layout: element 2j in the low nibble, 2j+1 in the high one, stored as value + 8.
    one = np.zeros((1, 32), np.float32)
    one[0, 0], one[0, 1] = 7, -7
    p1, _ = quant.quantize_q4(one)
    assert p1[0, 0] == (7 + 8) | ((-7 + 8) << 4)
    with pytest.raises(ValueError, match="group size"):
        quant.quantize_q4(np.zeros((2, 20), np.float32))


def test_index_lists_models_and_prefers_real_gpt2(hf_dir, vocab_dir, tmp_path):
    from glassbox.model import default_model_dir

    root = tmp_path / "weights"
    convert(hf_dir, str(root / "mini"), "int8", vocab_dir=vocab_dir)
    assert json.loads((root / "index.json").read_text()) == {"models": ["mini"], "default": "mini"}
    assert default_model_dir(str(tmp_path)) == str(root / "mini")
    convert(hf_dir, str(root / "gpt2"), "q4", vocab_dir=vocab_dir)  # as the README's command does
    assert json.loads((root / "index.json").read_text()) == {"models": ["gpt2", "mini"], "default": "gpt2"}
    assert default_model_dir(str(tmp_path)) == str(root / "gpt2")


def test_committed_index_is_current():
    from glassbox.cli import ROOT

    root = os.path.join(ROOT, "weights")
    with open(os.path.join(root, "index.json")) as f:
        committed = json.load(f)
    present = sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "manifest.json")))
    assert committed["models"] == present and committed["default"] in present


def test_lazy_params_and_rows_equal_the_full_dequantization():
    """Issue 11: the page's float32 parameters are made one at a time, and equal dequantized()."""
    from glassbox.config import GPTConfig

    config = GPTConfig(n_layer=2, n_head=2, n_embd=64, n_positions=16, vocab_size=50)
    for scheme in ("int8", "q4", "none"):
        checkpoint = weights.random_checkpoint(config, scheme, seed=4)
        lazy = weights.LazyParams(checkpoint)
        assert lazy.made_bytes() == 0 and len(lazy) == len(weights.expected_shapes(config))
        full = weights.Checkpoint(config, scheme, checkpoint.group, checkpoint.tensors).dequantized()
        assert lazy["h.1.mlp.c_fc.weight"].dtype == np.float32
        assert lazy.made_bytes() == full["h.1.mlp.c_fc.weight"].nbytes
        for name in full:
            np.testing.assert_array_equal(lazy[name], full[name])
        np.testing.assert_array_equal(checkpoint.row("wte.weight", 7), full["wte.weight"][7])
        assert set(lazy) == set(full)
