"""Conditions of a deactivation experiment (method §5): which stored measurement of each sentence an analysis reads.

    none    the plain capture of every language (`ablation IS NULL`)
    SET     the non-English sentences as replayed with the neuron set SET deactivated (`tnstore replay`), English
            from the plain capture: the paper deactivates on the L2 side only

A condition is a predicate over `sentences` added to the analysis's own selection, so an analysis run for a
condition reads exactly the rows the equivalent `--where` would (tests/tiny_models/test_conditions.py):

    SET  ->  <base> AND (lang = 'en' AND ablation IS NULL OR lang <> 'en' AND ablation = 'SET')

with <base> the user's `where`, or the analysis's default without its `ablation IS NULL`. `none` with no `where`
is the analysis's default itself. Before anything is read, each set condition is checked: it was replayed on the
split (and on the kinds and language the analysis needs), always with the same neurons (the runs' digests agree
with each other and with the stored set), and at one set of positions (or `positions` picks one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.store import selection as S
from tnstore.store.selection import Scope
from tnstore.store.store import Store

PLAIN = "none"
ENGLISH = "en"
POSITIONS = ("last", "all")
# Each analysis default without its ablation clause: what a condition's predicate is added to.
_BASES = {S.PLAIN: None, S.PLAIN_PARALLEL: "kind = 'parallel'"}


@dataclass(frozen=True)
class Condition:
    """One condition of an analysis: its name (`none` or a set name) and the sentences it reads."""

    name: str
    scope: Scope


def parse(conditions: Sequence[str]) -> list[str]:
    """The condition names in the order given; refuses an empty list, empty names and repeats."""
    if isinstance(conditions, str):
        conditions = [conditions]
    names = [str(c).strip() for c in conditions]
    if not names or any(not n for n in names):
        raise ArgumentError("conditions", "{arg} must list conditions, e.g. none,SET (none = plain captures)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ArgumentError("conditions", f"{{arg}} names {', '.join(repeated)} more than once")
    return names


def resolve(store: Store, conditions: Sequence[str], where: str | None, split: str, default: str,
            positions: str | None = None, kinds: Sequence[str] = ("parallel",),
            lang: str | None = None) -> list[Condition]:
    """The scope of each condition (see the module docstring), after checking that each set condition was
    replayed as the analysis needs: on `split`, for every kind in `kinds`, for `lang` (None: any L2)."""
    names = parse(conditions)
    if positions is not None and positions not in POSITIONS:
        raise ArgumentError("positions", f"{{arg}} {positions!r} is not one of {', '.join(POSITIONS)}")
    base_scope = S.make_scope(where, split, default)
    S.select(store, base_scope)  # an unknown split or a where that selects nothing is said as the analysis says it
    base = _BASES[default] if where is None else f"({base_scope.where})"
    out = []
    for name in names:
        if name == PLAIN:
            text = default if where is None else f"{base} AND {S.PLAIN}"
        else:
            chosen = _check_replayed(store, name, base_scope.split, positions, kinds, lang)
            clause = (f"(lang = '{ENGLISH}' AND ablation IS NULL OR lang <> '{ENGLISH}' AND ablation = {_quote(name)}"
                      + (f" AND run_id IN (SELECT run_id FROM runs WHERE ablation_scope = '{chosen}')"
                         if positions is not None else "") + ")")
            text = clause if base is None else f"{base} AND {clause}"
        out.append(Condition(name, S.make_scope(text, base_scope.split, default)))
    return out


def selection_of(where_sql: str | None, condition: str | None) -> str | None:
    """The user's selection behind a stored `where_sql` of `condition`: the predicate `resolve` started from,
    without the clause it added for the condition (None: the analysis's default selection). Rows of one
    analysis under several conditions share it, which is how figures put the conditions side by side."""
    if where_sql is None:
        return None
    text = where_sql.strip()
    if condition and condition != PLAIN:
        clause = f"(lang = '{ENGLISH}' AND ablation IS NULL OR lang <> '{ENGLISH}' AND ablation = {_quote(condition)}"
        if text.startswith(clause):
            return None
        cut = text.find(f" AND {clause}")
        if cut >= 0:
            text = text[:cut]
    elif text.endswith(f" AND {S.PLAIN}"):
        text = text[: -len(f" AND {S.PLAIN}")]
    elif text == S.PLAIN:
        return None
    if text in _BASES.values():  # the analysis's default without its ablation clause
        return None
    return text


def derived(sel: S.Selection) -> str:
    """The condition a selection made without --conditions holds: `none` if it has only plain captures, else the
    names of the ablations among its rows, joined by '+' (sorted)."""
    names = sorted({str(a) for a in sel.ablation if a is not None})
    return "+".join(names) if names else PLAIN


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _check_replayed(store: Store, name: str, split: str, positions: str | None, kinds: Sequence[str],
                    lang: str | None) -> str | None:
    """Refuse a set condition the store cannot answer; returns the positions its rows were replayed at (the one
    given, or the only one)."""
    split_sql, params = ("", [name]) if split == S.ALL_SPLITS else (" AND s.split = ?", [name, split])
    found = store.query(
        "SELECT s.lang, s.kind, r.ablation_scope AS positions, r.ablation_digest AS digest, count(*) AS n "
        f"FROM sentences s JOIN runs r USING (run_id) WHERE s.ablation = ?{split_sql} GROUP BY ALL", params).to_pylist()
    hint = f"tnstore replay STORE --split {split} --sets {name}"
    if not found:
        known = store.sql("SELECT count(*) FROM (SELECT name FROM neuron_sets WHERE name = ? UNION ALL "
                          "SELECT set_id FROM transfer_neurons WHERE set_id = ?)", [name, name]).scalar()
        what = "" if known else " (and no neuron set has that name: see `tnstore neurons list`)"
        raise ArgumentError("conditions", f"{{arg}}: no sentences of split {split} were replayed with {name!r}{what}; "
                                          f"run `{hint}` first")
    digests = sorted({r["digest"] for r in found if r["digest"] is not None})
    if len(digests) > 1:
        raise TnstoreError(f"condition {name!r}: its replays used different neurons (digests {', '.join(digests)}); "
                           "one condition must be one set: store the new set under another name and replay it")
    current = _current_digest(store, name)
    if digests and current is not None and digests[0] != current:
        raise TnstoreError(f"condition {name!r}: the stored set's neurons (digest {current}) are not those it was "
                           f"replayed with ({digests[0]}); store the new set under another name and replay it")
    replayed = sorted({r["positions"] for r in found if r["positions"] is not None})
    if positions is None and len(replayed) > 1:
        raise ArgumentError("positions", f"condition {name!r} was replayed at positions {' and '.join(replayed)}; "
                                         "pick one with {arg}")
    if positions is not None and positions not in replayed:
        raise ArgumentError("positions", f"{{arg}} {positions}: {name!r} was replayed at positions "
                                         f"{', '.join(replayed)} only; replay it with {{arg}} {positions}")
    chosen = positions if positions is not None else (replayed[0] if replayed else None)
    here = [r for r in found if chosen is None or r["positions"] == chosen]
    for kind in kinds:
        langs = {r["lang"] for r in here if r["kind"] == kind}
        if lang is not None and lang != ENGLISH and lang not in langs or lang is None and not (langs - {ENGLISH}):
            flags = (f" --kind {kind}" if kind != "parallel" else "") + (f" --langs {lang}" if lang else "")
            which = f"{lang} " if lang else ""
            raise ArgumentError("conditions", f"{{arg}}: no {which}sentences of kind {kind}, split {split} were "
                                              f"replayed with {name!r}; run `{hint}{flags}` first")
    return chosen


def _current_digest(store: Store, name: str) -> str | None:
    """The digest of the stored set `name` now (None if no set of that name is stored)."""
    from tnstore.models.deactivation import NeuronSet

    pairs = store.query("SELECT layer, neuron FROM neuron_sets WHERE name = ? UNION "
                        "SELECT layer, neuron FROM transfer_neurons WHERE set_id = ?", [name, name])
    if pairs.num_rows == 0:
        return None
    return NeuronSet.from_pairs(name, pairs.column("layer").to_numpy(), pairs.column("neuron").to_numpy()).digest()

