"""Named neuron sets: random baselines drawn like a transfer-neuron set, listing what is stored, and loading a
set by name for deactivation.

A random baseline (method §5) has as many neurons as its transfer-neuron set, drawn uniformly without replacement
from the same candidate layers (all neurons of layers layer_start .. layer_end - 1) minus that set's neurons.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pyarrow as pa

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.models.deactivation import NeuronSet
from tnstore.store.schema import SAFE_NAME
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    from tnstore.store.relation import Relation

LIKE_KEYS = ("type", "lang", "split", "dist", "layers", "top", "set")


@dataclass(frozen=True)
class RandomSet:
    name: str
    like_set_id: str
    seed: int
    layer_start: int
    layer_end: int
    layers: np.ndarray  # (k,) int32
    neurons: np.ndarray  # (k,) int32


def draw_random(
    tn_layers: np.ndarray, tn_neurons: np.ndarray, layer_start: int, layer_end: int, d_mlp: int, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """As many (layer, neuron) as the TN set, uniform without replacement from layers [start, end) minus the TNs.

    Returns (layers, neurons), int32, sorted by layer then neuron. Same inputs and seed -> same draw.
    """
    k = len(tn_layers)
    first = layer_start * d_mlp
    candidates = np.arange(first, layer_end * d_mlp, dtype=np.int64)
    taken = np.asarray(tn_layers, dtype=np.int64) * d_mlp + np.asarray(tn_neurons, dtype=np.int64)
    pool = np.setdiff1d(candidates, taken, assume_unique=True)
    if k > len(pool):
        raise TnstoreError(
            f"a random set of {k} neurons does not fit in the {len(pool)} candidates left outside the set "
            f"(layers {layer_start}:{layer_end}); use a smaller top")
    chosen = np.sort(np.random.default_rng(seed).choice(pool, size=k, replace=False))
    return (chosen // d_mlp).astype(np.int32), (chosen % d_mlp).astype(np.int32)


def find_set(store: Store, like: Mapping[str, object], top: int | None = None) -> dict:
    """The one transfer_neurons set matching `like` (and `top`); an error lists the choices when not exactly one.

    like: {"type": 1, "lang": "ja"} and optionally split, dist, layers ("A:B" or (A, B)), top, set (a set_id).
    """
    unknown = sorted(set(like) - set(LIKE_KEYS))
    if not like or unknown:
        raise ArgumentError("like", f"{{arg}} {dict(like)!r}: give keys among {', '.join(LIKE_KEYS)}, e.g. "
                                    "type=1, lang=ja")
    sets = store.sql(
        "SELECT set_id, lang, type, split, dist, layer_start, layer_end, top, count(*) AS n "
        "FROM transfer_neurons GROUP BY ALL ORDER BY set_id").to_pylist()
    wanted = {k: _like_value(k, v) for k, v in like.items()}
    if top is not None:
        wanted["top"] = str(top)
    matches = [s for s in sets if all(_matches(s, key, value) for key, value in wanted.items())]
    spec = ",".join(f"{k}={v}" for k, v in wanted.items())
    if not matches:
        stored = ", ".join(s["set_id"] for s in sets) or "none"
        raise TnstoreError(f"no transfer-neuron set matches {spec} (stored: {stored}); run `tnstore detect` first")
    if len(matches) > 1:
        ids = ", ".join(s["set_id"] for s in matches)
        raise ArgumentError(
            "like", f"{len(matches)} transfer-neuron sets match {spec} ({ids}); narrow {{arg}} with top, dist, split or "
                    "layers")
    return matches[0]


def random_baseline(
    store: "str | Path | Store", like: str | Mapping[str, object], top: int | None = None, seed: int = 0,
    name: str | None = None, wait_seconds: float = 0.0,
) -> RandomSet:
    """Draw a random baseline for a transfer-neuron set and store it in `neuron_sets` under `name`.

    like: a set_id, or the set's settings, e.g. {"type": 1, "lang": "ja"} (see `find_set`).
    The default name is `random_<set_id>_seed<seed>`; storing under an existing name replaces that set.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ArgumentError("seed", f"{{arg}} {seed!r}: use a seed >= 0")
    store = open_store(store)
    like = {"set": like} if isinstance(like, str) else like
    with store.writing("neurons random", wait_seconds):
        tn = find_set(store, like, top)
        name = name or f"random_{tn['set_id']}_seed{seed}"
        if not SAFE_NAME.match(name):
            raise ArgumentError("name", f"{{arg}} {name!r}: use letters, digits, '-', '_', '.' or '=' only")
        members = store.query("SELECT layer, neuron FROM transfer_neurons WHERE set_id = ?", [tn["set_id"]])
        layers, neurons = draw_random(
            members.column("layer").to_numpy(), members.column("neuron").to_numpy(),
            tn["layer_start"], tn["layer_end"], int(store.model_facts["d_mlp"]), seed)
        store.write_rows("neuron_sets", _set_table(name, tn, seed, layers, neurons))
    return RandomSet(name, tn["set_id"], seed, tn["layer_start"], tn["layer_end"], layers, neurons)


