"""The direct chunk reader and the float16 widening against zarr-python and numpy's own conversion."""
from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from tnstore.store.chunks import ChunkReader
from tnstore.compute.f16 import widen_bits, widen_f16
from tnstore.store.store import Store, compressor


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
def _array(tmp_path, name, shape, chunks, dtype, compressors=None, fill=None):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="a")
    arr = group.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                             compressors=list(compressors) if compressors is not None else [compressor()],
                             fill_value=0)
    rng = np.random.default_rng(len(shape))
    data = (rng.standard_normal(shape) * 10).astype(dtype)
    if fill is not None:  # leave the chunks of rows >= fill unwritten: they read as the fill value
        arr[:fill] = data[:fill]
        data[fill:] = 0
    else:
        arr[...] = data
    return tmp_path / "g.zarr" / name, arr, data


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
    path, arr, data = _array(tmp_path, "x", shape, chunks, dtype, fill=shape[0] - chunks[0])
    reader = ChunkReader.open(path)
    assert reader is not None and reader.shape == shape and reader.chunks == chunks
    n, second_size = shape[0], shape[1]
    spans = [(0, n), (0, 1), (n - 1, n), (3, n - 5), (chunks[0] - 1, chunks[0] + 1), (5, 5)]
    seconds = [None, 0, second_size - 1, -1, slice(1, second_size), slice(0, 1), slice(2, 2)]
    for a, b in [(a, b) for a, b in spans if 0 <= a <= b <= n]:
        for second in seconds:
            expected = arr[a:b] if second is None else arr[a:b, second]
            got = reader.read(a, b, second)
            assert got.dtype == expected.dtype and got.shape == expected.shape, (a, b, second)
            assert np.array_equal(got, expected), (a, b, second)


def test_other_layouts_are_left_to_zarr(tmp_path):
    path, _, _ = _array(tmp_path, "zstd", (10, 2, 3), (5, 1, 3), "float32", compressors=(ZstdCodec(),))
    assert ChunkReader.open(path) is None
    path, _, _ = _array(tmp_path, "split_last_axis", (10, 2, 4), (5, 1, 2), "float32",
                        compressors=(BloscCodec(cname="lz4"),))
    assert ChunkReader.open(path) is None
    assert ChunkReader.open(tmp_path / "missing") is None


def test_store_reads_a_segment_zarr_wrote_otherwise(tiny_store_factory, tmp_path):
    """Store.iter_rows gives the same values whether a segment is read chunk by chunk or through zarr."""
    import shutil

    source = tiny_store_factory("tiny-llama")
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    store = Store.open(copy)
    seg = store.segments()[0]
    rows = np.arange(store.n_rows())[::3]
    fast = store.read_rows("mlp_act", rows, slice(0, 2))
    # rewrite the array with another codec: the reader must fall back to zarr and still agree
    values = zarr.open_group(str(seg.path), mode="r")["mlp_act"][...]
    shutil.rmtree(seg.path / "mlp_act")
    group = zarr.open_group(str(seg.path), mode="a")
    group.create_array("mlp_act", shape=values.shape, chunks=(16,) + values.shape[1:], dtype=values.dtype,
                       compressors=[ZstdCodec()])[...] = values
    again = Store.open(copy)
    assert not isinstance(again.segments()[0].reader("mlp_act"), ChunkReader)
    assert np.array_equal(again.read_rows("mlp_act", rows, slice(0, 2)), fast)
    assert np.array_equal(fast, values[rows, 0:2])
