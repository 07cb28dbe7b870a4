"""`capture`: validate everything cheap first, then load the model and run the capture pass."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tnstore.capture.corpus import load_corpus
from tnstore.capture.runner import CaptureSettings, check_storage_dtype, check_store_model, run_capture
from tnstore.errors import ArgumentError
from tnstore.models.registry import check_device_map, check_model_spec, load_model
from tnstore.store.files import is_remote
from tnstore.store.store import Store


@dataclass(frozen=True)
class CaptureResult:
    """What a capture wrote: rows row_start .. row_end - 1 of `store`, or nothing if the run was already there."""

    store: Path
    run_id: str
    row_start: int
    row_end: int
    seconds: float
    already_done: bool
    langs: tuple[str, ...]
    split: str
    model: str
    ablation: str | None
    ablation_scope: str | None
    ablation_size: int
    rank: int = 0  # this process's rank of a torchrun capture
    world: int = 1  # the capture's ranks

    @property
    def n_sentences(self) -> int:
        return self.row_end - self.row_start

    def describe(self) -> str:
        """The one-line summary the CLI prints."""
        if self.already_done:
            return (f"already captured: run {self.run_id} holds rows {self.row_start}..{self.row_end - 1} "
                    f"of {self.store}; nothing to do")
        rate = self.n_sentences / self.seconds if self.seconds else float("nan")
        ablated = (f" with {self.ablation_size} neurons of {self.ablation} deactivated ({self.ablation_scope} "
                   "position)" if self.ablation else "")
        ranks = f" on {self.world} ranks" if self.world > 1 else ""
        return (f"captured{ablated} {self.n_sentences} sentences ({', '.join(self.langs)}; split {self.split}) with "
                f"{self.model}{ranks} into {self.store} rows {self.row_start}..{self.row_end - 1} in "
                f"{self.seconds:.1f} s ({rate:.1f} sentences/s)")


def capture_corpus(
    store: str | Path, corpus: str | Path, model: str = "gemma-3-270m", split: str = "train",
    kind: str | None = None, limit: int | None = None, batch_size: int = 32, device: str = "auto",
    dtype: str = "float32", storage_dtype: str = "float16", chunk_rows: int = 256, wait_seconds: float = 0.0,
    progress: bool = False, command: str = "", ablate: str | None = None, ablate_scope: str = "last",
    device_map: str | None = None,
) -> CaptureResult:
    """Capture `corpus` with `model` into `store` (created if missing, appended to otherwise).

    Per sentence, at its last real token: hidden (L+1, d), final_raw (d,), resid_pre_mlp (L, d), mlp_act (L, d_mlp),
    mlp_out (L, d), mlp_out_scale (L,). `ablate` names a neuron set of the same store (a `neuron_sets` name or a
    `transfer_neurons` set_id) to deactivate during the forward pass, at the last token (`ablate_scope` "last") or
    at every position ("all"): the replay runner. `chunk_rows` rows make one Zarr chunk and the unit a resumed
    capture restarts from. Running the same call again after an interruption resumes it.
    device_map: "auto" splits a model larger than one GPU over every GPU with accelerate (`device` stays auto).

    Under torchrun (WORLD_SIZE > 1) every rank calls this with the same arguments: each takes its own GPU
    (LOCAL_RANK; `device` auto or cuda) or shares the CPU, and the ranks split the run's blocks
    (tnstore.capture.distributed). The store ends as a one-process capture would leave it.
    """
    from tnstore.capture import distributed as D

    from tnstore.capture.forward import SCOPES, Ablation

    check_storage_dtype(storage_dtype)
    if is_remote(store):
        raise ArgumentError("store", f"{{arg}} {store}: a remote store is read-only; capture into a local store "
                                     "(and copy it there)")
    if not isinstance(split, str) or not split or not split.replace("-", "").replace("_", "").isalnum():
        raise ArgumentError("split", f"{{arg}} {split!r} must be a word such as train or test")
    for name, value in (("batch_size", batch_size), ("chunk_rows", chunk_rows)):
        if not isinstance(value, int) or value < 1:
            raise ArgumentError(name, f"{{arg}} must be a positive integer, got {value!r}")
    if ablate_scope not in SCOPES:
        raise ArgumentError("ablate_scope", f"{{arg}} {ablate_scope!r} is not one of {', '.join(SCOPES)}")
    ranks = D.from_environment()
    if ranks.distributed and device_map is not None:
        raise ArgumentError("device_map", "{arg} splits one model over the GPUs of one process; under torchrun "
                                          "each rank takes one GPU: drop {arg}, or run one process")
    device = D.device_for(ranks, device)
    check_model_spec(model, device, dtype)
    check_device_map(device_map, device)
    sentences = load_corpus(corpus, kind=kind, limit=limit)
    store = Path(store)
    _check_writable(store)
    check_store_model(store, model)
    ablation = None
    if ablate is not None:
        from tnstore.analysis.neurons import load_set

        if not Store.exists(store):
            raise ArgumentError("ablate", f"{{arg}} {ablate!r} needs an existing store holding that neuron set")
        ablation = Ablation(load_set(Store.open(store, mode="r"), ablate, arg="ablate"), ablate_scope)
    settings = CaptureSettings(
        split=split, limit=limit, batch_size=batch_size, storage_dtype=storage_dtype, command=command,
        wait_seconds=wait_seconds, progress=progress, block_rows=chunk_rows, ablation=ablation,
    )
    with D.process_group(ranks, device):
        lm = load_model(model, device=device, dtype=dtype, device_map=device_map)
        summary = run_capture(store, lm, sentences, settings, ranks)
    return CaptureResult(store, summary.run_id, summary.row_start, summary.row_end, summary.seconds,
                         summary.already_done, tuple(sentences.langs), split, model,
                         ablation.name if ablation else None, ablate_scope if ablation else None,
                         ablation.neurons.size if ablation else 0, ranks.rank, ranks.world)


def _check_writable(store: Path) -> None:
    probe = store if store.exists() else next((p for p in store.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        raise ArgumentError("store", f"{{arg}} {store}: {probe} is not writable; choose a writable path")
