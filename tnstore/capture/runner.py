"""The capture pass: corpus -> model -> one store segment + sentences/runs rows, resumable after a kill.

A run is identified by what determines its bytes (corpus content, split, kind, limit, model fingerprint,
storage dtype). Its rows are cut into blocks of `block_rows` (one Zarr chunk of rows); the journal records the
blocks written, with each chunk file's size and checksum, so the same command started again skips them and the
arrays end up as an uninterrupted run's. Durability: a block's chunk files are fsynced (and the folders that got
new entries) before the journal records the block, and a resumed run redoes any recorded block whose files are
not all there unchanged. At the end the run's catalog is written from the journal's records, then its
sentences, then its `runs` row (the commit).
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from tnstore import __version__
from tnstore.capture.corpus import Corpus
from tnstore.capture.forward import PER_SENTENCE_ARRAYS, Ablation, capture_block, row_shapes, token_counts
from tnstore.errors import ArgumentError, TnstoreError
from tnstore.models.registry import LoadedModel
from tnstore.store.integrity import FileRecord, digest
from tnstore.store.store import Store

STORAGE_DTYPES = ("float16", "float32")
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class CaptureSettings:
    split: str = "train"
    limit: int | None = None
    batch_size: int = 32
    block_rows: int = 256
    storage_dtype: str = "float16"
    command: str = ""
    wait_seconds: float = 0.0
    progress: bool = True
    ablation: Ablation | None = None  # the replay runner: capture with these neurons deactivated
    # A replay's input is rows of the store, not a file: what `runs.corpus` says instead of the corpus path.
    source: str | None = None


@dataclass(frozen=True)
class CaptureSummary:
    run_id: str
    row_start: int
    row_end: int
    seconds: float
    already_done: bool

    @property
    def n_sentences(self) -> int:
        return self.row_end - self.row_start


def check_storage_dtype(storage_dtype: str) -> None:
    if storage_dtype == "bfloat16":
        raise ArgumentError("storage_dtype", "{arg} bfloat16 has no Zarr/NumPy type; use float16 (default) or float32")
    if storage_dtype not in STORAGE_DTYPES:
        raise ArgumentError("storage_dtype", f"{{arg}} {storage_dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")


def check_store_model(store_path: Path, spec: str) -> None:
    """Refuse a store of another model before spending time loading this one."""
    if Store.exists(store_path):
        held = Store.open(store_path).model_facts["model_spec"]
        if held != spec:
            raise ArgumentError("store", f"store {store_path} holds captures of model {held!r}, not {spec!r}; "
                                         "use another {arg}")


def run_capture(store_path: Path, lm: LoadedModel, corpus: Corpus, settings: CaptureSettings) -> CaptureSummary:
    """Capture `corpus` into the store at `store_path` (created if missing). See module docstring."""
    check_storage_dtype(settings.storage_dtype)
    facts = lm.facts(settings.storage_dtype)
    store = Store.open(store_path) if Store.exists(store_path) else Store.create(store_path, facts)
    purpose = "replay" if settings.source is not None else f"capture of {corpus.path.name}"
    with store.writing(purpose, settings.wait_seconds):
        _check_same_model(store, facts)
        run_id = _run_id(corpus, settings, facts["fingerprint"])
        if store.sql("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).scalar():
            row = store.sql("SELECT row_start, row_end FROM runs WHERE run_id = ?", [run_id]).to_pylist()[0]
            return CaptureSummary(run_id, row["row_start"], row["row_end"], 0.0, already_done=True)
        _write_model_arrays(store, lm, settings.storage_dtype)
        return _capture_run(store, lm, corpus, settings, run_id)


def _check_same_model(store: Store, facts: dict) -> None:
    held = store.model_facts
    if held["fingerprint"] != facts["fingerprint"]:
        raise TnstoreError(
            f"store {store.path} holds model {held['model_spec']} with weights {held['fingerprint']}, "
            f"but these weights are {facts['fingerprint']}; use another store"
        )


def _run_id(corpus: Corpus, settings: CaptureSettings, fingerprint: str) -> str:
    key = f"{corpus.sha256}|{len(corpus.rows)}|{settings.split}|{corpus.rows[0]['kind']}|{fingerprint}|{settings.storage_dtype}"
    if settings.ablation is not None:
        key += f"|ablate:{settings.ablation.scope}:{settings.ablation.neurons.digest()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _write_model_arrays(store: Store, lm: LoadedModel, storage_dtype: str) -> None:
    layers = lm.adapter.layers(lm.model)
    arrays = {
        "down_proj": np.stack([lm.adapter.value_vectors(layer).cpu().numpy() for layer in layers]),
        "mlp_out_gain": np.stack([lm.adapter.mlp_out_gain(layer).cpu().numpy() for layer in layers]),
    }
    store.write_model_arrays(arrays, {"down_proj": storage_dtype, "mlp_out_gain": "float32"})


def _capture_run(store: Store, lm: LoadedModel, corpus: Corpus, settings: CaptureSettings, run_id: str) -> CaptureSummary:
    journal = store.read_journal(run_id)
    if journal is None:
        row_start = max([store.n_rows()] + [j["row_end"] for j in store.pending_journals()])
        journal = {
            "run_id": run_id, "row_start": row_start, "row_end": row_start + len(corpus.rows),
            "block_rows": settings.block_rows, "done_blocks": [], "blocks": {}, "started_at": _now().isoformat(),
        }
        store.write_journal(run_id, journal)
    n_rows = journal["row_end"] - journal["row_start"]
    block_rows = journal["block_rows"]
    dtypes = {name: settings.storage_dtype for name in PER_SENTENCE_ARRAYS} | {"mlp_out_scale": "float32"}
    segment = store.create_segment(run_id, n_rows, row_shapes(lm), dtypes, chunk_rows=block_rows)
    texts = [r["text"] for r in corpus.rows]
    n_tokens = token_counts(lm, texts)
    # A block the journal lists is redone unless every chunk file it recorded is there, whole and unchanged
    # (e.g. a power loss that lost files the journal had already counted, on a filesystem that lied about fsync).
    blocks = {int(b): files for b, files in journal.get("blocks", {}).items()
              if int(b) in set(journal["done_blocks"]) and _block_intact(store, run_id, files)}
    journal["blocks"] = {str(b): files for b, files in blocks.items()}
    done = set(blocks)
    t0 = time.perf_counter()
    try:
        with _progress(n_rows, len(done) * block_rows, settings.progress) as bar:
            for block, start in enumerate(range(0, n_rows, block_rows)):
                if block in done:
                    continue
                stop = min(start + block_rows, n_rows)
                arrays = capture_block(lm, texts[start:stop], n_tokens[start:stop], settings.batch_size, settings.ablation)
                for name, values in arrays.items():
                    segment[name][start:stop] = to_storage(values, dtypes[name], name)
                # The block's chunk files are durable (fsynced, their folders too) before the journal counts it.
                written = segment.sync()
                journal["blocks"][str(block)] = {k: r.to_json() for k, r in written.items()
                                                 if not k.endswith("zarr.json")}
                done.add(block)
                journal["done_blocks"] = sorted(done)
                store.write_journal(run_id, journal)
                bar.update(stop - start)
    except TnstoreError:
        # A problem of the input (e.g. float16 overflow): nothing of this run may stay behind.
        store.remove_segment(run_id)
        store.drop_journal(run_id)
        raise
    seconds = time.perf_counter() - t0
    chunks = {k: FileRecord.from_json(r, f"journal of run {run_id}")
              for files in journal["blocks"].values() for k, r in files.items()}
    store.seal_segment(run_id, chunks)
    _finish_run(store, corpus, settings, journal, n_tokens, seconds, lm)
    return CaptureSummary(run_id, journal["row_start"], journal["row_end"], seconds, already_done=False)


def _block_intact(store: Store, run_id: str, files: dict) -> bool:
    """Whether every chunk file a block's journal entry records is on disk with that size and checksum."""
    if not isinstance(files, dict) or not files:
        return False
    for key, raw in files.items():
        try:
            record = FileRecord.from_json(raw, "journal")
            data = store.files.read(f"segments/{run_id}.zarr/{key}", record.size)
        except TnstoreError:
            return False
        if data is None or len(data) != record.size or digest(data) != record.xxh3:
            return False
    return True


