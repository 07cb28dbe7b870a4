"""Benchmark of the figures and the report (issue 13), each timed as a user runs it: the `tnstore` command in a
fresh process, imports included.

(a) `tnstore plot STORE all` on an 8B-shaped store's tables: 32 layers (33 hidden indices), 1000 transfer neurons
    x 4 languages x 2 types, latent tables of 1000 sentences per language (165,000 PCA rows), η² of every one of
    the 32 x 14336 neurons against each of 5 languages (2.3M lang_neurons rows). The tables are synthetic
    (tests/figure_tables.py), written through the Store API into a store without arrays. Target: < 30 s.
(b) `tnstore report STORE` on the same store (for reference) and on the demo store `make demo` writes (target:
    < 10 s); the demo store is skipped with a note when it is not there.

    .venv/bin/python bench/bench_plot.py                       # builds the 8B-shaped store in a temp folder
    .venv/bin/python bench/bench_plot.py --store /tmp/s8b --repeats 3   # reuse (or keep) that store
    .venv/bin/python bench/bench_plot.py --demo-store demo-store

Prints a table and appends one JSON line to bench/results/plot.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "plot.jsonl"
TARGETS = {"plot all, 8B-shaped tables": 30.0, "report, demo store": 10.0}


def build_store(path: Path) -> dict:
    """The 8B-shaped synthetic tables, written into a new store at `path`."""
    from tests.figure_tables import Shape, capture_rows, model_facts, tables
    from tnstore.store.schema import table_names
    from tnstore.store.store import Store

    shape = Shape(n_layers=32, n_sentences=1000, d_model=4096, d_mlp=14336, top=1000)
    t0 = time.perf_counter()
    data = tables(shape)
    store = Store.create(path, model_facts(shape, "llama-3-8b-shaped (synthetic tables)"))
    with store.writing("bench_plot"):
        for name, table in data.items():
            if name in table_names():
                store.write_rows(name, table)
        rows = capture_rows()
        store.write_rows("sentences", rows["sentences"])
        store.write_rows("runs", rows["runs"])
    return {"seconds": time.perf_counter() - t0,
            "rows": {name: table.num_rows for name, table in data.items() if name in table_names()}}


def tnstore_command() -> list[str]:
    script = Path(sys.executable).parent / "tnstore"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tnstore.cli.app"]


def timed(args: list[str], repeats: int) -> dict:
    """Wall time of `tnstore ARGS` in a fresh process, `repeats` times."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(tnstore_command() + args, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"tnstore {' '.join(args)} failed:\n{done.stderr}")
    return {"best_s": min(times), "median_s": statistics.median(times), "runs": times,
            "output": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="8B-shaped store to use (built there if missing; kept)")
    parser.add_argument("--demo-store", type=Path, default=ROOT / "demo-store")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_plot-"))
    try:
        store = args.store or work / "store8b"
        built = None
        if not (store / "tnstore.json").exists():
            built = build_store(store)
            print(f"built the 8B-shaped store in {built['seconds']:.1f} s: {store}")
        rows = []
        out = {}
        figs = work / "figs"
        out["plot all, 8B-shaped tables"] = timed(["plot", str(store), "all", "--out", str(figs)], args.repeats)
        out["plot all, 8B-shaped tables"]["figures"] = len(list(figs.glob("*.png")))
        out["report, 8B-shaped tables"] = timed(["report", str(store), "--out", str(work / "r8b.html")],
                                                args.repeats)
        if (args.demo_store / "tnstore.json").exists():
            out["report, demo store"] = timed(["report", str(args.demo_store), "--out", str(work / "demo.html")],
                                              args.repeats)
        else:
            print(f"no demo store at {args.demo_store} (run `make demo` first): its report is not timed")
        print(f"\n{'job':<30} {'best s':>8} {'median s':>9} {'target':>8}  output")
        for job, r in out.items():
            target = TARGETS.get(job)
            mark = "" if target is None else (f"< {target:g}" + (" ok" if r["best_s"] < target else " MISSED"))
            print(f"{job:<30} {r['best_s']:>8.2f} {r['median_s']:>9.2f} {mark:>8}  {r['output'][:70]}")
            rows.append({"job": job, **{k: v for k, v in r.items()}, "target_s": target})
        record = {"bench": "plot", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "loadavg_1m": os.getloadavg()[0]},
                  "store_rows": built["rows"] if built else None, "repeats": args.repeats, "results": rows}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"\nappended to {RESULTS.relative_to(ROOT)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
