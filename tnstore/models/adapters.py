"""One small adapter per architecture family: where the residual, the neurons and the MLP output live.

Every family exposes the same four taps to capture (and the same down_proj input to ablation):
    resid_pre_mlp  the true residual just before the MLP's contribution is added      (batch, seq, d_model)
    mlp_act        alpha, the input of down_proj                                       (batch, seq, d_mlp)
    mlp_raw        the MLP output y = alpha @ W_down^T, only for families with a post-MLP norm
    mlp_out        what is actually added to the residual                              (batch, seq, d_model)
Nothing outside this module knows a module name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tnstore.errors import TnstoreError

Record = Callable[[int, str, torch.Tensor], None]
"""record(layer_index, tap_name, tensor of shape (batch, seq, width))."""


@dataclass(frozen=True)
class Adapter:
    """Hook points of one family. `mlp_out_norm` names the post-MLP norm for families that have one."""

    family: str
    architectures: tuple[str, ...]
    mlp_out_norm: str | None = None
    resid_tap: str = "post_attention_layernorm"  # module whose *input* is the pre-MLP residual
    parallel_attn_mlp: bool = False  # Cohere: attention and MLP both read the same normed input

    # -- structure ------------------------------------------------------------
    def decoder(self, model: nn.Module) -> nn.Module:
        """The transformer without the LM head (capture needs no logits)."""
        return model.get_decoder() if hasattr(model, "get_decoder") else model.model

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return self.decoder(model).layers

    def down_proj(self, layer: nn.Module) -> nn.Linear:
        return layer.mlp.down_proj

    def value_vectors(self, layer: nn.Module) -> torch.Tensor:
        """(d_mlp, d_model): row i is v_i = down_proj.weight[:, i]."""
        return self.down_proj(layer).weight.detach().float().T.contiguous()

    def mlp_out_gain(self, layer: nn.Module) -> torch.Tensor:
        """(d_model,) elementwise gain of the post-MLP norm; ones when the family has none."""
        d_model = self.down_proj(layer).weight.shape[0]
        if self.mlp_out_norm is None:
            return torch.ones(d_model)
        return 1.0 + getattr(layer, self.mlp_out_norm).weight.detach().float()  # Gemma-style (1 + w) RMSNorm

    def mlp_out_eps(self, layer: nn.Module) -> float:
        norm = getattr(layer, self.mlp_out_norm) if self.mlp_out_norm else None
        return float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6))) if norm is not None else 0.0

    # -- hooks ------------------------------------------------------------------
    def install(self, layer_index: int, layer: nn.Module, record: Record) -> list[torch.utils.hooks.RemovableHandle]:
        """Register the four taps on one decoder layer; returns the handles to remove them."""
        mlp = layer.mlp
        handles = [
            self.down_proj(layer).register_forward_pre_hook(lambda m, args: record(layer_index, "mlp_act", args[0])),
        ]
        if self.mlp_out_norm is None:
            handles.append(mlp.register_forward_hook(lambda m, args, out: record(layer_index, "mlp_out", out)))
        else:
            norm = getattr(layer, self.mlp_out_norm)
            handles.append(mlp.register_forward_hook(lambda m, args, out: record(layer_index, "mlp_raw", out)))
            handles.append(norm.register_forward_hook(lambda m, args, out: record(layer_index, "mlp_out", out)))
        if self.parallel_attn_mlp:
            # r = h_{l-1} + attention output; the MLP reads the normed h_{l-1}, not r, but r is still the residual
            # just before the MLP's term is added.
            handles.append(layer.register_forward_pre_hook(
                lambda m, args, kwargs: record(layer_index, "layer_in", _first(args, kwargs)), with_kwargs=True))
            handles.append(layer.self_attn.register_forward_hook(
                lambda m, args, out: record(layer_index, "attn_out", out[0] if isinstance(out, tuple) else out)))
        else:
            tap = getattr(layer, self.resid_tap)
            handles.append(tap.register_forward_pre_hook(lambda m, args: record(layer_index, "resid_pre_mlp", args[0])))
        return handles


def _first(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


LLAMA = Adapter(
    family="llama",
    architectures=("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "GemmaForCausalLM"),
)
COHERE = Adapter(
    family="cohere",
    architectures=("CohereForCausalLM", "Cohere2ForCausalLM"),
    parallel_attn_mlp=True,
)
GEMMA_SANDWICH = Adapter(
    family="gemma-sandwich",
    architectures=("Gemma2ForCausalLM", "Gemma3ForCausalLM"),
    mlp_out_norm="post_feedforward_layernorm",
    resid_tap="pre_feedforward_layernorm",
)
ADAPTERS = (LLAMA, COHERE, GEMMA_SANDWICH)


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter for a loaded model, chosen by its HF architecture name; unknown ones are refused by name."""
    arch = type(model).__name__
    for adapter in ADAPTERS:
        if arch in adapter.architectures:
            return adapter
    supported = ", ".join(a for ad in ADAPTERS for a in ad.architectures)
    raise TnstoreError(f"unsupported architecture {arch}; tnstore captures: {supported}")
