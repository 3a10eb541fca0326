"""Model folders: a manifest plus safetensors shards, checked before anything is used.

A model is a folder ``weights/<name>/`` holding

* ``manifest.json`` — ``format`` ("glassbox-model"), ``format_version`` (FORMAT_VERSION),
  ``config`` (GPTConfig fields), ``quantization`` (scheme, group size), ``tokenizer``
  (file names and sha256 of GPT-2's encoder.json and vocab.bpe), ``shards`` (file, bytes,
  sha256) and ``split`` (tensors stored in pieces, see below); optionally ``examples``, the
  example prompts that suit this model (the page offers them; a model trained on Python
  docs prose lists prose like that, GPT-2's folder may list general English);
* shards ``model-00001.safetensors`` ... each at most MAX_SHARD_BYTES.

Tensor names follow the Hugging Face GPT-2 keys without the ``transformer.`` prefix, every
matrix in the Glassbox ``[out, in]`` layout (see ``glassbox/__init__``). With int8 or q4 every
2-D tensor ``X`` is stored quantized (``quant.py``) beside ``X.scale``; 1-D tensors (biases,
layer norm) stay float32. A tensor bigger than a shard (GPT-2's embedding) is cut along its
first axis into ``X#0``, ``X#1``, ... listed under ``split`` and joined on load.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import quant, safetensors
from .config import GPTConfig
from .errors import WeightsError

FORMAT = "glassbox-model"
FORMAT_VERSION = 1
MAX_SHARD_BYTES = 32 * 1024 * 1024
MANIFEST = "manifest.json"
INDEX = "index.json"  # weights/index.json: the model folders present, so the page never probes
PREFERRED = ("gpt2", "mini")  # the default model: the first of these that is present
# sha256_hex_steps: bytes hashed per step (~2 MiB: ~20 ms of hashing in the page's WebAssembly
# Python; a whole 32 MiB shard was one ~300 ms main-thread task, issue 16 hw20).
HASH_STEP = 2 * 1024 * 1024


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def sha256_hex_steps(data: bytes, step: int = HASH_STEP, pause=None) -> str:
    """``sha256_hex(data)``, computed ``step`` bytes at a time, awaiting ``pause()`` (default
    ``asyncio.sleep(0)``: under Pyodide a new browser task) after each step, so a caller on a
    page's main thread never hashes a whole shard in one task."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    h = hashlib.sha256()
    view = memoryview(data).cast("B")
    for start in range(0, len(view), step):
        h.update(view[start:start + step])
        if start + step < len(view):
            await (pause() if pause is not None else asyncio.sleep(0))
    return h.hexdigest()


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
            self._dequantized = {name: self.dequantize(name) for name in expected_shapes(self.config)}
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

    def dequantize(self, name: str) -> np.ndarray:
        """One float32 parameter in the Glassbox layout, computed now and not kept."""
        if self._dequantized is not None:
            return self._dequantized[name]
        if name in set(matrix_names(self.config)):
            return quant.dequantize(*self.matrix(name), self.scheme)
        return np.asarray(self.tensors[name], dtype=np.float32)

    def row(self, name: str, i: int) -> np.ndarray:
        """Row ``i`` of a float32 matrix (e.g. one token's wte row), without the whole matrix."""
        q, scale = self.matrix(name)
        if self.scheme == "none":
            return np.asarray(q[i], dtype=np.float32)
        return quant.dequantize(q[i:i + 1], None if scale is None else scale[i:i + 1], self.scheme)[0]


class LazyParams(Mapping):
    """The float32 parameters of a Checkpoint, made when first asked for (issue 11).

    ``Checkpoint.dequantized()`` turns every matrix into float32 at once (about 500 MB for
    GPT-2 small, four times its int8 form); the page builds this instead, so a page whose model
    runs on WebGPU (which uploads the quantized tensors) never holds float32 copies, and a
    numpy page makes each matrix when a forward first reads it. Biases and layer norms are
    float32 already and are handed out as stored.
    """

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self._made: dict[str, np.ndarray] = {}
        self._names = tuple(expected_shapes(checkpoint.config))

    def __getitem__(self, name: str) -> np.ndarray:
        value = self._made.get(name)
        if value is None:
            if name not in self._names:
                raise KeyError(name)
            value = self._made[name] = self.checkpoint.dequantize(name)
        return value

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def made_bytes(self) -> int:
        """Bytes of float32 copies made so far (views of stored float32 tensors count too)."""
        return sum(v.nbytes for v in self._made.values())


