"""Benchmark of sharing a store (issue 10), each side of every ratio measured in the same run:

(a) checksums: XXH3-64 (the store's), XXH3-128, CRC32C, BLAKE3 on one 7 MiB chunk of float16 activations,
    and Blosc-LZ4 decompressing it (what a read does anyway). Those not installed are skipped.
(b) `verify` on an LLaMA-3-8B-shaped synthetic store (32 layers, d 4096, d_mlp 14336, random float16 in every
    array, down_proj included: about 3.8 GB of it), full and --fast, against reading the same files without
    hashing (the floor "disk speed" refers to). The store was just written, so both read from the page cache
    unless it is larger than memory; the table says how much memory the machine has.
(c) one layer of mlp_act for every row, read through the Store from the local folder, from a loopback HTTP
    server (tests/loopback.py: Python's http.server with Range support) and from moto's S3 on 127.0.0.1. Both
    servers are single Python processes, so the remote numbers are the servers' speed more than tnstore's.
(d) the cost of checking each chunk's checksum as it is read: `detect` (Type-1, 20 candidate layers) and the
    statistics pass (group_moments over every layer), each with check_reads on and off, alternating, best of
    --repeats. Target: <= 5%.

    .venv/bin/python bench/bench_sharing.py                    # full (needs ~6 GB disk, ~6 GB RAM)
    .venv/bin/python bench/bench_sharing.py --pairs 128 --layers 8   # smaller
    .venv/bin/python bench/bench_sharing.py --dir /tmp/b --keep     # keep the store to rerun with --dir

Prints a table and appends one JSON line to bench/results/sharing.jsonl.
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
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tnstore  # noqa: E402,F401  before numpy, as in the CLI

import numpy as np  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sharing.jsonl"


# ------------------------------------------------------------------------------------------------ (a)
def bench_checksums(repeats: int = 200) -> dict:
    from numcodecs import blosc

    rng = np.random.default_rng(0)
    chunk = (rng.standard_normal((256, 14336), dtype=np.float32) * 0.1).astype(np.float16)
    frame = bytes(blosc.compress(memoryview(chunk).cast("B"), b"lz4", 5, blosc.SHUFFLE, 2))
    candidates = {}
    try:
        import xxhash

        candidates["xxh3_64"] = xxhash.xxh3_64_intdigest
        candidates["xxh3_128"] = xxhash.xxh3_128_intdigest
    except ImportError:
        pass
    try:
        import crc32c

        candidates["crc32c"] = crc32c.crc32c
    except ImportError:
        pass
    try:
        import blake3

        candidates["blake3"] = lambda b: blake3.blake3(b).digest()
    except ImportError:
        pass
    out = {"chunk_bytes": len(frame)}
    for name, fn in candidates.items():
        fn(frame)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(frame)
        out[f"{name}_gb_s"] = len(frame) * repeats / (time.perf_counter() - t0) / 1e9
    dest = np.empty_like(chunk)
    t0 = time.perf_counter()
    for _ in range(repeats // 4):
        blosc.decompress(frame, dest)
    out["blosc_decompress_gb_s"] = len(frame) * (repeats // 4) / (time.perf_counter() - t0) / 1e9
    return out


# ------------------------------------------------------------------------------------------------ store
def build_store(path: Path, n_pairs: int, n_layers: int, d_model: int, d_mlp: int, seed: int = 0,
                chunk_rows: int = 256) -> float:
    """bench_detect's synthetic store (en rows then their ja partners, random float16, written through the Store
    API) with every per-sentence array written, so that every chunk exists and the store verifies. Seconds."""
    from bench.bench_detect import build_synthetic_store

    t0 = time.perf_counter()
    build_synthetic_store(path, n_pairs, n_layers, d_model, d_mlp, seed, chunk_rows, every_array=True,
                          command="bench/bench_sharing.py")
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ (b)
def bench_verify(path: Path, repeats: int) -> dict:
    from tnstore.store.verify import verify

    def plain_read() -> tuple[int, float]:
        """Every file read once into a reused buffer, no hashing (the same threads verify uses)."""
        from concurrent.futures import ThreadPoolExecutor

        from tnstore.compute.parallel import workers

        files = [p for p in path.rglob("*") if p.is_file() and p.name != "LOCK"]

        def read(p: Path) -> int:
            buffer = bytearray(8 << 20)
            total = 0
            with open(p, "rb", buffering=0) as fh:
                while n := fh.readinto(buffer):
                    total += n
            return total

        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers()) as pool:
            total = sum(pool.map(read, files))
        return total, time.perf_counter() - t0

    out: dict = {}
    full, fast, plain = [], [], []
    for _ in range(repeats):
        total, seconds = plain_read()
        plain.append(seconds)
        report = verify(path)
        assert report.ok, [p.line() for p in report.problems]
        full.append(report.seconds)
        fast.append(verify(path, fast=True).seconds)
    out.update(bytes=report.bytes, files=report.files, verify_s=min(full), verify_gb_s=report.bytes / min(full) / 1e9,
               read_s=min(plain), read_gb_s=total / min(plain) / 1e9, fast_s=min(fast),
               verify_over_read=min(full) / min(plain))
    return out


# ------------------------------------------------------------------------------------------------ (c)
def bench_remote(path: Path, layer: int, repeats: int, workdir: Path) -> dict:
    from tests.loopback import S3_ENV, http_server, s3_options, s3_server, upload
    from tnstore.store.store import Store

    os.environ.setdefault("TNSTORE_CACHE", str(workdir / "cache"))
    local = Store.open(path, mode="r")
    rows = np.arange(local.n_rows())
    expected = local.read_rows("mlp_act", rows, layer)
    nbytes = sum(local.files.size(f"{seg.prefix}/mlp_act/c/{r}/{layer}/0") or 0 for seg in local.segments()
                 for r in range(-(-(seg.row_end - seg.row_start) // seg.reader("mlp_act").chunks[0])))

    def timed(store) -> float:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            got = store.read_rows("mlp_act", rows, layer)
            best = min(best, time.perf_counter() - t0)
        assert np.array_equal(got, expected)
        return best

    out = {"layer": layer, "rows": int(len(rows)), "stored_mb": nbytes / 1e6}
    out["local_s"] = timed(local)
    with http_server(path) as (url, requests):
        remote = Store.open(url)
        remote.segments()[0].reader("mlp_act")
        requests.clear()
        out["http_s"] = timed(remote)
        out["http_requests_per_read"] = len(requests.paths("GET")) / repeats
    # moto keeps objects in memory: upload only what a read of this layer needs
    partial = workdir / "partial"
    for p in path.rglob("*"):
        rel = p.relative_to(path).as_posix()
        parts = rel.split("/")
        if not p.is_file() or "model" == parts[0]:
            continue
        if "c" in parts and parts[parts.index("c") - 1 : parts.index("c")] != ["mlp_act"]:
            continue
        if "c" in parts and parts[parts.index("c") + 2] != str(layer):
            continue
        (partial / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, partial / rel)
    os.environ.update(S3_ENV)
    with s3_server() as (endpoint, requests):
        url = upload(partial, endpoint, "bench")
        remote = Store.open(url, storage_options=s3_options(endpoint))
        remote.segments()[0].reader("mlp_act")
        requests.clear()
        out["s3_s"] = timed(remote)
        out["s3_requests_per_read"] = len(requests.paths("GET")) / repeats
    for side in ("local", "http", "s3"):
        out[f"{side}_mb_s"] = nbytes / out[f"{side}_s"] / 1e6
    return out


# ------------------------------------------------------------------------------------------------ (d)
def bench_check_cost(path: Path, candidate_layers: int, repeats: int, skip: set[str] = frozenset()) -> dict:
    from tnstore.analysis.detect import detect
    from tnstore.analysis.stats.core import DEFAULT_WHERE, select_sentences
    from tnstore.kernels.group_stats import group_moments
    from tnstore.store.store import Store

    layers = range(0, candidate_layers)
    # Wall time and this process's CPU time (all its threads): on a shared machine the CPU time is the steadier
    # measure of what the checks add; both are reported.
    times: dict[str, list[float]] = {f"{job}_{state}{kind}": [] for job in ("detect", "stats")
                                     for state in ("on", "off") for kind in ("", "_cpu")}
    probe = Store.open(path)
    sel = select_sentences(probe, "lang", DEFAULT_WHERE)
    n_layers = int(probe.model_facts["n_layers"])
    group_moments(probe, sel.rows[:8], sel.codes[:8], len(sel.groups), [0])  # numba's load, not the pass
    detect(probe, type=1, lang="ja", top=100, layers=range(0, 1))  # BLAS and thread start-up

    def timed(name: str, fn) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times[name].append(time.perf_counter() - t0)
        times[name + "_cpu"].append(time.process_time() - c0)

    for _ in range(repeats):
        for check in (True, False):
            state = "on" if check else "off"
            if "check_detect" not in skip:
                store = Store.open(path, check_reads=check)
                timed(f"detect_{state}", lambda: detect(store, type=1, lang="ja", top=1000, layers=layers))
            store = Store.open(path, check_reads=check)
            timed(f"stats_{state}", lambda: group_moments(store, sel.rows, sel.codes, len(sel.groups),
                                                          range(n_layers)))
    out = {k: min(v) for k, v in times.items() if v}
    out["all"] = times
    for job in ("detect", "stats"):
        if f"{job}_on" in out:
            out[f"{job}_cost"] = out[f"{job}_on"] / out[f"{job}_off"] - 1
            out[f"{job}_cpu_cost"] = out[f"{job}_on_cpu"] / out[f"{job}_off_cpu"] - 1
    return out


# ------------------------------------------------------------------------------------------------ main
def print_table(result: dict) -> None:
    a, b, c, d = (result.get(k, {}) for k in ("checksums", "verify", "remote", "check_cost"))
    print(f"\nsharing benchmark  ({result['machine']}, {result['memory_gb']:.0f} GB RAM; store {result['shape']})")
    print(f"{'measure':<58} {'result':>28}")
    for name in ("xxh3_64", "xxh3_128", "crc32c", "blake3", "blosc_decompress"):
        if f"{name}_gb_s" in a:
            print(f"{'(a) ' + name + ' on a 7 MiB float16 chunk':<58} {a[name + '_gb_s']:>22.1f} GB/s")
    if b:
        label = f"(b) verify, {b['files']} files, {b['bytes'] / 1e9:.2f} GB"
        print(f"{label:<58} {b['verify_gb_s']:>15.2f} GB/s ({b['verify_s']:.1f} s)")
        print(f"{'    plain read of the same files (no hash)':<58} {b['read_gb_s']:>15.2f} GB/s ({b['read_s']:.1f} s)")
        print(f"{'    verify / plain read':<58} {b['verify_over_read']:>27.2f}x")
        print(f"{'    verify --fast':<58} {b['fast_s']:>26.2f} s")
    if c:
        for side in ("local", "http", "s3"):
            extra = f", {c[side + '_requests_per_read']:.0f} GETs" if side != "local" else ""
            label = f"(c) mlp_act layer {c['layer']}, {c['rows']} rows, {side}"
            print(f"{label:<58} {c[side + '_mb_s']:>12.0f} MB/s ({c[side + '_s']:.2f} s{extra})")
    for job, label in (("detect", "(d) detect"), ("stats", "    statistics pass")):
        if f"{job}_on" in d:
            print(f"{label + ', checksums on / off, wall':<58} {d[job + '_on']:>10.2f} / {d[job + '_off']:.2f} s "
                  f"({100 * d[job + '_cost']:+.1f}%)")
            print(f"{'      CPU time of the process':<58} {d[job + '_on_cpu']:>10.2f} / {d[job + '_off_cpu']:.2f} s "
                  f"({100 * d[job + '_cpu_cost']:+.1f}%)")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=512, help="en-ja pairs (rows = 2x).")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--d-mlp", type=int, default=14336)
    parser.add_argument("--candidate-layers", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="Store folder to build (or reuse, if it holds a store).")
    parser.add_argument("--keep", action="store_true", help="Keep the store built under --dir.")
    parser.add_argument("--skip", default="", help="Comma list of parts to skip: checksums, verify, remote, "
                        "check_cost (or only check_detect).")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    workdir = Path(tempfile.mkdtemp(prefix="bench-sharing-"))
    path = args.dir or workdir / "store"
    result: dict = {"bench": "sharing", "at": datetime.now(timezone.utc).isoformat(), "command": " ".join(sys.argv),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
                    "load_average_before": os.getloadavg()}
    try:
        if "checksums" not in skip:
            result["checksums"] = bench_checksums()
        if not (path / "tnstore.json").is_file():
            result["build_s"] = build_store(path, args.pairs, args.layers, args.d_model, args.d_mlp)
        from tnstore.store.store import Store

        facts = Store.open(path, mode="r").model_facts
        result["shape"] = (f"{Store.open(path, mode='r').n_rows()} rows x {facts['n_layers']} layers, d "
                           f"{facts['d_model']}, d_mlp {facts['d_mlp']}")
        if "verify" not in skip:
            result["verify"] = bench_verify(path, max(1, args.repeats - 1))
        if "remote" not in skip:
            result["remote"] = bench_remote(path, min(12, int(facts["n_layers"]) - 1), args.repeats, workdir)
        if "check_cost" not in skip:
            result["check_cost"] = bench_check_cost(path, min(args.candidate_layers, int(facts["n_layers"])),
                                                    args.repeats, skip)
    finally:
        if not (args.dir and args.keep):
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_average_after"] = os.getloadavg()
    print_table(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
