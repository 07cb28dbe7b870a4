"""The group-statistics pass (tnstore.kernels.group_stats) against plain numpy on the same activations."""
from __future__ import annotations

import numpy as np
import pytest

from tests.stats_helpers import raw_activations, write_synthetic_store
from tnstore.kernels import group_stats
from tnstore.kernels.group_stats import gather_columns, group_moments, prefetched


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Three runs, chunks of 16 rows, five languages interleaved; layer 1 neuron 0 has a mean 10⁶ × its spread."""
    rng = np.random.default_rng(7)
    n, n_layers, d = 203, 3, 11
    acts = rng.standard_normal((n, n_layers, d)) * rng.uniform(0.1, 3, d) + rng.uniform(-2, 2, d)
    acts[:, 1, 0] = 1e4 + 1e-2 * rng.standard_normal(n)
    langs = list(rng.choice(["en", "ja", "nl", "ko", "it"], n))
    path = tmp_path_factory.mktemp("kernel") / "store"
    store = write_synthetic_store(path, acts, langs, n_runs=3)
    return store, raw_activations(path), np.array(langs)


def _selection(langs: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names, codes = np.unique(langs[rows], return_inverse=True)
    return names, codes


@pytest.mark.parametrize("max_rows, prefetch, workers, chunk", [
    (16, True, None, 4), (48, False, 1, 2048), (512, True, 3, 5), (48, True, 2, 2048),
])
def test_moments_equal_numpy_per_group(synthetic, monkeypatch, max_rows, prefetch, workers, chunk):
    """Any block size, column chunk width, thread count, with or without the reader thread."""
    store, x, langs = synthetic
    monkeypatch.setattr(group_stats, "COLUMN_CHUNK", chunk)
    rows = np.arange(len(langs))[np.arange(len(langs)) % 3 != 1]  # a selection with holes, across runs
    names, codes = _selection(langs, rows)
    m, gathered = group_moments(store, rows, codes, len(names), range(x.shape[1]), max_rows=max_rows,
                                prefetch=prefetch, workers=workers)
    assert gathered is None
    for g in range(len(names)):
        xs = x[rows][codes == g]
        assert m.n[g] == len(xs)
        mean = m.shift[g] + m.sum[g] / m.n[g]
        centred = m.sumsq[g] - m.sum[g] ** 2 / m.n[g]
        np.testing.assert_allclose(mean, xs.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(centred, ((xs - xs.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-9)


def test_shift_keeps_a_large_mean_neuron_exact(synthetic):
    """Raw Σx² - (Σx)²/n would lose ~12 digits on layer 1 neuron 0; the shifted sums keep the spread exact."""
    store, x, langs = synthetic
    rows = np.arange(len(langs))
    names, codes = _selection(langs, rows)
    m, _ = group_moments(store, rows, codes, len(names), [1])
    for g in range(len(names)):
        xs = x[codes == g, 1, 0]
        centred = m.sumsq[g, 0, 0] - m.sum[g, 0, 0] ** 2 / m.n[g]
        assert centred == pytest.approx(((xs - xs.mean()) ** 2).sum(), rel=1e-9)


def test_gather_returns_the_asked_columns_in_row_order(synthetic):
    store, x, langs = synthetic
    rows = np.array([200, 3, 77, 150, 4, 5, 120])  # unsorted on purpose
    names, codes = _selection(langs, rows)
    pairs = np.array([[0, 4], [2, 10], [1, 0], [0, 0]])
    _, gathered = group_moments(store, rows, codes, len(names), range(3), gather=pairs)
    expected = x[rows][:, pairs[:, 0], pairs[:, 1]]
    np.testing.assert_allclose(gathered, expected.astype(np.float32), rtol=0)
    np.testing.assert_allclose(gather_columns(store, rows, pairs), gathered, rtol=0)


def test_float16_store_matches_numpy(tmp_path):
    rng = np.random.default_rng(3)
    acts = rng.standard_normal((70, 2, 9)) * 4
    langs = list(rng.choice(["a", "b"], 70))
    store = write_synthetic_store(tmp_path / "s", acts, langs, storage_dtype="float16")
    x = raw_activations(tmp_path / "s")  # the stored float16 values
    names, codes = np.unique(langs, return_inverse=True)
    m, _ = group_moments(store, np.arange(70), codes, 2, range(2))
    for g in range(2):
        xs = x[codes == g]
        np.testing.assert_allclose(m.shift[g] + m.sum[g] / m.n[g], xs.mean(axis=0), rtol=1e-12)


def test_prefetch_passes_items_and_errors_through():
    assert list(prefetched(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(prefetched(failing()))


@pytest.mark.parametrize("storage_dtype", ["float16", "float32"])
def test_inf_or_nan_in_the_store_is_an_error_not_a_number(tmp_path, storage_dtype):
    """Capture never stores them; a store that holds one anyway is reported, not summed into finite garbage
    (the float16 bit trick alone would turn inf into 65536)."""
    from tnstore.errors import TnstoreError

    acts = np.ones((40, 2, 5))
    acts[17, 1, 3] = np.inf if storage_dtype == "float16" else np.nan
    langs = ["a", "b"] * 20
    store = write_synthetic_store(tmp_path / "s", acts, langs, storage_dtype=storage_dtype)
    with pytest.raises(TnstoreError, match="inf or nan in layer 1"):
        group_moments(store, np.arange(40), np.arange(40) % 2, 2, range(2))
