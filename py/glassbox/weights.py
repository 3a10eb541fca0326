"""Model folders: a manifest plus safetensors shards, checked before anything is used.

A model is a folder ``weights/<name>/`` holding

* ``manifest.json`` — ``format`` ("glassbox-model"), ``format_version`` (FORMAT_VERSION),
  ``config`` (GPTConfig fields), ``quantization`` (scheme, group size), ``tokenizer``
  (file names and sha256 of GPT-2's encoder.json and vocab.bpe), ``shards`` (file, bytes,
  sha256) and ``split`` (tensors stored in pieces, see below);
* shards ``model-00001.safetensors`` ... each at most MAX_SHARD_BYTES.

Tensor names follow the Hugging Face GPT-2 keys without the ``transformer.`` prefix, every
matrix in the Glassbox ``[out, in]`` layout (see ``glassbox/__init__``). With int8 or q4 every
2-D tensor ``X`` is stored quantized (``quant.py``) beside ``X.scale``; 1-D tensors (biases,
layer norm) stay float32. A tensor bigger than a shard (GPT-2's embedding) is cut along its
first axis into ``X#0``, ``X#1``, ... listed under ``split`` and joined on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import quant, safetensors
from .config import GPTConfig

FORMAT = "glassbox-model"
FORMAT_VERSION = 1
MAX_SHARD_BYTES = 32 * 1024 * 1024
MANIFEST = "manifest.json"
INDEX = "index.json"  # weights/index.json: the model folders present, so the page never probes
PREFERRED = ("gpt2", "mini")  # the default model: the first of these that is present


class WeightsError(ValueError):
    """A model folder that cannot be used: the message says which file and why."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def matrix_names(config: GPTConfig) -> list[str]:
    """Every 2-D weight, each [out, in]."""
    names = ["wte.weight", "wpe.weight"]
    for layer in range(config.n_layer):
        names += [f"h.{layer}.{n}.weight" for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    return names


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every float32 parameter's shape in the Glassbox layout."""
    D, F, V, C = config.n_embd, config.mlp_width, config.vocab_size, config.n_positions
    shapes = {"wte.weight": (V, D), "wpe.weight": (C, D), "ln_f.weight": (D,), "ln_f.bias": (D,)}
    for layer in range(config.n_layer):
        p = f"h.{layer}."
        shapes.update({
            p + "ln_1.weight": (D,), p + "ln_1.bias": (D,),
            p + "attn.c_attn.weight": (3 * D, D), p + "attn.c_attn.bias": (3 * D,),
            p + "attn.c_proj.weight": (D, D), p + "attn.c_proj.bias": (D,),
            p + "ln_2.weight": (D,), p + "ln_2.bias": (D,),
            p + "mlp.c_fc.weight": (F, D), p + "mlp.c_fc.bias": (F,),
            p + "mlp.c_proj.weight": (D, F), p + "mlp.c_proj.bias": (D,),
        })
    return shapes


@dataclass
class Checkpoint:
    """A loaded model: config, quantization scheme and the tensors as stored."""

    config: GPTConfig
    scheme: str
    group: int
    tensors: dict[str, np.ndarray]
    manifest: dict = field(default_factory=dict)
    _dequantized: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def matrix(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(stored matrix, scale or None) of a 2-D weight."""
        return self.tensors[name], self.tensors.get(name + ".scale")

    def dequantized(self) -> dict[str, np.ndarray]:
        """float32 parameters in the Glassbox layout, as reference.forward takes them."""
        if self._dequantized is None:
            matrices = set(matrix_names(self.config))
            out = {}
            for name in expected_shapes(self.config):
                if name in matrices:
                    out[name] = quant.dequantize(*self.matrix(name), self.scheme)
                else:
                    out[name] = np.asarray(self.tensors[name], dtype=np.float32)
            self._dequantized = out
        return self._dequantized

    def linear_params(self, kernel=None) -> dict:
        """Parameters for reference.forward that keep int8/q4 matrices as stored:
        qlinear.QuantizedMatrix (optionally on the WebAssembly ``kernel``, qlinear.LinearKernel)
        instead of float32 copies. With scheme "none", the float32 parameters."""
        if self.scheme == "none":
            return self.dequantized()
        from .qlinear import QuantizedMatrix

        matrices = set(matrix_names(self.config))
        return {name: (QuantizedMatrix(*self.matrix(name), self.scheme, kernel) if name in matrices
                       else np.asarray(self.tensors[name], dtype=np.float32))
                for name in expected_shapes(self.config)}

    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def quantize_params(params: dict[str, np.ndarray], config: GPTConfig, scheme: str,
                    group: int = quant.DEFAULT_GROUP) -> dict[str, np.ndarray]:
    """float32 params (Glassbox layout) -> tensors as stored under ``scheme``."""
    check_params(params, config)
    matrices = set(matrix_names(config))
    stored = {}
    for name, value in params.items():
        if name in matrices and scheme != "none":
            stored[name], stored[name + ".scale"] = quant.quantize(value, scheme, group)
        else:
            stored[name] = np.ascontiguousarray(value, dtype=np.float32)
    return stored


def check_params(params: dict[str, np.ndarray], config: GPTConfig) -> None:
    """Raise WeightsError unless params has exactly the float32 shapes the config implies."""
    shapes = expected_shapes(config)
    missing = sorted(set(shapes) - set(params))
    extra = sorted(set(params) - set(shapes))
    if missing or extra:
        raise WeightsError(f"parameters do not match the config: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, shape in shapes.items():
        if tuple(params[name].shape) != shape:
            raise WeightsError(f"{name} has shape {tuple(params[name].shape)}, expected {shape}")


def _split_for_shards(tensors: dict[str, np.ndarray], limit: int) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Cut tensors over ``limit`` bytes along axis 0 into pieces X#0, X#1, ..."""
    pieces, split = {}, {}
    for name, value in tensors.items():
        if value.nbytes <= limit or value.ndim == 0:
            pieces[name] = value
            continue
        rows = max(1, limit // max(1, value.nbytes // value.shape[0]))
        names = []
        for i, start in enumerate(range(0, value.shape[0], rows)):
            names.append(f"{name}#{i}")
            pieces[names[-1]] = value[start:start + rows]
        split[name] = names
    return pieces, split


def _pack_shards(pieces: dict[str, np.ndarray], limit: int) -> list[dict[str, np.ndarray]]:
    """Greedy, in name order: fill a shard until the next tensor would pass ``limit``."""
    shards, current, size = [], {}, 0
    for name, value in pieces.items():
        if current and size + value.nbytes > limit:
            shards.append(current)
            current, size = {}, 0
        current[name] = value
        size += value.nbytes
    if current:
        shards.append(current)
    return shards


def write_folder(path: str, config: GPTConfig, params: dict[str, np.ndarray], scheme: str,
                 tokenizer: dict, group: int = quant.DEFAULT_GROUP, source: dict | None = None,
                 max_shard_bytes: int = MAX_SHARD_BYTES) -> dict:
    """Quantize float32 ``params`` and write a model folder; return the manifest."""
    stored = quantize_params(params, config, scheme, group)
    # Room for each shard's JSON header (a few KiB) under the limit.
    pieces, split = _split_for_shards(stored, max_shard_bytes - 64 * 1024)
    os.makedirs(path, exist_ok=True)
    shards = []
    groups = _pack_shards(pieces, max_shard_bytes - 64 * 1024)
    for i, tensors in enumerate(groups, 1):
        data = safetensors.save(tensors, {"format": "pt"})
        assert len(data) <= max_shard_bytes, (len(data), max_shard_bytes)
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        with open(os.path.join(path, file), "wb") as f:
            f.write(data)
        shards.append({"file": file, "bytes": len(data), "sha256": sha256_hex(data)})
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "quantization": {"scheme": scheme, "group_size": group if scheme == "q4" else None},
        "tokenizer": tokenizer,
        "shards": shards,
        "split": split,
        "source": source or {},
    }
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest


def write_index(root: str) -> dict:
    """List the model folders under ``root`` (those with a manifest) in ``root``/index.json,
    with the default one: real GPT-2 when a user converted it, else the committed small model."""
    models = sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, MANIFEST)))
    default = next((name for name in PREFERRED if name in models), models[0] if models else None)
    index = {"models": models, "default": default}
    with open(os.path.join(root, INDEX), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    return index


def parse_manifest(data: bytes | str, where: str = MANIFEST) -> dict:
    """Parse and check a manifest: format name, version, config, scheme and shard list."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WeightsError(f"{where} is not a Glassbox model manifest (format must be {FORMAT!r}); "
                           "convert the checkpoint with `python -m glassbox convert`")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(f"{where} has format version {version!r}; this Glassbox reads version "
                           f"{FORMAT_VERSION}: re-run the converter (`python -m glassbox convert`)")
    try:
        GPTConfig.from_dict(manifest["config"])
        scheme = manifest["quantization"]["scheme"]
        shards = manifest["shards"]
        assert all({"file", "bytes", "sha256"} <= set(s) for s in shards)
    except (KeyError, TypeError, AssertionError, ValueError) as e:
        raise WeightsError(f"{where} is incomplete or malformed: {e}") from None
    if scheme not in quant.SCHEMES:
        raise WeightsError(f"{where} names an unknown quantization scheme {scheme!r}")
    return manifest


def verify_shard(entry: dict, data: bytes) -> None:
    """Raise WeightsError naming the file and both hashes unless size and sha256 match."""
    actual = sha256_hex(data)
    if len(data) != entry["bytes"] or actual != entry["sha256"]:
        raise WeightsError(
            f"shard {entry['file']} is corrupted or truncated: expected {entry['bytes']} bytes with "
            f"sha256 {entry['sha256']}, got {len(data)} bytes with sha256 {actual}")


def from_shards(manifest: dict, shard_bytes: dict[str, bytes], verified: bool = False) -> Checkpoint:
    """Build a Checkpoint from a parsed manifest and each shard's bytes (keyed by file name).

    Every shard's size and sha256 are checked unless the caller already did (``verified``).
    """
    config = GPTConfig.from_dict(manifest["config"])
    tensors: dict[str, np.ndarray] = {}
    for entry in manifest["shards"]:
        if entry["file"] not in shard_bytes:
            raise WeightsError(f"shard {entry['file']} is missing")
        data = shard_bytes[entry["file"]]
        if not verified:
            verify_shard(entry, data)
        try:
            tensors.update(safetensors.load(data))
        except ValueError as e:
            raise WeightsError(f"shard {entry['file']} is not valid safetensors: {e}") from None
    for name, pieces in manifest.get("split", {}).items():
        tensors[name] = np.concatenate([tensors.pop(p) for p in pieces], axis=0)
    scheme = manifest["quantization"]["scheme"]
    group = manifest["quantization"].get("group_size") or quant.DEFAULT_GROUP
    _check_stored(tensors, config, scheme, group)
    return Checkpoint(config=config, scheme=scheme, group=group, tensors=tensors, manifest=manifest)


def _check_stored(tensors: dict[str, np.ndarray], config: GPTConfig, scheme: str, group: int) -> None:
    matrices = set(matrix_names(config))
    for name, shape in expected_shapes(config).items():
        if name not in tensors:
            raise WeightsError(f"the shards lack tensor {name}")
        got = tuple(tensors[name].shape)
        want = shape
        if name in matrices and scheme == "q4":
            want = (shape[0], shape[1] // 2)
        if got != want:
            raise WeightsError(f"{name} has shape {got}, expected {want} for scheme {scheme}")
        if name in matrices and scheme != "none":
            scale = tensors.get(name + ".scale")
            want_scale = (shape[0],) if scheme == "int8" else (shape[0], shape[1] // group)
            if scale is None or tuple(scale.shape) != want_scale:
                raise WeightsError(f"{name}.scale is missing or has the wrong shape (expected {want_scale})")


def load_folder(path: str) -> Checkpoint:
    """Read, verify and load a model folder from disk."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.exists(manifest_path):
        raise WeightsError(f"{manifest_path} not found: not a Glassbox model folder")
    with open(manifest_path, "rb") as f:
        manifest = parse_manifest(f.read(), manifest_path)
    shards = {}
    for entry in manifest["shards"]:
        file = os.path.join(path, entry["file"])
        if not os.path.exists(file):
            raise WeightsError(f"shard {file} is missing (expected sha256 {entry['sha256']})")
        with open(file, "rb") as f:
            shards[entry["file"]] = f.read()
    return from_shards(manifest, shards)


def random_params(config: GPTConfig, seed: int = 0, scale: float = 0.02) -> dict[str, np.ndarray]:
    """GPT-2-like random float32 parameters in the Glassbox layout, for tests and benchmarks:
    N(0, scale) matrices and biases, layer-norm gains 1 + N(0, 0.1) (perturbed so a layout
    mistake cannot hide behind gains of exactly 1). Deterministic per seed (PCG64), so the
    page and a native process build bit-identical weights."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in expected_shapes(config).items():
        if len(shape) == 1 and name.endswith(".weight"):  # layer norm gains
            value = 1 + rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
        else:
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        params[name] = value.astype(np.float32)
    return params


def random_checkpoint(config: GPTConfig, scheme: str, seed: int = 0, params=None,
                      group: int = quant.DEFAULT_GROUP) -> Checkpoint:
    """A Checkpoint of random_params (or of ``params``) stored under ``scheme``."""
    params = random_params(config, seed) if params is None else params
    return Checkpoint(config=config, scheme=scheme, group=group,
                      tensors=quantize_params(params, config, scheme, group))
