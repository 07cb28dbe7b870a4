"""Kernels of the latent-space analyses (method §3, App. B, C, E): pure numpy on in-memory states.

Every function takes states as rows (n sentences × width) and computes in float64: hidden states of real models
carry a few huge outlier dimensions, and float32 Gram matrices lose the small directions next to them.
Callers read one layer's states of the selected rows at a time (n × d is small), so nothing here streams.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy.linalg import eigh

# Cumulative ratios are compared with this slack so a spectrum that reaches a threshold exactly (e.g. rank-1
# data at 1.0) is not pushed one singular value further by rounding.
RATIO_SLACK = 1e-12


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of x (n, w) scaled to unit L2 norm, float64; an all-zero row stays zero (its cosines are 0)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_i, b_i) for each row pair of a, b (n, w); shape (n,)."""
    if a.shape != b.shape:
        raise ValueError(f"paired rows need equal shapes, got {a.shape} and {b.shape}")
    return np.einsum("ij,ij->i", unit_rows(a), unit_rows(b))


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows of vectors (g, w); shape (g, g), diagonal 1 for nonzero rows."""
    u = unit_rows(vectors)
    return u @ u.T


def pca_project(x: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the rows of x (n, d), centred on their mean.

    Returns (coords (n, n_components), explained variance ratio (n_components,)), the same as
    sklearn.decomposition.PCA up to each component's sign. Signs are fixed as sklearn >= 1.5 fixes them: the
    largest-magnitude loading of each component is positive. Only the top components are solved for, from the
    smaller of the Gram (n × n) and covariance (d × d) matrices: one matrix product instead of a full SVD.
    """
    xc = np.asarray(x, dtype=np.float64)
    xc = xc - xc.mean(axis=0)
    n, d = xc.shape
    if n <= n_components or min(n, d) < n_components:
        raise ValueError(f"PCA with {n_components} components needs more than {n_components} rows and columns")
    total = float(np.einsum("ij,ij->", xc, xc))
    if total == 0.0:
        raise ValueError("every row is the same vector: there is no variance to explain")
    m = min(n, d)
    subset = [m - n_components, m - 1]
    if n <= d:
        eigval, u = eigh(xc @ xc.T, subset_by_index=subset)
        components = xc.T @ u / np.sqrt(np.maximum(eigval, np.finfo(float).tiny))  # V = Xᵀ U / σ
    else:
        eigval, components = eigh(xc.T @ xc, subset_by_index=subset)
    order = np.argsort(eigval)[::-1]
    eigval, components = np.maximum(eigval[order], 0.0), components[:, order]
    components /= np.linalg.norm(components, axis=0, keepdims=True)
    biggest = components[np.argmax(np.abs(components), axis=0), np.arange(n_components)]
    components *= np.where(biggest < 0, -1.0, 1.0)
    return xc @ components, eigval / total


def squared_singular_values(x: np.ndarray, center: bool = False) -> np.ndarray:
    """σ_i² of x (n, d) (centred on the row mean first if `center`), descending; shape (min(n, d),).

    The eigenvalues of the smaller Gram matrix are exactly σ_i²; negative rounding noise is clipped to 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0)
    gram = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    return np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)


def dims_at_thresholds(sigma2: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """For each threshold t, the smallest k with Σ_{i≤k} σ_i² / Σ_j σ_j² ≥ t.

    sigma2 (m,) descending; returns (len(thresholds),) int.

    A zero matrix has no spectrum to explain: k = 0 for every threshold.
    """
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    total = sigma2.sum()
    if total == 0.0:
        return np.zeros(len(thresholds), dtype=np.int64)
    cumulative = np.cumsum(sigma2) / total
    k = np.searchsorted(cumulative, np.asarray(thresholds, dtype=np.float64) - RATIO_SLACK, side="left") + 1
    return np.minimum(k, len(sigma2)).astype(np.int64)


def duplicate_groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of x (n, w) that are exactly identical: (group (n,) = the index of each row's distinct value,
    counts (g,) = rows per distinct value)."""
    _, group, counts = np.unique(np.ascontiguousarray(x), axis=0, return_inverse=True, return_counts=True)
    return group.reshape(-1), counts


def n_duplicates(x: np.ndarray) -> int:
    """How many rows of x (n, w) are identical to at least one other row."""
    _, counts = duplicate_groups(x)
    return int(counts[counts > 1].sum())


