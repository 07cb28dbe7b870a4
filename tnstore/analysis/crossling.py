"""Cross-lingual deactivation (method §5, App. I, Tab. 21-23): does deactivating language L1's transfer neurons
move language L2's representations as much as deactivating L2's own?

For every input language L2 and every Type-T set of a language L1 (L1 = L2 is "Same"):

    cos(C_L2^l, C_L2^(l, -L1 TN))

the cosine between the centroid of L2's sentences at hidden index l (kind parallel, the split's plain capture)
and the centroid of the same sentences replayed with L1's set deactivated. Both centroids average over exactly the
same sentences (those replayed; `limit` keeps the first N per language). The paper reports the output of the last
candidate layer (Type-1: layer 20 of 32, the last of its range; Type-2: the final layer): hidden index = the
set's layer_end; `layer` picks another hidden index, `all_layers` every one.

The replays it needs (the L2 sentences with each L1's set) run through `tnstore.capture.replay.replay`, which
reuses those already in the store and loads the model once, only if something is missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.store import selection as S
from tnstore.store.frames import to_polars
from tnstore.store.schema import conform
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    import polars as pl

    from tnstore.capture.replay import ReplayResult

TYPES = (1, 2)
TABLE = "crossling_deactivation"


@dataclass(frozen=True)
class CrossLingualResult:
    """The cells written (`table_arrow`, Polars via `table`), the set used for each L1, the sentences per L2, and
    what the replay step did."""

    type: int
    split: str
    positions: str
    langs: list[str]
    sets: dict[str, str]  # L1 -> set_id
    counts: dict[str, int]  # L2 -> sentences both centroids average over
    table_arrow: pa.Table
    replay: "ReplayResult"

    @property
    def table(self) -> "pl.DataFrame":
        return to_polars(self.table_arrow)

    @property
    def hidden_indices(self) -> list[int]:
        return sorted(set(self.table_arrow.column("hidden_index").to_pylist()))

    def matrix(self, hidden_index: int | None = None) -> pa.Table:
        """The paper's table at one hidden index (default: the report layer): one row per deactivated set's
        language L1 (`set_lang`), one column per input language L2; the diagonal is "Same"."""
        rows = self.table_arrow.to_pylist()
        if hidden_index is None:
            reported = [r["hidden_index"] for r in rows if r["report_layer"]]
            hidden_index = reported[0] if reported else rows[0]["hidden_index"]
        cells = {(r["set_lang"], r["input_lang"]): r["cosine"] for r in rows if r["hidden_index"] == hidden_index}
        out: dict[str, list] = {"set_lang": list(self.langs)}
        for l2 in self.langs:
            out[l2] = [cells.get((l1, l2)) for l1 in self.langs]
        return pa.table(out)


def cross_lingual(
    store: "str | Path | Store", type: int, langs: Sequence[str] | None = None, split: str = "test",
    layer: int | None = None, all_layers: bool = False, top: int | None = None, positions: str = "last",
    limit: int | None = None, model: str | None = None, device: str = "auto", dtype: str = "float32",
    storage_dtype: str | None = None, batch_size: int = 32, wait_seconds: float = 0.0, progress: bool = False,
    command: str = "",
) -> CrossLingualResult:
    """App. I: cos(C_L2^l, C_L2^(l, -L1 TN)) for every L1, L2 in `langs` (default: every language with a Type-`type`
    transfer-neuron set), writing `crossling_deactivation`.

    type: 1 or 2; top: pick each language's set by its top-n when several are stored; layer: a hidden index
    (default: each set's last candidate layer's output); all_layers: every hidden index 0..L. split, positions,
    limit and the compute options go to the replays (see `tnstore.capture.replay.replay`).
    """
    from tnstore.analysis.neurons import find_set
    from tnstore.capture.replay import POSITIONS, replay, source_rows

    if type not in TYPES:
        raise ArgumentError("type", f"{{arg}} {type!r} is not 1 or 2")
    if positions not in POSITIONS:
        raise ArgumentError("positions", f"{{arg}} {positions!r} is not one of {', '.join(POSITIONS)}")
    if layer is not None and all_layers:
        raise ArgumentError("layer", "{arg} and {arg:all_layers} exclude each other; give one")
    store = open_store(store)
    n_hidden = int(store.model_facts["n_layers"]) + 1
    if layer is not None and not (isinstance(layer, (int, np.integer)) and 0 <= layer < n_hidden):
        raise ArgumentError("layer", f"{{arg}} {layer!r}: a hidden index 0..{n_hidden - 1} (0 = embeddings, l = output "
                                     "of layer l)")
    if langs is None:
        langs = store.sql("SELECT DISTINCT lang FROM transfer_neurons WHERE type = ? ORDER BY lang",
                          [type]).arrow().column(0).to_pylist()
        if not langs:
            raise TnstoreError(f"store {store.path} has no Type-{type} transfer-neuron set; run `tnstore detect "
                               f"--type {type} --lang L` for each language first")
    langs = list(dict.fromkeys(langs))
    sets = {l1: find_set(store, {"type": type, "lang": l1}, top) for l1 in langs}
    result = replay(store, [s["set_id"] for s in sets.values()], split=split, langs=langs, kind="parallel",
                    limit=limit, positions=positions, model=model, device=device, dtype=dtype,
                    storage_dtype=storage_dtype, batch_size=batch_size, wait_seconds=wait_seconds,
                    progress=progress, command=command)

    # The sentences of each L2: exactly those the replay covered (the first `limit` per language).
    plain = source_rows(store, split, langs, "parallel", None, limit)
    records, counts = [], {}
    for l1, info in sets.items():
        ablated = _replayed(store, info["set_id"], positions)
        report = int(info["layer_end"])
        indices = list(range(n_hidden)) if all_layers else [report if layer is None else int(layer)]
        for l2 in langs:
            mine = plain["lang"] == l2
            plain_rows = plain["row"][mine].astype(np.int64)
            ablated_rows = np.array([ablated.get(key, -1) for key in plain["identity"][mine]], dtype=np.int64)
            if (ablated_rows < 0).any():  # replay() ran just now, so only a concurrent writer could cause this
                raise TnstoreError(f"some {l2} sentences of split {split} have no replay with {info['set_id']}; run "
                                   f"`tnstore replay {store.path} --split {split} --langs {l2} --sets "
                                   f"{info['set_id']}`")
            counts[l2] = len(plain_rows)
            for index in indices:
                before = store.read_rows("hidden", plain_rows, index).astype(np.float64).mean(axis=0)
                after = store.read_rows("hidden", ablated_rows, index).astype(np.float64).mean(axis=0)
                records.append({"type": type, "input_lang": l2, "set_lang": l1, "set_id": info["set_id"],
                                "split": split, "positions": positions, "hidden_index": index,
                                "report_layer": index == report, "n": len(plain_rows),
                                "cosine": _cosine(before, after)})
    table = conform(TABLE, pa.Table.from_pylist(records))
    with store.writing("replay cross-lingual", wait_seconds):
        store.write_rows(TABLE, table)
    return CrossLingualResult(type, split, positions, langs, {l1: s["set_id"] for l1, s in sets.items()}, counts,
                              table, result)


def _replayed(store: Store, set_id: str, positions: str) -> dict[str, int]:
    """Sentence identity -> its lowest row replayed with `set_id` at `positions`."""
    found = store.query(
        "SELECT s.row, s.lang, s.split, s.kind, s.pair_id, s.source, s.source_line FROM sentences s JOIN runs r "
        "USING (run_id) WHERE s.ablation = ? AND r.ablation_scope = ? ORDER BY s.row DESC", [set_id, positions])
    col = {name: found.column(name).to_numpy(zero_copy_only=False) for name in found.column_names}
    keys = S.identity(col) if found.num_rows else []
    return {str(key): int(row) for key, row in zip(keys, col["row"])}  # descending: the lowest row wins


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 else 0.0
