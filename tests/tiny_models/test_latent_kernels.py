"""The latent-space kernels against slow implementations written from the definitions (method §3, App. B, C, E)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from tnstore.kernels import latent as K

RNG = np.random.default_rng(20250917)


def _states(n: int, d: int, outliers: bool = True) -> np.ndarray:
    """Anisotropic random states with a few outlier dimensions, like real hidden states."""
    x = RNG.standard_normal((n, d)) * np.linspace(3.0, 0.2, d)
    if outliers:
        x[:, :2] += 40.0 + 5.0 * RNG.standard_normal((n, 2))
    return x.astype(np.float32)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.sqrt(a @ a) * np.sqrt(b @ b)))


# ------------------------------------------------------------------------------------------------ PCA
@pytest.mark.parametrize("n, d", [(40, 64), (300, 16)])  # Gram-matrix and covariance branches
def test_pca_matches_sklearn(n, d):
    x = _states(n, d)
    coords, ratio = K.pca_project(x)
    ref = PCA(n_components=2, svd_solver="full").fit(x.astype(np.float64))
    np.testing.assert_allclose(ratio, ref.explained_variance_ratio_, rtol=1e-9)
    ref_coords = ref.transform(x.astype(np.float64))
    for j in range(2):  # components are defined up to sign
        sign = np.sign(ref_coords[:, j] @ coords[:, j])
        np.testing.assert_allclose(coords[:, j], sign * ref_coords[:, j], rtol=1e-7,
                                   atol=1e-7 * np.abs(ref_coords).max())


def test_pca_sign_puts_the_largest_loading_positive():
    x = _states(50, 12, outliers=False)
    coords, _ = K.pca_project(x)
    centred = x.astype(np.float64) - x.mean(axis=0)
    loadings, *_ = np.linalg.lstsq(centred, coords, rcond=None)  # coords = centred @ components
    for j in range(2):
        assert loadings[np.argmax(np.abs(loadings[:, j])), j] > 0


def test_pca_refuses_what_has_no_two_components():
    with pytest.raises(ValueError):
        K.pca_project(np.ones((5, 4)))
    with pytest.raises(ValueError):
        K.pca_project(np.zeros((2, 4)))


# ------------------------------------------------------------------------------------------------ dimensionality
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("n, d", [(30, 64), (200, 24)])
def test_squared_singular_values_match_numpy_svd(n, d, center):
    x = _states(n, d).astype(np.float64)
    ref = np.linalg.svd(x - x.mean(axis=0) if center else x, compute_uv=False) ** 2
    got = K.squared_singular_values(x, center=center)
    assert got.shape == (min(n, d),)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-9 * ref[0])


def _dims_reference(x: np.ndarray, threshold: float) -> int:
    """The smallest k whose cumulative σ² share reaches the threshold, by trying k = 1, 2, ..."""
    s2 = np.linalg.svd(x.astype(np.float64), compute_uv=False) ** 2
    for k in range(1, len(s2) + 1):
        if s2[:k].sum() / s2.sum() >= threshold - 1e-12:
            return k
    raise AssertionError("unreachable: k = len(σ) explains everything")


@pytest.mark.parametrize("n, d", [(25, 40), (120, 30)])
def test_dims_at_thresholds_match_the_definition(n, d):
    x = _states(n, d, outliers=False)
    thresholds = [0.5, 0.9, 0.95, 0.99, 1.0]
    got = K.dims_at_thresholds(K.squared_singular_values(x), thresholds)
    assert got.tolist() == [_dims_reference(x, t) for t in thresholds]


def test_dims_of_low_rank_and_zero_matrices():
    x = np.outer(RNG.standard_normal(20), RNG.standard_normal(8))  # rank 1: one σ explains everything
    assert K.dims_at_thresholds(K.squared_singular_values(x), [0.9, 0.99, 1.0]).tolist() == [1, 1, 1]
    assert K.dims_at_thresholds(K.squared_singular_values(np.zeros((4, 3))), [0.9]).tolist() == [0]


# ------------------------------------------------------------------------------------------------ cosines
def test_cosines_match_loops():
    a, b = _states(7, 9), _states(7, 9)
    np.testing.assert_allclose(K.paired_cosine(a, b), [_cos(a[i], b[i]) for i in range(7)], rtol=1e-12)
    matrix = K.cosine_matrix(a)
    np.testing.assert_allclose(matrix, [[_cos(a[i], a[j]) for j in range(7)] for i in range(7)], rtol=1e-12)
    assert K.paired_cosine(np.zeros((1, 3)), np.ones((1, 3)))[0] == 0.0


# ------------------------------------------------------------------------------------------------ mutual k-NN
def _neighbours_reference(x: np.ndarray, k: int, tie_order: np.ndarray) -> list[set[int]]:
    """For each row, the k other rows with the highest cosine, equal cosines in the order of `tie_order` (the
    rank of each row), by explicit loops."""
    n = len(x)
    out = []
    for i in range(n):
        ranked = sorted((j for j in range(n) if j != i), key=lambda j: (-_cos(x[i], x[j]), tie_order[j]))
        out.append(set(ranked[:k]))
    return out


def _mutual_knn_reference(x: np.ndarray, y: np.ndarray, k: int, tie_seed: int = 0) -> float:
    """The documented rule: ties on each side ordered by default_rng([tie_seed, side]).permutation(n)."""
    n = len(x)
    sx = _neighbours_reference(x, k, np.random.default_rng([tie_seed, 0]).permutation(n))
    sy = _neighbours_reference(y, k, np.random.default_rng([tie_seed, 1]).permutation(n))
    return float(np.mean([len(sx[i] & sy[i]) / k for i in range(n)]))


def test_mutual_knn_matches_the_definition():
    x = _states(25, 16)
    y = x + 2.0 * _states(25, 16, outliers=False)  # related but not identical sides
    got = K.mutual_knn(x, y, [1, 3, 5, 10])
    np.testing.assert_allclose(got, [_mutual_knn_reference(x, y, k) for k in (1, 3, 5, 10)], rtol=1e-12)
    assert 0.0 < got[2] < 1.0


def test_mutual_knn_extremes():
    x = _states(20, 8)
    np.testing.assert_array_equal(K.mutual_knn(x, 3.0 * x, [2, 19]), [1.0, 1.0])  # same geometry, k = n - 1
    with pytest.raises(ValueError):
        K.mutual_knn(x, x, [20])


def test_neighbours_exclude_self_and_order_ties_by_the_given_permutation():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    rng = np.random.default_rng(5)
    order = np.random.default_rng(5).permutation(4)
    nn = K.nearest_neighbours(x, 2, rng)
    for i in range(4):
        tied = [j for j in range(4) if j != i and (i == 3 or j != 3)]  # row 3 is equally far from all others
        expected = sorted(tied, key=lambda j: order[j])[:2]
        assert nn[i].tolist() == expected


def test_identical_states_carry_no_alignment():
    """Half the pairs share one state on both sides (the same last token at the embeddings): ordering ties by
    index would align them perfectly; random tie orders drawn per side leave them at chance, k / (group - 1)."""
    n, group, k = 200, 100, 5
    x = _states(n, 16)
    y = _states(n, 16)  # the other half: unrelated sides, chance-level neighbours too
    x[:group] = x[0]
    y[:group] = y[0]
    scores = np.array([K.mutual_knn(x, y, [k], tie_seed=seed)[0] for seed in range(20)])
    chance = k / (group - 1)
    assert scores.mean() < 3 * chance  # index order would give >= 0.5 (every tied pair fully aligned)

    class ByIndex:  # the old rule: ties to the lower index, the same on both sides
        def permutation(self, size):
            return np.arange(size)

    nx, ny = K.nearest_neighbours(x, k, ByIndex()), K.nearest_neighbours(y, k, ByIndex())
    old = np.mean([len(set(nx[i]) & set(ny[i])) / k for i in range(n)])
    assert old >= 0.5
    assert K.n_duplicates(x) == group and K.n_duplicates(_states(10, 4)) == 0
    np.testing.assert_allclose(K.mutual_knn(x, y, [k], tie_seed=3), [_mutual_knn_reference(x, y, k, 3)], rtol=1e-12)


# ------------------------------------------------------------------------------------------------ trajectory
def test_trajectory_matches_the_definition():
    c = _states(9, 12)  # centroids of hidden indices 0..8
    middle = 6
    cos, norms = K.trajectory_cosines(c, middle)
    p = c[middle].astype(np.float64) - c[1]
    steps = [c[l].astype(np.float64) - c[l - 1] for l in range(2, middle + 1)]
    np.testing.assert_allclose(cos, [_cos(t, p) for t in steps], rtol=1e-12)
    np.testing.assert_allclose(norms, [np.sqrt(t @ t) for t in steps], rtol=1e-12)
    straight = np.outer(np.arange(5.0) ** 2, RNG.standard_normal(4))  # every step along the same direction
    np.testing.assert_allclose(K.trajectory_cosines(straight, 4)[0], 1.0)
    with pytest.raises(ValueError):
        K.trajectory_cosines(c, 1)


# ------------------------------------------------------------------------------------------------ probe
def _probe_reference(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> list[float]:
    """Per fold: standardise with the training part's mean/std, fit, count correct test predictions."""
    out = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        std[std == 0] = 1.0
        model = LogisticRegression(max_iter=300).fit((x[train] - mean) / std, y[train])
        predicted = model.predict((x[test] - mean) / std)
        out.append(sum(int(p == t) for p, t in zip(predicted, y[test])) / len(test))
    return out


def test_probe_matches_a_hand_written_cross_validation():
    x = _states(60, 10).astype(np.float64)
    y = (x[:, 3] + 0.8 * RNG.standard_normal(60) > 0).astype(int)
    accuracy, converged = K.probe_accuracy(x, y, folds=5, seed=3)
    np.testing.assert_allclose(accuracy, _probe_reference(x, y, 5, 3), atol=1e-12)
    assert converged and accuracy.shape == (5,)


def test_probe_separates_separable_pairs_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 6))
    y = np.repeat([0, 1], 40)
    x[y == 1, 0] += 20.0
    assert K.probe_accuracy(x, y, folds=4)[0].min() == 1.0
    noise, _ = K.probe_accuracy(rng.standard_normal((200, 6)), np.repeat([0, 1], 100), folds=10)
    assert 0.3 < noise.mean() < 0.7