def list_sets(store: "str | Path | Store") -> "Relation":
    """One row per stored set: transfer-neuron sets (origin 'detect') and named sets, with their sizes; a lazy
    relation (`.pl()`, `.arrow()`)."""
    return open_store(store, mode="r").sql(LIST_SQL)


def load_set(store: Store, name: str, arg: str = "name") -> NeuronSet:
    """A stored neuron set by name: a `neuron_sets` name or a `transfer_neurons` set_id, checked against the
    model's shape. `arg` names the argument in errors."""
    pairs = store.query(
        "SELECT layer, neuron FROM neuron_sets WHERE name = ? "
        "UNION SELECT layer, neuron FROM transfer_neurons WHERE set_id = ?", [name, name])
    if pairs.num_rows == 0:
        raise ArgumentError(arg, f"{{arg}} {name!r}: no neuron set or transfer-neuron set_id of that name in "
                                 f"{store.path}; see `tnstore neurons list`")
    layers, neurons = pairs.column("layer").to_numpy(), pairs.column("neuron").to_numpy()
    facts = store.model_facts
    if layers.min() < 0 or neurons.min() < 0 or layers.max() >= facts["n_layers"] or neurons.max() >= facts["d_mlp"]:
        raise ArgumentError(arg, f"{{arg}} {name!r} names neurons outside this model's "
                                 f"{facts['n_layers']} x {facts['d_mlp']}")
    return NeuronSet.from_pairs(name, layers, neurons)


LIST_SQL = """
SELECT set_id AS name, 'detect' AS origin, lang, type, layer_start, layer_end, count(*) AS n,
       NULL::VARCHAR AS like_set_id, NULL::BIGINT AS seed
FROM transfer_neurons GROUP BY ALL
UNION ALL
SELECT name, origin, lang, type, layer_start, layer_end, count(*) AS n, like_set_id, seed
FROM neuron_sets GROUP BY ALL
ORDER BY origin, name
"""


def _like_value(key: str, value: object) -> str:
    """A `like` value as find_set compares it: layers as "A:B" (from "A:B", (A, B) or range(A, B))."""
    if key == "layers" and isinstance(value, range):
        return f"{value.start}:{value.stop}"
    if key == "layers" and isinstance(value, (tuple, list)) and len(value) == 2:
        return f"{value[0]}:{value[1]}"
    return str(value)


def _matches(stored: dict, key: str, value: str) -> bool:
    if key == "set":
        return stored["set_id"] == value
    if key == "layers":
        return f"{stored['layer_start']}:{stored['layer_end']}" == value.replace(" ", "")
    return str(stored[key]) == value


def _set_table(name: str, tn: dict, seed: int, layers: np.ndarray, neurons: np.ndarray) -> pa.Table:
    k = len(layers)
    return pa.table({
        "name": [name] * k, "origin": ["random"] * k, "like_set_id": [tn["set_id"]] * k,
        "seed": np.full(k, seed, np.int64), "lang": [tn["lang"]] * k, "type": np.full(k, tn["type"], np.int8),
        "layer_start": np.full(k, tn["layer_start"], np.int32), "layer_end": np.full(k, tn["layer_end"], np.int32),
        "layer": layers, "neuron": neurons,
    })
