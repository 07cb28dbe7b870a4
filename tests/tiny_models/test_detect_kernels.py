"""The pure pieces of detection: scoring formulas, streaming means, layer defaults and parsing, random draws."""
from __future__ import annotations

import numpy as np
import pytest

from tnstore.analysis.detect import default_layers, layer_span
from tnstore.analysis.neurons import draw_random
from tnstore.cli.parsing import layer_range, like as parse_like
from tnstore.errors import ArgumentError
from tnstore.errors import TnstoreError
from tnstore.kernels.centroids import stream_mean
from tnstore.kernels.scoring import cosine_gain, euclidean_gain, layer_terms, score_sums


def _direct(resid, act, values, centroid, dist):
    """N - L by forming r + a v for every (sentence, neuron) in float64; (n, m)."""
    x = resid[:, None, :] + act[:, :, None] * values[None, :, :]
    if dist == "cosine":
        cos = lambda y: (y @ centroid) / (np.linalg.norm(y, axis=-1) * np.linalg.norm(centroid))  # noqa: E731
        return cos(x) - cos(resid)[:, None]
    return -np.linalg.norm(x - centroid, axis=-1) + np.linalg.norm(resid - centroid, axis=-1)[:, None]


def _problem(seed=0, n=6, m=40, d=32):
    rng = np.random.default_rng(seed)
    resid = rng.normal(size=(n, d))
    resid[:, 3] += 300.0  # an outlier dimension, as LLM residuals have
    centroid = resid.mean(0) + rng.normal(size=d)
    values = 0.05 * rng.normal(size=(m, d))
    act = rng.normal(size=(n, m)) * np.logspace(-4, 0, m)  # contributions from negligible to large
    return resid.astype(np.float32), act.astype(np.float32), values.astype(np.float32), centroid


@pytest.mark.parametrize("dist", ["cosine", "euclidean"])
def test_small_differences_keep_their_relative_accuracy(dist):
    """N - L is formed without subtracting two nearly equal distances: even 1e-9-sized gains are accurate."""
    resid, act, values, centroid = _problem()
    expected = _direct(resid.astype(np.float64), act.astype(np.float64), values.astype(np.float64), centroid, dist)
    terms = layer_terms(values, centroid, dist)
    if dist == "cosine":
        cross = (resid.astype(np.float64) @ values.T.astype(np.float64)).astype(np.float32)
        resid64 = resid.astype(np.float64)
        got = cosine_gain(act, cross, np.linalg.norm(resid64, axis=1), resid64 @ centroid,
                          terms.value_dot_centroid, terms.value_sq, terms.centroid_norm)
    else:
        diff = resid.astype(np.float64) - centroid
        cross = (diff @ values.T.astype(np.float64)).astype(np.float32)
        got = euclidean_gain(act, cross, np.linalg.norm(diff, axis=1), terms.value_sq)
    assert got.dtype == np.float32
    # Some differences lie below float32's resolution of the distance itself, so subtracting two float32
    # distances could not resolve them.
    level = 1.0 if dist == "cosine" else float(np.linalg.norm(resid - centroid, axis=1).max())
    assert np.abs(expected).min() < 1e-7 * level
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-14)


