"""Replay cost: the L2 side only (`tnstore replay`) vs the two-sided replay of the same pair file
(`tnstore capture --ablate`, both sides run again), and `--sets A,B` in one command vs one command per set.

    .venv/bin/python bench/bench_replay.py [--model gemma-3-270m] [--pairs 300] [--repeats 2]

Setup (not timed): a fresh store with the en-ja Tatoeba test pairs captured plain, and two random 1000-neuron
sets imported with `tnstore neurons import`. Every timed step is a real `tnstore` command in its own process
(model load included, as a user runs it) on a fresh copy of that store, so nothing is reused from an earlier
step; the runs' own `seconds` (the forward and write loop, without the model load) are reported too, and the CPU
seconds (user + system) each command used, which a busy shared machine disturbs much less than wall time. Steps
run in turns (two-sided, L2-only, one command, two commands) `--repeats` times; the table shows the fastest of
each. Prints a table and appends one JSON line to bench/results/replay.jsonl.
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
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "tatoeba" / "en-ja.parallel.test.jsonl"
RESULTS = REPO / "bench" / "results" / "replay.jsonl"
TNSTORE = [sys.executable, "-m", "tnstore.cli.app"]


def tn(*args: object) -> tuple[float, float]:
    """Run one tnstore command; (wall seconds, CPU seconds of the process: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(TNSTORE + [str(a) for a in args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"tnstore {' '.join(map(str, args))} failed:\n{done.stderr}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_seconds(store: Path) -> float:
    """Sum of the `seconds` of the runs that replayed (ablation not null): the loop without the model load."""
    rows = [r for f in sorted((store / "tables" / "runs").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sum(r["seconds"] for r in rows if r["ablation"] is not None)


def setup(base: Path, model: str, pairs: int) -> None:
    tn("capture", "--model", model, "--corpus", CORPUS, "--split", "test", "--limit", pairs, "--store", base,
       "--quiet")
    facts = json.loads((base / "tnstore.json").read_text())["model"]
    rng = np.random.default_rng(0)
    for name in ("A", "B"):
        flat = rng.choice(facts["n_layers"] * facts["d_mlp"], size=1000, replace=False)
        csv = base.parent / f"{name}.csv"
        csv.write_text("layer,neuron\n" + "".join(f"{v // facts['d_mlp']},{v % facts['d_mlp']}\n" for v in flat))
        tn("neurons", "import", base, csv, "--name", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    batch = ["--batch-size", args.batch_size, "--quiet"]
    best: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        setup(base, args.model, args.pairs)

        def fresh(name: str) -> Path:
            target = Path(tmp) / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(base, target)
            return target

        steps = {
            "two-sided (capture --ablate A)": lambda s: [tn("capture", "--model", args.model, "--corpus", CORPUS,
                                                            "--split", "test", "--limit", args.pairs, "--store", s,
                                                            "--ablate", "A", *batch)],
            "L2 only (replay --sets A)": lambda s: [tn("replay", s, "--sets", "A", "--langs", "ja", *batch)],
            "one command (--sets A,B)": lambda s: [tn("replay", s, "--sets", "A,B", "--langs", "ja", *batch)],
            "two commands (--sets A; --sets B)": lambda s: [tn("replay", s, "--sets", "A", "--langs", "ja", *batch),
                                                            tn("replay", s, "--sets", "B", "--langs", "ja", *batch)],
        }
        for _ in range(args.repeats):
            for label, step in steps.items():
                store = fresh("step")
                timings = step(store)
                measured = [sum(t[0] for t in timings), run_seconds(store), sum(t[1] for t in timings)]
                best[label] = [min(a, b) for a, b in zip(best.get(label, [float("inf")] * 3), measured)]
    labels = list(steps)
    two, one = best[labels[0]], best[labels[1]]
    together, apart = best[labels[2]], best[labels[3]]
    row = {
        "model": args.model, "pairs": args.pairs, "batch_size": args.batch_size, "repeats": args.repeats,
        "two_sided_s": two[0], "l2_only_s": one[0], "two_sided_run_s": two[1], "l2_only_run_s": one[1],
        "two_sided_cpu_s": two[2], "l2_only_cpu_s": one[2],
        "ratio_two_sided_over_l2": two[0] / one[0], "ratio_run_two_sided_over_l2": two[1] / one[1],
        "ratio_cpu_two_sided_over_l2": two[2] / one[2],
        "sets_one_command_s": together[0], "sets_two_commands_s": apart[0],
        "sets_one_command_cpu_s": together[2], "sets_two_commands_cpu_s": apart[2],
        "ratio_two_commands_over_one": apart[0] / together[0],
        "ratio_cpu_two_commands_over_one": apart[2] / together[2],
        "load_average": os.getloadavg()[0],
        "machine": platform.machine(), "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"{args.model}, {args.pairs} en-ja test pairs, batch {args.batch_size}, fastest of {args.repeats}")
    header = f"{'step':<36} {'command s':>10} {'run loop s':>11} {'command CPU s':>14}"
    print(header)
    print("-" * len(header))
    for label in labels:
        print(f"{label:<36} {best[label][0]:>10.1f} {best[label][1]:>11.1f} {best[label][2]:>14.1f}")
    print(f"two-sided / L2 only: {row['ratio_two_sided_over_l2']:.2f}x per command, "
          f"{row['ratio_run_two_sided_over_l2']:.2f}x per run loop, {row['ratio_cpu_two_sided_over_l2']:.2f}x CPU")
    print(f"two commands / one command (--sets A,B): {row['ratio_two_commands_over_one']:.2f}x, "
          f"{row['ratio_cpu_two_commands_over_one']:.2f}x CPU (load average {row['load_average']:.1f})")
    print(f"(appended to {RESULTS.relative_to(REPO)})", file=sys.stderr)


if __name__ == "__main__":
    main()
