"""Fused per-group sums for the group-statistics pass: one read of each activation, everything else in registers.

For a block of rows of one layer (B, D), its rows' group codes (B,), and per-group shifts (G, D) float64:

    total[g, j]    += Σ_{rows r of group g} (x[r, j] - shift[g, j])
    total_sq[g, j] += Σ_{rows r of group g} (x[r, j] - shift[g, j])²

in float64. numpy needs six passes over each block for this (widen, copy to float64, subtract, sum, square,
sum: ~1.6 ns a value on one core); compiled, it is one pass (~0.2 ns), which is why numba is a dependency.
float16 values are widened with the exact bit trick of tnstore.store.f16; an inf or nan becomes inf, so it
shows in the sums (the caller checks them) instead of passing as a number.

Columns are split into chunks processed in parallel (prange); within a chunk, rows go one by one, so each
row's columns run contiguously and vectorise. Compiled on first use and cached on disk (numba's cache=True).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_REBIAS = np.float32(2.0**112)
_KEEP = np.int32(np.array(0x8FFFE000, dtype=np.uint32).view(np.int32))


@njit(parallel=True, nogil=True, cache=True)
def add_float16(bits, codes, shift, total, total_sq, chunk):  # pragma: no cover - compiled
    """bits (B, D) int16: the float16 block viewed as int16; codes (B,) int64; shift, total, total_sq (G, D)."""
    n_rows, width = bits.shape
    for k in prange((width + chunk - 1) // chunk):
        lo = k * chunk
        hi = min(lo + chunk, width)
        wide = np.empty(hi - lo, np.int32)
        values = wide.view(np.float32)
        for r in range(n_rows):
            g = codes[r]
            row = bits[r, lo:hi]
            for c in range(hi - lo):
                wide[c] = (np.int32(row[c]) << 13) & _KEEP
            s = shift[g, lo:hi]
            t = total[g, lo:hi]
            q = total_sq[g, lo:hi]
            for c in range(hi - lo):
                x = values[c] * _REBIAS
                if (row[c] & 0x7C00) == 0x7C00:  # inf or nan in float16: make it inf, never a finite number
                    x = np.float32(np.inf)
                d = np.float64(x) - s[c]
                t[c] += d
                q[c] += d * d


@njit(parallel=True, nogil=True, cache=True)
def add_float(values, codes, shift, total, total_sq, chunk):  # pragma: no cover - compiled
    """values (B, D) float32 or float64; the rest as in add_float16."""
    n_rows, width = values.shape
    for k in prange((width + chunk - 1) // chunk):
        lo = k * chunk
        hi = min(lo + chunk, width)
        for r in range(n_rows):
            g = codes[r]
            row = values[r, lo:hi]
            s = shift[g, lo:hi]
            t = total[g, lo:hi]
            q = total_sq[g, lo:hi]
            for c in range(hi - lo):
                d = np.float64(row[c]) - s[c]
                t[c] += d
                q[c] += d * d
