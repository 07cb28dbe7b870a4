"""One item's stored generations under every condition, laid out side by side for a terminal."""
from __future__ import annotations

import textwrap
from pathlib import Path

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.store.store import Store, open_store


def side_by_side(store: "str | Path | Store", item_id: str, lang: str | None = None, eval_id: str | None = None,
                 width: int = 60) -> str:
    """Text: for each (eval_id, lang) that generated for `item_id`, the prompt, then one column per condition
    (`none` first) with its output wrapped to `width` characters."""
    if not isinstance(width, int) or width < 10:
        raise ArgumentError("width", f"{{arg}} must be an integer >= 10, got {width!r}")
    if not isinstance(store, Store) and not Store.exists(store):
        raise TnstoreError(f"store {store} does not exist")
    store = open_store(store, mode="r")
    sql = ("SELECT eval_id, task, lang, condition, positions, prompt, output, stop_reason, n_new_tokens "
           "FROM eval_generations WHERE item_id = ?")
    params: list = [item_id]
    for column, value in (("lang", lang), ("eval_id", eval_id)):
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    rows = store.query(sql + " ORDER BY eval_id, lang, condition = 'none' DESC, condition", params).to_pylist()
    if not rows:
        raise TnstoreError(f"no stored generation for id {item_id!r}" + (f" in {lang}" if lang else "")
                           + "; run `tnstore eval generate` (or qa, mc) first")
    out = []
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["eval_id"], row["lang"]), []).append(row)
    for (eid, lang_), group in groups.items():
        out.append(f"== {item_id} ({lang_}, {group[0]['task']} {eid}, positions {group[0]['positions']})")
        out.append("prompt: " + group[0]["prompt"].replace("\n", " ⏎ "))
        columns = [[f"{r['condition']} ({r['n_new_tokens']} tokens, {r['stop_reason']})", "-" * width]
                   + _wrap(r["output"], width) for r in group]
        height = max(len(c) for c in columns)
        for i in range(height):
            out.append("  ".join((c[i] if i < len(c) else "").ljust(width) for c in columns).rstrip())
        out.append("")
    return "\n".join(out)


def _wrap(text: str, width: int) -> list[str]:
    lines = []
    for paragraph in text.split("\n"):
        lines.extend(textwrap.wrap(paragraph, width, replace_whitespace=False, drop_whitespace=True) or [""])
    return lines
