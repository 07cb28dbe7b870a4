"""Generation throughput: the runner with deactivation hooks against plain HF `generate`, and batched against
batch size 1.

    .venv/bin/python bench/bench_generate.py [--model gemma-3-270m] [--prompts 32] [--max-new-tokens 32]
                                             [--batch-size 8] [--neurons 1000] [--device cpu] [--repeats 2]

Prompts are the demo QA set's Japanese questions in the authors' template. Plain = `model.generate` on the same
left-padded batches with the same arguments (greedy, stop rules), no hooks. Hooked = tnstore's runner with a random
set of `--neurons` neurons from the first 62.5% of the layers deactivated, scope `prompt` (zeroed at prefill) and
`all` (every forward call). Each batch runs plain and hooked back to back, so a busy neighbour slows both alike;
the best of `--repeats` passes counts. New tokens/s counts generated tokens (padding after a row stopped excluded).
Prints a table and appends one JSON line to bench/results/generate.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from importlib import resources
from pathlib import Path

import tnstore  # noqa: F401  (OMP_WAIT_POLICY before torch)
import numpy as np
import torch

from tnstore.eval.generation import Generator, GenerationSettings
from tnstore.eval.mkqa import default_template, read_mkqa
from tnstore.models.deactivation import NeuronSet
from tnstore.models.registry import load_model

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "generate.jsonl"


def random_set(lm, k: int, seed: int = 42) -> NeuronSet:
    layers = max(1, round(lm.n_layers * 20 / 32))
    flat = np.random.default_rng(seed).choice(layers * lm.d_mlp, size=k, replace=False)
    return NeuronSet.from_pairs(f"random{k}", flat // lm.d_mlp, flat % lm.d_mlp)


def timed(fn) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--neurons", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    lm = load_model(args.model, device=args.device)
    data = read_mkqa(Path(str(resources.files("tnstore.data.eval").joinpath("qa_demo.jsonl"))), ["ja"])
    prompts = [default_template("ja").format(query=q.query) for q in data.items["ja"]][:args.prompts]
    neurons = random_set(lm, args.neurons)
    runners = {scope: Generator(lm, GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                                      positions=scope)) for scope in ("prompt", "all")}
    plain_runner = runners["prompt"]
    encoded = [plain_runner.encode(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    batches = [order[s:s + args.batch_size] for s in range(0, len(order), args.batch_size)]

    best = {"plain": float("inf"), "prompt": float("inf"), "all": float("inf"), "batch1": float("inf")}
    new_tokens = 0
    same = True
    for _ in range(args.repeats):
        totals = dict.fromkeys(best, 0.0)
        counted = 0
        for batch in batches:
            ids, mask = plain_runner.pad([encoded[i] for i in batch])
            t, out = timed(lambda: lm.model.generate(**plain_runner.generate_kwargs(ids, mask)))
            totals["plain"] += t
            plain_new = [plain_runner._result(prompts[i], len(encoded[i]), out[r, ids.shape[1]:].tolist())
                         for r, i in enumerate(batch)]
            counted += sum(g.n_new_tokens for g in plain_new)
            for scope in ("prompt", "all"):
                t, _ = timed(lambda: runners[scope].run([prompts[i] for i in batch], neurons))
                totals[scope] += t
            t, none_out = timed(lambda: runners["prompt"].run([prompts[i] for i in batch]))
            same &= [g.token_ids for g in none_out] == [g.token_ids for g in plain_new]
        one = Generator(lm, GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=1, positions="prompt"))
        t, _ = timed(lambda: one.run(prompts, neurons))
        totals["batch1"] = t
        best = {k: min(best[k], totals[k]) for k in best}
        new_tokens = counted

    rate = {k: new_tokens / v for k, v in best.items()}
    print(f"{args.model} on {args.device}: {len(prompts)} prompts, {new_tokens} new tokens, batch size "
          f"{args.batch_size}, {args.neurons} neurons deactivated, best of {args.repeats}")
    print(f"{'run':<28}{'seconds':>10}{'new tok/s':>12}{'vs plain':>10}")
    labels = {"plain": "HF generate, no hooks", "prompt": "runner, scope prompt", "all": "runner, scope all",
              "batch1": "runner prompt, batch size 1"}
    for key, label in labels.items():
        print(f"{label:<28}{best[key]:>10.2f}{rate[key]:>12.1f}{best[key] / best['plain']:>9.3f}x")
    print(f"runner without a set == plain generate token for token: {same}")
    row = {"model": args.model, "device": args.device, "prompts": len(prompts), "new_tokens": new_tokens,
           "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "neurons": args.neurons,
           "plain_s": best["plain"], "hooked_prompt_s": best["prompt"], "hooked_all_s": best["all"],
           "batch1_s": best["batch1"], "ratio_prompt": best["prompt"] / best["plain"],
           "ratio_all": best["all"] / best["plain"], "batched_speedup": best["batch1"] / best["prompt"],
           "none_equals_plain": same, "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
