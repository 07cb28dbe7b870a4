"""`replay`: run the model again over sentences already captured plain in the store, with neuron sets deactivated
(method §5), and write each set's run as a condition of the same sentences.

The input is the store's `sentences` table, not a corpus file: the plain rows (`ablation IS NULL`) that `split`,
`kind`, `langs` and `where` pick, counted once each (the selection contract of tnstore.store.selection), the first
`limit` of each language in corpus order. English is left out by default: the paper deactivates on the L2 side only
and compares with the plain English capture, so replaying English is work for nothing.

Each (set, split, kind) is one capture run through `tnstore.capture.runner.run_capture` with
`Ablation(set, positions)` (the one deactivation mechanism, tnstore.models.deactivation): the replayed rows keep
their sentence's text, pair_id, split, kind, source and source line, carry the set's name in `sentences.ablation`,
and the run is recorded in `runs` with the set's name, the digest of its neurons and the positions. Runs resume
after an interruption as captures do. Sentences already replayed with the same neurons (digest) and positions are
reused, not run again, so a larger `limit` or another language only adds what is missing; a set whose neurons
changed under the same name is refused (its old rows would mix with the new ones). The model is loaded once for
every set, and only when something is left to run.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tnstore.errors import ArgumentError, ReadOnlyError, TnstoreError
from tnstore.store import selection as S
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    from tnstore.models.deactivation import NeuronSet
    from tnstore.models.registry import LoadedModel

POSITIONS = ("last", "all")
KINDS = ("parallel", "nonparallel", "mono")
ALL_KINDS = "all"
ENGLISH = "en"
_COLUMNS = ("row", "lang", "text", "pair_id", "split", "kind", "source", "source_line", "ablation")


@dataclass(frozen=True)
class ReplayRun:
    """One set's replay of one (split, kind): the sentences run now (`replayed`, per language) and those found
    already replayed with the same neurons and positions (`reused`). run_id is None when nothing was run."""

    set_name: str
    digest: str
    size: int
    positions: str
    split: str
    kind: str
    replayed: dict[str, int]
    reused: dict[str, int]
    run_id: str | None = None
    row_start: int | None = None
    row_end: int | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        counts = lambda c: ", ".join(f"{lang} {n}" for lang, n in c.items()) or "none"  # noqa: E731
        head = (f"{self.set_name} ({self.size} neurons, digest {self.digest}, positions {self.positions}; split "
                f"{self.split}, kind {self.kind}): ")
        if self.run_id is None:
            return head + f"already replayed: {counts(self.reused)}; nothing to do"
        n = sum(self.replayed.values())
        rate = n / self.seconds if self.seconds else float("nan")
        reused = f"; reused {counts(self.reused)}" if self.reused else ""
        return (head + f"replayed {counts(self.replayed)} into rows {self.row_start}..{self.row_end - 1} in "
                f"{self.seconds:.1f} s ({rate:.1f} sentences/s){reused}")


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: `selected` = the plain sentences per language it was asked to cover; one `ReplayRun` per
    (set, split, kind); `model` = the model loaded (None: everything was already replayed)."""

    store: Path
    positions: str
    selected: dict[str, int]
    runs: list[ReplayRun] = field(default_factory=list)
    model: str | None = None

    def describe(self) -> list[str]:
        """The lines the CLI prints."""
        counts = ", ".join(f"{lang} {n}" for lang, n in self.selected.items())
        lines = [f"plain sentences to cover: {counts}"]
        lines += [run.describe() for run in self.runs]
        if self.model is None:
            lines.append("every set was already replayed on these sentences; the model was not loaded")
        return lines


