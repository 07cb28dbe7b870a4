"""Distributed capture: 1 vs N torchrun ranks at equal total threads, against a bare forward of the same model.

    .venv/bin/python bench/bench_capture_ranks.py [--model smollm2-135m] [--sentences 1000] [--ranks 1 2]
        [--repeats 2] [--batch-size 32] [--dtype float32]

Runs unchanged on a GPU machine and on a CPU one:
- GPU (torch sees CUDA): each rank takes one GPU (`--ranks` defaults to 1 and every GPU), the ranks talk over
  NCCL, the taps gather on the device and each batch crosses to the host once. The bare pass is the decoder alone
  on one GPU over the same batches; the target is capture sentences/s per GPU >= 1/1.10 of it.
- CPU: gloo, and the cores are split between the ranks (TNSTORE_THREADS = cores / ranks, which also sets torch's
  and BLAS's threads), so every configuration uses the same total threads: on a CPU this shows the overhead of the
  ranks (two half-size forwards are no faster than one full-size one), not a gain.
Each capture is `python -m torch.distributed.run --nproc-per-node N -m tnstore capture ...` into a fresh store;
"capture s" is rank 0's capture loop as the runs table records it (model load excluded), "wall s" the whole
command. Rounds alternate the configurations. Prints a table and appends one JSON line to
bench/results/capture_ranks.jsonl.
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
from pathlib import Path

import tnstore  # noqa: F401  (before torch: OMP_WAIT_POLICY=PASSIVE, as the tnstore command has it)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "capture_ranks.jsonl"
CORPUS = ROOT.parent / "shared" / "data" / "tatoeba" / "en-ja.parallel.train.jsonl"


def capture(store: Path, ranks: int, args, cuda: bool, cores: int) -> dict:
    """One torchrun capture into a fresh store; rank 0's capture seconds and the wall time."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    if not cuda:
        env["TNSTORE_THREADS"] = str(max(1, cores // ranks))
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env.pop(name, None)  # tnstore derives them from TNSTORE_THREADS
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
           str(29500 + os.getpid() % 1000), "-m", "tnstore", "capture", "--model", args.model, "--corpus",
           str(CORPUS), "--limit", str(args.sentences // 2), "--store", str(store), "--batch-size",
           str(args.batch_size), "--dtype", args.dtype, "--quiet", "--device", "cuda" if cuda else "cpu"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{ranks} ranks failed:\n{done.stderr[-4000:]}")
    run = tnstore.open(store, mode="r").query("SELECT seconds, n_sentences, device FROM runs").to_pylist()[0]
    return {"ranks": ranks, "capture_s": run["seconds"], "wall_s": wall, "sentences": run["n_sentences"],
            "device": run["device"]}


def bare(args, cuda: bool) -> float:
    """The decoder alone over the capture's batches (rows in the run's order), on one device, all its threads."""
    import torch

    from tnstore.capture.corpus import load_corpus
    from tnstore.capture.runner import length_sorted, run_batches
    from tnstore.models.registry import load_model

    lm = load_model(args.model, device="cuda" if cuda else "cpu", dtype=args.dtype)
    rows, _ = length_sorted(lm, load_corpus(CORPUS, limit=args.sentences // 2))
    texts = [r["text"] for r in rows]
    batches = [texts[a:b] for a, b in run_batches([r["lang"] for r in rows], 256, args.batch_size)]
    decoder = lm.adapter.decoder(lm.model)
    with torch.inference_mode():
        decoder(**lm.tokenizer(batches[0], padding=True, return_tensors="pt").to(lm.device), use_cache=False)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for texts_ in batches:
            enc = lm.tokenizer(texts_, padding=True, return_tensors="pt").to(lm.device)
            decoder(**enc, use_cache=False)
        if cuda:
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--ranks", type=int, nargs="+")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    configs = args.ranks or ([1, torch.cuda.device_count()] if cuda else [1, 2])
    configs = list(dict.fromkeys(configs))
    runs: dict[int, list[dict]] = {n: [] for n in configs}
    bare_s = []
    tmp = Path(tempfile.mkdtemp(prefix="tnstore-bench-ranks-"))
    try:
        for r in range(args.repeats):
            bare_s.append(bare(args, cuda))
            print(f"round {r + 1}: bare forward {bare_s[-1]:.2f} s", file=sys.stderr)
            for n in configs if r % 2 == 0 else configs[::-1]:
                store = tmp / f"s{n}-{r}"
                runs[n].append(capture(store, n, args, cuda, cores))
                shutil.rmtree(store, ignore_errors=True)
                print(f"round {r + 1}: {n} rank(s) {runs[n][-1]['capture_s']:.2f} s", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bare_median = statistics.median(bare_s)
    n_sentences = runs[configs[0]][0]["sentences"]
    table = []
    for n in configs:
        capture_s = statistics.median(x["capture_s"] for x in runs[n])
        per_device = n if cuda else 1  # a GPU rank has a GPU of its own; CPU ranks share the same cores
        table.append({"ranks": n, "capture_s": capture_s, "wall_s": statistics.median(x["wall_s"] for x in runs[n]),
                      "sentences_per_s": n_sentences / capture_s,
                      "ratio_vs_bare": capture_s * per_device / bare_median,
                      "device": runs[n][0]["device"]})
    row = {"model": args.model, "sentences": n_sentences, "batch_size": args.batch_size, "dtype": args.dtype,
           "cuda": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None, "cores": cores,
           "bare_s": bare_median, "bare_s_all": bare_s, "configs": table, "runs": {str(k): v for k, v in runs.items()},
           "machine": platform.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    where = f"{torch.cuda.device_count()} x {row['gpu']}" if cuda else f"CPU, {cores} cores shared by the ranks"
    print(f"{args.model}, {n_sentences} Tatoeba sentences, batch {args.batch_size}, {args.dtype}, {where}; "
          f"median of {args.repeats}")
    print(f"bare decoder forward (one device, same batches): {bare_median:.2f} s "
          f"({n_sentences / bare_median:.1f} sentences/s)")
    print(f"{'ranks':>5} {'capture s':>10} {'wall s':>8} {'sent/s':>8} {'vs bare':>8}  device")
    for t in table:
        print(f"{t['ranks']:>5} {t['capture_s']:>10.2f} {t['wall_s']:>8.1f} {t['sentences_per_s']:>8.1f} "
              f"{t['ratio_vs_bare']:>8.3f}  {t['device']}")
    print("vs bare: capture time per device over the bare forward's (GPU: each rank has its own GPU; CPU: the "
          "ranks share the cores, so N ranks are compared with the same bare pass)")
    print(f"(appended to {RESULTS.relative_to(ROOT)})", file=sys.stderr)


if __name__ == "__main__":
    main()
