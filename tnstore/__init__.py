"""tnstore: an activation store with SQL analytics for the Transfer Neurons Hypothesis (EMNLP 2025).

    import tnstore
    s = tnstore.open("store")                                  # a Store: SQL over its tables, reads of its arrays
    s.sql("SELECT * FROM transfer_neurons WHERE lang = ?", ["ja"]).pl()
    x = s.states("hidden", where="lang = 'ja' AND split = 'test'", layers=[10, 20])
    r = tnstore.detect(s, type=1, lang="ja", top=1000, layers=range(0, 19))
    tnstore.stats.corr_ratio(s, label="language")
    tnstore.replay(s, sets=[r.set_id], split="test", langs=["ja"])   # the L2 side with the set deactivated
    tnstore.latent.similarity(s, lang="ja", split="test", conditions=["none", r.set_id])
    tnstore.figures.plot(s, "tn-layers", "figs/")              # the paper's figures from the store's tables
    tnstore.report.build(s, "report.html")                     # one self-contained HTML report

Pipeline, one subpackage each: models (adapters per family) -> capture (one forward pass) -> store (Zarr +
Parquet, schemas/) -> kernels (streaming numpy over Zarr chunks) -> analysis (results written back as tables)
-> queries (SQL) -> cli / figures / report. Importing tnstore loads none of torch, duckdb, zarr or polars: each public name
is imported on first use.
"""
import os as _os
from importlib import import_module as _import_module

# With few cores and another busy process, OpenMP's default spin-wait makes torch forwards 3-20x slower.
# It must be set before torch is imported, so it is set here, the first tnstore import.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# OpenBLAS (numpy's BLAS) keeps its idle threads spinning for ~0.1 s after each product; on two cores they then
# starve the thread that reads the next block, so a pipelined detection runs no faster than a serial one.
# Read when numpy loads OpenBLAS, so this only holds where tnstore is imported before numpy (the CLI is).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# TNSTORE_THREADS caps every thread pool tnstore uses: its own, BLAS's, OpenMP's (torch) and numba's.
if _os.environ.get("TNSTORE_THREADS", "").strip().isdigit():
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        _os.environ.setdefault(_name, _os.environ["TNSTORE_THREADS"].strip())

__version__ = "0.2.0"

# public name -> (module, attribute); attribute None = the module itself
_PUBLIC = {
    "open": ("tnstore.store.store", "open_store"),
    "Store": ("tnstore.store.store", "Store"),
    "StoreInfo": ("tnstore.store.store", "StoreInfo"),
    "States": ("tnstore.store.store", "States"),
    "Relation": ("tnstore.store.relation", "Relation"),
    "capture_corpus": ("tnstore.capture.api", "capture_corpus"),
    "Scheduler": ("tnstore.compute.cluster", "Scheduler"),
    "replay": ("tnstore.capture.replay", "replay"),
    "cross_lingual": ("tnstore.analysis.crossling", "cross_lingual"),
    "verify": ("tnstore.store.verify", "verify"),
    "export": ("tnstore.store.export", "export"),
    "detect": ("tnstore.analysis.detect", "detect"),
    "neurons": ("tnstore.analysis.neurons", None),
    "stats": ("tnstore.analysis.stats", None),
    "latent": ("tnstore.analysis.latent", None),
    "eval": ("tnstore.eval", None),
    "queries": ("tnstore.queries", None),
    "figures": ("tnstore.figures", None),
    "report": ("tnstore.report", None),
    "TnstoreError": ("tnstore.errors", "TnstoreError"),
    "ArgumentError": ("tnstore.errors", "ArgumentError"),
    "SqlError": ("tnstore.errors", "SqlError"),
    "ReadOnlyError": ("tnstore.errors", "ReadOnlyError"),
    "DamagedStoreError": ("tnstore.errors", "DamagedStoreError"),
    "RemoteStoreError": ("tnstore.errors", "RemoteStoreError"),
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tnstore' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = _import_module(module) if attribute is None else getattr(_import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
