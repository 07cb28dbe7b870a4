"""Benchmark of `tnstore detect` (issue 3), side by side in one run:

(a) smollm2-135m store (en-ja pairs, float32): `detect` vs the per-sentence reference loop, the way the authors'
    code scores neurons: for every layer and sentence, form r + a_i v_i for all neurons (vectorised over neurons)
    and take the distance to the centroid. Timed end to end (reads from the store included), in float64 (the
    correctness reference of the tests) and float32 (the authors' precision). Target: detect >= 50x faster.
(b) LLaMA-3-8B-shaped synthetic store (random float16 arrays written through the Store API, a LLaMA model row):
    `detect` vs the bare matrix products of the same shapes (n x d times d x d_mlp, float32, data already in
    memory, once per candidate layer). Target: <= 1.5x. The reference loop would take hours here, so it is timed
    on a few sentences of one layer and extrapolated (its reads left out, which flatters it).

Each measured job runs in a fresh process, so its peak RSS (ru_maxrss) is its own.

    .venv/bin/python bench/bench_detect.py                      # full size (needs ~10 GB disk, ~8 GB RAM to build)
    .venv/bin/python bench/bench_detect.py --sentences 200 --layers 8 --candidate-layers 5   # smaller
    .venv/bin/python bench/bench_detect.py --smollm2-store /tmp/s   # reuse a captured smollm2 store
    .venv/bin/python bench/bench_detect.py --skip-smollm2 --synthetic-store DIR --repeats 3   # reuse a built one

Prints a table and appends one JSON line to bench/results/detect.jsonl.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

# --without-pandas: what an install without the optional pandas gets (pyarrow imports pandas, where it is installed,
# on its first array: 0.2-0.3 s of a fresh process). Set here, so the spawned job processes inherit it.
class _NoPandas:
    """A meta-path finder that reports pandas as not installed (ModuleNotFoundError, as without it)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if os.environ.get("TNSTORE_BENCH_NO_PANDAS") == "1":
    sys.meta_path.insert(0, _NoPandas())

import tnstore  # noqa: E402,F401  before numpy, as in the CLI: it sets the BLAS threads' environment

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "detect.jsonl"
TATOEBA = ROOT.parent / "shared" / "data" / "tatoeba"


# ---------------------------------------------------------------- jobs (each runs in a fresh process)
def _peak_mib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent
    through fork + exec, so a child of the process that built a large store would report the parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (no /proc elsewhere)


def job_detect(store: str, type_: int, lang: str, top: int, layers: tuple[int, int] | None) -> dict:
    """One detection in a process that has loaded what a `tnstore detect` process loads (the CLI app), timed
    cold (its first call: page faults, BLAS and thread start-up) and warm (a second call, as in a notebook)."""
    import tnstore.cli.app  # noqa: F401
    from tnstore.analysis.detect import detect

    t0 = time.perf_counter()
    result = detect(store, type=type_, lang=lang, top=top, layers=layers)
    cold = time.perf_counter() - t0
    out = {"seconds": cold, "peak_mib": _peak_mib(), "n_sentences": result.n_sentences,
           "n_candidates": result.n_candidates}
    if layers is None:  # the small store: a second call is cheap
        t0 = time.perf_counter()
        detect(store, type=type_, lang=lang, top=top, layers=layers)
        out["warm_seconds"] = time.perf_counter() - t0
    return out


