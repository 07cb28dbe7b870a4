"""Categorical labels for the correlation ratio, built by merging the groups of a selection.

A label maps every group value of the selection (e.g. every language) to a label group; several labels can be
computed from the same group_stats at once, one `label_id` each:
    language   one label per target language L: L vs the rest (paper Tab. 1, 4-6)
    family     e.g. en,nl,it : ja,ko (Tab. 10-12); languages in no family are left out
    sql        the groups of a user's SQL expression over `sentences`, as they are
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

from tnstore.analysis.stats.core import Selection
from tnstore.errors import ArgumentError

LABEL_KINDS = ("language", "family", "sql")
PAPER_FAMILIES = (("en", "nl", "it"), ("ja", "ko"))


@dataclass(frozen=True)
class Label:
    """assignments[label_id][group_value] = label group; positive[label_id] = the positive group of a binary label."""

    kind: str
    spec: str | None
    grouping: str
    assignments: dict[str, dict[str, str]]
    positive: dict[str, str | None]

    def label_map(self) -> pa.Table:
        """(label_id, group_value, label_group), the input of queries/eta2.sql."""
        rows = [(lid, value, group) for lid, mapping in self.assignments.items() for value, group in mapping.items()]
        return pa.table({
            "label_id": [r[0] for r in rows], "group_value": [r[1] for r in rows], "label_group": [r[2] for r in rows],
        }, schema=pa.schema([("label_id", pa.string()), ("group_value", pa.string()), ("label_group", pa.string())]))

    def label_groups(self, label_id: str, sel: Selection) -> np.ndarray:
        """(N,) label group of every selected row, None where the label leaves the row out."""
        mapping = self.assignments[label_id]
        return np.array([mapping.get(v) for v in sel.groups], dtype=object)[sel.codes]


def grouping_for(kind: str, label_sql: str | None) -> str:
    """The SQL expression over `sentences` that the label's group_stats are grouped by."""
    if kind not in LABEL_KINDS:
        raise ArgumentError("label", f"{{arg}} {kind!r} is not one of {', '.join(LABEL_KINDS)}")
    if kind == "sql":
        if not label_sql or not label_sql.strip():
            raise ArgumentError("label_sql", "{arg:label} sql needs {arg}, a SQL expression over sentences giving "
                                             "each group")
        return label_sql
    if label_sql:
        raise ArgumentError("label_sql", f"{{arg}} is only used with {{arg:label}} sql, not {{arg:label}} {kind}")
    return "lang"


def check_families(families: Sequence[Sequence[str]]) -> list[list[str]]:
    """At least two disjoint, non-empty families of language codes, e.g. (("en", "nl", "it"), ("ja", "ko"))."""
    if isinstance(families, str) or not all(isinstance(f, (list, tuple)) for f in families):
        raise ArgumentError("families", f"{{arg}} {families!r}: give two or more lists of language codes, e.g. "
                                        "[['en', 'nl', 'it'], ['ja', 'ko']]")
    out = [[str(lang).strip() for lang in family] for family in families]
    if len(out) < 2 or any(not family or not all(out_lang for out_lang in family) for family in out):
        raise ArgumentError("families", f"{{arg}} {format_families(out)!r}: give two or more non-empty families, "
                                        "e.g. en,nl,it:ja,ko")
    seen: set[str] = set()
    for lang in (lang for family in out for lang in family):
        if lang in seen:
            raise ArgumentError("families", f"{{arg}} {format_families(out)!r}: language {lang!r} is in more than "
                                            "one family")
        seen.add(lang)
    return out


def format_families(families: Sequence[Sequence[str]]) -> str:
    """The families as stored in label_spec: 'en,nl,it:ja,ko'."""
    return ":".join(",".join(family) for family in families)


def language_label(sel: Selection, targets: list[str]) -> Label:
    """One binary label per target language: target vs every other selected language."""
    counts = sel.counts()
    for target in targets:
        if counts.get(target, 0) == 0:
            raise ArgumentError("where", f"language {target!r} has no sentences among those {sel.describe()} "
                                         "selects; capture it or widen {arg}")
    assignments = {t: {g: (t if g == t else "rest") for g in sel.groups} for t in targets}
    return _checked(Label("language", None, sel.grouping, assignments, {t: t for t in targets}), sel)


def family_label(sel: Selection, families: Sequence[Sequence[str]]) -> Label:
    """One label, 'family': each language to its family's name (the family's languages joined by commas)."""
    families = check_families(families)
    spec = format_families(families)
    counts = sel.counts()
    missing = [lang for family in families for lang in family if counts.get(lang, 0) == 0]
    if missing:
        raise ArgumentError("families", f"{{arg}} {spec!r}: {', '.join(missing)} has no sentences among those "
                                        f"{sel.describe()} selects")
    names = [",".join(family) for family in families]
    mapping = {lang: name for family, name in zip(families, names) for lang in family}
    positive = names[0] if len(names) == 2 else None
    return _checked(Label("family", spec, sel.grouping, {"family": mapping}, {"family": positive}), sel)


def sql_label(sel: Selection, expr: str) -> Label:
    """One label, 'sql': the expression's own groups."""
    mapping = {g: g for g in sel.groups}
    positive = sel.groups[0] if len(sel.groups) == 2 else None
    return _checked(Label("sql", expr, sel.grouping, {"sql": mapping}, {"sql": positive}), sel)


def _checked(label: Label, sel: Selection) -> Label:
    """Every label must split the selected sentences into at least two non-empty groups."""
    counts = sel.counts()
    for label_id, mapping in label.assignments.items():
        sizes: dict[str, int] = {}
        for value, group in mapping.items():
            sizes[group] = sizes.get(group, 0) + counts.get(value, 0)
        present = [g for g, n in sizes.items() if n > 0]
        if len(present) < 2:
            what = f"{{arg}} {label.spec!r}" if label.kind == "sql" else f"label {label.kind} ({label_id})"
            only = f"one group ({present[0]!r})" if present else "no group"
            raise ArgumentError("label_sql" if label.kind == "sql" else "label",
                                f"{what} puts all sentences {sel.describe()} selects into {only}; "
                                "a correlation ratio needs at least two groups")
    return label
