"""Helpers for the statistics tests: synthetic stores (chosen activations written through the Store API, no model),
transfer-neuron sets written as detection would, reference statistics written from the definitions, the CLI."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import zarr

from tnstore.store.schema import arrow_schema
from tnstore.store.store import Store


def model_facts(n_layers: int, d_mlp: int, storage_dtype: str) -> dict:
    facts = {
        "model_spec": "synthetic", "model_source": "synthetic", "family": "llama", "architecture": "Synthetic",
        "n_layers": n_layers, "d_model": 8, "d_mlp": d_mlp, "vocab_size": 1, "compute_dtype": "float32",
        "storage_dtype": storage_dtype, "fingerprint": "synthetic", "tokenizer_adds_bos": False, "bos_token": "",
        "mlp_out_norm": "",
    }
    return {name: facts.get(name) for name in arrow_schema("model").names if name != "created_at"}


def _table(name: str, columns: dict) -> pa.Table:
    """`columns` as a table of the store's `name` table; columns the test does not care about are null."""
    n = len(next(iter(columns.values())))
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in arrow_schema(name)})


def write_synthetic_store(path: Path, acts: np.ndarray, langs: list[str], *, splits: list[str] | None = None,
                          ablations: list[str | None] | None = None, storage_dtype: str = "float32",
                          chunk_rows: int = 16, n_runs: int = 2) -> Store:
    """A store whose `mlp_act` is `acts` (N, L, D), with sentences of the given languages, in `n_runs` runs.

    `ablations` marks rows as replay captures with that neuron set deactivated (sentences.ablation)."""
    n, n_layers, d_mlp = acts.shape
    store = Store.create(path, model_facts(n_layers, d_mlp, storage_dtype))
    splits = splits or ["train"] * n
    ablations = ablations or [None] * n
    bounds = np.linspace(0, n, n_runs + 1).astype(int)
    with store.writing("synthetic"):
        for k, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
            write_run(store, f"run{k}", start, acts[start:stop], langs[start:stop], splits[start:stop],
                      ablations[start:stop], storage_dtype, chunk_rows)
    return Store.open(path)


def write_run(store: Store, run_id: str, row_start: int, acts: np.ndarray, langs: list[str], splits: list[str],
              ablations: list[str | None], storage_dtype: str, chunk_rows: int) -> None:
    n = len(acts)
    group = store.create_segment(run_id, n, {"mlp_act": acts.shape[1:]}, {"mlp_act": storage_dtype}, chunk_rows)
    group["mlp_act"][:] = acts.astype(storage_dtype)
    rows = np.arange(row_start, row_start + n, dtype=np.int64)
    store.write_rows("sentences", _table("sentences", {
        "row": rows, "run_id": [run_id] * n, "lang": langs, "text": [f"s{r}" for r in rows],
        "pair_id": [f"p{r}" for r in rows], "split": splits, "kind": ["parallel"] * n,
        "source": ["synthetic"] * n, "source_line": rows, "n_tokens": np.full(n, 5, dtype=np.int32),
        "ablation": pa.array(ablations, pa.string()),
    }))
    now = datetime.now(timezone.utc)
    store.write_rows("runs", _table("runs", {k: [v] for k, v in {
        "run_id": run_id, "command": "synthetic", "corpus": "synthetic", "corpus_sha256": "", "split": splits[0],
        "kind": "parallel", "limit_rows": None, "row_start": row_start, "row_end": row_start + n, "n_sentences": n,
        "batch_size": 1, "device": "cpu", "compute_dtype": "float32", "storage_dtype": storage_dtype,
        "ablation": None, "ablation_scope": None, "seconds": 0.0, "started_at": now, "finished_at": now,
        "tnstore_version": "test",
    }.items()}))


def write_tn_set(store: Store, set_id: str, lang: str, type_: int, neurons: list[tuple[int, int]], *,
                 layers: tuple[int, int] = (0, 4), dist: str = "cosine", split: str = "train",
                 top: int | None = None) -> None:
    """A transfer_neurons set as detection would write it: `neurons` in rank order (rank 1 first)."""
    k = len(neurons)
    with store.writing("test tn set"):
        store.write_rows("transfer_neurons", _table("transfer_neurons", {
            "set_id": [set_id] * k, "analysis_id": [f"a-{set_id}"] * k, "lang": [lang] * k, "type": [type_] * k,
            "split": [split] * k, "where_sql": ["ablation IS NULL"] * k, "dist": [dist] * k,
            "layer_start": [layers[0]] * k, "layer_end": [layers[1]] * k,
            "top": [top or k] * k, "rank": list(range(1, k + 1)), "layer": [layer for layer, _ in neurons],
            "neuron": [neuron for _, neuron in neurons], "score": list(np.linspace(1.0, 0.0, k)),
        }))


def random_neurons(rng: np.random.Generator, k: int, layers: tuple[int, int], d_mlp: int) -> list[tuple[int, int]]:
    """k distinct (layer, neuron) pairs from the layer range, in random order."""
    cells = [(layer, neuron) for layer in range(*layers) for neuron in range(d_mlp)]
    picked = rng.choice(len(cells), size=k, replace=False)
    return [cells[i] for i in picked]


# ------------------------------------------------------------------------------------------------ references
def raw_activations(path: Path) -> np.ndarray:
    """(N, L, D) float64 mlp_act of every finished run, read straight from Zarr (not through Store.iter_rows)."""
    runs = sorted(pq_rows(path / "tables" / "runs"), key=lambda r: r["row_start"])
    parts = [zarr.open_group(str(path / "segments" / f"{r['run_id']}.zarr"), mode="r")["mlp_act"][:] for r in runs]
    return np.concatenate(parts).astype(np.float64)


def pq_rows(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for f in sorted(folder.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def eta2_reference(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """η² from its definition, Σ_g n_g (mean_g - mean)² / Σ (x - mean)², for each column of x (N, K)."""
    mean = x.mean(axis=0)
    between = sum((labels == g).sum() * (x[labels == g].mean(axis=0) - mean) ** 2 for g in np.unique(labels))
    return between / ((x - mean) ** 2).sum(axis=0)


# ------------------------------------------------------------------------------------------------ CLI, store state


def snapshot(path: Path) -> dict[str, str]:
    """Content hash of every file under a store, to prove a failed command changed nothing."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}
