"""The capture pass: corpus -> model -> one store segment + sentences/runs rows, resumable after a kill.

A run is identified by what determines its bytes (corpus content, split, kind, limit, model fingerprint,
storage dtype). Its rows are cut into blocks of `block_rows` (one Zarr chunk of rows); the journal records the
blocks written, with each chunk file's size and checksum, so the same command started again skips them and the
arrays end up as an uninterrupted run's. Durability: a block's chunk files are fsynced (and the folders that got
new entries) before the journal records the block, and a resumed run redoes any recorded block whose files are
not all there unchanged. At the end the run's catalog is written from the journal's records, then its
sentences, then its `runs` row (the commit).

Row order. Within a run, rows are grouped by language (in the corpus's order of languages) and sorted by token
count, longest first, ties in corpus order: one deterministic sort per language, so a resumed run cuts the same
blocks, and batches of neighbours pad little. Batches never cross a block or a language (the shortest sentences
of one language next to the longest of the next would pad most). The `sentences` table maps each row to its
corpus record (source, source_line, pair_id); nothing depends on rows being in file order.

Pipelining. While block b+1 runs through the model, a writer thread checks, casts, compresses and writes block b
and then journals it, so the forward never waits for the disk (at most one finished block waits for the writer).

Ranks (tnstore.capture.distributed). Under torchrun every rank loads the model and captures its share of the
blocks not yet done (every world-th one), writing only its own chunk files; rank 0 holds the writer lock, writes
the journal for every rank (after each block the ranks tell it which of theirs are durable) and commits last. A
failure on any rank stops every rank at the next block, with its message, before anything is committed. One
process is a world of one. A run's bytes do not depend on the number of ranks: blocks and batches are cut from
the sorted rows alone.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import queue
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tnstore import __version__
from tnstore.capture import distributed as D
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


def run_capture(store_path: Path, lm: LoadedModel, corpus: Corpus, settings: CaptureSettings,
                ranks: D.Ranks = D.ONE) -> CaptureSummary:
    """Capture `corpus` into the store at `store_path` (created if missing). See module docstring.

    ranks: this process's rank of a torchrun capture, every rank calling run_capture with the same arguments
    (default: one process)."""
    check_storage_dtype(settings.storage_dtype)
    facts = lm.facts(settings.storage_dtype)
    run_id = _run_id(corpus, settings, facts["fingerprint"])
    rows, n_tokens = length_sorted(lm, corpus)
    with ExitStack() as held:
        leading: dict[str, Any] = {}

        def decide() -> "_Plan | CaptureSummary":  # rank 0, for every rank
            store = Store.open(store_path) if Store.exists(store_path) else Store.create(store_path, facts)
            purpose = "replay" if settings.source is not None else f"capture of {corpus.path.name}"
            held.enter_context(store.writing(purpose, settings.wait_seconds))
            leading["store"] = store
            return _plan(store, lm, corpus, settings, facts, run_id, leading)

        plan = D.leader_decides(ranks, decide)
        if isinstance(plan, CaptureSummary):
            return plan
        store = leading["store"] if ranks.leader else Store.open(store_path)
        return _capture_run(store, lm, corpus, rows, n_tokens, settings, plan, ranks, leading.get("journal"))


@dataclass(frozen=True)
class _Plan:
    """What every rank needs to know about the run rank 0 opened: its rows and the blocks already done."""

    run_id: str
    row_start: int
    row_end: int
    block_rows: int
    done: tuple[int, ...]


def _plan(store: Store, lm: LoadedModel, corpus: Corpus, settings: CaptureSettings, facts: dict, run_id: str,
          leading: dict[str, Any]) -> "_Plan | CaptureSummary":
    """Rank 0, holding the lock: the finished run's summary, or the run started or resumed (journal, arrays)."""
    _check_same_model(store, facts)
    if store.sql("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).scalar():
        row = store.sql("SELECT row_start, row_end FROM runs WHERE run_id = ?", [run_id]).to_pylist()[0]
        return CaptureSummary(run_id, row["row_start"], row["row_end"], 0.0, already_done=True)
    journal = store.read_journal(run_id)
    if journal is None:
        row_start = max([store.n_rows()] + [j["row_end"] for j in store.pending_journals()])
        journal = {
            "run_id": run_id, "row_start": row_start, "row_end": row_start + len(corpus.rows),
            "block_rows": settings.block_rows, "done_blocks": [], "blocks": {}, "started_at": _now().isoformat(),
        }
        store.write_journal(run_id, journal)
    n_rows = journal["row_end"] - journal["row_start"]
    store.create_segment(run_id, n_rows, row_shapes(lm), _dtypes(settings), chunk_rows=journal["block_rows"])
    # A block the journal lists is redone unless every chunk file it recorded is there, whole and unchanged
    # (e.g. a power loss that lost files the journal had already counted, on a filesystem that lied about fsync).
    blocks = {int(b): files for b, files in journal.get("blocks", {}).items()
              if int(b) in set(journal["done_blocks"]) and _block_intact(store, run_id, files)}
    journal["blocks"] = {str(b): files for b, files in sorted(blocks.items())}
    journal["done_blocks"] = sorted(blocks)
    leading["journal"] = journal
    return _Plan(run_id, journal["row_start"], journal["row_end"], journal["block_rows"], tuple(sorted(blocks)))


def _dtypes(settings: CaptureSettings) -> dict[str, str]:
    return {name: settings.storage_dtype for name in PER_SENTENCE_ARRAYS} | {"mlp_out_scale": "float32"}


def length_sorted(lm: LoadedModel, corpus: Corpus) -> tuple[list[dict], np.ndarray]:
    """The corpus's records in run order (module docstring: by language, longest first, ties in corpus order)
    and their token counts (n,) int32."""
    n_tokens = token_counts(lm, [r["text"] for r in corpus.rows])
    langs = [r["lang"] for r in corpus.rows]
    first = {lang: i for i, lang in reversed(list(enumerate(langs)))}
    order = np.lexsort((np.arange(len(langs)), -n_tokens.astype(np.int64), np.array([first[x] for x in langs])))
    return [corpus.rows[i] for i in order], n_tokens[order]


def language_runs(langs: list[str], start: int, stop: int) -> list[tuple[int, int]]:
    """(a, b) spans of rows start..stop-1 holding one language each, in order."""
    cuts = [i for i in range(start + 1, stop) if langs[i] != langs[i - 1]]
    bounds = [start] + cuts + [stop]
    return list(zip(bounds[:-1], bounds[1:]))


def run_batches(langs: list[str], block_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """The (start, stop) rows of every batch a run of rows `langs` (in run order) is captured in."""
    return [(b, min(b + batch_size, stop_)) for s in range(0, len(langs), block_rows)
            for a, stop_ in language_runs(langs, s, min(s + block_rows, len(langs)))
            for b in range(a, stop_, batch_size)]


def _capture_rows(lm: LoadedModel, texts: list[str], n_tokens: np.ndarray, langs: list[str], start: int, stop: int,
                  settings: CaptureSettings) -> dict[str, np.ndarray]:
    """Every per-sentence array of rows start..stop-1, batched inside each language's span."""
    parts = [capture_block(lm, texts[a:b], n_tokens[a:b], settings.batch_size, settings.ablation)
             for a, b in language_runs(langs, start, stop)]
    return parts[0] if len(parts) == 1 else {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


@dataclass(frozen=True)
class _Status:
    """One rank's report after a step: blocks made durable since its last report (block -> chunk records) and
    the error that stopped it, if any."""

    rank: int
    blocks: dict[int, dict]
    error: BaseException | None = None


def _capture_run(store: Store, lm: LoadedModel, corpus: Corpus, rows: list[dict], n_tokens: np.ndarray,
                 settings: CaptureSettings, plan: _Plan, ranks: D.Ranks, journal: dict | None) -> CaptureSummary:
    """Every rank: capture its blocks of the run. Rank 0 (which has the `journal`) journals and commits."""
    n_rows = plan.row_end - plan.row_start
    dtypes = _dtypes(settings)
    segment = store.create_segment(plan.run_id, n_rows, row_shapes(lm), dtypes, chunk_rows=plan.block_rows)
    texts, langs = [r["text"] for r in rows], [r["lang"] for r in rows]
    starts = list(range(0, n_rows, plan.block_rows))
    todo = [b for b in range(len(starts)) if b not in set(plan.done)]
    mine = ranks.mine(todo)
    writer = _BlockWriter(store, plan.run_id, segment, dtypes)
    if journal is not None:  # rank 0: the model's arrays (once per store) are written while the first block runs
        writer.put_model_arrays(lm, settings.storage_dtype)
    t0 = time.perf_counter()
    try:
        with _progress(n_rows, len(plan.done) * plan.block_rows, settings.progress and ranks.leader) as bar:
            for step in range(ranks.steps(len(todo)) + 1):  # the last step only reports the final writes
                error = None
                if step < len(mine):
                    start = starts[mine[step]]
                    stop = min(start + plan.block_rows, n_rows)
                    try:
                        arrays = _capture_rows(lm, texts, n_tokens, langs, start, stop, settings)
                        writer.put_block(mine[step], start, stop, arrays)
                    except Exception as exc:  # reported to every rank below
                        error = exc
                else:
                    writer.drain()
                report = _Status(ranks.rank, writer.take_finished(), _portable(error or writer.error, ranks))
                statuses = D.exchange(ranks, report)
                if journal is not None:
                    finished = {b: files for s in statuses for b, files in s.blocks.items()}
                    if finished:
                        journal["blocks"].update({str(b): files for b, files in sorted(finished.items())})
                        journal["done_blocks"] = sorted(int(b) for b in journal["blocks"])
                        writer.put_journal(_snapshot(journal))
                    bar.update(sum(min(starts[b] + plan.block_rows, n_rows) - starts[b] for b in finished))
                _raise_first_failure(statuses, ranks, error or writer.error)
    except TnstoreError:
        # A problem of the input (e.g. float16 overflow): nothing of this run may stay behind. Every rank has
        # stopped writing (the writer is closed) before rank 0 removes the run.
        writer.close()
        D.barrier(ranks)
        if ranks.leader:
            store.remove_segment(plan.run_id)
            store.drop_journal(plan.run_id)
        raise
    finally:
        writer.close()
    seconds = time.perf_counter() - t0

    def commit() -> CaptureSummary:
        if writer.error is not None:  # rank 0's last journal write
            raise writer.error
        chunks = {k: FileRecord.from_json(r, f"journal of run {plan.run_id}")
                  for files in journal["blocks"].values() for k, r in files.items()}
        store.seal_segment(plan.run_id, chunks)
        _finish_run(store, corpus, rows, settings, journal, n_tokens, seconds, lm, ranks)
        return CaptureSummary(plan.run_id, plan.row_start, plan.row_end, seconds, already_done=False)

    return D.leader_decides(ranks, commit)


def _portable(error: BaseException | None, ranks: D.Ranks) -> BaseException | None:
    """`error` as it can travel to the other ranks (pickled): itself where it can, else a TnstoreError naming it."""
    if error is None or not ranks.distributed:
        return error
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return TnstoreError(f"{type(error).__name__}: {error}")


def _snapshot(journal: dict) -> dict:
    """A copy of the journal the writer thread may encode while rank 0 goes on adding blocks."""
    return {**journal, "blocks": dict(journal["blocks"]), "done_blocks": list(journal["done_blocks"])}


def _raise_first_failure(statuses: list[_Status], ranks: D.Ranks, own: BaseException | None) -> None:
    """Every rank stops on the lowest failed rank's error: its TnstoreError as it is (the same one-line message
    on every rank), anything else re-raised where it happened and named on the others."""
    failed = [s for s in statuses if s.error is not None]
    if not failed:
        return
    first = failed[0]
    if isinstance(first.error, TnstoreError):
        raise first.error
    if own is not None and first.rank == ranks.rank:
        raise own
    raise TnstoreError(f"rank {first.rank} of the capture failed ({type(first.error).__name__}: {first.error}); "
                       "the run is not committed: fix the cause and run the same command again to resume it")


class _BlockWriter:
    """A thread that writes finished blocks (check, cast, compress, write, fsync) and the journal, in the order
    given, while the caller runs the next forward. At most one job waits. The first error stops it; the caller
    sees it in `error`."""

    def __init__(self, store: Store, run_id: str, segment: Any, dtypes: dict[str, str]):
        self.store, self.run_id, self.segment, self.dtypes = store, run_id, segment, dtypes
        self.error: BaseException | None = None
        self._jobs: queue.Queue = queue.Queue(maxsize=1)
        self._finished: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="tnstore-writer", daemon=True)
        self._thread.start()

    def put_block(self, block: int, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        self._put(("block", block, start, stop, arrays))

    def put_journal(self, entry: dict) -> None:
        self._put(("journal", entry))

    def put_model_arrays(self, lm: LoadedModel, storage_dtype: str) -> None:
        self._put(("model", lm, storage_dtype))

    def _put(self, job: tuple) -> None:
        while self.error is None and self._thread.is_alive():
            try:
                self._jobs.put(job, timeout=0.1)
                return
            except queue.Full:
                continue

    def take_finished(self) -> dict[int, dict]:
        """Blocks whose chunk files are durable since the last call: block -> {chunk key: record}."""
        with self._lock:
            done, self._finished = self._finished, {}
        return done

    def drain(self) -> None:
        """Wait until every job given so far is done (or skipped after an error)."""
        self._jobs.join()

    def close(self) -> None:
        if self._thread.is_alive():
            self.drain()
            self._jobs.put(None)
            self._thread.join()

    def _work(self) -> None:
        _yield_to_forward()
        while (job := self._jobs.get()) is not None:
            try:
                if self.error is None:
                    self._do(job)
            except BaseException as exc:  # handed to the capture loop, which stops every rank
                self.error = exc
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def _do(self, job: tuple) -> None:
        if job[0] == "journal":
            self.store.write_journal(self.run_id, job[1])
            return
        if job[0] == "model":
            _write_model_arrays(self.store, job[1], job[2])
            return
        _, block, start, stop, arrays = job
        for name, values in arrays.items():
            self.segment.write_rows(name, start, to_storage(values, self.dtypes[name], name))
        # The block's chunk files are durable (fsynced, their folders too) before the journal counts it.
        written = self.segment.sync()
        with self._lock:
            self._finished[block] = {k: r.to_json() for k, r in written.items() if not k.endswith("zarr.json")}


def _yield_to_forward() -> None:
    """Lower this thread's scheduling priority (Linux: nice is per thread), so that where the forward keeps every
    core busy — a CPU capture — the writer runs in the gaps between its batches instead of taking cores from it;
    the one-job queue still bounds how far it may fall behind. Elsewhere (a GPU capture, whose host cores idle)
    it changes nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not allowed: the writer keeps the normal priority
        pass


def _check_same_model(store: Store, facts: dict) -> None:
    held = store.model_facts
    if held["fingerprint"] != facts["fingerprint"]:
        raise TnstoreError(
            f"store {store.path} holds model {held['model_spec']} with weights {held['fingerprint']}, "
            f"but these weights are {facts['fingerprint']}; use another store"
        )


def _run_id(corpus: Corpus, settings: CaptureSettings, fingerprint: str) -> str:
    # "rows:by-length": rows in length order (module docstring); a journal of the older file-order layout must
    # not be resumed with these blocks.
    key = (f"{corpus.sha256}|{len(corpus.rows)}|{settings.split}|{corpus.rows[0]['kind']}|{fingerprint}|"
           f"{settings.storage_dtype}|rows:by-length")
    if settings.ablation is not None:
        key += f"|ablate:{settings.ablation.scope}:{settings.ablation.neurons.digest()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _write_model_arrays(store: Store, lm: LoadedModel, storage_dtype: str) -> None:
    if store.has_model_arrays():
        return
    import torch

    layers = lm.adapter.layers(lm.model)
    # Stacked and cast by torch, which converts to float16 with vector instructions (as to_storage does).
    arrays = {
        "down_proj": torch.stack([lm.adapter.value_vectors(layer).detach().float().cpu() for layer in layers])
                     .to(getattr(torch, storage_dtype)).numpy(),
        "mlp_out_gain": np.stack([lm.adapter.mlp_out_gain(layer).cpu().numpy() for layer in layers]),
    }
    store.write_model_arrays(arrays, {"down_proj": storage_dtype, "mlp_out_gain": "float32"})


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
    """`values` (float32) as `dtype`, refusing inf/nan and, for float16, values beyond its range.

    The checks are one min and one max over the array (a nan or inf makes one of them non-finite): no temporary
    the size of the block, which matters on a machine whose cores are busy with the next forward. The cast to
    float16 goes through torch, which converts with the CPU's vector instructions (numpy converts one value at a
    time); both round to nearest even, so the bytes are the same.
    """
    if values.size:
        low, high = float(values.min()), float(values.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise TnstoreError(f"the model produced inf/nan in {name}; check the compute dtype (float32 is safest)")
        if dtype == "float16" and max(-low, high) > FLOAT16_MAX:
            raise ArgumentError(
                "storage_dtype",
                f"{name} reaches {max(-low, high):.0f}, beyond float16's {FLOAT16_MAX:.0f}; re-run with {{arg}} float32")
    if dtype == "float16" and values.dtype == np.float32:
        import torch

        return torch.from_numpy(np.ascontiguousarray(values)).to(torch.float16).numpy()
    return values.astype(dtype, copy=False)


def _finish_run(store: Store, corpus: Corpus, rows: list[dict], settings: CaptureSettings, journal: dict,
                n_tokens: np.ndarray, seconds: float, lm: LoadedModel, ranks: D.Ranks = D.ONE) -> None:
    """Rank 0: the run's sentences (`rows`, in run order), then its runs row: the commit."""
    run_id, row_start, row_end = journal["run_id"], journal["row_start"], journal["row_end"]
    n = row_end - row_start
    sentences = pa.table({
        "row": np.arange(row_start, row_end, dtype=np.int64),
        "run_id": [run_id] * n,
        "lang": [r["lang"] for r in rows],
        "text": [r["text"] for r in rows],
        "pair_id": [r["pair_id"] for r in rows],
        "split": [settings.split] * n,
        "kind": [r["kind"] for r in rows],
        "source": [r["source"] for r in rows],
        "source_line": [r["source_line"] for r in rows],
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
        "batch_size": settings.batch_size, "device": device_label(lm, ranks), "compute_dtype": str(lm.dtype).removeprefix("torch."),
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


def device_label(lm: LoadedModel, ranks: D.Ranks = D.ONE) -> str:
    """Where the run computed, for the runs table: the device, the devices of a split model, and the ranks."""
    placement = getattr(lm.model, "hf_device_map", None)
    devices = sorted({str(d) for d in placement.values()}) if placement and len(set(placement.values())) > 1 else []
    label = f"{lm.device}" if not devices else "split over " + ", ".join(devices)
    return label + (f" ({ranks.world} ranks)" if ranks.distributed else "")


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
