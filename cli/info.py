"""`tnstore info`: a store's StoreInfo as text for people."""
from __future__ import annotations

from tnstore.cli.render import render
from tnstore.store.store import StoreInfo


def describe(info: StoreInfo) -> str:
    facts = info.model
    runs = info.runs.num_rows
    lines = [
        f"store      {info.path}  (format v{info.format_version}, created {info.created_at})",
        f"model      {facts['model_spec']}  [{facts['architecture']}, family {facts['family']}]  "
        f"layers={facts['n_layers']} d_model={facts['d_model']} d_mlp={facts['d_mlp']}  "
        f"compute={facts['compute_dtype']} fingerprint={facts['fingerprint']}",
        f"tokenizer  adds BOS: {facts['tokenizer_adds_bos']} ({facts['bos_token'] or 'none'})"
        + (f"; post-MLP norm: {facts['mlp_out_norm']} (frozen-norm neuron contributions)" if facts["mlp_out_norm"] else ""),
        f"rows       {info.n_rows} captured sentences in {runs} runs",
    ]
    for journal in info.pending:
        done = len(journal["done_blocks"])
        lines.append(f"pending    run {journal['run_id']} stopped after {done} blocks; run the same capture again to resume")
    counts = info.sentences
    if all(v is None for v in counts.column("ablation").to_pylist()):
        counts = counts.drop_columns(["ablation"])
    lines += ["", render(counts, "table", 100).rstrip(), "", "tables"]
    for table, n in info.tables.items():
        lines.append(f"  {table:<22} {n:>10} rows")
    if info.arrays:
        lines.append("arrays (per sentence, first run's layout)")
        for name, layout in sorted(info.arrays.items()):
            lines.append(f"  {name:<18} {str(layout['shape']):<16} {layout['dtype']}  chunks={layout['chunks']}")
    return "\n".join(lines)

