"""Which sentences an analysis reads: one contract for detect, stats, latent and `Store.states`.

    split   the `sentences.split` to read ("all": every split); pairs never cross splits
    where   a SQL predicate over `sentences` (DuckDB syntax); None takes the analysis's default, which always
            includes `ablation IS NULL` (plain captures only). A predicate given replaces the default.

Then, in this order:
    1. identity: rows with the same lang, split, kind, ablation and pair_id (or, without a pair_id, source and
       source_line) are one sentence captured more than once (overlapping --limit runs, a corpus captured twice);
       it counts once, as its lowest row;
    2. conditions: a replay capture (`ablation` = the set deactivated) is another measurement of a sentence, never
       another sentence, so a group (a language, a label group) or a pair side may not mix ablations: refused
       with a message saying how to pick one;
    3. counts: every analysis reports the sentences per group it used (`Selection.counts`).

The built-in default predicates are evaluated in numpy (starting DuckDB costs more than a small detection);
any other predicate goes through DuckDB. Both give the same rows (tests/tiny_models/test_selection.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa

from tnstore.errors import ArgumentError, SqlError

if TYPE_CHECKING:
    from tnstore.store.store import Store

ALL_SPLITS = "all"
ENGLISH = "en"
PLAIN = "ablation IS NULL"
PLAIN_PARALLEL = "kind = 'parallel' AND ablation IS NULL"
COLUMNS = ("row", "lang", "split", "kind", "pair_id", "ablation", "source", "source_line")


@dataclass(frozen=True)
class Scope:
    """The sentences to read: `where` (SQL over sentences) and `split` ("all": any split)."""

    where: str
    split: str

    def predicate(self) -> tuple[str, list]:
        """SQL text for a WHERE clause over `sentences`, and its parameters."""
        if self.split == ALL_SPLITS:
            return f"({self.where})", []
        return f"({self.where}) AND split = ?", [self.split]

    def describe(self) -> str:
        return f"where {self.where!r}, split {self.split}"


def make_scope(where: str | None, split: str, default: str) -> Scope:
    """A Scope from user arguments: `where` None takes `default`."""
    if where is not None and not where.strip():
        raise ArgumentError("where", "{arg} is empty; give a SQL predicate over sentences, e.g. \"ablation IS NULL\"")
    if not isinstance(split, str) or not split.strip():
        raise ArgumentError("split", "{arg} must be a split name such as train or test, or 'all'")
    return Scope((where if where is not None else default).strip(), split.strip())


@dataclass(frozen=True)
class Selection:
    """Selected sentences, one row per sentence, ascending by store row. Every field is (N,)."""

    scope: Scope
    rows: np.ndarray  # int64 store rows
    lang: np.ndarray  # object (str)
    split: np.ndarray
    kind: np.ndarray
    pair_id: np.ndarray  # object, None where absent
    ablation: np.ndarray  # object, None for plain captures

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, mask: np.ndarray) -> "Selection":
        return Selection(self.scope, *(getattr(self, f)[mask] for f in ("rows", "lang", "split", "kind", "pair_id",
                                                                        "ablation")))

    def counts(self, by: np.ndarray | None = None) -> dict[str, int]:
        """Sentences per value of `by` (default: per language), sorted by value."""
        values, n = np.unique((self.lang if by is None else by).astype(str), return_counts=True)
        return dict(zip(values.tolist(), n.tolist()))

    def table(self) -> pa.Table:
        """The selection as Arrow (row, lang, split, kind, pair_id, ablation)."""
        return pa.table({"row": self.rows, "lang": self.lang.tolist(), "split": self.split.tolist(),
                         "kind": self.kind.tolist(), "pair_id": self.pair_id.tolist(),
                         "ablation": self.ablation.tolist()})


def select(store: "Store", scope: Scope, allow_empty: bool = False) -> Selection:
    """The sentences `scope` picks, duplicates collapsed (rule 1). Refuses invalid SQL, and an empty selection
    unless `allow_empty` (for callers that explain it better)."""
    table = store.read_table("sentences", list(COLUMNS))
    col = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
    rows = col["row"].astype(np.int64)
    mask = _predicate_mask(store, scope, col, rows)
    if scope.split != ALL_SPLITS:
        mask &= col["split"] == scope.split
    if not mask.any() and not allow_empty:
        splits = sorted(set(col["split"].tolist()))
        if scope.split != ALL_SPLITS and scope.split not in splits:
            raise ArgumentError("split", f"{{arg}} {scope.split}: the store has no sentences of that split (splits "
                                         f"in the store: {', '.join(splits) or 'none'}); pass another {{arg}}")
        raise ArgumentError("where", f"{{arg}} {scope.where!r} selects no sentences of split {scope.split} (the "
                                     f"store has {len(rows)}); loosen {{arg}} or pick another {{arg:split}}")
    picked = {name: values[mask] for name, values in col.items()}
    keep = _first_of_each_sentence(picked)
    order = np.argsort(picked["row"][keep], kind="stable")
    at = keep[order]
    return Selection(scope, picked["row"][at].astype(np.int64), *(picked[f][at] for f in
                                                                 ("lang", "split", "kind", "pair_id", "ablation")))


def group_codes(store: "Store", sel: Selection, grouping: str, arg: str = "grouping") -> tuple[np.ndarray, list[str]]:
    """(codes (N,) into the sorted group values, group values) of the SQL expression `grouping` over sentences,
    for the selected rows; code -1 where the expression is NULL. `lang` is read without SQL."""
    if grouping.strip() == "lang":
        values = sel.lang.astype(object)
    else:
        listing = pa.table({"row": sel.rows})
        try:
            found = store.sql(f"SELECT s.row, CAST(({grouping}) AS VARCHAR) AS grp FROM sentences s "
                              "SEMI JOIN _selected USING (row)", tables={"_selected": listing}).arrow()
        except SqlError as exc:
            raise ArgumentError(arg, f"{{arg}} {grouping!r} is not valid SQL over the sentences table: "
                                     f"{exc.reason}") from None
        lookup = dict(zip(found.column("row").to_pylist(), found.column("grp").to_pylist()))
        values = np.array([lookup.get(int(r)) for r in sel.rows], dtype=object)
    present = np.array([v is not None for v in values], dtype=bool)
    groups, codes = np.unique(values[present].astype(str), return_inverse=True)
    out = np.full(len(values), -1, dtype=np.int64)
    out[present] = codes
    return out, [str(g) for g in groups]


def check_one_condition(sel: Selection, by: np.ndarray | None = None, what: str = "language") -> None:
    """Rule 2 for groups: each group (by default each language) has one ablation among the selected rows."""
    keys = (sel.lang if by is None else by).astype(str)
    abl = np.array(["NULL" if a is None else str(a) for a in sel.ablation], dtype=object)
    for key in np.unique(keys):
        found = sorted(set(abl[keys == key].tolist()))
        if len(found) > 1:
            raise ArgumentError("where", f"{{arg}} {sel.scope.where!r} selects {what} {key} sentences of several "
                                         f"ablations ({', '.join(found)}); add \"AND ablation IS NULL\" or "
                                         "\"AND ablation = 'SET'\" so each group is measured once")


@dataclass(frozen=True)
class Pairs:
    """en-L2 pairs of one kind: en_rows[i] and l2_rows[i] share a pair id and split, ordered by the L2 row."""

    lang: str
    kind: str
    en_rows: np.ndarray
    l2_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.en_rows)

    def head(self, n: int) -> "Pairs":
        return Pairs(self.lang, self.kind, self.en_rows[:n], self.l2_rows[:n])


def pairs(sel: Selection, lang: str, kind: str) -> Pairs:
    """en-`lang` pairs of `kind` (parallel | nonparallel) among the selected sentences, one per pair id and
    split. Rule 2 for pairs: a side measured under several ablations is refused."""
    usable = (sel.kind == kind) & np.array([p is not None for p in sel.pair_id], dtype=bool)
    sides = []
    for side in (ENGLISH, lang):
        part = sel.subset(usable & (sel.lang == side))
        keys = _join(part.split.astype(str), part.pair_id.astype(str))
        distinct, first, counts = np.unique(keys, return_index=True, return_counts=True)
        if (counts > 1).any():
            pair = part.pair_id[first[np.flatnonzero(counts > 1)[0]]]
            raise ArgumentError("where", f"{{arg}} {sel.scope.where!r} selects the {side} side of pair {pair} from "
                                         "several ablations; add \"AND ablation IS NULL\" or \"AND ablation = 'SET'\" "
                                         "(per language) so each sentence is measured once")
        sides.append((distinct, part.rows[first]))
    _, en_at, l2_at = np.intersect1d(sides[0][0], sides[1][0], assume_unique=True, return_indices=True)
    en_rows, l2_rows = sides[0][1][en_at], sides[1][1][l2_at]
    order = np.argsort(l2_rows, kind="stable")
    return Pairs(lang, kind, en_rows[order].astype(np.int64), l2_rows[order].astype(np.int64))


# ------------------------------------------------------------------------------------------------ internals
def is_null(values: np.ndarray) -> np.ndarray:
    """Which entries of a column taken from Arrow (an object array for strings) are null."""
    if values.dtype != object:
        return np.zeros(len(values), dtype=bool)
    return np.fromiter((v is None for v in values), dtype=bool, count=len(values))


# The built-in defaults, evaluated without SQL. Each must equal DuckDB's reading of its text (tested).
_FAST: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    PLAIN: lambda c: is_null(c["ablation"]),
    PLAIN_PARALLEL: lambda c: is_null(c["ablation"]) & (c["kind"] == "parallel"),
}


def _predicate_mask(store: "Store", scope: Scope, col: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    fast = _FAST.get(scope.where)
    if fast is not None:
        return fast(col)
    try:
        picked = store.sql(f"SELECT row FROM sentences WHERE ({scope.where})").arrow().column("row").to_numpy()
    except SqlError as exc:
        raise ArgumentError("where", f"{{arg}} {scope.where!r} is not valid SQL over the sentences table: "
                                     f"{exc.reason}") from None
    return np.isin(rows, picked)


def _join(*columns: np.ndarray) -> np.ndarray:
    """Element-wise join of string columns with a separator no text holds."""
    out = columns[0].astype(str)
    for column in columns[1:]:
        out = np.char.add(np.char.add(out, "\x1f"), column.astype(str))
    return out


def identity(col: dict[str, np.ndarray]) -> np.ndarray:
    """Rule 1's identity of each row, without its ablation: lang, split, kind and pair_id (or, without one, source
    and source_line), as one string per row. A replay of a sentence has the identity of its plain capture."""
    ident = np.where(is_null(col["pair_id"]),
                     np.char.add("line:", _join(col["source"].astype(str), col["source_line"].astype(str))),
                     np.char.add("pair:", col["pair_id"].astype(str)))
    return _join(col["lang"].astype(str), col["split"].astype(str), col["kind"].astype(str), ident)


def _first_of_each_sentence(col: dict[str, np.ndarray]) -> np.ndarray:
    """Positions (into `col`) of the lowest row of each sentence identity (rule 1)."""
    ablation = np.where(is_null(col["ablation"]), "\x00", col["ablation"].astype(str))
    keys = _join(identity(col), ablation)
    order = np.argsort(col["row"], kind="stable")
    _, first = np.unique(keys[order], return_index=True)
    return order[first]
