"""glassbox.safetensors against the `safetensors` library, both directions, every dtype.

Comparisons are bit-exact: dtype, shape and the raw bytes of every tensor (so NaN payloads
and -0.0 count too).
"""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from glassbox import safetensors as gst

sn = pytest.importorskip("safetensors.numpy", reason="the reference needs `safetensors` (pip install safetensors)")

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
          np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        w = np.asarray(w)
        assert g.dtype == w.dtype.newbyteorder("="), name
        assert g.shape == w.shape, name
        assert np.ascontiguousarray(g).tobytes() == np.ascontiguousarray(w, dtype=g.dtype).tobytes(), name


def sample(dtype, shape, rng) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def every_dtype(rng) -> dict[str, np.ndarray]:
    out = {}
    for dtype in DTYPES:
        name = np.dtype(dtype).name
        out[name] = sample(dtype, (3, 5), rng)
        out[name + ".scalar"] = sample(dtype, (), rng)
        out[name + ".empty"] = sample(dtype, (0, 4), rng)
    out["specials"] = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4e38], np.float32)
    return out


def test_round_trip_ours_to_library_and_back(rng, tmp_path):
    tensors = every_dtype(rng)
    data = gst.save(tensors, {"format": "np"})
    assert_same(sn.load(data), tensors)
    (tmp_path / "ours.safetensors").write_bytes(data)
    assert_same(sn.load_file(str(tmp_path / "ours.safetensors")), tensors)
    loaded, metadata = gst.load_with_metadata(data)
    assert_same(loaded, tensors)
    assert metadata == {"format": "np"}


def test_round_trip_library_to_ours(rng, tmp_path):
    tensors = every_dtype(rng)
    meta = {"format": "pt", "note": "ünïcode ✓", "empty": ""}
    loaded, metadata = gst.load_with_metadata(sn.save(tensors, metadata=meta))
    assert_same(loaded, tensors)
    assert metadata == meta
    sn.save_file(tensors, str(tmp_path / "lib.safetensors"))
    assert_same(gst.load((tmp_path / "lib.safetensors").read_bytes()), tensors)


@pytest.mark.parametrize("metadata", [None, {}, {"format": "pt"}])
def test_bytes_identical_to_library(rng, metadata):
    """Same layout as the library: dtype-size order then name, compact JSON, space padding."""
    tensors = every_dtype(rng)
    tensors['odd "name"\n\x01\x7fé✓'] = np.arange(3, dtype=np.int32)
    tensors[""] = np.zeros(1, np.uint8)
    assert gst.save(tensors, metadata) == sn.save(tensors, metadata=metadata)
    assert gst.save({}) == sn.save({}) == b"\x08" + b"\x00" * 7 + b"{}      "


def test_header_is_padded_to_eight_bytes(rng):
    for length in range(1, 12):
        data = gst.save({"x" * length: np.ones(length, np.float64)})
        n = struct.unpack("<Q", data[:8])[0]
        text = data[8:8 + n].rstrip(b" ")
        assert n % 8 == 0 and n - len(text) < 8 and text.endswith(b"}")


def test_any_layout_and_byte_order_is_written_little_endian_c_order(rng):
    base = rng.standard_normal((4, 6))
    tensors = {
        "big_endian": base.astype(">f4"),
        "fortran": np.asfortranarray(base),
        "strided": base[::2, ::3],
        "transposed": base.T.astype(np.float16),
        "big_int": np.arange(5, dtype=">i8"),
    }
    data = gst.save(tensors)
    assert_same(sn.load(data), tensors)
    assert_same(gst.load(data), tensors)
    assert gst.load(data)["big_endian"].dtype == np.dtype("<f4")


def test_load_is_zero_copy(rng):
    tensors = {"w": rng.standard_normal((8, 8)).astype(np.float32), "b": np.arange(8, dtype=np.int64)}
    data = gst.save(tensors)
    frozen = gst.load(data)
    for array in frozen.values():
        assert not array.flags.writeable and not array.flags.owndata
        assert array.flags.aligned
    buffer = bytearray(data)
    live = gst.load(buffer)
    live["w"][0, 0] = 42.0  # a view into the bytearray
    assert gst.load(bytes(buffer))["w"][0, 0] == 42.0
    assert_same(gst.load(memoryview(data)), tensors)
    assert_same(gst.load(np.frombuffer(data, np.uint8)), tensors)