@pytest.mark.parametrize("dist", ["cosine", "euclidean"])
def test_score_sums_is_the_sum_over_sentences_and_splits_over_chunks(dist):
    resid, act, values, centroid = _problem(seed=1, n=9)
    scale = np.linspace(0.5, 2.0, len(resid)).astype(np.float32)
    terms = layer_terms(values, centroid, dist)
    expected = _direct(resid.astype(np.float64), (act * scale[:, None]).astype(np.float64),
                       values.astype(np.float64), centroid, dist).sum(0)
    whole = score_sums(terms, resid, act, scale)
    parts = score_sums(terms, resid[:4], act[:4], scale[:4]) + score_sums(terms, resid[4:], act[4:], scale[4:])
    assert whole.dtype == np.float64 and whole.shape == (values.shape[0],)
    np.testing.assert_allclose(whole, expected, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(parts, whole, rtol=1e-6, atol=1e-12)


def test_stream_mean_matches_the_mean_of_all_rows():
    rng = np.random.default_rng(2)
    blocks = [rng.normal(size=(k, 3, 5)).astype(np.float32) for k in (4, 1, 7)]
    mean, count = stream_mean(iter(blocks))
    assert count == 12
    np.testing.assert_allclose(mean, np.concatenate(blocks).astype(np.float64).mean(0), rtol=1e-12)
    with pytest.raises(ValueError):
        stream_mean(iter([]))


@pytest.mark.parametrize("n_layers, boundary", [(32, 20), (30, 19), (18, 11), (26, 16), (4, 3)])
def test_default_layers_scale_the_papers_split(n_layers, boundary):
    assert default_layers(1, n_layers) == (0, boundary)
    assert default_layers(2, n_layers) == (boundary, n_layers)


def test_layer_ranges_from_the_cli_and_the_library():
    assert layer_range("19:30") == range(19, 30) and layer_range(" 0 : 4 ") == range(0, 4)
    assert layer_range(None) is None
    for bad in ("19-30", "a:b", ":3", "-1:3"):
        with pytest.raises(TnstoreError, match="--layers"):
            layer_range(bad)
    assert layer_span(range(19, 30), 1, 30) == (19, 30) and layer_span((0, 4), 1, 4) == (0, 4)
    assert layer_span(None, 2, 30) == (19, 30)
    for bad in (range(5, 5), range(6, 5), range(0, 31), range(0, 10, 2), (0, 31), "0:4", [0, 4]):
        with pytest.raises(ArgumentError, match="^layers") as caught:
            layer_span(bad, 1, 30)
        assert caught.value.rendered(lambda a: "--" + a).startswith("--layers")


def test_draw_random_properties():
    rng = np.random.default_rng(3)
    flat = rng.choice(np.arange(2 * 50, 6 * 50), size=30, replace=False)
    tn_layers, tn_neurons = flat // 50, flat % 50
    layers, neurons = draw_random(tn_layers, tn_neurons, 2, 6, 50, seed=7)
    assert len(layers) == 30 and layers.dtype == np.int32 and neurons.dtype == np.int32
    assert layers.min() >= 2 and layers.max() < 6 and neurons.min() >= 0 and neurons.max() < 50
    drawn = set(zip(layers.tolist(), neurons.tolist()))
    assert len(drawn) == 30  # without replacement
    assert not drawn & set(zip(tn_layers.tolist(), tn_neurons.tolist()))  # disjoint from the TNs
    again = draw_random(tn_layers, tn_neurons, 2, 6, 50, seed=7)
    other = draw_random(tn_layers, tn_neurons, 2, 6, 50, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip((layers, neurons), again))
    assert set(zip(*map(np.ndarray.tolist, other))) != drawn


def test_draw_random_uses_the_whole_pool_and_refuses_more():
    tn_layers, tn_neurons = np.array([0, 0]), np.array([0, 1])
    layers, neurons = draw_random(tn_layers, tn_neurons, 0, 1, 4, seed=0)
    assert sorted(neurons.tolist()) == [2, 3]
    with pytest.raises(TnstoreError, match="does not fit"):
        draw_random(np.array([0, 0, 0]), np.array([0, 1, 2]), 0, 1, 4, seed=0)


def test_draw_random_is_uniform_over_the_pool():
    """Every candidate outside the TN set is drawn about equally often over many seeds."""
    tn_layers, tn_neurons = np.array([0, 1]), np.array([3, 4])
    counts = np.zeros((2, 8))
    for seed in range(2000):
        layers, neurons = draw_random(tn_layers, tn_neurons, 0, 2, 8, seed=seed)
        np.add.at(counts, (layers, neurons), 1)
    assert counts[0, 3] == counts[1, 4] == 0
    pool = np.delete(counts.ravel(), [3, 12])
    expected = 2000 * 2 / 14
    assert np.abs(pool - expected).max() < 5 * np.sqrt(expected)


def test_parse_like():
    assert parse_like("type=1, lang=ja,top=100") == {"type": "1", "lang": "ja", "top": "100"}
    for bad in ("", "type", "colour=red", "lang="):
        with pytest.raises(TnstoreError, match="--like"):
            parse_like(bad)


def test_prefetched_passes_items_in_order_and_surfaces_errors():
    import threading

    from tnstore.compute.prefetch import prefetched

    assert list(prefetched(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise RuntimeError("read failed")

    got = []
    with pytest.raises(RuntimeError, match="read failed"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1]

    consumer = prefetched(iter(range(1000)))
    assert next(consumer) == 0
    consumer.close()  # the consumer stops early: the background thread must end too
    assert not [t for t in threading.enumerate() if t.name == "tnstore-prefetch"]