def job_reference(store: str, lang: str, layers: tuple[int, int], dtype: str, max_sentences: int | None = None) -> dict:
    """The per-sentence reference loop for Type-1 cosine scores; returns time, peak memory and the scores.

    `max_sentences` limits the loop to the first sentences (to time a sample at sizes where the loop takes hours);
    `loop_s_per_iteration` is then the time of one (layer, sentence) step without the reads.
    """
    import tnstore.cli.app  # noqa: F401  (loaded like job_detect's)
    from tnstore.store.store import Store

    t0 = time.perf_counter()
    db = Store.open(store)
    rows = db.query("SELECT e.row AS en, l.row AS l2 FROM sentences l JOIN sentences e USING (pair_id) "
                  "WHERE l.lang = ? AND e.lang = 'en' AND l.split = 'train' AND e.split = 'train' "
                  "AND l.ablation IS NULL AND e.ablation IS NULL ORDER BY l.row", [lang]).to_pydict()
    en_rows, l2_rows = np.array(rows["en"]), np.array(rows["l2"])
    scored = l2_rows[:max_sentences]
    down_proj, gain = db.model_array("down_proj"), db.model_array("mlp_out_gain")
    scores, loop_s = [], 0.0
    for layer in range(*layers):
        centroid = ((db.read_rows("hidden", en_rows, layer + 1) + db.read_rows("hidden", l2_rows, layer + 1)) / 2
                    ).astype(dtype).mean(axis=0)
        values = (np.asarray(down_proj[layer], dtype=dtype) * np.asarray(gain[layer], dtype=dtype))
        resid = db.read_rows("resid_pre_mlp", scored, layer).astype(dtype)
        act = (db.read_rows("mlp_act", scored, layer) * db.read_rows("mlp_out_scale", scored, layer)[:, None]).astype(dtype)
        c_norm = np.linalg.norm(centroid)
        total = np.zeros(values.shape[0], dtype=np.float64)
        t_loop = time.perf_counter()
        for k in range(len(scored)):
            moved = resid[k] + act[k][:, None] * values
            new = moved @ centroid / (np.sqrt(np.einsum("id,id->i", moved, moved)) * c_norm)
            total += new - resid[k] @ centroid / (np.linalg.norm(resid[k]) * c_norm)
        loop_s += time.perf_counter() - t_loop
        scores.append(total / len(scored))
    iterations = len(scored) * (layers[1] - layers[0])
    return {"seconds": time.perf_counter() - t0, "peak_mib": _peak_mib(), "scores": np.stack(scores),
            "loop_s_per_iteration": loop_s / iterations}


def job_bare_matmul(n: int, d_model: int, d_mlp: int, n_layers: int, seed: int) -> dict:
    """n x d_model times d_model x d_mlp in float32, once per layer, operands already in memory."""
    rng = np.random.default_rng(seed)
    resid = rng.standard_normal((n, d_model), dtype=np.float32)
    values = rng.standard_normal((d_mlp, d_model), dtype=np.float32)
    resid @ values[:64].T  # warm the BLAS threads
    t0 = time.perf_counter()
    for _ in range(n_layers):
        resid @ values.T
    return {"seconds": time.perf_counter() - t0, "peak_mib": _peak_mib()}


def in_fresh_process(fn, *args) -> dict:
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(fn, args)
    finally:
        pool.close()
        pool.join()


# ---------------------------------------------------------------- synthetic store
def llama_facts(n_layers: int, d_model: int, d_mlp: int, seed: int) -> dict:
    return {
        "model_spec": "synthetic-llama-3-8b-shape", "model_source": "bench/bench_detect.py (random weights)",
        "family": "llama", "architecture": "LlamaForCausalLM", "n_layers": n_layers, "d_model": d_model,
        "d_mlp": d_mlp, "vocab_size": 128256, "compute_dtype": "float32", "storage_dtype": "float16",
        "fingerprint": f"synthetic-{seed}", "tokenizer_adds_bos": True, "bos_token": "<|begin_of_text|>",
        "mlp_out_norm": "",
    }