def bf16_file(values: np.ndarray) -> bytes:
    """A BF16 tensor written by hand: the top 16 bits of each float32."""
    raw = (np.asarray(values, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"x": {"dtype": "BF16", "shape": list(values.shape), "data_offsets": [0, len(raw)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + raw


def test_bf16_loads_as_float32():
    values = np.array([[1.0, -2.5, 0.0], [np.inf, -np.inf, 3.140625]], np.float32)  # exact in bfloat16
    got = gst.load(bf16_file(values))["x"]
    assert got.dtype == np.float32 and got.shape == (2, 3)
    assert got.tobytes() == values.tobytes()
    assert np.isnan(gst.load(bf16_file(np.array([np.nan], np.float32)))["x"]).all()


def test_bf16_and_f16_written_by_torch():
    torch = pytest.importorskip("torch", reason="torch writes the BF16 reference file")
    from safetensors.torch import save as torch_save

    gen = torch.Generator().manual_seed(0)
    tensors = {"bf16": torch.randn(4, 3, generator=gen).to(torch.bfloat16),
               "f16": torch.randn(5, generator=gen).to(torch.float16),
               "bf16_scalar": torch.tensor(1.5, dtype=torch.bfloat16)}
    loaded = gst.load(torch_save(tensors))
    for name, t in tensors.items():
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert loaded[name].dtype == want.dtype and loaded[name].shape == want.shape
        assert loaded[name].tobytes() == want.tobytes()


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.text(min_size=1, max_size=8),
    hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    max_size=5,
))
def test_generated_round_trips_both_ways(tensors):
    ours = gst.save(tensors)
    assert ours == sn.save(tensors)
    assert_same(sn.load(ours), tensors)
    assert_same(gst.load(sn.save(tensors)), tensors)


def raw_file(header, data: bytes = b"", pad: bool = True) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def u8(begin, end, shape=None, dtype="U8"):
    return {"dtype": dtype, "shape": [end - begin] if shape is None else shape, "data_offsets": [begin, end]}


GOOD = gst.save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.int8)}, {"k": "v"})
CORRUPT = [
    ("empty", b"", "too short"),
    ("short", b"\x10\x00\x00", "too short"),
    ("header too large", struct.pack("<Q", 10**12) + b"{}", "over the 100000000-byte limit"),
    ("truncated header", GOOD[:20], "runs past the end"),
    ("truncated data", GOOD[:-1], "truncated"),
    ("trailing bytes", GOOD + b"\x00", "1 bytes follow the last tensor"),
    ("not json", raw_file(b"{not json}"), "not valid JSON"),
    ("nul padding", raw_file(b"{}\x00\x00\x00\x00\x00\x00", pad=False), "not valid JSON"),
    ("not utf-8", raw_file(b'{"\xff": 1}'), "not UTF-8"),
    ("not an object", raw_file([1, 2]), "must be a JSON object"),
    ("deeply nested", raw_file(b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
    ("duplicate name", raw_file(b'{"a":' + json.dumps(u8(0, 1)).encode() + b',"a":' + json.dumps(u8(0, 1)).encode() + b"}", b"x"),
     "key 'a' twice"),
    ("entry not object", raw_file({"a": [0, 1]}), "header entry must be an object"),
    ("unknown dtype", raw_file({"a": u8(0, 1, dtype="Q8")}, b"x"), "unsupported dtype 'Q8'"),
    ("fp8 dtype", raw_file({"a": u8(0, 1, dtype="F8_E4M3")}, b"x"), "unsupported dtype 'F8_E4M3'"),
    ("negative dim", raw_file({"a": u8(0, 1, shape=[-1])}, b"x"), "shape must be"),
    ("float dim", raw_file({"a": u8(0, 1, shape=[1.0])}, b"x"), "shape must be"),
    ("bool dim", raw_file({"a": u8(0, 1, shape=[True])}, b"x"), "shape must be"),
    ("three offsets", raw_file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}, b"x"), "data_offsets must be"),
    ("negative offset", raw_file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}}, b"x"), "data_offsets must be"),
    ("end before begin", raw_file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 0]}}, b"x"), "hold -1 bytes"),
    ("size mismatch", raw_file({"a": u8(0, 3, shape=[1], dtype="F32")}, b"xyz"), "hold 3 bytes but shape \\[1\\] of F32 needs 4"),
    ("gap", raw_file({"a": u8(1, 2)}, b"xy"), "starts at byte 1 .* expected 0"),
    ("overlap", raw_file({"a": u8(0, 2), "b": u8(1, 2)}, b"xy"), "starts at byte 1 .* expected 2"),
    ("metadata not str", raw_file({"__metadata__": {"a": 1}}), "__metadata__ must be"),
    ("metadata not object", raw_file({"__metadata__": "x"}), "__metadata__ must be"),
    ("bool byte 2", raw_file({"a": u8(0, 2, dtype="BOOL")}, b"\x01\x02"), "BOOL data"),
]


@pytest.mark.parametrize("data,message", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_input_raises_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        gst.load(data)


def test_lenient_where_the_spec_is():
    """Unpadded headers, surrounding white space, extra entry keys: the library accepts them too."""
    for data in (raw_file({"a": u8(0, 1)}, b"x", pad=False),
                 raw_file(b' {"a":' + json.dumps(u8(0, 1)).encode() + b"} ", b"x"),
                 raw_file({"a": {**u8(0, 1), "extra": 1}}, b"x")):
        assert gst.load(data)["a"].tobytes() == b"x"
        assert sn.load(data)["a"].tobytes() == b"x"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_files_raise_only_value_error(data):
    """Truncating or overwriting bytes anywhere gives either tensors or a ValueError."""
    blob = bytearray(GOOD)
    if data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        gst.load(bytes(blob))
    except ValueError:
        pass


@pytest.mark.parametrize("tensors,metadata,message", [
    ({"c": np.zeros(2, np.complex64)}, None, "dtype complex64 cannot be stored"),
    ({"o": np.array([object()])}, None, "dtype object cannot be stored"),
    ({"s": np.array(["x"])}, None, "cannot be stored"),
    ({"h": np.zeros(2, np.longdouble)}, None, "cannot be stored"),
    ({1: np.zeros(2)}, None, "names must be str"),
    ({"__metadata__": np.zeros(2)}, None, "reserved"),
    ({}, {"k": 1}, "metadata must map str -> str"),
])
def test_save_refuses_what_it_cannot_store(tensors, metadata, message):
    with pytest.raises(ValueError, match=message):
        gst.save(tensors, metadata)