def to_storage(values: np.ndarray, dtype: str, name: str) -> np.ndarray:
    if not np.isfinite(values).all():
        raise TnstoreError(f"the model produced inf/nan in {name}; check the compute dtype (float32 is safest)")
    if dtype == "float16":
        peak = float(np.abs(values).max(initial=0.0))
        if peak > FLOAT16_MAX:
            raise ArgumentError(
                "storage_dtype",
                f"{name} reaches {peak:.0f}, beyond float16's {FLOAT16_MAX:.0f}; re-run with {{arg}} float32")
    return values.astype(dtype, copy=False)


def _finish_run(store: Store, corpus: Corpus, settings: CaptureSettings, journal: dict, n_tokens: np.ndarray,
                seconds: float, lm: LoadedModel) -> None:
    run_id, row_start, row_end = journal["run_id"], journal["row_start"], journal["row_end"]
    n = row_end - row_start
    sentences = pa.table({
        "row": np.arange(row_start, row_end, dtype=np.int64),
        "run_id": [run_id] * n,
        "lang": [r["lang"] for r in corpus.rows],
        "text": [r["text"] for r in corpus.rows],
        "pair_id": [r["pair_id"] for r in corpus.rows],
        "split": [settings.split] * n,
        "kind": [r["kind"] for r in corpus.rows],
        "source": [r["source"] for r in corpus.rows],
        "source_line": [r["source_line"] for r in corpus.rows],
        "n_tokens": n_tokens,
        "ablation": [settings.ablation.name if settings.ablation else None] * n,
    })
    store.write_rows("sentences", sentences)
    ablation = settings.ablation
    run = {
        "run_id": run_id, "origin": "capture" if settings.source is None else "replay", "command": settings.command,
        "corpus": settings.source if settings.source is not None else str(corpus.path.resolve()),
        "corpus_sha256": corpus.sha256, "split": settings.split, "kind": corpus.rows[0]["kind"],
        "limit_rows": settings.limit, "row_start": row_start, "row_end": row_end, "n_sentences": n,
        "batch_size": settings.batch_size, "device": str(lm.device),
        "compute_dtype": str(lm.dtype).removeprefix("torch."),
        "storage_dtype": settings.storage_dtype, "seconds": seconds,
        "ablation": ablation.name if ablation else None,
        "ablation_scope": ablation.scope if ablation else None,
        "ablation_digest": ablation.neurons.digest() if ablation else None,
        "ablation_size": ablation.neurons.size if ablation else None,
        "started_at": datetime.fromisoformat(journal["started_at"]), "finished_at": _now(),
        "tnstore_version": __version__,
    }
    # The runs row is written last: it is what makes the run's rows part of the store.
    store.write_rows("runs", pa.Table.from_pylist([run]))
    store.drop_journal(run_id)


class _progress:
    """tqdm bar with sentences/s on stderr, or nothing."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="sent", file=sys.stderr, dynamic_ncols=True, leave=False)

    def __enter__(self) -> "_progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)


def _now() -> datetime:
    return datetime.now(timezone.utc)
