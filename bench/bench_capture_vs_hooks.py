"""tnstore capture against the tools a researcher would use instead, side by side on the same sentences.

    .venv/bin/python bench/bench_capture_vs_hooks.py [--model smollm2-135m] [--sentences 1000] [--repeats 3]
    bash bench/make_envs.sh      # first, once: the nnsight and TransformerLens environments (bench/envs/)

Tools (bench/capture_tools.py, each in a worker process of its own environment): `bare` (the decoder alone, no
LM head, no hooks: the floor), `tnstore` (a full `run_capture` into a fresh store: taps, float16 check and cast,
compressed writes, sentences and runs tables), `hooks-decoder` (a twenty-line transformers script with forward
hooks on the decoder only, as tnstore runs it), `hooks-full` (the same hooks on the full model, LM head
included), `nnsight` (LanguageModel.trace) and `transformer-lens` (TransformerBridge.run_with_cache). All capture
the same per-sentence last-token quantities (hidden states, pre-MLP residuals, alpha, MLP outputs) in float32 on
the CPU, batch 32; every tool but tnstore gets the sentences sorted by length over the whole corpus, tnstore the
corpus file (it sorts by itself). Model load is excluded. Each round runs every tool once, in a rotating order;
the table shows medians of --repeats rounds, so a busy neighbour slows every tool alike. A checksum of alpha from
every tool must agree with the hook script's (tnstore stores float16: relative 1e-3).
Appends one JSON line to bench/results/capture_vs_hooks.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "tatoeba" / "en-ja.parallel.train.jsonl"
RESULTS = REPO / "bench" / "results" / "capture_vs_hooks.jsonl"
ENVS = REPO / "bench" / "envs"
TOOLS = ("bare", "tnstore", "hooks-decoder", "hooks-full", "nnsight", "transformer-lens")
PYTHONS = {"nnsight": ENVS / "nnsight" / "bin" / "python", "transformer-lens": ENVS / "transformer-lens" / "bin" / "python"}


def padded_tokens(n_tokens: list[int], batch_size: int) -> int:
    """Tokens a right-padded forward processes when the sentences come in this order."""
    return sum(max(n_tokens[i:i + batch_size]) * len(n_tokens[i:i + batch_size])
               for i in range(0, len(n_tokens), batch_size))


def sort_plans(n_tokens: list[int], langs: list[str], batch_size: int, block: int = 256) -> dict[str, int]:
    """Padded tokens of: rows in corpus order (grouped by language), sorted inside each `block` rows (tnstore
    before issue 11), tnstore's run order and batches now (runner.run_batches: one sort per language, batches
    inside a block and a language) and one sort over the whole corpus (the researcher's script)."""
    from tnstore.capture.runner import run_batches

    def by_length(idx):
        return sorted(idx, key=lambda i: -n_tokens[i])

    def tokens(order):
        return padded_tokens([n_tokens[i] for i in order], batch_size)

    grouped = [i for lang in dict.fromkeys(langs) for i in range(len(langs)) if langs[i] == lang]
    per_block = [j for b in range(0, len(grouped), block) for j in by_length(grouped[b:b + block])]
    per_lang = [j for lang in dict.fromkeys(langs) for j in by_length([i for i in grouped if langs[i] == lang])]
    tnstore_now = sum(max(n_tokens[per_lang[i]] for i in range(a, b)) * (b - a)
                      for a, b in run_batches([langs[i] for i in per_lang], block, batch_size))
    return {"unsorted": tokens(grouped), "sorted_per_block": tokens(per_block), "tnstore": tnstore_now,
            "sorted_globally": tokens(by_length(range(len(langs)))), "real": sum(n_tokens)}


class Worker:
    """A tool's process: started, loaded and warmed up; `run()` times one pass."""

    def __init__(self, tool: str, python: Path, argv: list[str]):
        self.tool = tool
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([str(python), str(REPO / "bench" / "capture_tools.py"), tool, *argv],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)

    def wait_ready(self) -> None:
        line = self.proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise RuntimeError(f"{self.tool} did not start (exit {self.proc.poll()})")

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.tool} died (exit {self.proc.poll()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sentences", type=int, default=1000, help="sentences (en-ja pairs: half as many records)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    args = parser.parse_args()

    import tnstore  # noqa: F401  (thread environment)
    from transformers import AutoTokenizer

    from tnstore.capture.corpus import load_corpus
    from tnstore.models.registry import _hf_folder_for

    folder, _ = _hf_folder_for(args.model)
    n_pairs = args.sentences // 2
    rows = load_corpus(CORPUS, limit=n_pairs).rows
    texts, langs = [r["text"] for r in rows], [r["lang"] for r in rows]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    n_tokens = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    plans = sort_plans(n_tokens, langs, args.batch_size)
    ordered = [texts[i] for i in sorted(range(len(texts)), key=lambda i: -n_tokens[i])]
    workers: dict[str, Worker] = {}
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        sentences = Path(tmp) / "sentences.json"
        sentences.write_text(json.dumps(ordered), "utf-8")
        argv = ["--model-dir", folder, "--model-spec", args.model, "--sentences", str(sentences), "--corpus",
                str(CORPUS), "--limit", str(n_pairs), "--batch-size", str(args.batch_size)]
        for tool in args.tools:
            python = PYTHONS.get(tool, Path(sys.executable))
            if not python.exists():
                notes.append(f"{tool}: no environment at {python.parents[1]}; run bash bench/make_envs.sh")
                continue
            workers[tool] = Worker(tool, python, argv)
        try:
            for worker in workers.values():  # one at a time: loading in parallel would only contend for the cores
                worker.wait_ready()
            times: dict[str, list[float]] = {tool: [] for tool in workers}
            checks: dict[str, dict] = {}
            names = list(workers)
            for r in range(args.repeats):
                for tool in names[r % len(names):] + names[:r % len(names)]:
                    answer = workers[tool].run()
                    times[tool].append(answer["seconds"])
                    checks[tool] = answer
                    print(f"round {r + 1}: {tool:<17} {answer['seconds']:7.2f} s", file=sys.stderr)
        finally:
            for worker in workers.values():
                worker.close()
    medians = {tool: statistics.median(t) for tool, t in times.items()}
    reference = checks.get("hooks-decoder", {}).get("alpha_abs")
    agree = {}
    for tool, answer in checks.items():
        if answer.get("alpha_abs") is None or reference is None:
            agree[tool] = None
        else:
            agree[tool] = abs(answer["alpha_abs"] - reference) / reference <= 1e-3 and answer["rows"] == len(texts)
    row = {"model": args.model, "sentences": len(texts), "batch_size": args.batch_size, "repeats": args.repeats,
           "median_s": medians, "runs_s": times, "alpha_checksum_agrees": agree, "padded_tokens": plans,
           "capture_over_bare": medians.get("tnstore", float("nan")) / medians["bare"] if "bare" in medians else None,
           "torch_threads": _torch_threads(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    base = medians.get("bare")
    print(f"{args.model}, {len(texts)} Tatoeba sentences, batch {args.batch_size}, float32, model load excluded, "
          f"median of {args.repeats} alternating runs")
    print(f"{'tool':<17} {'median s':>9} {'min s':>7} {'/ bare':>7} {'/ tnstore':>9}  alpha agrees")
    for tool in workers:
        m = medians[tool]
        print(f"{tool:<17} {m:>9.2f} {min(times[tool]):>7.2f} {m / base if base else float('nan'):>7.3f} "
              f"{m / medians['tnstore'] if 'tnstore' in medians else float('nan'):>9.3f}  {agree[tool]}")
    print("padded tokens: " + ", ".join(f"{k} {v}" for k, v in plans.items()))
    for note in notes:
        print(note)
    print(f"(appended to {RESULTS.relative_to(REPO)})", file=sys.stderr)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
