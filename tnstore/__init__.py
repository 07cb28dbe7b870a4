"""tnstore: an activation store with SQL analytics for the Transfer Neurons Hypothesis (EMNLP 2025).

Pipeline, one subpackage each: models (adapters per family) -> capture (one forward pass) -> store (Zarr +
Parquet, schemas/) -> kernels (streaming numpy over Zarr chunks) -> analysis (results written back as tables)
-> queries (SQL) -> cli / figures.
"""
import os as _os

# With few cores and another busy process, OpenMP's default spin-wait makes torch forwards 3-20x slower.
# It must be set before torch is imported, so it is set here, the first tnstore import.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# OpenBLAS (numpy's BLAS) keeps its idle threads spinning for ~0.1 s after each product; on two cores they then
# starve the thread that reads the next block, so a pipelined detection runs no faster than a serial one.
# Read when numpy loads OpenBLAS, so this only holds where tnstore is imported before numpy (the CLI is).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
