"""Eq. 7-9 for every neuron of one layer at once: Score_i = mean_k [dist(r_k + a_ki v_i, c) - dist(r_k, c)].

Shapes: n sentences in a chunk, m = d_mlp neurons, d = d_model.
    resid   (n, d)  r_k, the residual before the layer's MLP
    act     (n, m)  alpha_ki, the input of down_proj
    scale   (n,)    the frozen post-MLP norm scale s_k (1.0 for families without a post-MLP norm)
    values  (m, d)  v_i, rows of down_proj; gain (d,) the post-MLP norm gain (ones without one)

Frozen-norm decomposition: with s_k held at its captured value, neuron i adds exactly
a_ki * v_i' where a_ki = alpha_ki * s_k and v_i' = gain * v_i, and these terms sum to the MLP's real output.
For LLaMA-style blocks s = 1 and gain = 1, so the same code is the plain alpha_i v_i of the paper.

Everything a distance needs reduces to dot products: the one (n, d) x (d, m) product `cross` (r.v for cosine,
(r - c).v for Euclidean) plus per-sentence and per-neuron scalars. The per-element formulas below are rearranged
so that N - L is computed directly (no subtraction of two nearly equal distances), which keeps float32
elementwise work accurate to ~1e-7 relative of the (tiny) difference; sums over sentences are float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from tnstore.compute.buffers import Scratch
from tnstore.compute.parallel import over_slices
from tnstore.compute.f16 import widen_f16

_scratch = Scratch()

Distance = Literal["cosine", "euclidean"]
DISTANCES: tuple[str, ...] = ("cosine", "euclidean")


@dataclass(frozen=True)
class LayerTerms:
    """What scoring one layer needs that does not depend on the sentences."""

    dist: str
    values: np.ndarray  # (m, d) float32, effective value vectors gain * v_i
    centroid: np.ndarray  # (d,) float64
    centroid_norm: float  # |c|
    value_dot_centroid: np.ndarray  # (m,) float64, v_i . c
    value_sq: np.ndarray  # (m,) float64, |v_i|^2


def value_terms(
    down_proj: np.ndarray, gain: np.ndarray, centroid: np.ndarray, dist: Distance, out: np.ndarray | None = None,
) -> LayerTerms:
    """Per-layer constants from down_proj (m, d) float16/32, the post-MLP gain (d,) and the centroid (d,).

    The effective value vectors gain * v_i are written into `out` ((m, d) float32) if given; without `out`, a
    float32 `down_proj` with unit gain (every LLaMA-style model) is used as it is (copying a LLaMA-8B layer's
    235 MB costs as much as scoring a block of rows). `down_proj` itself is never written. Widening, v.c and
    |v|^2 are done tile by tile, while each tile of rows is in cache.
    """
    if dist not in DISTANCES:
        raise ValueError(f"dist must be one of {DISTANCES}, not {dist!r}")
    centroid = np.asarray(centroid, dtype=np.float64)
    unit_gain = bool(np.all(gain == 1))
    in_place = out is None and unit_gain and down_proj.dtype == np.float32 and down_proj.flags.c_contiguous
    values = down_proj if in_place else (np.empty(down_proj.shape, np.float32) if out is None else out)
    gain32 = gain.astype(np.float32)
    m, d = down_proj.shape
    value_dot_centroid, value_sq = np.empty(m), np.empty(m, dtype=np.float32)
    rows = max(1, TILE_VALUES // max(1, d))

    def fill(first: int, end: int) -> None:  # rows first..end-1, tile by tile; run on the cores in parallel
        for lo in range(first, end, rows):
            hi = min(lo + rows, end)
            tile = values[lo:hi]
            if not in_place:
                source = down_proj[lo:hi]
                widen_f16(source, tile) if source.dtype == np.float16 else np.copyto(tile, source, casting="unsafe")
                if not unit_gain:
                    tile *= gain32
            # v.c is a per-neuron constant: a float32 rounding would bias every sentence's term the same way, so
            # it is accumulated in float64. |v|^2 only enters as a^2 |v|^2, a second-order term: float32 will do.
            value_dot_centroid[lo:hi] = tile @ centroid
            value_sq[lo:hi] = np.einsum("md,md->m", tile, tile)

    over_slices(m, fill, min_items=rows)
    return LayerTerms(dist=dist, values=values, centroid=centroid, centroid_norm=float(np.sqrt(centroid @ centroid)),
                      value_dot_centroid=value_dot_centroid, value_sq=value_sq.astype(np.float64))


def layer_terms(values: np.ndarray, centroid: np.ndarray, dist: Distance) -> LayerTerms:
    """Per-layer constants from effective value vectors (m, d) and the layer's centroid (d,)."""
    return value_terms(np.asarray(values), np.ones(np.shape(values)[1], np.float32), centroid, dist)


TILE_VALUES = 131072  # per elementwise tile: its ~4 float32 temporaries (~2 MB) stay in the L2/L3 caches


