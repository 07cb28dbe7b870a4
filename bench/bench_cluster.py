"""The streaming passes on a dask.distributed LocalCluster against the local pass, on a LLaMA-8B-shaped store.

    .venv/bin/python bench/bench_cluster.py [--pairs 5000] [--layers 4] [--candidate-layers 2] [--workers 2]
        [--repeats 3] [--store DIR] [--keep]

Builds (or reuses, --store) a synthetic store of 2 × --pairs sentences (en-ja pairs) with LLaMA-3-8B's widths
(d_model 4096, d_mlp 14336) and --layers layers, random float16 arrays written through the Store API
(bench/bench_detect.py's builder). The paper's model has 32 layers; every pass here is per layer, so time and
memory per layer are what carry over (a full 32-layer, 10k-sentence store needs ~15 GB of disk and 8× the time).
Then, each in a fresh process, alternating local and cluster in every round:
    stats-local     the group-statistics pass (group_moments over every layer, 2 groups) in this process
    stats-cluster   the same as chunk tasks on a LocalCluster of --workers processes (one thread each)
    detect-local    `tnstore.detect` Type-1 ja over the first --candidate-layers layers
    detect-cluster  the same with scheduler= the LocalCluster
Local runs use every core; the cluster's workers split the same cores (equal total threads). Cluster start-up
and the workers' first numba load are timed apart from the pass. Peak memory: the process's VmHWM for local runs;
for the cluster, each worker's VmHWM before the pass (imports done) and after it, and the client's. Prints a
table (best of --repeats; all runs in the JSON) and appends one JSON line to bench/results/cluster.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cluster.jsonl"
PHASES = ("stats-local", "stats-cluster", "detect-local", "detect-cluster")


def _peak_mib() -> float:
    """VmHWM of this process (ru_maxrss would carry a parent's peak over through fork + exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def job(phase: str, store: str, workers: int, candidate_layers: int) -> dict:
    """One measurement, in this (fresh) process."""
    import tnstore

    from tnstore.analysis.stats.core import DEFAULT_WHERE, select_sentences
    from tnstore.compute import cluster
    from tnstore.kernels.group_stats import group_moments

    s = tnstore.open(store)
    layers = range(int(s.model_facts["n_layers"]))
    sel = select_sentences(s, "lang", DEFAULT_WHERE)
    out: dict = {"phase": phase, "rows": len(sel.rows)}
    if phase.endswith("local"):
        if phase == "stats-local":
            group_moments(s, sel.rows[:8], sel.codes[:8], len(sel.groups), [0])  # numba's load, not the pass
            t0 = time.perf_counter()
            group_moments(s, sel.rows, sel.codes, len(sel.groups), layers)
        else:
            t0 = time.perf_counter()
            tnstore.detect(s, type=1, lang="ja", top=1000, layers=(0, candidate_layers))
        out["seconds"] = time.perf_counter() - t0
        out["peak_mib"] = _peak_mib()
        return out
    t0 = time.perf_counter()
    with cluster.session(tnstore.Scheduler.local(workers)) as client:
        out["cluster_start_s"] = time.perf_counter() - t0
        probe = _worker_peak  # pickled by value: workers need not import this file
        t0 = time.perf_counter()
        group_moments(s, sel.rows[:8], sel.codes[:8], len(sel.groups), layers, scheduler=client)  # numba's load
        out["warmup_s"] = time.perf_counter() - t0
        out["worker_mib_before"] = sorted(client.run(probe).values())
        t0 = time.perf_counter()
        if phase == "stats-cluster":
            group_moments(s, sel.rows, sel.codes, len(sel.groups), layers, scheduler=client)
        else:
            tnstore.detect(s, type=1, lang="ja", top=1000, layers=(0, candidate_layers), scheduler=client)
        out["seconds"] = time.perf_counter() - t0
        out["worker_peak_mib"] = sorted(client.run(probe).values())
    out["client_peak_mib"] = _peak_mib()
    return out


def _worker_peak() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def in_fresh_process(phase: str, store: Path, workers: int, candidate_layers: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--job", phase, "--store", str(store), "--workers", str(workers),
                           "--candidate-layers", str(candidate_layers)], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5000, help="en-ja pairs: the store holds twice as many rows")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--candidate-layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--d-mlp", type=int, default=14336)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", type=Path, help="reuse (or build here and keep) this synthetic store")
    parser.add_argument("--keep", action="store_true", help="keep the store built in a temporary folder")
    parser.add_argument("--job", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(job(args.job, str(args.store), args.workers, args.candidate_layers)))
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_detect import build_synthetic_store

    tmp = Path(tempfile.mkdtemp(prefix="tnstore-bench-cluster-"))
    store = args.store or tmp / "store"
    build_s = None
    try:
        if not (store / "tnstore.json").is_file():
            t0 = time.perf_counter()
            build_synthetic_store(store, args.pairs, args.layers, args.d_model, args.d_mlp)
            build_s = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        runs: dict[str, list[dict]] = {phase: [] for phase in PHASES}
        for r in range(args.repeats):
            for kind in ("stats", "detect"):
                order = ("local", "cluster") if r % 2 == 0 else ("cluster", "local")
                for side in order:
                    result = in_fresh_process(f"{kind}-{side}", store, args.workers, args.candidate_layers)
                    runs[f"{kind}-{side}"].append(result)
                    print(f"round {r + 1}: {kind}-{side:<8} {result['seconds']:7.2f} s", file=sys.stderr)
    finally:
        if args.store is None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    best = {phase: min(rs, key=lambda x: x["seconds"]) for phase, rs in runs.items()}
    info = json.loads((store / "tnstore.json").read_text()) if store.exists() else {}
    rows = best["stats-local"]["rows"]
    n_layers, d_model, d_mlp = args.layers, args.d_model, args.d_mlp
    stats_values = rows * n_layers * d_mlp
    detect_steps = args.pairs * args.candidate_layers  # scored sentences × candidate layers
    row = {
        "rows": rows, "pairs": args.pairs, "n_layers": n_layers, "d_model": d_model, "d_mlp": d_mlp,
        "candidate_layers": args.candidate_layers, "workers": args.workers, "store_gib": disk / 2**30,
        "build_s": build_s, "runs": runs,
        "stats_local_s": best["stats-local"]["seconds"], "stats_cluster_s": best["stats-cluster"]["seconds"],
        "detect_local_s": best["detect-local"]["seconds"], "detect_cluster_s": best["detect-cluster"]["seconds"],
        "stats_local_peak_mib": best["stats-local"]["peak_mib"],
        "stats_worker_peak_mib": best["stats-cluster"]["worker_peak_mib"],
        "stats_worker_before_mib": best["stats-cluster"]["worker_mib_before"],
        "detect_local_peak_mib": best["detect-local"]["peak_mib"],
        "detect_worker_peak_mib": best["detect-cluster"]["worker_peak_mib"],
        "detect_worker_before_mib": best["detect-cluster"]["worker_mib_before"],
        "cluster_start_s": min(r["cluster_start_s"] for r in runs["stats-cluster"] + runs["detect-cluster"]),
        # per-worker rates, for the scaling estimate in the README
        "stats_values_per_s_per_worker": stats_values / best["stats-cluster"]["seconds"] / args.workers,
        "stats_values_per_s_local": stats_values / best["stats-local"]["seconds"],
        "detect_sentence_layers_per_s_per_worker": detect_steps / best["detect-cluster"]["seconds"] / args.workers,
        "detect_sentence_layers_per_s_local": detect_steps / best["detect-local"]["seconds"],
        "chunk_mib": 256 * d_mlp * 2 / 2**20, "model": info.get("model", {}).get("model_spec"),
        "machine": platform.machine(), "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"synthetic LLaMA-8B-shaped store: {rows} sentences ({args.pairs} en-ja pairs) x {n_layers} layers, "
          f"d_model {d_model}, d_mlp {d_mlp}, float16, {disk / 2**30:.1f} GiB; {args.workers} workers; "
          f"best of {args.repeats}")
    print(f"{'pass':<28} {'local s':>8} {'cluster s':>10} {'ratio':>6} {'local peak MiB':>15} "
          f"{'worker peak MiB (before)':>28}")
    for kind, what in (("stats", f"group stats, {n_layers} layers"),
                       ("detect", f"detect type 1, {args.candidate_layers} layers")):
        local, far = best[f"{kind}-local"], best[f"{kind}-cluster"]
        peaks = ", ".join(f"{p:.0f} ({b:.0f})" for p, b in zip(far["worker_peak_mib"], far["worker_mib_before"]))
        print(f"{what:<28} {local['seconds']:>8.2f} {far['seconds']:>10.2f} {far['seconds'] / local['seconds']:>6.2f} "
              f"{local['peak_mib']:>15.0f} {peaks:>28}")
    print(f"cluster start {row['cluster_start_s']:.1f} s (not in the pass times); a chunk of mlp_act is "
          f"{row['chunk_mib']:.1f} MiB; per worker: {row['stats_values_per_s_per_worker'] / 1e9:.2f} G values/s "
          f"(stats), {row['detect_sentence_layers_per_s_per_worker']:.1f} sentence-layers/s (detect)")
    print(f"(appended to {RESULTS.relative_to(ROOT)})", file=sys.stderr)


if __name__ == "__main__":
    main()