def quantize_params(params: dict[str, np.ndarray], config: GPTConfig, scheme: str,
                    group: int = quant.DEFAULT_GROUP) -> dict[str, np.ndarray]:
    """float32 params (Glassbox layout) -> tensors as stored under ``scheme``."""
    check_params(params, config)
    matrices = set(matrix_names(config))
    stored = {}
    for name, value in params.items():
        stored.update(store_tensor(name, value, name in matrices, scheme, group))
    return stored


def store_tensor(name: str, value: np.ndarray, matrix: bool, scheme: str,
                 group: int = quant.DEFAULT_GROUP) -> dict[str, np.ndarray]:
    """One float32 parameter -> the tensors stored for it: ``name`` (quantized when it is a
    ``matrix`` and the scheme quantizes) and ``name.scale``; or ``name`` as float32."""
    if matrix and scheme != "none":
        q, scale = quant.quantize(value, scheme, group)
        return {name: q, name + ".scale": scale}
    return {name: np.ascontiguousarray(value, dtype=np.float32)}


def check_params(params: dict[str, np.ndarray], config: GPTConfig) -> None:
    """Raise WeightsError unless params has exactly the float32 shapes the config implies."""
    check_shapes({name: tuple(value.shape) for name, value in params.items()}, config)


def check_shapes(shapes: dict[str, tuple[int, ...]], config: GPTConfig) -> None:
    """Raise WeightsError unless ``shapes`` (name -> shape, Glassbox layout) names exactly the
    parameters the config implies, each with its shape."""
    want = expected_shapes(config)
    missing = sorted(set(want) - set(shapes))
    extra = sorted(set(shapes) - set(want))
    if missing or extra:
        raise WeightsError(f"parameters do not match the config: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, shape in want.items():
        if tuple(shapes[name]) != shape:
            raise WeightsError(f"{name} has shape {tuple(shapes[name])}, expected {shape}")


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
    os.makedirs(path, exist_ok=True)
    shards, split = [], {}
    for file, data, split in shard_files(stored, max_shard_bytes):
        with open(os.path.join(path, file), "wb") as f:
            f.write(data)
        shards.append({"file": file, "bytes": len(data), "sha256": sha256_hex(data)})
    manifest = make_manifest(config, scheme, group, tokenizer, shards, split, source)
    with open(os.path.join(path, MANIFEST), "w") as f:
        f.write(manifest_text(manifest))
    return manifest


def shard_files(stored: dict[str, np.ndarray], max_shard_bytes: int = MAX_SHARD_BYTES):
    """Stored tensors (in the order they were produced) -> one (file name, bytes, split) per
    shard, made one at a time; ``split`` is the manifest's list of tensors cut in pieces (the
    same object each time). It empties ``stored`` and lets go of each shard's tensors once
    that shard's bytes are made, so a caller that drops each shard's bytes (the page stores
    them) holds the model about once, not twice."""
    # Room for each shard's JSON header (a few KiB) under the limit.
    pieces, split = _split_for_shards(stored, max_shard_bytes - 64 * 1024)
    groups = _pack_shards(pieces, max_shard_bytes - 64 * 1024)
    del pieces
    stored.clear()  # each shard's tensors are released once its bytes exist (see the docstring)
    for i in range(len(groups)):
        tensors, groups[i] = groups[i], None
        data = safetensors.save(tensors, {"format": "pt"})
        del tensors
        assert len(data) <= max_shard_bytes, (len(data), max_shard_bytes)
        yield f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors", data, split


def make_manifest(config: GPTConfig, scheme: str, group: int, tokenizer: dict, shards: list[dict],
                  split: dict, source: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "quantization": {"scheme": scheme, "group_size": group if scheme == "q4" else None},
        "tokenizer": tokenizer,
        "shards": shards,
        "split": split,
        "source": source or {},
    }


def manifest_text(manifest: dict) -> str:
    """manifest.json's text, exactly as the converter writes it."""
    return json.dumps(manifest, indent=1) + "\n"


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


# ----- the manifest's schema: every field's type, checked before any shard is read

_HEX64 = re.compile(r"[0-9a-f]{64}")
# A file the manifest names: a plain name in the model folder (no folder part, no dotfile).
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
TOKENIZER_NAMES = ("encoder.json", "vocab.bpe")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


class _Schema:
    """Checks one manifest, raising WeightsError naming the file and the field's path."""

    def __init__(self, where: str):
        self.where = where

    def need(self, ok: bool, path: str, what: str, value) -> None:
        if not ok:
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise WeightsError(f"{self.where} is malformed: {path} must be {what}, got {shown}")

    def object(self, parent: dict, key: str, path: str, required: bool = True) -> dict:
        if key not in parent:
            self.need(not required, path, "present", None)
            return {}
        self.need(isinstance(parent[key], dict), path, "an object", parent[key])
        return parent[key]

    def file_name(self, value, path: str) -> None:
        self.need(isinstance(value, str) and bool(_FILE_NAME.fullmatch(value)), path,
                  "a plain file name in the model folder (letters, digits, '.', '_', '+', '-')", value)

    def sha256(self, value, path: str) -> None:
        self.need(isinstance(value, str) and bool(_HEX64.fullmatch(value)), path,
                  "64 lowercase hex digits", value)


def check_manifest(manifest, where: str = MANIFEST) -> GPTConfig:
    """Check every field of a parsed manifest against the format's schema; return its config.

    Types of every field (format, format_version, config, quantization, tokenizer, shards,
    split, source), file names that stay inside the folder, and names that must exist (the
    tokenizer's two files; every split target is a tensor the config has). Fields the schema
    does not know are ignored. Nothing is read from the shards here."""
    s = _Schema(where)
    s.need(isinstance(manifest, dict), "the manifest", "a JSON object", type(manifest).__name__)
    s.need(manifest.get("format") == FORMAT, "format",
           f"{FORMAT!r} (convert the checkpoint with `python -m glassbox convert`)", manifest.get("format"))
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or not _is_int(version):
        raise WeightsError(f"{where} has format version {version!r}; this Glassbox reads version "
                           f"{FORMAT_VERSION}: re-run the converter (`python -m glassbox convert`)")

    config = s.object(manifest, "config", "config")
    for key in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"):
        s.need(_is_int(config.get(key)) and config[key] > 0, f"config.{key}", "a positive integer", config.get(key))
    if config.get("n_inner") is not None:
        s.need(_is_int(config["n_inner"]) and config["n_inner"] > 0, "config.n_inner",
               "a positive integer or null", config["n_inner"])
    if "layer_norm_epsilon" in config:
        eps = config["layer_norm_epsilon"]
        s.need(_is_number(eps) and eps > 0, "config.layer_norm_epsilon", "a finite number > 0", eps)
    s.need(config["n_embd"] % config["n_head"] == 0, "config.n_embd",
           f"divisible by config.n_head ({config['n_head']})", config["n_embd"])
    cfg = GPTConfig.from_dict(config)

    q = s.object(manifest, "quantization", "quantization")
    scheme = q.get("scheme")
    s.need(scheme in quant.SCHEMES, "quantization.scheme", f"one of {list(quant.SCHEMES)}", scheme)
    group = q.get("group_size")
    if scheme == "q4":
        s.need(_is_int(group) and group > 0 and group % 8 == 0, "quantization.group_size",
               "a positive multiple of 8 for q4", group)
        for name, shape in expected_shapes(cfg).items():
            if len(shape) == 2:
                s.need(shape[1] % group == 0, "quantization.group_size",
                       f"a divisor of {name}'s row length {shape[1]}", group)
    else:
        s.need(group is None or _is_int(group), "quantization.group_size", "null or an integer", group)

    tokenizer = s.object(manifest, "tokenizer", "tokenizer")
    for name in TOKENIZER_NAMES:
        s.need(name in tokenizer, f"tokenizer.{name}", "present (GPT-2's tokenizer files)", None)
    for name, entry in tokenizer.items():
        s.file_name(name, f"tokenizer key {name!r}")
        s.need(isinstance(entry, dict), f"tokenizer.{name}", "an object", entry)
        s.sha256(entry.get("sha256"), f"tokenizer.{name}.sha256")
        if "bytes" in entry:
            s.need(_is_int(entry["bytes"]) and entry["bytes"] >= 0, f"tokenizer.{name}.bytes",
                   "an integer >= 0", entry["bytes"])
        if "bundled" in entry:
            s.need(isinstance(entry["bundled"], bool), f"tokenizer.{name}.bundled", "true or false", entry["bundled"])

    shards = manifest.get("shards")
    s.need(isinstance(shards, list) and len(shards) > 0, "shards", "a non-empty list", shards)
    seen = set()
    for i, entry in enumerate(shards):
        s.need(isinstance(entry, dict), f"shards[{i}]", "an object", entry)
        s.file_name(entry.get("file"), f"shards[{i}].file")
        s.need(entry["file"] not in seen, f"shards[{i}].file", "unique", entry["file"])
        seen.add(entry["file"])
        s.need(_is_int(entry.get("bytes")) and 0 < entry["bytes"] <= MAX_SHARD_BYTES,
               f"shards[{i}].bytes", f"an integer in 1..{MAX_SHARD_BYTES}", entry.get("bytes"))
        s.sha256(entry.get("sha256"), f"shards[{i}].sha256")

    split = s.object(manifest, "split", "split", required=False)
    known = set(stored_dtypes(cfg, scheme))
    pieces_seen = set()
    for name, pieces in split.items():
        s.need(name in known, f"split key {name!r}", f"a tensor that a {scheme} model stores", name)
        s.need(isinstance(pieces, list) and len(pieces) > 0 and all(isinstance(p, str) and p for p in pieces),
               f"split.{name}", "a non-empty list of tensor names", pieces)
        s.need(pieces_seen.isdisjoint(pieces) and len(set(pieces)) == len(pieces), f"split.{name}",
               "a list of names used once", pieces)
        pieces_seen.update(pieces)
    if "source" in manifest:
        s.object(manifest, "source", "source")
    return cfg


def parse_manifest(data: bytes | str, where: str = MANIFEST) -> dict:
    """Parse a manifest and check it against the schema (:func:`check_manifest`)."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WeightsError(f"{where} is not a Glassbox model manifest (format must be {FORMAT!r}); "
                           "convert the checkpoint with `python -m glassbox convert`")
    check_manifest(manifest, where)
    return manifest


def verify_bytes(what: str, entry: dict, data: bytes, error: type[Exception] = WeightsError, hint: str = "",
                 size_optional: bool = False, actual: str | None = None) -> None:
    """Raise ``error`` naming ``what`` and both hashes unless the size and sha256 match the
    entry (``size_optional``: an entry without "bytes" is checked by its hash alone): the one
    check behind shards, tokenizer files, dictionaries and the query/key map's files.
    ``actual``: the data's sha256 when the caller computed it already (sha256_hex_steps)."""
    actual = sha256_hex(data) if actual is None else actual
    size = entry.get("bytes")
    if (size is None and not size_optional) or (size is not None and len(data) != size) \
            or actual != entry["sha256"]:
        raise error(f"{what} is corrupted or truncated: expected {entry.get('bytes', '?')} bytes with "
                    f"sha256 {entry['sha256']}, got {len(data)} bytes with sha256 {actual}{hint}")


def verify_shard(entry: dict, data: bytes, actual: str | None = None) -> None:
    """Raise WeightsError naming the file and both hashes unless size and sha256 match
    (``actual``: the data's sha256, when already computed)."""
    verify_bytes(f"shard {entry['file']}", entry, data, actual=actual)


def stored_dtypes(config: GPTConfig, scheme: str) -> dict[str, np.dtype]:
    """Every tensor a model folder of ``scheme`` stores, with its dtype: quantized matrices
    (int8, or uint8 nibble pairs for q4) and their float32 ``.scale``; float32 otherwise."""
    matrices = set(matrix_names(config))
    out = {}
    for name in expected_shapes(config):
        if name in matrices and scheme != "none":
            out[name] = np.dtype(np.int8 if scheme == "int8" else np.uint8)
            out[name + ".scale"] = np.dtype(np.float32)
        else:
            out[name] = np.dtype(np.float32)
    return out


def from_shards(manifest: dict, shard_bytes: dict[str, bytes], verified: bool = False) -> Checkpoint:
    """Build a Checkpoint from a parsed manifest and each shard's bytes (keyed by file name).

    The manifest is checked against the schema first (:func:`check_manifest`), then every
    shard's size and sha256 unless the caller already did (``verified``), then every stored
    tensor: its name, dtype and shape under the manifest's scheme, and that it is finite.
    """
    config = check_manifest(manifest)
    tensors: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}  # tensor (or piece) name -> shard file, for messages
    for entry in manifest["shards"]:
        if entry["file"] not in shard_bytes:
            raise WeightsError(f"shard {entry['file']} is missing")
        data = shard_bytes[entry["file"]]
        if not verified:
            verify_shard(entry, data)
        try:
            loaded = safetensors.load(data)
        except ValueError as e:
            raise WeightsError(f"shard {entry['file']} is not valid safetensors: {e}") from None
        for name in loaded:
            if name in tensors:
                raise WeightsError(f"tensor {name} is stored twice (shards {origin[name]} and {entry['file']})")
            origin[name] = entry["file"]
        tensors.update(loaded)
    scheme = manifest["quantization"]["scheme"]
    dtypes = stored_dtypes(config, scheme)
    for name, pieces in manifest.get("split", {}).items():
        for p in pieces:
            if p not in tensors:
                raise WeightsError(f"{MANIFEST}: split.{name} names piece {p}, which no shard holds")
            _check_dtype(p, tensors[p], dtypes[name], origin[p], scheme)
        if name in tensors:
            raise WeightsError(f"tensor {name} is stored whole (shard {origin[name]}) and split")
        origin[name] = ", ".join(sorted({origin[p] for p in pieces}))
        try:
            tensors[name] = np.concatenate([tensors.pop(p) for p in pieces], axis=0)
        except ValueError as e:
            raise WeightsError(f"the pieces of {name} do not join ({origin[name]}): {e}") from None
    group = manifest["quantization"].get("group_size") or quant.DEFAULT_GROUP
    _check_stored(tensors, config, scheme, group, origin)
    return Checkpoint(config=config, scheme=scheme, group=group, tensors=tensors, manifest=manifest)


