"""The direct chunk reader (against zarr-python, and refusing what it must not read) and the float16 widening
against numpy's own conversion."""
from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from tnstore.compute.f16 import widen_bits, widen_f16
from tnstore.errors import DamagedStoreError
from tnstore.store.chunks import ArraySource, ChunkReader
from tnstore.store.durable import ZarrWriter
from tnstore.store.files import LocalFiles
from tnstore.store.store import compressor


# ---------------------------------------------------------------- widen_f16
def test_widen_every_float16_bit_pattern_like_numpy():
    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    expected = every.astype(np.float32)
    got = widen_f16(every)
    finite = np.isfinite(expected)
    assert np.array_equal(got[finite].view(np.uint32), expected[finite].view(np.uint32))  # bit for bit, -0 and subnormals
    assert np.array_equal(np.isposinf(got), np.isposinf(expected))
    assert np.array_equal(np.isneginf(got), np.isneginf(expected))
    assert np.array_equal(np.isnan(got), np.isnan(expected))


def test_bit_trick_alone_is_exact_on_every_finite_float16():
    """The fast path itself, without the inf/nan fallback that widen_f16 adds."""
    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    out = np.empty(finite.shape, np.float32)
    widen_bits(finite, out)
    assert np.array_equal(out.view(np.uint32), finite.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("shape", [(0,), (7,), (3, 5), (40, 3, 1000), (2, 70000)])
def test_widen_any_shape_and_strides(shape):
    rng = np.random.default_rng(1)
    values = (rng.standard_normal(shape) * 100).astype(np.float16)
    assert np.array_equal(widen_f16(values), values.astype(np.float32))
    if values.ndim >= 2:
        strided = values[::2, ...]
        out = np.full(strided.shape, np.nan, np.float32)
        assert widen_f16(strided, out) is out
        assert np.array_equal(out, strided.astype(np.float32))
        transposed = np.swapaxes(values, 0, -1)
        assert np.array_equal(widen_f16(transposed), transposed.astype(np.float32))


def test_widen_refuses_other_dtypes():
    with pytest.raises(TypeError):
        widen_f16(np.zeros(3, np.float32))


# ---------------------------------------------------------------- ChunkReader
def _array(tmp_path, name, shape, chunks, dtype, compressors=None):
    """An array written through the store's recording writer; returns (source, data)."""
    writer = ZarrWriter(tmp_path / "g.zarr")
    arr = writer.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                              compressors=list(compressors) if compressors is not None else [compressor()],
                              fill_value=0)
    rng = np.random.default_rng(len(shape))
    data = (rng.standard_normal(shape) * 10).astype(dtype)
    data[: chunks[0]] = 0  # a chunk of zeros is written too (a finished run has every chunk)
    arr[...] = data
    writer.sync()
    records = {k[len(name) + 1:]: r for k, r in writer.records.items() if k.startswith(name + "/")}
    return ArraySource(LocalFiles(tmp_path), f"g.zarr/{name}", records, "test array"), data


CASES = [  # shape, chunks: per-sentence arrays (rows, layers, d), (rows, layers), (rows, d), model arrays
    ((300, 5, 7), (64, 1, 7)),
    ((300, 5), (64, 5)),
    ((300, 9), (128, 9)),
    ((4, 6, 3), (1, 6, 3)),
    ((4, 3), (1, 3)),
]