def score_sums(terms: LayerTerms, resid: np.ndarray, act: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Sum over the chunk's n sentences of N_ik - L_k for every neuron i; (m,) float64.

    resid (n, d), act (n, m) float16 or float32, scale (n,). Dividing the sums of all chunks by the sentence count
    gives Eq. 9. A float16 `act` is widened tile by tile, in cache, rather than as one more (n, m) array.
    One matrix product covers the whole chunk; the ~15 elementwise passes after it run on row tiles, which keeps
    them in cache instead of streaming (n, m) arrays through memory 15 times.
    """
    if terms.dist == "cosine":
        resid32 = np.ascontiguousarray(resid, dtype=np.float32)
        resid64 = resid32.astype(np.float64)
        # (n, m) r.v: the only product that scales with n*m*d
        cross = np.matmul(resid32, terms.values.T,
                          out=_scratch.get("cross", (len(resid32), len(terms.values)), np.float32))
        resid_norm = np.sqrt(np.einsum("nd,nd->n", resid64, resid64))
        resid_dot_centroid = resid64 @ terms.centroid
    else:
        diff64 = np.asarray(resid, dtype=np.float64) - terms.centroid  # u = r - c, formed before rounding
        cross = np.matmul(diff64.astype(np.float32), terms.values.T,  # (n, m) u.v
                          out=_scratch.get("cross", (len(diff64), len(terms.values)), np.float32))
        diff_norm = np.sqrt(np.einsum("nd,nd->n", diff64, diff64))
    scale32 = scale.astype(np.float32)
    unit_scale = bool(np.all(scale32 == 1))
    tile_rows = max(1, TILE_VALUES // cross.shape[1])

    def partial_sums(first: int, end: int) -> np.ndarray:  # rows first..end-1; run on the cores in parallel
        sums = np.zeros(cross.shape[1], dtype=np.float64)
        for lo in range(first, end, tile_rows):
            tile = slice(lo, min(lo + tile_rows, end))
            alpha = act[tile]
            if alpha.dtype == np.float16:
                alpha = widen_f16(alpha, _scratch.get("alpha", alpha.shape, np.float32))
            # a = alpha * s (frozen norm); s is 1 for every family without a post-MLP norm
            act_eff = alpha if unit_scale else np.multiply(alpha, scale32[tile, None], dtype=np.float32)
            if terms.dist == "cosine":
                gain = cosine_gain(act_eff, cross[tile], resid_norm[tile], resid_dot_centroid[tile],
                                   terms.value_dot_centroid, terms.value_sq, terms.centroid_norm)
            else:
                gain = euclidean_gain(act_eff, cross[tile], diff_norm[tile], terms.value_sq)
            sums += gain.sum(axis=0, dtype=np.float64)
        return sums

    return np.sum(over_slices(cross.shape[0], partial_sums, min_items=tile_rows), axis=0)


def cosine_gain(
    act: np.ndarray, cross: np.ndarray, resid_norm: np.ndarray, resid_dot_centroid: np.ndarray,
    value_dot_centroid: np.ndarray, value_sq: np.ndarray, centroid_norm: float,
) -> np.ndarray:
    """cos(r + a v, c) - cos(r, c) per (sentence, neuron); (n, m) float32.

    act, cross (n, m): a_ki and r_k.v_i; resid_norm, resid_dot_centroid (n,); value_dot_centroid, value_sq (m,).
    With s = |r|, t = 2 r.v + a |v|^2 and D = |r + a v| = sqrt(s^2 + a t):
        N - L = a * (v.c * s - r.c * t / (D + s)) / (|c| * D * s)
    which follows from D - s = a t / (D + s) and has no cancellation between N and L.
    """
    s = resid_norm.astype(np.float32)[:, None]
    rc = resid_dot_centroid.astype(np.float32)[:, None]
    vc = value_dot_centroid.astype(np.float32)[None, :]
    vv = value_sq.astype(np.float32)[None, :]
    t = np.multiply(act, vv)
    t += cross
    t += cross
    dist_new = np.multiply(act, t)
    dist_new += s * s
    np.maximum(dist_new, 0.0, out=dist_new)
    np.sqrt(dist_new, out=dist_new)
    out = np.add(dist_new, s)
    np.divide(t, out, out=t)
    t *= rc
    np.multiply(vc, s, out=out)
    out -= t
    out *= act
    dist_new *= s * np.float32(centroid_norm)
    out /= dist_new
    return out


def euclidean_gain(act: np.ndarray, cross: np.ndarray, diff_norm: np.ndarray, value_sq: np.ndarray) -> np.ndarray:
    """-|r + a v - c| + |r - c| per (sentence, neuron); (n, m) float32 (negative distance: closer is better).

    act, cross (n, m): a_ki and (r_k - c).v_i; diff_norm (n,) = |r - c|; value_sq (m,).
    With u = r - c, s = |u|, t = 2 u.v + a |v|^2 and D = sqrt(s^2 + a t):  N - L = -(D - s) = -a t / (D + s).
    """
    s = diff_norm.astype(np.float32)[:, None]
    vv = value_sq.astype(np.float32)[None, :]
    t = np.multiply(act, vv)
    t += cross
    t += cross
    t *= act
    dist_new = np.add(t, s * s)
    np.maximum(dist_new, 0.0, out=dist_new)
    np.sqrt(dist_new, out=dist_new)
    dist_new += s
    np.divide(t, dist_new, out=t)
    np.negative(t, out=t)
    return t