def build_synthetic_store(path: Path, n_pairs: int, n_layers: int, d_model: int, d_mlp: int, seed: int = 0,
                          chunk_rows: int = 256, every_array: bool = False,
                          command: str = "bench/bench_detect.py") -> Path:
    """A store of n_pairs en rows then their n_pairs ja partners (the row order a parallel capture writes) with
    random float16 arrays.

    Written: hidden, resid_pre_mlp, mlp_act, mlp_out_scale (what detect reads) and the model arrays. mlp_out and
    final_raw are created but left unwritten (they read as zeros; detect never reads them) unless `every_array`
    (then every chunk exists and the store verifies: bench_sharing).
    """
    import pyarrow as pa

    from tnstore.store.store import Store

    rng = np.random.default_rng(seed)
    store = Store.create(path, llama_facts(n_layers, d_model, d_mlp, seed))
    n_rows = 2 * n_pairs
    with store.writing("bench: synthetic store"):
        values = np.empty((n_layers, d_mlp, d_model), dtype=np.float16)
        for layer in range(n_layers):
            values[layer] = rng.standard_normal((d_mlp, d_model), dtype=np.float32) * 0.02
        store.write_model_arrays({"down_proj": values, "mlp_out_gain": np.ones((n_layers, d_model), np.float32)},
                                 {"down_proj": "float16", "mlp_out_gain": "float32"})
        del values
        shapes = {"hidden": (n_layers + 1, d_model), "final_raw": (d_model,), "resid_pre_mlp": (n_layers, d_model),
                  "mlp_act": (n_layers, d_mlp), "mlp_out": (n_layers, d_model), "mlp_out_scale": (n_layers,)}
        dtypes = {name: "float16" for name in shapes} | {"mlp_out_scale": "float32"}
        run_id = f"synthetic{seed}"
        segment = store.create_segment(run_id, n_rows, shapes, dtypes, chunk_rows)
        outlier = rng.integers(0, d_model, size=4)  # LLM residuals have a few huge dimensions
        for start in range(0, n_rows, chunk_rows):
            stop = min(start + chunk_rows, n_rows)
            for name in ("hidden", "resid_pre_mlp"):
                block = rng.standard_normal((stop - start,) + shapes[name], dtype=np.float32)
                block[..., outlier] *= 30
                segment[name][start:stop] = block.astype(np.float16)
            segment["mlp_act"][start:stop] = (rng.standard_normal((stop - start, n_layers, d_mlp), dtype=np.float32)
                                              * 0.1).astype(np.float16)
            segment["mlp_out_scale"][start:stop] = np.ones((stop - start, n_layers), np.float32)
            if every_array:
                for name in ("final_raw", "mlp_out"):
                    segment[name][start:stop] = rng.standard_normal((stop - start,) + shapes[name],
                                                                    dtype=np.float32).astype(np.float16)
        pair_ids = [f"synthetic:{k % n_pairs}" for k in range(n_rows)]
        now = datetime.now(timezone.utc)
        store.write_rows("sentences", pa.table({
            "row": np.arange(n_rows, dtype=np.int64), "run_id": [run_id] * n_rows,
            "lang": ["en"] * n_pairs + ["ja"] * n_pairs, "text": [f"synthetic sentence {k}" for k in range(n_rows)],
            "pair_id": pair_ids, "split": ["train"] * n_rows, "kind": ["parallel"] * n_rows,
            "source": ["synthetic"] * n_rows, "source_line": np.arange(n_rows) % n_pairs + 1,
            "n_tokens": np.full(n_rows, 12, np.int32), "ablation": pa.nulls(n_rows, pa.string())}))
        store.write_rows("runs", pa.Table.from_pylist([{
            "run_id": run_id, "command": command, "corpus": "synthetic", "corpus_sha256": "",
            "split": "train", "kind": "parallel", "limit_rows": None, "row_start": 0, "row_end": n_rows,
            "n_sentences": n_rows, "batch_size": 0, "device": "cpu", "compute_dtype": "float32",
            "storage_dtype": "float16", "origin": "capture", "ablation": None, "ablation_scope": None,
            "ablation_digest": None, "ablation_size": None, "seconds": 0.0,
            "started_at": now, "finished_at": now, "tnstore_version": "bench"}]))
    return path


def capture_smollm2(path: Path, pairs: int) -> Path:
    from tnstore.capture.api import capture_corpus

    capture_corpus(store=path, corpus=TATOEBA / "en-ja.parallel.train.jsonl", model="smollm2-135m", limit=pairs,
                   device="cpu", dtype="float32", storage_dtype="float32", progress=False)
    return path


