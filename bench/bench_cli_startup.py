"""How fast the `tnstore` command starts: `--help` of the app and of every command, and `import tnstore`.

    .venv/bin/python bench/bench_cli_startup.py [--repeats 5]

Each is a fresh process (what a user waits for), timed best of N wall-clock. Target: every `--help` under 0.5 s.
Prints a table and appends one JSON line to bench/results/cli_startup.jsonl.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "cli_startup.jsonl"
TNSTORE = [str(Path(sys.executable).parent / "tnstore")]
TARGET_S = 0.5


def commands() -> list[list[str]]:
    """Every command path of the app, from typer's own tree (so a new command is timed too)."""
    import typer.main

    from tnstore.cli.app import app

    out = [[]]

    def walk(group, prefix):
        for name, command in getattr(group, "commands", {}).items():
            out.append(prefix + [name])
            walk(command, prefix + [name])

    walk(typer.main.get_command(app), [])
    return out


def best_of(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [("python -c 'pass'", best_of([sys.executable, "-c", "pass"], args.repeats)),
            ("import tnstore", best_of([sys.executable, "-c", "import tnstore"], args.repeats))]
    rows += [(" ".join(["tnstore", *c, "--help"]), best_of(TNSTORE + c + ["--help"], args.repeats)) for c in commands()]
    width = max(len(name) for name, _ in rows)
    print(f"{'command':<{width}}  seconds")
    for name, seconds in rows:
        flag = "" if not name.endswith("--help") or seconds < TARGET_S else f"  over the {TARGET_S} s target"
        print(f"{name:<{width}}  {seconds:7.3f}{flag}")
    helps = [s for name, s in rows if name.endswith("--help")]
    print(f"slowest --help: {max(helps):.3f} s (target < {TARGET_S} s)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps({"when": datetime.now(timezone.utc).isoformat(), "host": platform.node(),
                             "repeats": args.repeats, "seconds": dict(rows), "slowest_help_s": max(helps)}) + "\n")


if __name__ == "__main__":
    main()
