"""capture_corpus: validate everything cheap first, then load the model and run the capture pass."""
from __future__ import annotations

import os
from pathlib import Path

from tnstore.capture.ablation import load_ablation
from tnstore.capture.corpus import load_corpus
from tnstore.capture.runner import CaptureSettings, check_storage_dtype, check_store_model, run_capture
from tnstore.errors import TnstoreError
from tnstore.models.registry import check_model_spec, load_model
from tnstore.store.store import Store


def capture_corpus(
    store: Path, corpus: Path, model: str, split: str = "train", kind: str | None = None, limit: int | None = None,
    batch_size: int = 32, device: str = "auto", dtype: str = "float32", storage_dtype: str = "float16",
    wait_seconds: float = 0.0, progress: bool = True, command: str = "", block_rows: int = 256,
    ablate: str | None = None, ablate_scope: str = "last",
) -> str:
    """Capture `corpus` with `model` into `store`; returns the one-line summary.

    `ablate` names a neuron set of the same store (a `neuron_sets` name or a `transfer_neurons` set_id) to
    deactivate during the forward pass (`ablate_scope` last | all): the replay runner.
    """
    check_storage_dtype(storage_dtype)
    if not split or not split.replace("-", "").replace("_", "").isalnum():
        raise TnstoreError(f"--split {split!r} must be a word such as train or test")
    check_model_spec(model, device, dtype)
    sentences = load_corpus(corpus, kind=kind, limit=limit)
    store = Path(store)
    _check_writable(store)
    check_store_model(store, model)
    ablation = None
    if ablate is not None:
        if not Store.exists(store):
            raise TnstoreError(f"--ablate {ablate!r} needs an existing --store holding that neuron set")
        ablation = load_ablation(Store.open(store), ablate, ablate_scope)
    lm = load_model(model, device=device, dtype=dtype)
    settings = CaptureSettings(
        split=split, limit=limit, batch_size=batch_size, storage_dtype=storage_dtype, command=command,
        wait_seconds=wait_seconds, progress=progress, block_rows=block_rows, ablation=ablation,
    )
    summary = run_capture(store, lm, sentences, settings)
    if summary.already_done:
        return (f"already captured: run {summary.run_id} holds rows {summary.row_start}..{summary.row_end - 1} "
                f"of {store}; nothing to do")
    rate = summary.n_sentences / summary.seconds if summary.seconds else float("nan")
    ablated = f" with {ablation.size} neurons of {ablation.name} deactivated ({ablation.scope} position)" if ablation else ""
    return (f"captured{ablated} {summary.n_sentences} sentences ({', '.join(sentences.langs)}; split {split}) with {model} "
            f"into {store} rows {summary.row_start}..{summary.row_end - 1} in {summary.seconds:.1f} s "
            f"({rate:.1f} sentences/s)")


def _check_writable(store: Path) -> None:
    probe = store if store.exists() else next((p for p in store.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        raise TnstoreError(f"--store {store}: {probe} is not writable; choose a writable path")
