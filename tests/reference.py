"""Slow reference computations written from method.md §2, per family, independent of tnstore's hooks.

They run the model one sentence at a time with no padding and recompute each captured quantity from the
weights, so a capture bug (wrong tap, wrong token, padding leak) cannot hide behind the same code path.
"""
from __future__ import annotations

import numpy as np
import torch


def plain_hidden_states(model, tokenizer, text: str) -> np.ndarray:
    """(L+1, d) last-token hidden states from a plain `output_hidden_states=True` forward of the CausalLM."""
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return torch.stack([h[0, -1] for h in out.hidden_states]).float().numpy()


def mlp_input(layer, family: str, resid_pre_mlp: np.ndarray, layer_input: np.ndarray) -> torch.Tensor:
    """The MLP's input x for one layer: the pre-MLP norm of the residual (Cohere: of the layer input)."""
    if family == "cohere":
        return layer.input_layernorm(torch.from_numpy(layer_input)[None])[0]
    norm = layer.pre_feedforward_layernorm if hasattr(layer, "pre_feedforward_layernorm") else layer.post_attention_layernorm
    return norm(torch.from_numpy(resid_pre_mlp)[None])[0]


def gated_activation(layer, x: torch.Tensor) -> np.ndarray:
    """alpha = act(x W_gate) * (x W_up), recomputed from the weights."""
    mlp = layer.mlp
    with torch.no_grad():
        return (mlp.act_fn(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)).numpy()


def mlp_contribution(layer, alpha: np.ndarray) -> np.ndarray:
    """What the MLP adds to the residual: alpha @ W_down^T, then the post-MLP norm if the block has one."""
    with torch.no_grad():
        raw = torch.from_numpy(alpha) @ layer.mlp.down_proj.weight.T
        if hasattr(layer, "post_feedforward_layernorm"):
            raw = layer.post_feedforward_layernorm(raw[None])[0]
    return raw.numpy()
