"""Named neuron sets: random baselines drawn like a transfer-neuron set, sets imported from and exported to files,
listing what is stored, and loading a set by name for deactivation.

A random baseline (method §5) has as many neurons as its transfer-neuron set, drawn uniformly without replacement
from the same candidate layers (all neurons of layers layer_start .. layer_end - 1) minus that set's neurons; with
`match_layers`, the same count in each layer as the set, from that layer's other neurons. The seed (default 42,
the authors') and the rule are stored with the set. (The authors draw with Python's `random`; tnstore with
numpy's `default_rng(seed)`, so the same seed gives a different, equally uniform, draw.)

Set names and transfer-neuron set ids share one namespace (`load_set` looks in both), and `none` is reserved for
the plain condition, so a new name may be neither.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pyarrow as pa

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.models.deactivation import NeuronSet
from tnstore.store.schema import SAFE_NAME
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    from tnstore.store.relation import Relation

LIKE_KEYS = ("type", "lang", "split", "dist", "layers", "top", "set")
DEFAULT_SEED = 42  # the authors' (method §9)
PLAIN_CONDITION = "none"  # the condition without deactivation; never a set name
SET_FILE_TYPES = (".csv", ".parquet")


@dataclass(frozen=True)
class RandomSet:
    name: str
    like_set_id: str
    seed: int
    match_layers: bool
    layer_start: int
    layer_end: int
    layers: np.ndarray  # (k,) int32
    neurons: np.ndarray  # (k,) int32


@dataclass(frozen=True)
class ImportedSet:
    """A set read from a file into `neuron_sets` (origin 'import')."""

    name: str
    source: str
    digest: str
    layer_start: int
    layer_end: int
    layers: np.ndarray  # (k,) int32, sorted by layer then neuron
    neurons: np.ndarray  # (k,) int32


@dataclass(frozen=True)
class ExportedSet:
    """A stored set written to a file: `n` rows (columns layer, neuron, and rank, score for a transfer-neuron set)."""

    name: str
    path: Path
    origin: str
    n: int
    digest: str


def draw_random(
    tn_layers: np.ndarray, tn_neurons: np.ndarray, layer_start: int, layer_end: int, d_mlp: int, seed: int,
    match_layers: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """As many (layer, neuron) as the TN set, uniform without replacement from layers [start, end) minus the TNs;
    with `match_layers`, per layer of the set as many as it has there, from that layer's other neurons.

    Returns (layers, neurons), int32, sorted by layer then neuron. Same inputs and seed -> same draw.
    """
    tn_layers = np.asarray(tn_layers, dtype=np.int64)
    tn_neurons = np.asarray(tn_neurons, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if match_layers:
        chosen = []
        for layer, count in zip(*np.unique(tn_layers, return_counts=True)):
            pool = np.setdiff1d(np.arange(d_mlp, dtype=np.int64), tn_neurons[tn_layers == layer])
            if count > len(pool):
                raise TnstoreError(f"layer {layer} has {count} neurons of the set and only {len(pool)} others; a "
                                   "layer-matched random set does not fit")
            chosen.append(layer * d_mlp + rng.choice(pool, size=int(count), replace=False))
        flat = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
        return (flat // d_mlp).astype(np.int32), (flat % d_mlp).astype(np.int32)
    k = len(tn_layers)
    first = layer_start * d_mlp
    candidates = np.arange(first, layer_end * d_mlp, dtype=np.int64)
    taken = tn_layers * d_mlp + tn_neurons
    pool = np.setdiff1d(candidates, taken, assume_unique=True)
    if k > len(pool):
        raise TnstoreError(
            f"a random set of {k} neurons does not fit in the {len(pool)} candidates left outside the set "
            f"(layers {layer_start}:{layer_end}); use a smaller top")
    chosen = np.sort(rng.choice(pool, size=k, replace=False))
    return (chosen // d_mlp).astype(np.int32), (chosen % d_mlp).astype(np.int32)


def find_set(store: Store, like: Mapping[str, object], top: int | None = None) -> dict:
    """The one transfer_neurons set matching `like` (and `top`); an error lists the choices when not exactly one.

    like: {"type": 1, "lang": "ja"} and optionally split, dist, layers ("A:B" or (A, B)), top, set (a set_id).
    """
    unknown = sorted(set(like) - set(LIKE_KEYS))
    if not like or unknown:
        raise ArgumentError("like", f"{{arg}} {dict(like)!r}: give keys among {', '.join(LIKE_KEYS)}, e.g. "
                                    "type=1, lang=ja")
    if set(like) == {"set"} and top is None:
        named = store.sql("SELECT name AS set_id, lang, type, layer_start, layer_end, count(*) AS n FROM neuron_sets "
                          "WHERE name = ? GROUP BY ALL", [str(like["set"])]).to_pylist()
        if len(named) == 1:  # a named set (e.g. an imported one) can have a baseline too
            return {**named[0], "table": "neuron_sets"}
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
            "like", f"{len(matches)} transfer-neuron sets match {spec} ({ids}); narrow {{arg}} with top, dist, split "
                    "or layers")
    return {**matches[0], "table": "transfer_neurons"}


def random_baseline(
    store: "str | Path | Store", like: str | Mapping[str, object], top: int | None = None,
    seed: int = DEFAULT_SEED, name: str | None = None, match_layers: bool = False, wait_seconds: float = 0.0,
) -> RandomSet:
    """Draw a random baseline for a transfer-neuron set (or a named set) and store it in `neuron_sets` as `name`.

    like: a set_id or set name, or the set's settings, e.g. {"type": 1, "lang": "ja"} (see `find_set`).
    match_layers: draw the set's count in each of its layers (else anywhere in its candidate layers).
    The default name is `random_<set_id>_seed<seed>` (+ `_matched` with match_layers); storing under an
    existing random set's name replaces that set.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ArgumentError("seed", f"{{arg}} {seed!r}: use a seed >= 0")
    store = open_store(store)
    like = {"set": like} if isinstance(like, str) else like
    with store.writing("neurons random", wait_seconds):
        tn = find_set(store, like, top)
        name = name or f"random_{tn['set_id']}_seed{seed}" + ("_matched" if match_layers else "")
        check_new_name(store, name, replace_origins=("random",))
        if tn["table"] == "transfer_neurons":
            members = store.query("SELECT layer, neuron FROM transfer_neurons WHERE set_id = ?", [tn["set_id"]])
        else:
            members = store.query("SELECT layer, neuron FROM neuron_sets WHERE name = ?", [tn["set_id"]])
        layers, neurons = draw_random(
            members.column("layer").to_numpy(), members.column("neuron").to_numpy(),
            tn["layer_start"], tn["layer_end"], int(store.model_facts["d_mlp"]), int(seed), match_layers)
        store.write_rows("neuron_sets", _set_table(name, "random", tn, int(seed), layers, neurons,
                                                   match_layers=match_layers))
    return RandomSet(name, tn["set_id"], int(seed), match_layers, tn["layer_start"], tn["layer_end"], layers, neurons)