def _check_dtype(name: str, value: np.ndarray, want: np.dtype, shard: str, scheme: str) -> None:
    if value.dtype != want:
        raise WeightsError(f"{name} in shard {shard} is {value.dtype}, but scheme {scheme} stores it as {want}")


def _check_stored(tensors: dict[str, np.ndarray], config: GPTConfig, scheme: str, group: int,
                  origin: dict[str, str] | None = None) -> None:
    """Every tensor ``scheme`` stores is there with its dtype and shape, nothing else is, and
    every float is finite (a NaN or inf weight would run silently into every output)."""
    origin = origin or {}
    where = lambda name: f"shard {origin[name]}" if name in origin else "the checkpoint"  # noqa: E731
    dtypes = stored_dtypes(config, scheme)
    shapes = expected_shapes(config)
    unexpected = sorted(set(tensors) - set(dtypes))
    if unexpected:
        raise WeightsError(f"{where(unexpected[0])} holds tensor {unexpected[0]}, which a GPT-2 {scheme} model "
                           f"does not have" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for name, dtype in dtypes.items():
        if name not in tensors:
            raise WeightsError(f"no shard holds tensor {name}, which a GPT-2 {scheme} model stores")
        value = tensors[name]
        _check_dtype(name, value, dtype, origin.get(name, "?"), scheme)
        base = name.removesuffix(".scale")
        shape = shapes[base]
        if name.endswith(".scale"):
            want = (shape[0],) if scheme == "int8" else (shape[0], shape[1] // group)
        elif len(shape) == 2 and scheme == "q4":
            want = (shape[0], shape[1] // 2)
        else:
            want = shape
        if tuple(value.shape) != want:
            raise WeightsError(f"{name} in {where(name)} has shape {tuple(value.shape)}, expected {want} "
                               f"for scheme {scheme}")
        if dtype.kind == "f":
            finite = np.isfinite(value)
            if not finite.all():
                bad = int(finite.size - np.count_nonzero(finite))
                raise WeightsError(f"{name} in {where(name)} holds {bad} NaN or infinite value(s): "
                                   "the checkpoint is damaged; convert it again")


def load_folder(path: str) -> Checkpoint:
    """Read, verify and load a model folder from disk."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise WeightsError(f"{manifest_path} not found: not a Glassbox model folder")
    manifest = parse_manifest(_read_file(manifest_path), manifest_path)
    shards = {}
    for entry in manifest["shards"]:
        file = os.path.join(path, entry["file"])
        if not os.path.isfile(file):
            raise WeightsError(f"shard {file} is missing (expected sha256 {entry['sha256']})")
        shards[entry["file"]] = _read_file(file)
    return from_shards(manifest, shards)


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise WeightsError(f"cannot read {path}: {e.strerror or e}") from None


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