# ---------------------------------------------------------------- the two comparisons
def bench_smollm2(store: Path, repeats: int) -> dict:
    from tnstore.analysis.detect import default_layers
    from tnstore.store.store import Store

    facts = Store.open(store).model_facts
    layers = default_layers(1, facts["n_layers"])
    detect_runs = [in_fresh_process(job_detect, str(store), 1, "ja", 1000, None) for _ in range(repeats)]
    best = min(detect_runs, key=lambda r: r["seconds"])
    out = {"store": str(store), "model": facts["model_spec"], "n_sentences": best["n_sentences"],
           "layers": list(layers), "detect_s": best["seconds"], "detect_s_all": [r["seconds"] for r in detect_runs],
           "detect_warm_s": min(r["warm_seconds"] for r in detect_runs), "detect_peak_mib": best["peak_mib"]}
    fast = Store.open(store).query(
        "SELECT score FROM neuron_scores WHERE analysis_id = ? ORDER BY layer, neuron",
        [f"type1_ja_train_cosine_layers{layers[0]}-{layers[1]}"]).column("score").to_numpy()
    for dtype in ("float64", "float32"):
        # As many runs as detect gets, the fastest counts: the machine's noise then favours neither side.
        ref = min((in_fresh_process(job_reference, str(store), "ja", layers, dtype) for _ in range(repeats)),
                  key=lambda r: r["seconds"])
        scores = ref.pop("scores").ravel()
        top_ref = set(np.argsort(-scores, kind="stable")[:1000].tolist())
        top_fast = set(np.argsort(-fast, kind="stable")[:1000].tolist())
        out[f"reference_{dtype}_s"] = ref["seconds"]
        out[f"reference_{dtype}_peak_mib"] = ref["peak_mib"]
        out[f"speedup_vs_{dtype}"] = ref["seconds"] / best["seconds"]
        out[f"speedup_warm_vs_{dtype}"] = ref["seconds"] / out["detect_warm_s"]
        out[f"max_abs_diff_vs_{dtype}"] = float(np.abs(scores - fast).max())
        out[f"top1000_shared_vs_{dtype}"] = len(top_ref & top_fast)
    return out


def bench_synthetic(workdir: Path, n_pairs: int, n_layers: int, d_model: int, d_mlp: int, candidate_layers: int,
                    repeats: int, reference_sample: int = 5, store: Path | None = None) -> dict:
    """Build (or reuse) the synthetic store, then time detect and the bare products in alternation, so that
    other work on the machine hits both alike; the fastest run of each counts."""
    build_s = 0.0
    if store is None:
        store = workdir / "synthetic-store"
        t0 = time.perf_counter()
        build_synthetic_store(store, n_pairs, n_layers, d_model, d_mlp)
        build_s = time.perf_counter() - t0
    else:
        from tnstore.store.store import Store

        facts = Store.open(store).model_facts
        n_layers, d_model, d_mlp = facts["n_layers"], facts["d_model"], facts["d_mlp"]
        n_pairs = Store.open(store).query("SELECT count(*) AS n FROM sentences WHERE lang = 'ja'").column("n")[0].as_py()
    disk = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    layers = (0, candidate_layers)
    detect_runs, matmul_runs = [], []
    for _ in range(repeats):
        detect_runs.append(in_fresh_process(job_detect, str(store), 1, "ja", 1000, layers))
        matmul_runs.append(in_fresh_process(job_bare_matmul, n_pairs, d_model, d_mlp, candidate_layers, 0))
    best, bare = (min(runs, key=lambda r: r["seconds"]) for runs in (detect_runs, matmul_runs))
    sample = in_fresh_process(job_reference, str(store), "ja", (0, 1), "float32", reference_sample)
    reference_s = sample["loop_s_per_iteration"] * n_pairs * candidate_layers  # its reads not even counted
    return {"reference_sample_sentences": reference_sample, "reference_s_per_step": sample["loop_s_per_iteration"],
            "reference_estimated_s": reference_s, "speedup_vs_reference_estimate": reference_s / best["seconds"],
            "n_sentences_scored": n_pairs, "n_rows": 2 * n_pairs, "n_layers": n_layers, "d_model": d_model,
            "d_mlp": d_mlp, "candidate_layers": candidate_layers, "build_s": build_s, "store_gib": disk / 2**30,
            "detect_s": best["seconds"], "detect_s_all": [r["seconds"] for r in detect_runs],
            "detect_peak_mib": best["peak_mib"], "bare_matmul_s": bare["seconds"],
            "bare_matmul_s_all": [r["seconds"] for r in matmul_runs], "bare_matmul_peak_mib": bare["peak_mib"],
            "ratio": best["seconds"] / bare["seconds"],
            "ratio_per_pair": [d["seconds"] / m["seconds"] for d, m in zip(detect_runs, matmul_runs)]}


