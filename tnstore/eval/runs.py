"""What every store-facing eval command shares: the store's model, conditions (neuron sets by name), the eval id,
the chunks an interrupted run resumes from, and the provenance columns every eval row carries."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Sequence, TypeVar

import pyarrow as pa

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.models.deactivation import NeuronSet
from tnstore.store.store import Store

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class EvalResult:
    """What one evaluation call did: `summary_arrow` holds its summary table's rows of this eval_id; `generated`
    items were run now, `resumed` were found stored from an earlier (interrupted) run of the same settings."""

    eval_id: str
    summary_arrow: pa.Table
    generated: int
    resumed: int
    seconds: float

    @property
    def summary(self) -> "pl.DataFrame":
        import polars as pl

        return pl.from_arrow(self.summary_arrow)


NONE = "none"
CHUNK = 32  # items per stored part: the unit an interrupted run restarts from
T = TypeVar("T")


@dataclass(frozen=True)
class Condition:
    """`none` (no deactivation) or a stored neuron set."""

    name: str
    neurons: NeuronSet | None

    @property
    def digest(self) -> str:
        return self.neurons.digest() if self.neurons is not None else ""

    @property
    def size(self) -> int:
        return self.neurons.size if self.neurons is not None else 0


def load_conditions(store: Store, names: Sequence[str]) -> list[Condition]:
    """`none` or names of sets in the store (neuron_sets names or transfer_neurons set_ids), each checked now."""
    from tnstore.analysis.neurons import load_set

    if isinstance(names, str):
        names = [names]
    if not names:
        raise ArgumentError("conditions", "{arg} is empty; name `none` and/or stored neuron sets")
    if len(set(names)) != len(names):
        raise ArgumentError("conditions", f"{{arg}} names a condition twice: {', '.join(names)}")
    return [Condition(NONE, None) if name == NONE else Condition(name, load_set(store, name, arg="conditions"))
            for name in names]


def resolve_model(store: Store, model: str | None, device: str, dtype: str):
    """Load the store's model, or `model` if it has the same weights (checked by fingerprint)."""
    from tnstore.models.registry import load_store_model

    return load_store_model(store.model_facts, model, device, dtype)


def eval_id(task: str, settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
    return f"{task}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def chunks(items: Sequence[T]) -> Iterator[tuple[int, Sequence[T]]]:
    for start in range(0, len(items), CHUNK):
        yield start // CHUNK, items[start:start + CHUNK]


def finished_chunks(store: Store, table: str, eval_id_: str, condition: Condition, lang: str) -> dict[int, int]:
    """chunk -> rows, for the stored chunks of (eval_id, condition, lang) made with this condition's neurons."""
    rows = store.query(
        f"SELECT chunk, count(*) AS n, min(set_digest) AS lo, max(set_digest) AS hi FROM {table} "
        "WHERE eval_id = ? AND condition = ? AND lang = ? GROUP BY chunk", [eval_id_, condition.name, lang]).to_pylist()
    return {r["chunk"]: r["n"] for r in rows if r["lo"] == r["hi"] == condition.digest}


def condition_columns(n: int, eid: str, condition: Condition, positions: str, lang: str) -> dict[str, Any]:
    return {"eval_id": [eid] * n, "condition": [condition.name] * n, "set_digest": [condition.digest] * n,
            "n_neurons": pa.array([condition.size] * n, pa.int64()), "positions": [positions] * n, "lang": [lang] * n}


@dataclass(frozen=True)
class Provenance:
    """Where an eval row's output came from: the model and the data file."""

    model_spec: str
    model_fingerprint: str
    data: str
    data_sha256: str

    def columns(self, n: int) -> dict[str, Any]:
        return {"model_spec": [self.model_spec] * n, "model_fingerprint": [self.model_fingerprint] * n,
                "data": [self.data] * n, "data_sha256": [self.data_sha256] * n}


def now() -> datetime:
    return datetime.now(timezone.utc)


def check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArgumentError(name, f"{{arg}} must be a positive integer, got {value!r}")


def no_store_error(path) -> TnstoreError:
    return TnstoreError(f"store {path} does not exist; eval runs on a store's model: capture into it first")


def generation_rows(eid: str, condition: Condition, positions: str, lang: str, items: Sequence, first: int, chunk: int,
                    outputs: Sequence, settings, template: str, lm, prov: Provenance, task: str = "qa",
                    ids: Sequence[str] | None = None) -> pa.Table:
    """eval_generations rows of one chunk: `outputs` (tnstore.eval.generation.Generation) of `items`, whose ids
    are `ids` (default: each item's example_id)."""
    n = len(items)
    return pa.table({
        **condition_columns(n, eid, condition, positions, lang),
        "task": [task] * n,
        "item_id": list(ids) if ids is not None else [item.example_id for item in items],
        "item_index": pa.array(range(first, first + n), pa.int64()), "chunk": pa.array([chunk] * n, pa.int64()),
        "prompt": [g.prompt for g in outputs], "output": [g.text for g in outputs],
        "n_prompt_tokens": pa.array([g.n_prompt_tokens for g in outputs], pa.int32()),
        "n_new_tokens": pa.array([g.n_new_tokens for g in outputs], pa.int32()),
        "stop_reason": [g.stop_reason for g in outputs],
        "max_new_tokens": pa.array([settings.max_new_tokens] * n, pa.int32()),
        "stop_strings": [json.dumps(list(settings.stop_strings), ensure_ascii=False)] * n,
        "template": [template] * n, "chat_template": [settings.chat_template] * n,
        "batch_size": pa.array([settings.batch_size] * n, pa.int32()),
        "compute_dtype": [str(lm.dtype).removeprefix("torch.")] * n,
        **prov.columns(n), "created_at": pa.array([now()] * n, pa.timestamp("us", tz="UTC")),
    })


def progress_bar(progress: bool, total: int):
    """A tqdm bar over `total` items on stderr, or an object with the same update/close that prints nothing."""
    if progress:
        from tqdm import tqdm

        return tqdm(total=total, unit="item", leave=False)

    class _Quiet:
        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass
    return _Quiet()
