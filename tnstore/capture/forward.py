"""One batched forward pass that returns every captured quantity at each sentence's last real token.

Batches are right-padded: with a causal mask, padding after the last real token cannot change it, and the real
tokens keep positions 0..n-1 (left padding would shift them unless position ids are rebuilt).

On a GPU the taps keep their last-token rows on the device (on the embeddings' device when accelerate has split
the model over several), and the whole batch crosses to the host in one copy at its end: one synchronising copy
per tap and layer would stall the GPU a hundred times per batch.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from tnstore.models.deactivation import NeuronSet, Positions, deactivated
from tnstore.models.registry import LoadedModel

PER_SENTENCE_ARRAYS = ("hidden", "final_raw", "resid_pre_mlp", "mlp_act", "mlp_out", "mlp_out_scale")
SCOPES = ("last", "all")


@dataclass(frozen=True)
class Ablation:
    """A replay's deactivation: `neurons` zeroed at each sentence's last real token (`scope` last, the authors'
    hidden-state, kNN and similarity runs) or at every position (`all`)."""

    neurons: NeuronSet
    scope: str = "last"

    @property
    def name(self) -> str:
        return self.neurons.name


def row_shapes(lm: LoadedModel) -> dict[str, tuple[int, ...]]:
    """Shape of one sentence's slice of every per-sentence array."""
    L, d, d_m = lm.n_layers, lm.d_model, lm.d_mlp
    return {
        "hidden": (L + 1, d),
        "final_raw": (d,),
        "resid_pre_mlp": (L, d),
        "mlp_act": (L, d_m),
        "mlp_out": (L, d),
        "mlp_out_scale": (L,),
    }


