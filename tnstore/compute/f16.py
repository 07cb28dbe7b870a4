"""float16 -> float32 widening at memory speed, in plain numpy.

numpy converts float16 one element at a time (~2 ns a value): for a LLaMA-8B layer's value vectors (59 M values)
that is longer than reading and decompressing them. The conversion below is exact and uses three vectorised
integer/float passes on cache-sized tiles (~0.8 ns a value):

    bits(f32) = sign << 31 | (exponent and mantissa bits of f16) << 13,   then  x * 2**112

The shift puts the 5-bit exponent and 10-bit mantissa where float32 keeps them; multiplying by 2**112 re-biases the
exponent (15 -> 127) and turns float16 subnormals into the right normal float32 values. Only inf and nan come out
wrong (as finite values of magnitude >= 65536), so a tile that holds one (all exponent bits set) is converted
again by numpy.
"""
from __future__ import annotations

import numpy as np

from tnstore.compute.parallel import over_slices

_REBIAS = np.float32(2.0**112)
# After `int16 << 13` (sign-extended), bit 31 is the sign and bits 13..27 hold exponent and mantissa;
# bits 28..30 are copies of the sign and must go.
_KEEP = np.array(0x8FFFE000, dtype=np.uint32).view(np.int32)
_EXPONENT = np.uint16(0x7C00)  # float16 exponent bits; all set = inf or nan
TILE_VALUES = 32768  # per pass: a 64 KiB int16 source and a 128 KiB float32 target stay in L2
PARALLEL_TILES = 16  # tiles per thread below which one thread converts the whole array


def widen_f16(src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 copy of a float16 array of any shape and strides; written into `out` (same shape) if given."""
    if src.dtype != np.float16:
        raise TypeError(f"widen_f16 needs float16, got {src.dtype}")
    if out is None:
        out = np.empty(src.shape, dtype=np.float32)
    elif out.shape != src.shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {src.shape}")
    if src.size == 0:
        return out
    src2 = src.reshape(src.shape[0] if src.ndim else 1, -1)  # copies only when strides forbid a view
    out2 = out.reshape(src2.shape) if out.flags.c_contiguous else None
    if out2 is None:  # a non-contiguous target: widen into a temporary, then copy
        out[...] = widen_f16(np.ascontiguousarray(src))
        return out
    rows_per_tile = max(1, TILE_VALUES // max(1, src2.shape[1]))

    def widen_rows(first: int, end: int) -> None:
        for lo in range(first, end, rows_per_tile):
            hi = min(lo + rows_per_tile, end)
            _widen_tile(src2[lo:hi], out2[lo:hi])

    over_slices(src2.shape[0], widen_rows, min_items=PARALLEL_TILES * rows_per_tile)
    return out


def _widen_tile(src: np.ndarray, out: np.ndarray) -> None:
    widen_bits(src, out)
    exponents = np.bitwise_and(src.view(np.uint16), _EXPONENT)  # one pass over the half-size source
    if exponents.max() == _EXPONENT:  # an inf or nan was in the tile
        np.copyto(out, src, casting="unsafe")


def widen_bits(src: np.ndarray, out: np.ndarray) -> None:
    """The bit-level conversion alone (exact for finite values): float16 `src` into float32 `out`, same shape."""
    bits = out.view(np.int32)
    np.left_shift(src.view(np.int16), 13, out=bits, dtype=np.int32)  # int32 loop: sign-extends, then shifts
    np.bitwise_and(bits, _KEEP, out=bits)
    np.multiply(out, _REBIAS, out=out)