@pytest.mark.parametrize("shape,chunks", CASES)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_reader_matches_zarr(tmp_path, shape, chunks, dtype):
    source, data = _array(tmp_path, "x", shape, chunks, dtype)
    reader = ChunkReader.open(source)
    arr = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")["x"]
    assert np.array_equal(arr[...], data)
    assert reader.shape == shape and reader.chunks == chunks and reader.dtype == np.dtype(dtype)
    n = shape[0]
    spans = [(0, n), (0, 1), (n - 1, n), (3, min(n, 130)), (n // 2, n // 2)]
    seconds = [None, 0, shape[1] - 1, slice(1, shape[1]), slice(0, 1)]
    for a, b in spans:
        for second in seconds:
            expected = arr[a:b] if second is None else arr[a:b, second]
            got = reader.read(a, b, second)
            assert got.dtype == expected.dtype and got.shape == expected.shape, (a, b, second)
            assert np.array_equal(got, expected), (a, b, second)


def test_other_layouts_are_refused(tmp_path):
    """The reader decodes the one layout the store writes; anything else (which zarr-python would open with
    whatever codec it names) is refused."""
    source, _ = _array(tmp_path, "zstd", (10, 2, 3), (5, 1, 3), "float32", compressors=(ZstdCodec(),))
    with pytest.raises(DamagedStoreError, match="not an array in the layout tnstore writes"):
        ChunkReader.open(source)
    source, _ = _array(tmp_path, "split_last_axis", (10, 2, 4), (5, 1, 2), "float32",
                       compressors=(BloscCodec(cname="lz4"),))
    with pytest.raises(DamagedStoreError, match="is not one tnstore writes"):
        ChunkReader.open(source)


def test_every_chunk_is_checked_as_it_is_read(tmp_path):
    """Missing, truncated, corrupt or uncatalogued chunks are errors naming the file, never zeros."""
    source, data = _array(tmp_path, "x", (300, 5, 7), (64, 1, 7), "float32")
    reader = ChunkReader.open(source)
    chunk = tmp_path / "g.zarr" / "x" / "c" / "1" / "2" / "0"
    good = chunk.read_bytes()
    assert np.array_equal(reader.read(0, 300, 2), data[:, 2])

    chunk.unlink()
    with pytest.raises(DamagedStoreError, match=r"c/1/2/0: this file of test array is missing"):
        reader.read(0, 300, 2)
    assert np.array_equal(reader.read(0, 300, 1), data[:, 1])  # other chunks still read

    chunk.write_bytes(good[:-9])
    with pytest.raises(DamagedStoreError, match="truncated"):
        reader.read(64, 128, 2)

    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    chunk.write_bytes(bytes(flipped))
    with pytest.raises(DamagedStoreError, match="does not match its checksum"):
        reader.read(64, 128, 2)
    unchecked = ChunkReader.open(ArraySource(source.files, source.prefix, source.records, "x", check=False))
    assert not np.array_equal(unchecked.read(64, 128, 2), data[64:128, 2])  # what a reader without checks returns

    chunk.write_bytes(good)
    records = {k: r for k, r in source.records.items() if k != "c/1/2/0"}
    partial = ChunkReader.open(ArraySource(source.files, source.prefix, records, "test array"))
    with pytest.raises(DamagedStoreError, match="not in its catalog"):
        partial.read(64, 128, 2)
    assert np.array_equal(reader.read(64, 128, 2), data[64:128, 2])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_direct_chunk_writes_are_zarrs_bytes(tmp_path, dtype):
    """ZarrWriter.write_rows (capture's writer, no zarr pipeline) writes exactly the files zarr-python writes, for
    every array shape a segment has, whole chunks and a padded edge chunk."""
    from tnstore.store.durable import ZarrWriter

    rng = np.random.default_rng(4)
    via_zarr, direct = ZarrWriter(tmp_path / "a.zarr"), ZarrWriter(tmp_path / "b.zarr")
    for name, shape in {"hidden": (5, 8), "final_raw": (8,), "mlp_act": (4, 12), "mlp_out_scale": (4,)}.items():
        chunks = (16,) + tuple(1 if i < len(shape) - 1 else s for i, s in enumerate(shape))
        for writer in (via_zarr, direct):
            writer.create_array(name, shape=(40,) + shape, chunks=chunks, dtype=dtype, compressors=[compressor()],
                                fill_value=0)
        values = rng.standard_normal((40,) + shape).astype(dtype)
        for start, stop in ((0, 16), (16, 32), (32, 40)):
            via_zarr[name][start:stop] = values[start:stop]
            direct.write_rows(name, start, values[start:stop])
    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert files(via_zarr.path) == files(direct.path) and len(files(direct.path)) == 38
    for name in files(direct.path):
        assert (via_zarr.path / name).read_bytes() == (direct.path / name).read_bytes(), name
    assert via_zarr.records.keys() == direct.records.keys()


def test_to_storage_checks_and_casts_like_numpy():
    from tnstore.capture.runner import to_storage
    from tnstore.errors import ArgumentError, TnstoreError

    values = (np.random.default_rng(5).standard_normal((64, 3, 40)) * 3000).astype(np.float32)
    assert np.array_equal(to_storage(values, "float16", "x"), values.astype(np.float16))
    assert to_storage(values, "float32", "x") is values
    for bad in (np.inf, -np.inf, np.nan):
        broken = values.copy()
        broken[5, 1, 7] = bad
        with pytest.raises(TnstoreError, match="inf/nan in x"):
            to_storage(broken, "float16", "x")
    with pytest.raises(ArgumentError, match="reaches 70000"):
        to_storage(np.full((2, 2), -70000.0, np.float32), "float16", "x")
