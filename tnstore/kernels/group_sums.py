"""Fused per-group sums for the group-statistics pass: one read of each activation, everything else in registers.

For a block of rows of one layer (B, D), its rows' group codes (B,), and per-group shifts (G, D) float64:

    total[g, j]    += Σ_{rows r of group g} (x[r, j] - shift[g, j])
    total_sq[g, j] += Σ_{rows r of group g} (x[r, j] - shift[g, j])²

in float64. numpy needs six passes over each block for this (widen, copy to float64, subtract, sum, square,
sum: ~1.6 ns a value on one core); compiled, it is one pass (~0.2 ns), which is why numba is a dependency.
float16 values are widened with the exact bit trick of tnstore.compute.f16, inf and nan included, so a damaged
store shows in the sums (the caller checks them) instead of passing as a number.

Columns are split into chunks processed in parallel (prange); within a chunk, the block's rows go group by group
(the caller sorts them), four at a time, so each row's columns run contiguously and vectorise and the float64
accumulators are touched once per four rows. Compiled on first use and cached on disk (numba's cache=True).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_REBIAS = np.float32(2.0**112)
_KEEP = np.int32(np.array(0x8FFFE000, dtype=np.uint32).view(np.int32))
_HIGH_EXPONENT = np.int32(0x70000000)  # float32 exponent bits the shift leaves at zero
_ONE = np.float32(1.0)


@njit(parallel=True, nogil=True, cache=True)
def add_float16(bits, order, run_group, run_start, run_end, shift, total, total_sq, chunk):  # pragma: no cover
    """bits (B, D) int16: the float16 block viewed as int16. The rows in `order` (B,) come in runs of one group:
    run i is order[run_start[i]:run_end[i]], of group run_group[i]. shift, total, total_sq: (G, D) float64."""
    width = bits.shape[1]
    for k in prange((width + chunk - 1) // chunk):
        lo, hi = k * chunk, min(k * chunk + chunk, width)
        wide = np.empty((4, hi - lo), np.int32)
        rows = wide.view(np.float32)
        for run in range(run_group.shape[0]):
            g, start, end = run_group[run], run_start[run], run_end[run]
            s, t, q = shift[g, lo:hi], total[g, lo:hi], total_sq[g, lo:hi]
            for r in range(start, end - 3, 4):
                for j in range(4):
                    _widen(bits[order[r + j], lo:hi], wide[j])
                _add_four(rows[0], rows[1], rows[2], rows[3], _REBIAS, s, t, q)
            for r in range(end - (end - start) % 4, end):
                _widen(bits[order[r], lo:hi], wide[0])
                _add_one(rows[0], _REBIAS, s, t, q)


@njit(parallel=True, nogil=True, cache=True)
def add_float(values, order, run_group, run_start, run_end, shift, total, total_sq, chunk):  # pragma: no cover
    """values (B, D) float32 or float64; the rest as in add_float16."""
    width = values.shape[1]
    for k in prange((width + chunk - 1) // chunk):
        lo, hi = k * chunk, min(k * chunk + chunk, width)
        for run in range(run_group.shape[0]):
            g, start, end = run_group[run], run_start[run], run_end[run]
            s, t, q = shift[g, lo:hi], total[g, lo:hi], total_sq[g, lo:hi]
            for r in range(start, end - 3, 4):
                _add_four(values[order[r], lo:hi], values[order[r + 1], lo:hi], values[order[r + 2], lo:hi],
                          values[order[r + 3], lo:hi], _ONE, s, t, q)
            for r in range(end - (end - start) % 4, end):
                _add_one(values[order[r], lo:hi], _ONE, s, t, q)


@njit(inline="always", nogil=True, cache=True)
def _widen(row, out):  # pragma: no cover - compiled
    """float16 bits (int16) -> float32 bits times 2**-112 (undone by the caller's scale); an all-ones float16
    exponent (inf, nan) sets float32's to all ones too, so inf and nan stay what they are."""
    for c in range(row.shape[0]):
        h = np.int32(row[c])
        out[c] = ((h << 13) & _KEEP) | (np.int32((h & 0x7C00) == 0x7C00) * _HIGH_EXPONENT)


@njit(inline="always", nogil=True, cache=True)
def _add_four(x0, x1, x2, x3, scale, shift, total, total_sq):  # pragma: no cover - compiled
    """Four rows of one group into its (D,) sums, d = x * scale - shift in float64: the accumulators are read
    and written once per four rows, which is what bounds this loop."""
    for c in range(shift.shape[0]):
        s = shift[c]
        d0 = np.float64(x0[c] * scale) - s
        d1 = np.float64(x1[c] * scale) - s
        d2 = np.float64(x2[c] * scale) - s
        d3 = np.float64(x3[c] * scale) - s
        total[c] += (d0 + d1) + (d2 + d3)
        total_sq[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)


@njit(inline="always", nogil=True, cache=True)
def _add_one(x, scale, shift, total, total_sq):  # pragma: no cover - compiled
    for c in range(shift.shape[0]):
        d = np.float64(x[c] * scale) - shift[c]
        total[c] += d
        total_sq[c] += d * d
