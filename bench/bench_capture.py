"""Capture cost vs a bare forward pass, stored bytes per value, and model load times.

    .venv/bin/python bench/bench_capture.py [--models smollm2-135m gemma-3-270m] [--sentences 1000] [--batch-size 32]

The bare pass runs the same decoder (no LM head: capture computes no logits either) on the same
length-sorted batches, without hooks, hidden-state outputs or writes. Bare and capture run batch by batch back to
back, so a busy neighbour process skews both alike; a full `tnstore capture` run is timed as well.
Prints a table and appends one JSON line per model to bench/results/capture.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import tnstore  # noqa: F401  (OMP_WAIT_POLICY before torch)
import numpy as np
import torch

from tnstore.capture.corpus import load_corpus
from tnstore.capture.forward import PER_SENTENCE_ARRAYS, forward_last_token, row_shapes, token_counts
from tnstore.capture.runner import CaptureSettings, to_storage, run_capture
from tnstore.store.store import Store
from tnstore.models.registry import LoadedModel, load_model

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "tatoeba" / "en-ja.parallel.train.jsonl"
RESULTS = REPO / "bench" / "results" / "capture.jsonl"


@torch.inference_mode()
def paired_timings(lm: LoadedModel, texts: list[str], batch_size: int, block_rows: int, store_dir: Path) -> tuple[float, float]:
    """(bare seconds, capture seconds) over the same blocks and length-sorted batches, measured batch by batch.

    Each batch runs bare then captured back to back, so a busy neighbour slows both alike; capture time includes
    the taps, the last-token gathers, the float16 check and cast, and the compressed Zarr write of every block.
    """
    n_tokens = token_counts(lm, texts)
    decoder = lm.adapter.decoder(lm.model)
    store = Store.create(store_dir, lm.facts("float16"))
    dtypes = {name: "float16" for name in PER_SENTENCE_ARRAYS} | {"mlp_out_scale": "float32"}
    segment = store.create_segment("bench", len(texts), row_shapes(lm), dtypes, chunk_rows=block_rows)
    bare = captured = 0.0
    for start in range(0, len(texts), block_rows):
        block = texts[start : start + block_rows]
        order = np.argsort(-n_tokens[start : start + block_rows], kind="stable")
        pieces = []
        for b in range(0, len(block), batch_size):
            batch = [block[i] for i in order[b : b + batch_size]]
            t0 = time.perf_counter()
            enc = lm.tokenizer(batch, padding=True, return_tensors="pt")
            decoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False)
            t1 = time.perf_counter()
            pieces.append(forward_last_token(lm, batch))
            captured += time.perf_counter() - t1
            bare += t1 - t0
        t0 = time.perf_counter()
        inverse = np.argsort(order)
        stop = start + len(block)
        for name in PER_SENTENCE_ARRAYS:
            values = np.concatenate([p[name] for p in pieces])[inverse]
            segment[name][start:stop] = to_storage(values, dtypes[name], name)
        captured += time.perf_counter() - t0
    return bare, captured


def capture_once(lm: LoadedModel, corpus_path: Path, n_pairs: int, batch_size: int) -> tuple[float, int, int]:
    """(seconds, stored bytes of the run's segment, values stored) for one real capture into a fresh store."""
    corpus = load_corpus(corpus_path, limit=n_pairs)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s"
        settings = CaptureSettings(batch_size=batch_size, storage_dtype="float16", progress=False)
        t0 = time.perf_counter()
        run_capture(store, lm, corpus, settings)
        seconds = time.perf_counter() - t0
        seg = next((store / "segments").iterdir())
        stored = sum(p.stat().st_size for p in seg.rglob("*") if p.is_file())
        L, d, d_m = lm.n_layers, lm.d_model, lm.d_mlp
        per_sentence = (L + 1) * d + d + L * d + L * d_m + L * d + L
        return seconds, stored, per_sentence * len(corpus.rows)


def load_times(spec: str) -> tuple[float, float]:
    """(first load incl. GGUF conversion into an empty cache, later load from the cache) in seconds."""
    with tempfile.TemporaryDirectory() as cache:
        old = os.environ.get("TNSTORE_CACHE")
        os.environ["TNSTORE_CACHE"] = cache
        try:
            t0 = time.perf_counter()
            load_model(spec, device="cpu")
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            load_model(spec, device="cpu")
            later = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("TNSTORE_CACHE")
            else:
                os.environ["TNSTORE_CACHE"] = old
    return first, later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--sentences", type=int, default=1000, help="sentences captured (en+ja pairs / 2 records)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-load-times", action="store_true")
    args = parser.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    n_pairs = args.sentences // 2
    rows = []
    for spec in args.models:
        first, later = (float("nan"), float("nan")) if args.skip_load_times else load_times(spec)
        lm = load_model(spec, device="cpu")
        texts = [r["text"] for r in load_corpus(CORPUS, limit=n_pairs).rows]
        with tempfile.TemporaryDirectory() as tmp:
            bare, paired = paired_timings(lm, texts, args.batch_size, 256, Path(tmp) / "s")
        run_s, stored, values = capture_once(lm, CORPUS, n_pairs, args.batch_size)
        row = {
            "model": spec, "sentences": len(texts), "batch_size": args.batch_size,
            "bare_s": bare, "capture_s": paired, "ratio": paired / bare, "tnstore_capture_run_s": run_s,
            "bytes_per_value": stored / values, "load_first_s": first, "load_later_s": later,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        rows.append(row)
        with RESULTS.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    header = f"{'model':<14} {'sent':>5} {'bare s':>8} {'capture s':>10} {'ratio':>6} {'run s':>7} {'B/value':>8} {'load 1st s':>10} {'load later s':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<14} {r['sentences']:>5} {r['bare_s']:>8.2f} {r['capture_s']:>10.2f} {r['ratio']:>6.3f} {r['tnstore_capture_run_s']:>7.1f} "
              f"{r['bytes_per_value']:>8.3f} {r['load_first_s']:>10.1f} {r['load_later_s']:>12.1f}")
    print(f"(appended to {RESULTS.relative_to(REPO)}; float16 ceiling before compression is 2.0 B/value)", file=sys.stderr)
    shutil.rmtree(REPO / "bench" / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
