"""Seeded tiny random models of every supported family, with an offline byte-level tokenizer (for tests/demos)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

_COMMON = dict(
    hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=260, max_position_embeddings=512, bos_token_id=256, eos_token_id=257, pad_token_id=258,
    tie_word_embeddings=False,
)


def _llama() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**_COMMON)


def _mistral() -> Any:
    from transformers import MistralConfig

    return MistralConfig(**_COMMON, sliding_window=None)


def _qwen2() -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(**_COMMON)


def _cohere() -> Any:
    from transformers import CohereConfig

    return CohereConfig(**_COMMON, logit_scale=0.0625)


def _gemma() -> Any:
    from transformers import GemmaConfig

    return GemmaConfig(**_COMMON, head_dim=16)


def _gemma2() -> Any:
    from transformers import Gemma2Config

    return Gemma2Config(**_COMMON, head_dim=16, sliding_window=8, query_pre_attn_scalar=16)


def _gemma3() -> Any:
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**_COMMON, head_dim=16, sliding_window=8, query_pre_attn_scalar=16)


TINY_FAMILIES: dict[str, Callable[[], Any]] = {
    "tiny-llama": _llama,
    "tiny-mistral": _mistral,
    "tiny-qwen2": _qwen2,
    "tiny-cohere": _cohere,
    "tiny-gemma": _gemma,
    "tiny-gemma2": _gemma2,
    "tiny-gemma3": _gemma3,
}


def build_tiny_model(spec: str, seed: int = 0) -> tuple[nn.Module, Any]:
    """A tiny model of the family `spec` with weights drawn from a fixed seed (same spec -> same weights)."""
    from transformers import AutoModelForCausalLM

    config = TINY_FAMILIES[spec]()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        _spread_norm_weights(model, seed)
    finally:
        torch.random.set_rng_state(generator_state)
    return model, byte_tokenizer()


def _spread_norm_weights(model: nn.Module, seed: int) -> None:
    """Random-init norms are all ones (or zeros for Gemma's 1+w); give them spread so norm bugs show in tests."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and param.ndim == 1:
                param.add_(0.3 * torch.randn(param.shape, generator=gen))


def byte_tokenizer() -> Any:
    """Byte-level tokenizer: 256 byte tokens + <bos> <eos> <pad>; adds <bos> like LLaMA-family tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    specials = {"<bos>": 256, "<eos>": 257, "<pad>": 258, "<unk>": 259}
    vocab.update(specials)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 256)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
