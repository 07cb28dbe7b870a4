"""A human-readable summary of a store (`tnstore info`)."""
from __future__ import annotations

from pathlib import Path

from tnstore.store.render import render
from tnstore.store.schema import table_names
from tnstore.store.store import Store


def describe_store(path: Path) -> str:
    store = Store.open(path)
    facts = store.model_facts
    lines = [
        f"store      {store.path}  (format v{store.manifest['format_version']}, created {store.manifest['created_at']})",
        f"model      {facts['model_spec']}  [{facts['architecture']}, family {facts['family']}]  "
        f"layers={facts['n_layers']} d_model={facts['d_model']} d_mlp={facts['d_mlp']}  "
        f"compute={facts['compute_dtype']} fingerprint={facts['fingerprint']}",
        f"tokenizer  adds BOS: {facts['tokenizer_adds_bos']} ({facts['bos_token'] or 'none'})"
        + (f"; post-MLP norm: {facts['mlp_out_norm']} (frozen-norm neuron contributions)" if facts["mlp_out_norm"] else ""),
        f"rows       {store.n_rows()} captured sentences in {len(store.segments())} runs",
    ]
    for journal in store.pending_journals():
        done = len(journal["done_blocks"])
        lines.append(f"pending    run {journal['run_id']} stopped after {done} blocks; run the same capture again to resume")
    counts = store.sql(
        "SELECT lang, split, kind, count(*) AS sentences, avg(n_tokens) AS mean_tokens "
        "FROM sentences GROUP BY ALL ORDER BY split, kind, lang"
    )
    lines += ["", render(counts, "table", 100).rstrip(), "", "tables"]
    for table in table_names():
        n = store.sql(f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py()
        lines.append(f"  {table:<18} {n:>10} rows")
    segments = store.segments()
    if segments:
        lines.append("arrays (per sentence, first run's layout)")
        group = segments[0].group
        for name in sorted(group.array_keys()):
            arr = group[name]
            lines.append(f"  {name:<18} {str(arr.shape[1:]):<16} {arr.dtype}  chunks={arr.chunks}")
    return "\n".join(lines)
