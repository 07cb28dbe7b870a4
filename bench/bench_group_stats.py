"""The group-statistics pass (one streaming pass over mlp_act) vs reading the same arrays once, and the SQL step.

    .venv/bin/python bench/bench_group_stats.py [--rows 5000] [--layers 32] [--d-mlp 14336] [--dtype float16]
        [--langs en,ja,nl,ko,it] [--chunk-rows 256] [--run-rows 1250] [--dir PATH] [--keep]

Builds a synthetic store of that shape (random activations written through the Store API; the default is the
LLaMA-3-8B shape of the paper's 5k-sentence §6 analyses: 5000 × 32 × 14336 float16, about 4.6 GB), then runs
each measurement in a fresh process so that its peak RSS is its own:
    read-zarr     every chunk of mlp_act read once through zarr-python, as stored
    read-store    the same through Store.iter_rows (tnstore's chunk reader, one thread): the faster of the two is
                  the floor that "× read" refers to
    pass          group_moments: per-language n, shifted sum, sum of squares of every neuron (float64), a reader
                  thread plus the compiled pass on every core (numba's one-time import and kernel load are done
                  before timing)
    pass-serial   the same in one thread (no reader thread, one numba thread)
    sql           group_stats table + Parquet write; eta2.sql for every neuron × every language (lang-neurons)
                  and for 8000 transfer-neuron-like neurons × 4 languages (corr-ratio), with ANOVA p
All reads hit the page cache (the store was just written; this machine has room for it), so the ratio compares
decompression + arithmetic, not disk speed. Prints a table and appends one JSON line to
bench/results/group_stats.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "group_stats.jsonl"
PHASES = ("read-zarr", "read-store", "pass", "pass-serial", "sql")


# ------------------------------------------------------------------------------------------------ building
def build_store(path: Path, rows: int, layers: int, d_mlp: int, dtype: str, langs: list[str], chunk_rows: int,
                run_rows: int, seed: int = 0) -> float:
    """Write a synthetic store (languages interleaved, as pair captures are); returns seconds."""
    from tnstore.store.schema import arrow_schema
    from tnstore.store.store import Store

    t0 = time.perf_counter()
    facts = {"model_spec": "synthetic-llama3-8b-shape", "model_source": "bench", "family": "llama",
             "architecture": "Synthetic", "n_layers": layers, "d_model": 4096, "d_mlp": d_mlp, "vocab_size": 1,
             "compute_dtype": "float32", "storage_dtype": dtype, "fingerprint": "bench",
             "tokenizer_adds_bos": True, "bos_token": "", "mlp_out_norm": ""}
    store = Store.create(path, {k: facts.get(k) for k in arrow_schema("model").names if k != "created_at"})
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(-1.5, 0.7, (layers, d_mlp)).astype(np.float32)  # per-neuron spread, like real α
    with store.writing("bench"):
        for k, start in enumerate(range(0, rows, run_rows)):
            n = min(run_rows, rows - start)
            seg = store.create_segment(f"run{k}", n, {"mlp_act": (layers, d_mlp)}, {"mlp_act": dtype}, chunk_rows)
            for a in range(0, n, chunk_rows):
                b = min(a + chunk_rows, n)
                values = rng.standard_normal((b - a, layers, d_mlp), dtype=np.float32) * scale
                seg["mlp_act"][a:b] = values.astype(dtype)
            _write_tables(store, f"run{k}", start, n, langs, dtype)
    return time.perf_counter() - t0


def _write_tables(store, run_id: str, start: int, n: int, langs: list[str], dtype: str) -> None:
    from tnstore.store.schema import arrow_schema

    rows = np.arange(start, start + n, dtype=np.int64)
    sentences = {"row": rows, "run_id": [run_id] * n, "lang": [langs[r % len(langs)] for r in rows],
                 "text": [f"s{r}" for r in rows], "split": ["train"] * n, "kind": ["parallel"] * n,
                 "source": ["bench"] * n, "source_line": rows, "n_tokens": np.full(n, 12, dtype=np.int32)}
    store.write_rows("sentences", _table(arrow_schema("sentences"), sentences, n))
    now = datetime.now(timezone.utc)
    run = {"run_id": [run_id], "row_start": [start], "row_end": [start + n], "n_sentences": [n], "split": ["train"],
           "storage_dtype": [dtype], "started_at": [now], "finished_at": [now]}
    store.write_rows("runs", _table(arrow_schema("runs"), run, 1))


def _table(schema: pa.Schema, columns: dict, n: int) -> pa.Table:
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema})


# ------------------------------------------------------------------------------------------------ phases
def phase(name: str, path: Path) -> dict:
    """Run one measurement in this process; returns seconds and figures."""
    from tnstore.analysis.stats.core import DEFAULT_WHERE, select_sentences
    from tnstore.store.store import Store

    store = Store.open(path)
    layers = int(store.model_facts["n_layers"])
    sel = select_sentences(store, "lang", DEFAULT_WHERE)
    if name == "read-zarr":
        return {"seconds": _read_zarr(store, layers)}
    if name == "read-store":
        t0 = time.perf_counter()
        for layer in range(layers):
            for _ in store.iter_rows("mlp_act", sel.rows, layer, 256, dtype=None):
                pass
        return {"seconds": time.perf_counter() - t0}
    if name in ("pass", "pass-serial"):
        from tnstore.kernels.group_stats import group_moments

        # numba's one-time import and the load of its compiled kernels (from the on-disk cache) are not the pass
        group_moments(store, sel.rows[:8], sel.codes[:8], len(sel.groups), [0])

        t0 = time.perf_counter()
        serial = name == "pass-serial"
        group_moments(store, sel.rows, sel.codes, len(sel.groups), range(layers), prefetch=not serial,
                      workers=1 if serial else None)
        return {"seconds": time.perf_counter() - t0}
    return _sql_phase(store, sel)


def _read_zarr(store, layers: int) -> float:
    t0 = time.perf_counter()
    for seg in store.segments():
        arr = seg.array("mlp_act")
        for layer in range(layers):
            for a in range(0, arr.shape[0], arr.chunks[0]):
                arr[a : a + arr.chunks[0], layer]
    return time.perf_counter() - t0


def _sql_phase(store, sel) -> dict:
    """Everything after the pass: table, Parquet write, η²/F/p for lang-neurons and for a corr-ratio's TNs."""
    from tnstore.analysis.stats.core import GroupStats, eta2_table, moments_table
    from tnstore.analysis.stats.corr import mann_whitney_p
    from tnstore.analysis.stats.labels import language_label
    from tnstore.kernels.group_stats import GroupMoments

    g, layers, d = len(sel.groups), int(store.model_facts["n_layers"]), int(store.model_facts["d_mlp"])
    rng = np.random.default_rng(1)
    moments = GroupMoments(np.bincount(sel.codes).astype(np.int64), rng.standard_normal((g, layers, d)) * 0.1,
                           rng.standard_normal((g, layers, d)), rng.uniform(900, 1100, (g, layers, d)))
    out: dict = {}
    t0 = time.perf_counter()
    table = moments_table("gs-bench", sel, moments)
    out["table_s"], out["table_rss_mib"] = time.perf_counter() - t0, _peak_rss_mib()
    t0 = time.perf_counter()
    with store.writing("bench"):
        store.write_rows("group_stats", table)
    out["write_s"], out["write_rss_mib"] = time.perf_counter() - t0, _peak_rss_mib()
    del table, moments
    gs = GroupStats("gs-bench", sel.grouping, sel.where, sel.split, None, None)
    label = language_label(sel, sel.groups)
    t0 = time.perf_counter()
    every = eta2_table(store, gs, label.label_map())
    out["sql_all_neurons_s"], out["sql_all_neurons_rows"] = time.perf_counter() - t0, every.num_rows
    out["sql_all_neurons_rss_mib"] = _peak_rss_mib()
    cells = rng.choice(layers * d, size=min(8000, layers * d), replace=False)
    out["tn_neurons"] = len(cells)
    neurons = pa.table({"layer": (cells // d).astype(np.int32), "neuron": (cells % d).astype(np.int32)})
    tn_label = language_label(sel, [lang for lang in sel.groups if lang != "en"] or sel.groups)
    t0 = time.perf_counter()
    tn = eta2_table(store, gs, tn_label.label_map(), neurons)
    out["sql_tn_s"], out["sql_tn_rows"], out["sql_tn_rss_mib"] = time.perf_counter() - t0, tn.num_rows, _peak_rss_mib()
    values = rng.standard_normal((len(sel.rows), len(cells))).astype(np.float32)
    t0 = time.perf_counter()
    mann_whitney_p(values, tn_label.label_groups(tn_label.assignments and next(iter(tn_label.assignments)), sel),
                   next(iter(tn_label.assignments)))
    out["mwu_s_per_label"], out["mwu_s_per_label_rss_mib"] = time.perf_counter() - t0, _peak_rss_mib()
    return out


def _peak_rss_mib() -> float:
    """This process's peak resident memory. (getrusage's ru_maxrss would carry over the parent's peak: Linux keeps
    it across fork and exec, and the parent built a multi-GB store.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_phase(name: str, path: Path) -> dict:
    """`name` in a fresh interpreter; adds its peak RSS."""
    done = subprocess.run([sys.executable, __file__, "--phase", name, "--dir", str(path)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(repeats: int, path: Path) -> dict:
    """Every phase `repeats` times, interleaved so that a busy neighbour slows all alike; the fastest of each."""
    runs: dict[str, list[dict]] = {name: [] for name in PHASES}
    for _ in range(repeats):
        for name in PHASES:
            runs[name].append(run_phase(name, path))
    best = {name: min(rs, key=lambda r: r.get("seconds", r.get("sql_all_neurons_s", 0))) for name, rs in runs.items()}
    for name, rs in runs.items():
        best[name]["all_seconds"] = [r.get("seconds") for r in rs]
    return best


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    args = _parse()
    if args.phase:
        result = phase(args.phase, Path(args.dir))
        result["peak_rss_mib"] = _peak_rss_mib()
        print(json.dumps(result))
        return
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="tnstore-bench-gs-"))
    store = base / "store"
    langs = args.langs.split(",")
    try:
        build_s = None
        if not store.exists():
            build_s = build_store(store, args.rows, args.layers, args.d_mlp, args.dtype, langs, args.chunk_rows,
                                  args.run_rows)
        load_before = os.getloadavg()[0]
        results = best_of(args.repeats, store)
        results["load"] = (load_before, os.getloadavg()[0])
        report(args, store, build_s, results)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)


def report(args: argparse.Namespace, store: Path, build_s: float | None, r: dict) -> None:
    _shape_from_store(args, store)
    load = r.pop("load")
    values = args.rows * args.layers * args.d_mlp
    floor = min(r["read-zarr"]["seconds"], r["read-store"]["seconds"])  # the fastest way to read them once
    lines = [
        f"best of {args.repeats} runs each, {os.cpu_count()} CPUs, load average {load[0]:.1f} before / "
        f"{load[1]:.1f} after (other processes share the cores; the pass gains from a second free core)",
        f"store: {args.rows} sentences × {args.layers} layers × {args.d_mlp} neurons {args.dtype} "
        f"({values / 1e9:.2f} G values, {_bytes(store / 'segments') / 2**30:.2f} GiB of arrays on disk; built in "
        f"{'-' if build_s is None else f'{build_s:.0f} s'}), {len(args.langs.split(','))} languages",
        f"{'step':<44}{'seconds':>9}{'× read':>8}{'peak RSS MiB':>14}  (× the fastest read; SQL rows: peak so far "
        f"in one process)",
    ]
    for name, label in [("read-zarr", "read mlp_act once (Zarr, as stored)"),
                        ("read-store", "read via Store.iter_rows"),
                        ("pass", "group-stats pass (threads)"),
                        ("pass-serial", "group-stats pass (one thread)")]:
        s = r[name]["seconds"]
        lines.append(f"{label:<44}{s:>9.2f}{s / floor:>8.2f}{r[name]['peak_rss_mib']:>14.0f}")
    q = r["sql"]
    for key, rss, label in [
        ("table_s", "table_rss_mib", "group_stats table (Arrow)"),
        ("write_s", "write_rss_mib", "group_stats Parquet write"),
        ("sql_all_neurons_s", "sql_all_neurons_rss_mib", f"eta2.sql all neurons ({q['sql_all_neurons_rows']} rows)"),
        ("sql_tn_s", "sql_tn_rss_mib", f"eta2.sql {q['tn_neurons']} TNs × 4 labels ({q['sql_tn_rows']} rows)"),
        ("mwu_s_per_label", "mwu_s_per_label_rss_mib", f"Mann-Whitney, {q['tn_neurons']} neurons, one label"),
    ]:
        lines.append(f"{label:<44}{q[key]:>9.2f}{'':>8}{q[rss]:>14.0f}")
    print("\n".join(lines))
    record = {"rows": args.rows, "layers": args.layers, "d_mlp": args.d_mlp, "dtype": args.dtype,
              "langs": args.langs, "chunk_rows": args.chunk_rows, "array_bytes": _bytes(store / "segments"),
              "build_s": build_s,
              **{f"{k.replace('-', '_')}_s": v["seconds"] for k, v in r.items() if "seconds" in v},
              **{f"{k.replace('-', '_')}_peak_rss_mib": v["peak_rss_mib"] for k, v in r.items()},
              "pass_over_read": r["pass"]["seconds"] / floor,
              "pass_over_read_zarr": r["pass"]["seconds"] / r["read-zarr"]["seconds"], "repeats": args.repeats,
              "all_seconds": {k: v["all_seconds"] for k, v in r.items()}, **{f"sql_{k}": v for k, v in q.items()},
              "load_before_after": load, "machine": platform.machine(), "cpus": os.cpu_count(),
              "time": datetime.now().isoformat(timespec="seconds")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def _shape_from_store(args: argparse.Namespace, path: Path) -> None:
    """A reused --dir store keeps the shape it was built with, whatever the flags say."""
    from tnstore.store.store import Store

    store = Store.open(path)
    args.layers, args.d_mlp = int(store.model_facts["n_layers"]), int(store.model_facts["d_mlp"])
    args.dtype = str(store.model_facts["storage_dtype"])
    args.rows = store.n_rows()
    args.langs = ",".join(store.query("SELECT DISTINCT lang FROM sentences ORDER BY lang").column("lang").to_pylist())


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--d-mlp", type=int, default=14336)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--langs", default="en,ja,nl,ko,it")
    ap.add_argument("--chunk-rows", type=int, default=256)
    ap.add_argument("--run-rows", type=int, default=1250, help="rows per capture run (segment)")
    ap.add_argument("--dir", help="keep the store here and reuse it if it exists (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="do not delete the temp store")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the fastest is reported")
    ap.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    return ap.parse_args()


if __name__ == "__main__":
    main()