def check_new_name(store: Store, name: str, replace_origins: tuple[str, ...] = (), replace: bool = False) -> None:
    """Refuse a set name that is unsafe, `none`, a transfer_neurons set_id, or (unless `replace`, or the stored set
    has an origin in `replace_origins`) an existing named set."""
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise ArgumentError("name", f"{{arg}} {name!r}: use letters, digits, '-', '_', '.' or '=' only")
    if name == PLAIN_CONDITION:
        raise ArgumentError("name", f"{{arg}} {name!r} means no deactivation in --conditions; choose another name")
    if store.sql("SELECT count(*) FROM transfer_neurons WHERE set_id = ?", [name]).scalar():
        raise ArgumentError("name", f"{{arg}} {name!r} is a transfer-neuron set_id of this store; choose another name")
    origins = store.sql("SELECT DISTINCT origin FROM neuron_sets WHERE name = ?", [name]).arrow().column(0).to_pylist()
    if origins and not replace and not set(origins) <= set(replace_origins):
        held = ", ".join(map(str, origins))
        also = "" if replace_origins else " or pass {arg:replace}"
        raise ArgumentError("name", f"{{arg}} {name!r} is already a stored neuron set ({held}); choose another name"
                                    + also)


def import_set(
    store: "str | Path | Store", path: str | Path, name: str, lang: str | None = None, type: int | None = None,
    layers: "range | tuple[int, int] | None" = None, replace: bool = False, wait_seconds: float = 0.0,
) -> ImportedSet:
    """Read a neuron set from a CSV or Parquet file with integer columns `layer` (0-based decoder layer, as in
    transfer_neurons) and `neuron` (other columns are ignored) into `neuron_sets` as `name` (origin 'import').

    Every (layer, neuron) must exist in the store's model and appear once. lang, type: recorded with the set
    (so `neurons random --like set=NAME` and reports can say what it is); layers: its candidate layers A..B-1 for
    random baselines (default: the layers it spans). An existing name is refused unless `replace`.
    """
    store = open_store(store)
    path = Path(path)
    facts = store.model_facts
    n_layers, d_mlp = int(facts["n_layers"]), int(facts["d_mlp"])
    table = _read_set_file(path)
    set_layers, set_neurons, lines = _set_columns(path, table)
    _check_pairs(path, set_layers, set_neurons, lines, n_layers, d_mlp)
    if type is not None and type not in (1, 2):
        raise ArgumentError("type", f"{{arg}} {type!r} is not 1 or 2")
    if layers is None:
        start, end = int(set_layers.min()), int(set_layers.max()) + 1
    else:
        start, end = (layers.start, layers.stop) if isinstance(layers, range) else (int(layers[0]), int(layers[1]))
        if not 0 <= start < end <= n_layers or set_layers.min() < start or set_layers.max() >= end:
            raise ArgumentError("layers", f"{{arg}} {start}:{end} must lie within 0:{n_layers} and hold every layer "
                                          f"of the set ({int(set_layers.min())}..{int(set_layers.max())})")
    order = np.lexsort((set_neurons, set_layers))
    set_layers, set_neurons = set_layers[order].astype(np.int32), set_neurons[order].astype(np.int32)
    with store.writing("neurons import", wait_seconds):
        check_new_name(store, name, replace=replace)
        info = {"set_id": None, "lang": lang, "type": type, "layer_start": start, "layer_end": end}
        store.write_rows("neuron_sets", _set_table(name, "import", info, None, set_layers, set_neurons,
                                                   source=str(path.resolve())))
    digest = NeuronSet.from_pairs(name, set_layers, set_neurons).digest()
    return ImportedSet(name, str(path.resolve()), digest, start, end, set_layers, set_neurons)


