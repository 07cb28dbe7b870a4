"""Deactivating neurons during a forward pass (method §5): α_i := 0 at the input of down_proj, at chosen positions.

One mechanism serves every runner (capture's replay, the generation runner): a forward pre-hook on the down_proj
of each layer that holds deactivated neurons zeroes their α at the positions a `Positions` object names for the
current forward call. The runner sets the positions before each call; the hook only reads them:

    positions = Positions()
    with deactivated(lm, neuron_set, positions):
        positions.at_last(last_index)          # capture, scope "last": each sentence's last real token
        model(...)
        positions.everywhere()                 # scope "all": every position of the call
        positions.where(mask)                  # any (batch, seq) bool mask, e.g. the prompt positions at prefill
        positions.nowhere()                    # e.g. generated tokens under scope "prompt"

The hooks are registered before capture's taps, so a tap on down_proj's input sees the deactivated α, and
everything downstream is that of the modified model.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np

if TYPE_CHECKING:  # torch is imported where a forward runs: naming and hashing sets (analyses, SQL) needs none of it
    import torch

    from tnstore.models.registry import LoadedModel


@dataclass(frozen=True)
class NeuronSet:
    """A named set of neurons: `neurons[layer]` holds the sorted neuron indices of that 0-based decoder layer."""

    name: str
    neurons: Mapping[int, np.ndarray]

    @classmethod
    def from_pairs(cls, name: str, layers: np.ndarray, neurons: np.ndarray) -> "NeuronSet":
        """From parallel (k,) arrays of layer and neuron indices."""
        layers, neurons = np.asarray(layers, dtype=np.int64), np.asarray(neurons, dtype=np.int64)
        return cls(name, {int(l): np.unique(neurons[layers == l]) for l in np.unique(layers)})

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.neurons.values())

    def pairs(self) -> np.ndarray:
        """(size, 2) int64 (layer, neuron), sorted."""
        if not self.neurons:
            return np.zeros((0, 2), dtype=np.int64)
        return np.concatenate([np.stack([np.full(len(n), l), n], axis=1) for l, n in sorted(self.neurons.items())])

    def digest(self) -> str:
        """Identifies the neurons (not the name): sha256 of the sorted (layer, neuron) pairs, 16 hex digits."""
        return hashlib.sha256(self.pairs().astype("<i8").tobytes()).hexdigest()[:16]


@dataclass
class Positions:
    """Where the hooks zero α in the next forward call: nowhere, everywhere, or a (batch, seq) mask.

    `last` (a (batch,) index of each row's last real token) is the common case of capture; it is turned into a
    mask for the call's sequence length when the hook runs.
    """

    mode: str = "nowhere"  # nowhere | everywhere | mask | last
    mask: torch.Tensor | None = None
    last: torch.Tensor | None = field(default=None, repr=False)

    def nowhere(self) -> None:
        self.mode, self.mask, self.last = "nowhere", None, None

    def everywhere(self) -> None:
        self.mode, self.mask, self.last = "everywhere", None, None

    def where(self, mask: torch.Tensor) -> None:
        """Zero at the True entries of `mask` (batch, seq)."""
        self.mode, self.mask, self.last = "mask", mask.bool(), None

    def at_last(self, last: torch.Tensor) -> None:
        """Zero at position last[b] of each row b."""
        self.mode, self.mask, self.last = "last", None, last


@contextmanager
def deactivated(lm: "LoadedModel", neuron_set: NeuronSet | None, positions: Positions) -> Iterator[Positions]:
    """While the block runs, zero `neuron_set`'s α at `positions` in every forward call (nothing if the set is
    None or empty)."""
    if neuron_set is None or neuron_set.size == 0:
        yield positions
        return
    import torch

    layers = lm.adapter.layers(lm.model)
    handles = []
    for layer_index, neurons in sorted(neuron_set.neurons.items()):
        index = torch.as_tensor(np.asarray(neurons), dtype=torch.long, device=lm.device)
        handles.append(lm.adapter.down_proj(layers[layer_index]).register_forward_pre_hook(_zeroing(index, positions)))
    try:
        yield positions
    finally:
        for handle in handles:
            handle.remove()


def _zeroing(index: "torch.Tensor", positions: Positions):
    import torch

    def hook(module, args):
        if positions.mode == "nowhere":
            return None
        alpha = args[0].clone()  # (batch, seq, d_mlp); never modify the caller's tensor in place
        if positions.mode == "everywhere":
            alpha[..., index] = 0
        elif positions.mode == "last":
            rows = torch.arange(alpha.shape[0], device=alpha.device)
            alpha[rows[:, None], positions.last[:, None], index[None, :]] = 0
        else:
            picked = alpha[..., index]
            alpha[..., index] = picked.masked_fill(positions.mask.to(alpha.device)[..., None], 0)
        return (alpha,) + tuple(args[1:])
    return hook
