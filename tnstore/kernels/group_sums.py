"""Fused per-group sums for the group-statistics pass: one read of each activation, everything else in registers.

For a block of rows of one layer (B, D), its rows' group codes (B,), and per-group shifts (G, D) float64:

    total[g, j]    += Σ_{rows r of group g} (x[r, j] - shift[g, j])
    total_sq[g, j] += Σ_{rows r of group g} (x[r, j] - shift[g, j])²

in float64. numpy needs six passes over each block for this (widen, copy to float64, subtract, sum, square,
sum: ~1.6 ns a value on one core); compiled, it is one pass (~0.2 ns), which is why numba is a dependency.
float16 values are widened with the exact bit trick of tnstore.store.f16, inf and nan included, so a damaged
store shows in the sums (the caller checks them) instead of passing as a number.

Columns are split into chunks processed in parallel (prange); within a chunk, rows go one by one, so each
row's columns run contiguously and vectorise. Compiled on first use and cached on disk (numba's cache=True).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_REBIAS = np.float32(2.0**112)
_KEEP = np.int32(np.array(0x8FFFE000, dtype=np.uint32).view(np.int32))
_HIGH_EXPONENT = np.int32(0x70000000)  # float32 exponent bits the shift leaves at zero
_ONE = np.float32(1.0)


@njit(parallel=True, nogil=True, cache=True)
def add_float16(bits, codes, shift, total, total_sq, chunk):  # pragma: no cover - compiled
    """bits (B, D) int16: the float16 block viewed as int16; codes (B,) int64; shift, total, total_sq (G, D)."""
    n_rows, width = bits.shape
    for k in prange((width + chunk - 1) // chunk):
        lo, hi = k * chunk, min(k * chunk + chunk, width)
        wide = np.empty(hi - lo, np.int32)
        for r in range(n_rows):
            g = codes[r]
            row = bits[r, lo:hi]
            for c in range(hi - lo):
                h = np.int32(row[c])
                # sign, exponent and mantissa moved into float32's place (times 2**-112, undone by the scale
                # below); an all-ones float16 exponent (inf, nan) sets float32's to all ones too (inf, nan)
                wide[c] = ((h << 13) & _KEEP) | (np.int32((h & 0x7C00) == 0x7C00) * _HIGH_EXPONENT)
            _add_row(wide.view(np.float32), _REBIAS, shift[g, lo:hi], total[g, lo:hi], total_sq[g, lo:hi])


@njit(parallel=True, nogil=True, cache=True)
def add_float(values, codes, shift, total, total_sq, chunk):  # pragma: no cover - compiled
    """values (B, D) float32 or float64; the rest as in add_float16."""
    n_rows, width = values.shape
    for k in prange((width + chunk - 1) // chunk):
        lo, hi = k * chunk, min(k * chunk + chunk, width)
        for r in range(n_rows):
            g = codes[r]
            _add_row(values[r, lo:hi], _ONE, shift[g, lo:hi], total[g, lo:hi], total_sq[g, lo:hi])


@njit(inline="always", nogil=True, cache=True)
def _add_row(row, scale, shift, total, total_sq):  # pragma: no cover - compiled
    """One row's contribution to its group's (D,) sums: d = row * scale - shift, float64."""
    for c in range(row.shape[0]):
        d = np.float64(row[c] * scale) - shift[c]
        total[c] += d
        total_sq[c] += d * d