def export_set(store: "str | Path | Store", name: str, out: str | Path) -> ExportedSet:
    """Write a stored set (a neuron_sets name or a transfer_neurons set_id) to `out` (.csv or .parquet): columns
    layer, neuron, plus rank and score for a transfer-neuron set (rank order); `import_set` reads it back."""
    store = open_store(store, mode="r")
    out = Path(out)
    if out.suffix.lower() not in SET_FILE_TYPES:
        raise ArgumentError("out", f"{{arg}} {out}: use a .csv or .parquet file name")
    ranked = store.query("SELECT layer, neuron, rank, score FROM transfer_neurons WHERE set_id = ? ORDER BY rank",
                         [name])
    origin = "detect"
    if ranked.num_rows == 0:
        ranked = store.query("SELECT layer, neuron FROM neuron_sets WHERE name = ? ORDER BY layer, neuron", [name])
        origin = store.sql("SELECT min(origin) FROM neuron_sets WHERE name = ?", [name]).scalar()
    if ranked.num_rows == 0:
        raise TnstoreError(f"no neuron set or transfer-neuron set_id {name!r} in {store.path}; see `tnstore neurons "
                           "list`")
    try:
        if out.suffix.lower() == ".parquet":
            pq.write_table(ranked, out)
        else:
            pacsv.write_csv(ranked, out)
    except OSError as exc:
        raise ArgumentError("out", f"{{arg}} {out}: cannot write ({exc.strerror or exc})") from None
    digest = NeuronSet.from_pairs(name, ranked.column("layer").to_numpy(), ranked.column("neuron").to_numpy()).digest()
    return ExportedSet(name, out, str(origin), ranked.num_rows, digest)