def replay(
    store: "str | Path | Store", sets: Sequence["str | NeuronSet"], split: str = "test",
    langs: Sequence[str] | None = None, kind: str = "parallel", where: str | None = None, limit: int | None = None,
    positions: str = "last", model: str | None = None, device: str = "auto", dtype: str = "float32",
    storage_dtype: str | None = None, batch_size: int = 32, chunk_rows: int = 256, wait_seconds: float = 0.0,
    progress: bool = False, command: str = "",
) -> ReplayResult:
    """Replay plain sentences of the store with each set of `sets` deactivated (see the module docstring).

    sets: names of stored sets (neuron_sets names or transfer_neurons set_ids), or NeuronSet objects (their
    `name` becomes the condition's name). split: a split or "all"; langs: None = every language but English;
    kind: parallel (default) | nonparallel | mono | all; where: an extra SQL predicate over sentences; limit: the
    first N sentences of each language in corpus order. positions: where α := 0 — "last" (each sentence's last real
    token, the authors' hidden-state, kNN and similarity runs) or "all" (every position). model: None = the
    store's own model (another spec must hold the same weights); storage_dtype None = the store's.
    """
    from tnstore.analysis.neurons import PLAIN_CONDITION, load_set
    from tnstore.models.deactivation import NeuronSet

    if positions not in POSITIONS:
        raise ArgumentError("positions", f"{{arg}} {positions!r} is not one of {', '.join(POSITIONS)}")
    if kind not in KINDS + (ALL_KINDS,):
        raise ArgumentError("kind", f"{{arg}} {kind!r} is not one of {', '.join(KINDS + (ALL_KINDS,))}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ArgumentError("limit", f"{{arg}} must be a positive integer, got {limit!r}")
    for name, value in (("batch_size", batch_size), ("chunk_rows", chunk_rows)):
        if not isinstance(value, int) or value < 1:
            raise ArgumentError(name, f"{{arg}} must be a positive integer, got {value!r}")
    if isinstance(sets, (str, NeuronSet)) or not sets:
        raise ArgumentError("sets", "{arg} must name one or more neuron sets, e.g. a transfer-neuron set_id and its "
                                    "random baseline")
    store = open_store(store)
    facts = store.model_facts
    storage_dtype = storage_dtype or str(facts["storage_dtype"])
    spec = model or str(facts["model_spec"])
    neuron_sets = []
    for item in sets:
        chosen = item if isinstance(item, NeuronSet) else load_set(store, str(item), arg="sets")
        if chosen.name == PLAIN_CONDITION:
            raise ArgumentError("sets", f"{{arg}}: {PLAIN_CONDITION!r} means no deactivation; it is no set to replay")
        neuron_sets.append(chosen)
    names = [s.name for s in neuron_sets]
    if len(set(names)) != len(names):
        raise ArgumentError("sets", f"{{arg}} {', '.join(names)} names a set twice")

    source = source_rows(store, split, langs, kind, where, limit)
    selected = _count(source["lang"])
    todo: list[tuple["NeuronSet", str, str, np.ndarray, dict[str, int]]] = []
    runs: list[ReplayRun] = []
    for neuron_set in neuron_sets:
        done = _already_replayed(store, neuron_set, positions)
        for (group_split, group_kind), at in _groups(source):
            fresh = at[~np.isin(source["identity"][at], done)]
            reused = _count(source["lang"][np.setdiff1d(at, fresh)])
            if len(fresh):
                todo.append((neuron_set, group_split, group_kind, fresh, reused))
            else:
                runs.append(ReplayRun(neuron_set.name, neuron_set.digest(), neuron_set.size, positions, group_split,
                                      group_kind, {}, reused))
    if not todo:
        return ReplayResult(store.path, positions, selected, runs)

    if store.remote or store.results is not None:
        where = "remote and read-only" if store.remote else "opened with a results folder"
        raise ReadOnlyError(f"store {store.label}: a replay writes arrays into the store itself, which is {where}; "
                            "replay in a local copy of the store")
    # Checked here, not earlier: these import torch, which a replay that reuses everything never needs.
    from tnstore.capture.runner import check_storage_dtype
    from tnstore.models.registry import load_store_model

    check_storage_dtype(storage_dtype)
    lm = load_store_model(facts, spec, device, dtype)
    for neuron_set, group_split, group_kind, fresh, reused in todo:
        runs.append(_run(store, lm, neuron_set, positions, group_split, group_kind, source, fresh, reused,
                         dict(limit=limit, batch_size=batch_size, chunk_rows=chunk_rows, storage_dtype=storage_dtype,
                              command=command, wait_seconds=wait_seconds, progress=progress, where=where)))
    return ReplayResult(store.path, positions, selected, runs, model=spec)


# ------------------------------------------------------------------------------------------------ internals
def source_rows(store: Store, split: str, langs: Sequence[str] | None, kind: str, where: str | None,
                 limit: int | None) -> dict[str, np.ndarray]:
    """The plain sentences a replay covers, one per sentence, by language (in the order of `langs`; default every
    language but English, sorted) then in corpus order: columns of `sentences` plus `identity`
    (tnstore.store.selection)."""
    if isinstance(langs, str):
        langs = [langs]
    predicate = S.PLAIN if where is None else f"({where}) AND {S.PLAIN}"
    if where is not None and not where.strip():
        raise ArgumentError("where", "{arg} is empty; give a SQL predicate over sentences, e.g. \"lang = 'ja'\"")
    sel = S.select(store, S.make_scope(predicate, split, S.PLAIN), allow_empty=True)
    keep = np.ones(len(sel), dtype=bool) if kind == ALL_KINDS else sel.kind == kind
    present = sorted(set(sel.lang[keep].tolist()))
    wanted = [lang for lang in present if lang != ENGLISH] if langs is None else list(dict.fromkeys(langs))
    missing = [lang for lang in wanted if lang not in present]
    if not wanted or missing:
        raise TnstoreError(_nothing_to_replay(store, missing or ["any L2"], split, kind, where, present))
    keep &= np.isin(sel.lang.astype(str), wanted)
    rows = sel.rows[keep]
    table = store.read_table("sentences", list(_COLUMNS))
    at_row = {int(r): i for i, r in enumerate(table.column("row").to_numpy())}
    index = np.array([at_row[int(r)] for r in rows], dtype=np.int64)
    col = {name: table.column(name).to_numpy(zero_copy_only=False)[index] for name in _COLUMNS}
    order = []
    # The languages in the order asked for (default: sorted), each in corpus order (source, source_line): a run
    # stores its rows longest first, so row order would make `limit` pick the longest sentences.
    corpus_order = np.lexsort((col["row"], col["source_line"].astype(np.int64), col["source"].astype(str)))
    for lang in wanted:
        mine = corpus_order[col["lang"][corpus_order] == lang]
        order.append(mine if limit is None else mine[:limit])
    order = np.concatenate(order)
    col = {name: values[order] for name, values in col.items()}
    col["identity"] = S.identity(col)
    return col


def _nothing_to_replay(store: Store, missing: list[str], split: str, kind: str, where: str | None,
                       present: list[str]) -> str:
    langs = ", ".join(missing)
    kind_text = "any kind" if kind == ALL_KINDS else f"kind {kind}"
    where_text = f" matching {where!r}" if where else ""
    found = f" (it has plain sentences of {', '.join(present)})" if present else ""
    kind_flag = f" --kind {kind}" if kind in ("nonparallel", "mono") else ""
    split_flag = "" if split == S.ALL_SPLITS else f" --split {split}"
    example = missing[0] if missing[0] != "any L2" else "ja"
    return (f"nothing to replay: store {store.path} has no plain {langs} sentences of split {split}, {kind_text}"
            f"{where_text}{found}; capture them first: tnstore capture --store {store.path} --corpus "
            f"<an en-{example} corpus>{split_flag}{kind_flag}")


def _already_replayed(store: Store, neuron_set: "NeuronSet", positions: str) -> np.ndarray:
    """Identities of the sentences replayed with this set's name, neurons and positions. Rows of the same name
    with other neurons are refused: a condition must be one measurement."""
    found = store.query(
        "SELECT s.lang, s.split, s.kind, s.pair_id, s.source, s.source_line, r.ablation_digest, r.ablation_scope "
        "FROM sentences s JOIN runs r USING (run_id) WHERE s.ablation = ?", [neuron_set.name])
    if found.num_rows == 0:
        return np.zeros(0, dtype=str)
    col = {name: found.column(name).to_numpy(zero_copy_only=False) for name in found.column_names}
    digest = neuron_set.digest()
    other = sorted({str(d) for d in col["ablation_digest"] if d is not None and d != digest})
    if other:
        raise TnstoreError(
            f"set {neuron_set.name!r} was replayed before with other neurons (digest {', '.join(other)}; now "
            f"{digest}); its old rows would mix with new ones in one condition: store the set under a new name "
            "(e.g. neurons random --name) and replay that")
    mine = (col["ablation_digest"] == digest) & (col["ablation_scope"] == positions)
    return S.identity({name: values[mine] for name, values in col.items()})


def _groups(source: dict[str, np.ndarray]) -> list[tuple[tuple[str, str], np.ndarray]]:
    """Positions of the source rows per (split, kind): one run each (a run has one split and kind)."""
    keys = list(zip(source["split"].tolist(), source["kind"].tolist()))
    out: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return [(key, np.asarray(at, dtype=np.int64)) for key, at in out.items()]


def _count(langs: np.ndarray) -> dict[str, int]:
    return {lang: int(n) for lang, n in zip(*np.unique(langs.astype(str), return_counts=True))} if len(langs) else {}


def _run(store: Store, lm: "LoadedModel", neuron_set: "NeuronSet", positions: str, split: str, kind: str,
         source: dict[str, np.ndarray], at: np.ndarray, reused: dict[str, int], options: dict) -> ReplayRun:
    from tnstore.capture.corpus import Corpus
    from tnstore.capture.forward import Ablation
    from tnstore.capture.runner import CaptureSettings, run_capture

    rows = [{"lang": str(source["lang"][i]), "text": str(source["text"][i]),
             "pair_id": None if source["pair_id"][i] is None else str(source["pair_id"][i]), "kind": kind,
             "source": str(source["source"][i]), "source_line": int(source["source_line"][i])} for i in at]
    # What identifies the input, as a corpus file's bytes do: the sentences (identity and text) in order.
    digest = hashlib.sha256(json.dumps([[r[k] for k in ("lang", "text", "pair_id", "kind", "source", "source_line")]
                                        for r in rows] + [split], ensure_ascii=False).encode("utf-8")).hexdigest()
    corpus = Corpus(path=store.path / "tables" / "sentences", sha256=digest,
                    langs=tuple(dict.fromkeys(r["lang"] for r in rows)), rows=rows)
    replayed = _count(source["lang"][at])
    where = f", where {options['where']!r}" if options["where"] else ""
    limit = f", first {options['limit']} per language" if options["limit"] else ""
    counts = ", ".join(f"{lang} {n}" for lang, n in replayed.items())
    description = (f"replay of {len(rows)} plain sentences of this store ({counts}; split {split}, kind {kind}"
                   f"{where}{limit})")
    settings = CaptureSettings(
        split=split, limit=options["limit"], batch_size=options["batch_size"], block_rows=options["chunk_rows"],
        storage_dtype=options["storage_dtype"], command=options["command"], wait_seconds=options["wait_seconds"],
        progress=options["progress"], ablation=Ablation(neuron_set, positions), source=description)
    summary = run_capture(store.path, lm, corpus, settings)
    return ReplayRun(neuron_set.name, neuron_set.digest(), neuron_set.size, positions, split, kind, replayed, reused,
                     summary.run_id, summary.row_start, summary.row_end, summary.seconds)