def nearest_neighbours(x: np.ndarray, k_max: int, tie_rng: np.random.Generator) -> np.ndarray:
    """Indices of the k_max most cosine-similar other rows of x (n, w), most similar first; shape (n, k_max).

    A row is never its own neighbour. Equal similarities are ordered by a random permutation of the rows drawn
    from `tie_rng`: identical rows (e.g. sentences ending in the same token, at the embeddings) would otherwise be
    ranked by index on both sides of a pair alike and show an alignment that is only their order. Identical rows
    get exactly equal similarities (computed once per distinct row), so rounding cannot order them either.
    """
    n = x.shape[0]
    if not 1 <= k_max <= n - 1:
        raise ValueError(f"k_max {k_max} must be between 1 and n - 1 = {n - 1}")
    group, counts = duplicate_groups(x)
    if len(counts) < n:
        distinct = np.zeros((len(counts), x.shape[1]), dtype=x.dtype)
        distinct[group] = x
        similarity = cosine_matrix(distinct)[group][:, group]
    else:
        similarity = cosine_matrix(x)
    np.fill_diagonal(similarity, -np.inf)
    tie_order = np.broadcast_to(tie_rng.permutation(n), similarity.shape)
    return np.lexsort((tie_order, -similarity), axis=1)[:, :k_max]


def mutual_knn(x: np.ndarray, y: np.ndarray, ks: Sequence[int], tie_seed: int = 0) -> np.ndarray:
    """Mutual k-NN alignment (App. E) of paired rows x, y (n, w): mean_i |S_k(x_i) ∩ S_k(y_i)| / k for each k.

    S_k(x_i) = the k nearest neighbours of x_i among the other rows of x by cosine similarity (likewise y); ties
    are broken by random permutations from `numpy.random.default_rng([tie_seed, 0])` for x and
    `default_rng([tie_seed, 1])` for y, so tied neighbours are drawn independently on the two sides.
    Returns (len(ks),) float64 in [0, 1].
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError("x and y must hold the two sides of the same pairs")
    k_max = max(ks)
    nx = nearest_neighbours(x, k_max, np.random.default_rng([tie_seed, 0]))
    ny = nearest_neighbours(y, k_max, np.random.default_rng([tie_seed, 1]))
    scores = []
    for k in ks:
        shared = (nx[:, :k, None] == ny[:, None, :k]).any(axis=2).sum(axis=1)  # (n,) |S ∩ S|
        scores.append(shared.mean() / k)
    return np.asarray(scores, dtype=np.float64)


def trajectory_cosines(centroids: np.ndarray, middle: int) -> tuple[np.ndarray, np.ndarray]:
    """App. B: with P = C^m - C^1 and T^l = C^l - C^{l-1}, (cos(T^l, P), |T^l|) for l = 2..m.

    centroids (m + 1, d): row l is the centroid of hidden index l (row 0, the embeddings, is not used).
    Returns two arrays of shape (m - 1,).
    """
    c = np.asarray(centroids, dtype=np.float64)
    if not 2 <= middle < c.shape[0]:
        raise ValueError(f"middle {middle} must be between 2 and {c.shape[0] - 1}")
    direction = c[middle] - c[1]
    steps = c[2 : middle + 1] - c[1:middle]  # T^2 .. T^m
    cos = unit_rows(steps) @ unit_rows(direction[None])[0]
    return cos, np.linalg.norm(steps, axis=1)


def probe_accuracy(
    features: np.ndarray, labels: np.ndarray, folds: int = 10, seed: int = 0, max_iter: int = 300, c: float = 1.0,
) -> tuple[np.ndarray, bool]:
    """Stratified k-fold CV accuracy of a logistic-regression probe (App. C.2); features (n, f), labels (n,) 0/1.

    Each fold standardises the features on its training part (hidden states have outlier dimensions thousands of
    times larger than the rest, which lbfgs otherwise crawls over) and fits L2-regularised logistic regression
    (lbfgs, at most `max_iter` iterations). Returns (accuracy per fold (folds,), whether every fit converged).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    accuracy = np.empty(folds)
    converged = True
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for j, (train, test) in enumerate(splitter.split(x, y)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported through the return value instead
            model.fit(x[train], y[train])
        converged &= bool(np.all(model[-1].n_iter_ < max_iter))
        accuracy[j] = np.mean(model.predict(x[test]) == y[test])
    return accuracy, converged