def _read_set_file(path: Path) -> pa.Table:
    if path.suffix.lower() not in SET_FILE_TYPES:
        raise TnstoreError(f"{path}: use a .csv or .parquet file with columns layer, neuron")
    if not path.is_file():
        raise TnstoreError(f"{path} does not exist; give a .csv or .parquet file with columns layer, neuron")
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        return pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TnstoreError(f"{path} is not a readable {path.suffix.lower()[1:]} file ({reason})") from None


def _set_columns(path: Path, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(layers, neurons) as int64 and each row's line in the file (CSV: header = line 1)."""
    missing = [c for c in ("layer", "neuron") if c not in table.column_names]
    if missing:
        has = ", ".join(table.column_names) or "none"
        raise TnstoreError(f"{path} has no column {' or '.join(missing)} (it has {has}); a neuron set file has "
                           "integer columns layer and neuron")
    if table.num_rows == 0:
        raise TnstoreError(f"{path} holds no neurons")
    first_line = 2 if path.suffix.lower() == ".csv" else 1
    lines = np.arange(first_line, first_line + table.num_rows)
    out = []
    for name in ("layer", "neuron"):
        column = table.column(name).combine_chunks()
        if column.null_count:
            at = int(np.flatnonzero(np.asarray(column.is_null()))[0])
            raise TnstoreError(f"{path} row {lines[at]}: {name} is empty")
        if not pa.types.is_integer(column.type):
            values = np.asarray(column.to_pylist(), dtype=object)
            bad = [i for i, v in enumerate(values) if not (isinstance(v, (int, float)) and float(v).is_integer())]
            if bad:
                raise TnstoreError(f"{path} row {lines[bad[0]]}: {name} {values[bad[0]]!r} is not an integer")
            column = pa.array([int(v) for v in values], pa.int64())
        out.append(column.to_numpy().astype(np.int64))
    return out[0], out[1], lines


def _check_pairs(path: Path, layers: np.ndarray, neurons: np.ndarray, lines: np.ndarray, n_layers: int,
                 d_mlp: int) -> None:
    bad = np.flatnonzero((layers < 0) | (layers >= n_layers) | (neurons < 0) | (neurons >= d_mlp))
    if len(bad):
        i = bad[0]
        raise TnstoreError(f"{path} row {lines[i]}: (layer {layers[i]}, neuron {neurons[i]}) is outside this model's "
                           f"{n_layers} layers x {d_mlp} neurons (layers are 0-based decoder layers); "
                           f"{len(bad)} such row(s)")
    flat = layers * d_mlp + neurons
    order = np.argsort(flat, kind="stable")
    repeated = np.flatnonzero(np.diff(flat[order]) == 0)
    if len(repeated):
        first, again = order[repeated[0]], order[repeated[0] + 1]
        raise TnstoreError(f"{path} row {lines[again]} repeats (layer {layers[again]}, neuron {neurons[again]}) of row "
                           f"{lines[first]}; {len(repeated)} duplicate(s): each neuron may appear once")



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
       NULL::VARCHAR AS like_set_id, NULL::BIGINT AS seed, NULL::BOOLEAN AS match_layers
FROM transfer_neurons GROUP BY ALL
UNION ALL
SELECT name, origin, lang, type, layer_start, layer_end, count(*) AS n, like_set_id, seed, match_layers
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


def _set_table(name: str, origin: str, like: dict, seed: int | None, layers: np.ndarray, neurons: np.ndarray,
               match_layers: bool | None = None, source: str | None = None) -> pa.Table:
    k = len(layers)
    return pa.table({
        "name": [name] * k, "origin": [origin] * k, "like_set_id": pa.array([like["set_id"]] * k, pa.string()),
        "seed": pa.array([seed] * k, pa.int64()), "match_layers": pa.array([match_layers] * k, pa.bool_()),
        "source": pa.array([source] * k, pa.string()), "lang": pa.array([like["lang"]] * k, pa.string()),
        "type": pa.array([like["type"]] * k, pa.int8()),
        "layer_start": np.full(k, like["layer_start"], np.int32), "layer_end": np.full(k, like["layer_end"], np.int32),
        "layer": layers, "neuron": neurons,
    })