# ---------------------------------------------------------------- report
def print_table(result: dict) -> None:
    a, b = result.get("smollm2"), result.get("synthetic")
    print(f"\ntnstore detect benchmark on {result['machine']} (1-min load average before {result['load_average_before'][0]:.2f}, "
          f"after {result['load_average_after'][0]:.2f}: other work on the machine slows both sides)")
    if a:
        print(f"\n(a) {a['model']}: Type-1 ja, layers {a['layers'][0]}:{a['layers'][1]}, {a['n_sentences']} sentences scored")
        print(f"  {'job':<34}{'seconds':>10}{'peak MiB':>10}{'detect is':>12}{'max |diff|':>12}{'top-1000 shared':>17}")
        print(f"  {'detect (fresh process)':<34}{a['detect_s']:>10.2f}{a['detect_peak_mib']:>10.0f}")
        print(f"  {'detect (second call, warm)':<34}{a['detect_warm_s']:>10.2f}")
        for dtype in ("float64", "float32"):
            print(f"  {'per-sentence reference, ' + dtype:<34}{a[f'reference_{dtype}_s']:>10.2f}"
                  f"{a[f'reference_{dtype}_peak_mib']:>10.0f}{a[f'speedup_vs_{dtype}']:>11.1f}x"
                  f"{a[f'max_abs_diff_vs_{dtype}']:>12.1e}{a[f'top1000_shared_vs_{dtype}']:>17}"
                  f"   (warm: {a[f'speedup_warm_vs_{dtype}']:.1f}x)")
    if b:
        built = f"built in {b['build_s']:.0f} s" if b["build_s"] else "reused"
        print(f"\n(b) LLaMA-3-8B-shaped synthetic store: {b['n_sentences_scored']} sentences scored ({b['n_rows']} rows), "
              f"{b['n_layers']} layers, d={b['d_model']}, d_m={b['d_mlp']}, {b['candidate_layers']} candidate layers "
              f"(float16, {b['store_gib']:.1f} GiB, {built})")
        print(f"  {'job':<34}{'seconds':>10}{'peak MiB':>10}")
        print(f"  {'detect':<34}{b['detect_s']:>10.2f}{b['detect_peak_mib']:>10.0f}")
        print(f"  {'bare float32 matrix products':<34}{b['bare_matmul_s']:>10.2f}{b['bare_matmul_peak_mib']:>10.0f}")
        print(f"  detect / bare = {b['ratio']:.2f}x (fastest of each; run by run: "
              f"{', '.join(f'{r:.2f}' for r in b['ratio_per_pair'])})")
        print(f"  per-sentence reference (float32): {b['reference_s_per_step']:.3f} s per (layer, sentence) step, timed on "
              f"{b['reference_sample_sentences']} sentences of one layer; for all {b['n_sentences_scored']} x "
              f"{b['candidate_layers']} steps ~{b['reference_estimated_s']:.0f} s, so detect is "
              f"~{b['speedup_vs_reference_estimate']:.0f}x faster")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smollm2-store", type=Path, help="A captured smollm2 en-ja float32 store (default: capture one).")
    parser.add_argument("--pairs", type=int, default=200, help="en-ja pairs to capture for (a).")
    parser.add_argument("--sentences", type=int, default=1000, help="Scored sentences in (b) (as many en partners).")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--d-mlp", type=int, default=14336)
    parser.add_argument("--candidate-layers", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each timed job; the fastest counts.")
    parser.add_argument("--reference-sample", type=int, default=5,
                        help="Sentences of one layer on which (b) times the per-sentence reference loop.")
    parser.add_argument("--synthetic-store", type=Path,
                        help="Reuse a store built by build_synthetic_store (its shapes override --layers/--d-*).")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--without-pandas", action="store_true",
                        help="Run the jobs as an install without the optional pandas would (pandas hidden).")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--workdir", type=Path, help="Where temporary stores go (default: a temp dir, removed).")
    args = parser.parse_args(argv)
    if args.without_pandas:
        os.environ["TNSTORE_BENCH_NO_PANDAS"] = "1"  # the job processes (spawned) hide pandas

    workdir = Path(tempfile.mkdtemp(prefix="bench-detect-", dir=args.workdir))
    result: dict = {"bench": "detect", "at": datetime.now(timezone.utc).isoformat(), "command": " ".join(sys.argv),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "load_average_before": os.getloadavg(), "without_pandas": args.without_pandas}
    try:
        if not args.skip_smollm2:
            store = args.smollm2_store or capture_smollm2(workdir / "smollm2", args.pairs)
            result["smollm2"] = bench_smollm2(store, args.repeats)
        if not args.skip_synthetic:
            result["synthetic"] = bench_synthetic(workdir, args.sentences, args.layers, args.d_model, args.d_mlp,
                                                  args.candidate_layers, args.repeats, args.reference_sample,
                                                  args.synthetic_store)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_average_after"] = os.getloadavg()
    print_table(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
