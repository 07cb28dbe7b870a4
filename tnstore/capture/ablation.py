"""Deactivating neurons during a forward pass (method §5): alpha_i := 0 at the input of down_proj.

`scope="last"` zeroes them at each sentence's last real token only (the authors' hidden-state, kNN and
activation-similarity runs); `scope="all"` at every position (their QA runs, on the prompt).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from tnstore.errors import TnstoreError
from tnstore.models.registry import LoadedModel
from tnstore.store.store import Store

SCOPES = ("last", "all")


@dataclass(frozen=True)
class Ablation:
    """Which neurons to zero: `neurons[layer]` holds the neuron indices of that 0-based decoder layer."""

    name: str
    scope: str
    neurons: dict[int, np.ndarray]

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.neurons.values())


def load_ablation(store: Store, name: str, scope: str) -> Ablation:
    """A neuron set by name: a `neuron_sets` name or a `transfer_neurons` set_id of the store."""
    if scope not in SCOPES:
        raise TnstoreError(f"--ablate-scope {scope!r} is not one of {', '.join(SCOPES)}")
    pairs = store.sql(
        "SELECT layer, neuron FROM neuron_sets WHERE name = ? "
        "UNION SELECT layer, neuron FROM transfer_neurons WHERE set_id = ?", [name, name])
    if pairs.num_rows == 0:
        raise TnstoreError(
            f"--ablate {name!r}: no neuron set or transfer-neuron set_id of that name in {store.path}; "
            "see `tnstore neurons list`")
    layers = pairs.column("layer").to_numpy()
    neurons = pairs.column("neuron").to_numpy()
    facts = store.model_facts
    if layers.max() >= facts["n_layers"] or neurons.max() >= facts["d_mlp"]:
        raise TnstoreError(f"--ablate {name!r} names neurons outside this model's {facts['n_layers']} x {facts['d_mlp']}")
    by_layer = {int(l): np.sort(neurons[layers == l]) for l in np.unique(layers)}
    return Ablation(name=name, scope=scope, neurons=by_layer)


@contextmanager
def ablated(lm: LoadedModel, ablation: Ablation | None, last: dict[str, torch.Tensor]) -> Iterator[None]:
    """Zero the ablation's neurons while the block runs. Registered before the capture taps, so the captured
    alpha (and everything downstream) is that of the ablated model."""
    if ablation is None:
        yield
        return
    layers = lm.adapter.layers(lm.model)
    handles = []
    for layer_index, neurons in ablation.neurons.items():
        index = torch.as_tensor(neurons, dtype=torch.long, device=lm.device)
        hook = _zero_last(index, last) if ablation.scope == "last" else _zero_all(index)
        handles.append(lm.adapter.down_proj(layers[layer_index]).register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _zero_all(index: torch.Tensor):
    def hook(module, args):
        alpha = args[0].clone()
        alpha[..., index] = 0
        return (alpha,) + args[1:]
    return hook


def _zero_last(index: torch.Tensor, last: dict[str, torch.Tensor]):
    def hook(module, args):
        alpha = args[0].clone()
        rows = torch.arange(alpha.shape[0], device=alpha.device)
        alpha[rows[:, None], last["index"][:, None], index[None, :]] = 0
        return (alpha,) + args[1:]
    return hook