@contextmanager
def _taps(lm: LoadedModel, last: dict[str, torch.Tensor], stash: dict[tuple[int, str], torch.Tensor]) -> Iterator[None]:
    """Install the adapter's taps; each keeps only the last-token row of every sentence, where it was computed."""

    picks: dict[tuple[torch.device, int], torch.Tensor] = {}  # flat last-token positions per device, length

    def record(layer: int, name: str, value: torch.Tensor) -> None:
        if not value.is_contiguous():  # a view's rows cannot be flattened without copying all of it
            index = last["index"].to(value.device)
            stash[(layer, name)] = value[torch.arange(len(index), device=value.device), index]
            return
        # (B, T, w) -> (B, w): rows b*T + last[b] of the flattened positions (index_select is cheaper than
        # advanced indexing, and this runs for every tap of every layer)
        pick = picks.get((value.device, value.shape[1]))
        if pick is None:
            index = last["index"].to(value.device)
            pick = picks[(value.device, value.shape[1])] = torch.arange(len(index), device=value.device) * value.shape[1] + index
        stash[(layer, name)] = value.reshape(-1, value.shape[-1]).index_select(0, pick)

    layers = lm.adapter.layers(lm.model)
    handles = []
    for i, layer in enumerate(layers):
        handles += lm.adapter.install(i, layer, record)
    final_layer = layers[-1]
    handles.append(final_layer.register_forward_hook(
        lambda m, args, out: record(len(layers) - 1, "final_raw", out[0] if isinstance(out, tuple) else out)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def forward_last_token(lm: LoadedModel, texts: list[str], ablation: Ablation | None = None) -> dict[str, np.ndarray]:
    """Capture one batch, optionally with neurons deactivated.

    Returns float32 arrays with a leading batch axis (shapes: `row_shapes`)."""
    enc = lm.tokenizer(texts, padding=True, return_tensors="pt")
    input_ids = enc["input_ids"].to(lm.device)
    attention_mask = enc["attention_mask"].to(lm.device)
    last = {"index": attention_mask.sum(dim=1) - 1}
    stash: dict[tuple[int, str], torch.Tensor] = {}
    positions = Positions()
    if ablation is not None:
        positions.at_last(last["index"]) if ablation.scope == "last" else positions.everywhere()
    with deactivated(lm, ablation.neurons if ablation else None, positions), _taps(lm, last, stash):
        out = lm.adapter.decoder(lm.model)(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False
        )
    rows = torch.arange(len(texts))
    stash.update({(i, "hidden"): h[rows.to(h.device), last["index"].to(h.device)]
                  for i, h in enumerate(out.hidden_states)})
    host = to_host(stash, lm.device)
    hidden = torch.stack([host.pop((i, "hidden")) for i in range(len(out.hidden_states))], dim=1)
    return _assemble(lm, hidden, host)


def to_host(rows: dict[tuple[int, str], torch.Tensor], device: torch.device,
            pack: bool | None = None) -> dict[tuple[int, str], torch.Tensor]:
    """The batch's last-token rows, each (B, width), as float32 CPU tensors: on a GPU (or with `pack`) gathered
    into one buffer on `device` and copied to the host at once; on the CPU converted where they lie."""
    if not (device.type != "cpu" if pack is None else pack):
        return {key: value.float().cpu() for key, value in rows.items()}
    keys = list(rows)
    widths = [rows[k].shape[1] for k in keys]
    packed = torch.cat([rows[k].to(device=device, dtype=torch.float32, non_blocking=True) for k in keys], dim=1)
    host = packed.cpu()
    return dict(zip(keys, torch.split(host, widths, dim=1)))


def _assemble(lm: LoadedModel, hidden: torch.Tensor, stash: dict[tuple[int, str], torch.Tensor]) -> dict[str, np.ndarray]:
    L = lm.n_layers
    per_layer = lambda name: torch.stack([stash[(l, name)] for l in range(L)], dim=1)  # noqa: E731
    adapter = lm.adapter
    if adapter.parallel_attn_mlp:
        resid = per_layer("layer_in") + per_layer("attn_out")
    else:
        resid = per_layer("resid_pre_mlp")
    if adapter.mlp_out_norm is None:
        scale = torch.ones(hidden.shape[0], L)
    else:
        # Frozen post-MLP norm: out = y * s * gain with s = rsqrt(mean(y^2) + eps), computed in float32 as
        # Gemma's RMSNorm does; holding s fixed makes the MLP output exactly sum_i alpha_i * s * (gain * v_i).
        layers = adapter.layers(lm.model)
        eps = torch.tensor([adapter.mlp_out_eps(layers[l]) for l in range(L)])
        raw = per_layer("mlp_raw")
        scale = torch.rsqrt(raw.pow(2).mean(dim=-1) + eps)
    return {
        "hidden": hidden.numpy(),
        "final_raw": stash[(L - 1, "final_raw")].numpy(),
        "resid_pre_mlp": resid.numpy(),
        "mlp_act": per_layer("mlp_act").numpy(),
        "mlp_out": per_layer("mlp_out").numpy(),
        "mlp_out_scale": scale.numpy(),
    }


def token_counts(lm: LoadedModel, texts: list[str]) -> np.ndarray:
    """Tokens per sentence with the tokenizer's defaults (BOS included where it adds one)."""
    return np.array([len(ids) for ids in lm.tokenizer(texts)["input_ids"]], dtype=np.int32)


def capture_block(
    lm: LoadedModel, texts: list[str], n_tokens: np.ndarray, batch_size: int, ablation: Ablation | None = None
) -> dict[str, np.ndarray]:
    """Capture a block of sentences, batching by length (padding wastes most of a CPU forward otherwise).

    Returns arrays in the order of `texts`.
    """
    order = np.argsort(-n_tokens, kind="stable")  # the identity for a runner's rows, already longest first
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(texts), batch_size):
        batch = order[start : start + batch_size]
        result = forward_last_token(lm, [texts[i] for i in batch], ablation)
        # Each batch lands in its rows of the block at once: no list of pieces to concatenate and reorder (two
        # more copies of a ~100 MB block).
        rows = slice(start, start + len(batch)) if np.array_equal(batch, np.arange(start, start + len(batch))) else batch
        for name, values in result.items():
            if name not in out:
                out[name] = np.empty((len(texts),) + values.shape[1:], dtype=values.dtype)
            out[name][rows] = values
    return out
