"""Safetensors read and write in pure Python + numpy (works on bytes already in memory).

The format (https://github.com/huggingface/safetensors, as the library writes it):

    8 bytes   N, the header's length: unsigned 64-bit little-endian
    N bytes   the header: UTF-8 JSON, padded with spaces (0x20) so that N % 8 == 0
              {"__metadata__": {str: str},                        (optional)
               name: {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]},
               ...}
    the rest  the data buffer: each tensor's elements in C order, little-endian, at
              [begin, end) counted from the buffer's start; tensors are packed with no gaps or
              overlaps and together cover the whole buffer.

The library orders tensors by dtype alignment (8-byte types first) then by name, so with the
padded header every tensor starts aligned; ``save`` does the same and its output is
byte-identical to ``safetensors.numpy.save`` (apart from the order of metadata keys, which the
library does not fix).

dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL. numpy has no bfloat16, so BF16 is
loaded as float32 (exact: bfloat16 is the top half of a float32) and ``save`` never writes
it. FP8/FP4/complex files are refused with a ValueError.

Every malformed input raises ValueError with a message saying what is wrong; the caller adds
the file's name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

MAX_HEADER_BYTES = 100_000_000  # the library's limit; a larger N means a corrupted file

# safetensors dtype -> numpy dtype of the stored bytes (little-endian).
_STORED = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "u1",
}
# numpy (kind, itemsize) -> safetensors dtype, for save.
_CODE = {
    ("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16",
    ("i", 8): "I64", ("i", 4): "I32", ("i", 2): "I16", ("i", 1): "I8",
    ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16", ("u", 1): "U8", ("b", 1): "BOOL",
}
# The library's dtype order (its Rust enum); save writes the largest first, like the library.
_ORDER = ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]


def load(data) -> dict[str, np.ndarray]:
    """Bytes of a .safetensors file -> {name: array}.

    ``data`` is any bytes-like object (bytes, bytearray, memoryview, mmap). Arrays are
    zero-copy views into it (read-only when ``data`` is bytes; they keep it alive), except
    BF16, which is widened to a new float32 array.
    """
    return load_with_metadata(data)[0]


def load_with_metadata(data) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Bytes of a .safetensors file -> ({name: array}, metadata); metadata is {} if absent."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    entries, metadata, start = _parse_header(view)
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        tensors[name] = decode(view[start + begin:start + end], dtype, shape, name)
    return tensors, metadata


def decode(raw, dtype: str, shape, name: str = "") -> np.ndarray:
    """One tensor's bytes (as stored, little-endian) -> array of ``shape``: a zero-copy view of
    ``raw``, except BF16, widened to a new float32 array. ValueError on a bad BOOL byte."""
    count = math.prod(shape)
    stored = np.dtype(_STORED[dtype])
    raw = np.empty(0, dtype=stored) if count == 0 else np.frombuffer(raw, dtype=stored, count=count)
    if dtype == "BF16":
        array = (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)
    elif dtype == "BOOL":
        if count and raw.max() > 1:
            raise ValueError(f"tensor {name!r}: BOOL data holds bytes other than 0 and 1")
        array = raw.view(np.bool_)
    else:
        array = raw
    return array.reshape(shape)


def header_length(first8: bytes) -> int:
    """The header's length N from a file's first 8 bytes; ValueError when it cannot be one."""
    if len(first8) < 8:
        raise ValueError(f"only {len(first8)} bytes: too short for a safetensors file (8-byte header length missing)")
    n = int.from_bytes(first8[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise ValueError(
            f"header length {n} is over the {MAX_HEADER_BYTES}-byte limit: not a safetensors file or corrupted"
        )
    return n


def read_header(prefix, file_size: int | None = None) -> tuple[list, dict[str, str], int]:
    """The first 8 + N bytes of a file (length and header) -> ([(name, dtype, shape, begin, end)]
    in data order, metadata, data buffer's start), for reading tensors by byte range without
    the whole file. ``file_size``, when known, is checked against the tensors' extent."""
    view = memoryview(prefix).cast("B") if not isinstance(prefix, memoryview) else prefix
    n = header_length(bytes(view[:8]))
    if 8 + n > len(view):
        raise ValueError(f"header length {n} runs past the {len(view)} bytes given: truncated?")
    entries, metadata = _header_entries(view[8:8 + n])
    _check_packing(entries, None if file_size is None else file_size - 8 - n)
    return entries, metadata, 8 + n


def _no_duplicates(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"header has the key {key!r} twice")
        out[key] = value
    return out


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _parse_header(view: memoryview) -> tuple[list, dict[str, str], int]:
    """-> ([(name, dtype, shape, begin, end)] in data order, metadata, data buffer's start)."""
    total = len(view)
    n = header_length(bytes(view[:8]))
    if 8 + n > total:
        raise ValueError(f"header length {n} runs past the end of the data ({total} bytes): truncated?")
    entries, metadata = _header_entries(view[8:8 + n])
    _check_packing(entries, total - 8 - n)
    return entries, metadata, 8 + n


def _header_entries(text: memoryview) -> tuple[list, dict[str, str]]:
    """The header's JSON bytes -> (entries sorted by data offset, metadata), each entry checked."""
    try:
        header = json.loads(bytes(text).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise ValueError(f"header is not UTF-8 ({e}): not a safetensors file or corrupted") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"header is not valid JSON ({e}): not a safetensors file or corrupted") from None
    except RecursionError:
        raise ValueError("header JSON is nested too deeply: not a safetensors file or corrupted") from None
    if not isinstance(header, dict):
        raise ValueError(f"header must be a JSON object, got {type(header).__name__}")

    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("__metadata__ must be an object of string -> string")

    entries = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ValueError(f"tensor {name!r}: header entry must be an object, got {info!r}")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _STORED:
            raise ValueError(f"tensor {name!r}: unsupported dtype {dtype!r} (supported: {', '.join(_STORED)})")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise ValueError(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
            raise ValueError(f"tensor {name!r}: data_offsets must be [begin, end] integers, got {offsets!r}")
        begin, end = offsets
        needed = math.prod(shape) * np.dtype(_STORED[dtype]).itemsize
        if end < begin or end - begin != needed:
            raise ValueError(
                f"tensor {name!r}: data_offsets [{begin}, {end}] hold {end - begin} bytes"
                f" but shape {shape} of {dtype} needs {needed}"
            )
        entries.append((name, dtype, shape, begin, end))

    entries.sort(key=lambda e: (e[3], e[4]))
    return entries, metadata


def _check_packing(entries: list, size: int | None) -> None:
    """ValueError unless the tensors are packed with no gaps or overlaps and fill ``size``
    bytes of data exactly (``size`` None: not known, only the packing is checked)."""
    position = 0
    for name, _dtype, _shape, begin, end in entries:
        if begin != position:
            raise ValueError(
                f"tensor {name!r}: data starts at byte {begin} of the data buffer, expected {position}"
                " (tensors must be packed with no gaps or overlaps)"
            )
        position = end
    if size is None:
        return
    if position > size:
        raise ValueError(f"the tensors need {position} bytes of data but only {size} follow the header: truncated?")
    if position < size:
        raise ValueError(
            f"{size - position} bytes follow the last tensor (data buffer is {size} bytes, tensors end at {position})"
        )


def save(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """{name: array} (+ optional {str: str} metadata) -> bytes of a .safetensors file.

    Arrays of any byte order and layout are written little-endian in C order. Supported
    numpy dtypes: float64/32/16, int64/32/16/8, uint64/32/16/8, bool.
    """
    header: dict = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("metadata must map str -> str")
        header["__metadata__"] = dict(metadata)
    items = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise ValueError(f"tensor names must be str, got {name!r}")
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot name a tensor")
        array = np.asarray(value)
        code = _CODE.get((array.dtype.kind, array.dtype.itemsize))
        if code is None:
            supported = ", ".join(_CODE.values())
            raise ValueError(f"tensor {name!r}: dtype {array.dtype} cannot be stored (supported: {supported})")
        items.append((name, code, array))
    items.sort(key=lambda item: (-_ORDER.index(item[1]), item[0]))

    blobs = []
    position = 0
    for name, code, array in items:
        blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [position, position + len(blob)]}
        position += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return b"".join([len(text).to_bytes(8, "little"), text, *blobs])
