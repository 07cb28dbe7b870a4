"""The generation runner: greedy decoding with HF `generate` (KV cache, left-padded batches, stop strings), with a
neuron set deactivated at the positions a scope names.

Deactivation uses the one mechanism of `tnstore.models.deactivation`: the down_proj hooks zero α wherever a shared
`Positions` says. A forward pre-hook on the decoder sets those positions before each forward call of `generate`:
the first call of a batch is the prefill (all prompt tokens at once), every later call one new token per row.

    scope        prefill (prompt tokens)           decode steps (generated tokens)
    prompt       every real prompt position        none            (the authors' QA and MMLU-ProX runs)
    prompt-last  the last prompt position          none
    generated    none                              every step
    all          every real prompt position        every step

A position is the input token of a forward call, so "generated" leaves the prefill (which predicts the first new
token) untouched and zeroes α at every generated token fed back in. Padding positions are never touched.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.models.deactivation import NeuronSet, Positions, deactivated
from tnstore.models.registry import LoadedModel

SCOPES = ("prompt", "prompt-last", "generated", "all")
STOP_REASONS = ("eos", "stop", "length")


@dataclass(frozen=True)
class GenerationSettings:
    """How every prompt is decoded: greedy, up to `max_new_tokens`, stopping at the model's end-of-sequence token or
    at the first of `stop_strings` (cut from the text); `positions` is the deactivation scope; `chat_template` wraps
    each prompt as one user turn of the tokenizer's chat template."""

    max_new_tokens: int = 10
    stop_strings: tuple[str, ...] = ()
    positions: str = "prompt"
    chat_template: bool = False
    batch_size: int = 8

    def check(self) -> "GenerationSettings":
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ArgumentError("max_new_tokens", f"{{arg}} must be a positive integer, got {self.max_new_tokens!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ArgumentError("batch_size", f"{{arg}} must be a positive integer, got {self.batch_size!r}")
        if self.positions not in SCOPES:
            raise ArgumentError("positions", f"{{arg}} {self.positions!r} is not one of {', '.join(SCOPES)}")
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ArgumentError("stop_strings", "{arg} must be non-empty strings")
        return self


@dataclass(frozen=True)
class Generation:
    """One greedy continuation: `text` is the decoded new tokens (special tokens skipped) cut before the first stop
    string; `token_ids` every generated token up to and including the one that ended it (eos or the token completing
    a stop string); `stop_reason` eos | stop | length."""

    prompt: str
    text: str
    token_ids: tuple[int, ...]
    n_prompt_tokens: int
    stop_reason: str

    @property
    def n_new_tokens(self) -> int:
        return len(self.token_ids)


class Generator:
    """Greedy generation with one loaded model; `run` decodes prompts in batches of `settings.batch_size`.

    Batches are left-padded (HF's positions come from the attention mask, so a padded row decodes as it would
    alone) and sorted by prompt length to pad little; results come back in the prompts' order.
    """

    def __init__(self, lm: LoadedModel, settings: GenerationSettings):
        self.lm = lm
        self.settings = settings.check()
        tok = lm.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else _first(lm.model.generation_config.eos_token_id)
        if self.pad_id is None:
            raise TnstoreError(f"model {lm.spec}: its tokenizer has neither a pad nor an eos token; cannot batch")
        self.eos_ids = set(_as_list(lm.model.generation_config.eos_token_id) or _as_list(tok.eos_token_id))
        if settings.chat_template and not getattr(tok, "chat_template", None):
            raise ArgumentError("chat_template", f"{{arg}}: the tokenizer of {lm.spec} has no chat template")

    # ------------------------------------------------------------------ prompts
    def encode(self, prompt: str) -> list[int]:
        """Token ids of one prompt: the tokenizer's defaults (BOS where it adds one), or the chat template."""
        tok = self.lm.tokenizer
        if self.settings.chat_template:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            return list(tok(text, add_special_tokens=False).input_ids)
        return list(tok(prompt).input_ids)

    # ------------------------------------------------------------------ running
    def run(self, prompts: Sequence[str], neuron_set: NeuronSet | None = None) -> list[Generation]:
        """Greedy continuations of `prompts` (in their order) with `neuron_set` deactivated at the scope's positions."""
        encoded = [self.encode(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
        results: list[Generation | None] = [None] * len(prompts)
        positions = Positions()
        with deactivated(self.lm, neuron_set, positions), self._scoped(positions, neuron_set) as scope:
            for start in range(0, len(order), self.settings.batch_size):
                batch = order[start:start + self.settings.batch_size]
                for i, generation in zip(batch, self._batch([prompts[i] for i in batch], [encoded[i] for i in batch], scope)):
                    results[i] = generation
        return results  # type: ignore[return-value]

    def pad(self, encoded: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (batch, width) input ids and attention mask on the model's device."""
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids):] = torch.as_tensor(ids)
            mask[row, width - len(ids):] = 1
        return input_ids.to(self.lm.device), mask.to(self.lm.device)

    def _batch(self, prompts: list[str], encoded: list[list[int]], scope: "_Scope") -> list[Generation]:
        width = max(len(ids) for ids in encoded)
        input_ids, mask = self.pad(encoded)
        scope.start(mask)
        with torch.inference_mode():
            out = self.lm.model.generate(**self.generate_kwargs(input_ids, mask))
        scope.finish()
        return [self._result(prompt, len(ids), out[row, width:].tolist())
                for row, (prompt, ids) in enumerate(zip(prompts, encoded))]

    def generate_kwargs(self, input_ids: torch.Tensor, mask: torch.Tensor) -> dict:
        """The arguments of `model.generate` for one batch: greedy, this runner's stop rules (the benchmark passes the
        same to a plain call)."""
        kwargs = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=self.settings.max_new_tokens,
                      do_sample=False, num_beams=1, pad_token_id=self.pad_id,
                      # generation_config defaults of some checkpoints (temperature, top_p) only warn under greedy
                      temperature=None, top_p=None, top_k=None)
        if self.eos_ids:
            kwargs["eos_token_id"] = sorted(self.eos_ids)
        if self.settings.stop_strings:
            kwargs.update(stop_strings=list(self.settings.stop_strings), tokenizer=self.lm.tokenizer)
        return kwargs

    def _result(self, prompt: str, n_prompt: int, new: list[int]) -> Generation:
        tok = self.lm.tokenizer
        stop_reason = "length"
        for k, token in enumerate(new):
            if token in self.eos_ids:
                new, stop_reason = new[:k + 1], "eos"
                break
        text = tok.decode(new, skip_special_tokens=True)
        cut = [text.find(s) for s in self.settings.stop_strings if s in text]
        if cut:
            text, stop_reason = text[:min(cut)], "stop"
            # generate stops the row at the token completing a stop string; later tokens are padding
            new = _until_stop(tok, new, self.settings.stop_strings)
        return Generation(prompt, text, tuple(new), n_prompt, stop_reason)

    @contextmanager
    def _scoped(self, positions: Positions, neuron_set: NeuronSet | None) -> Iterator["_Scope"]:
        scope = _Scope(self.settings.positions, positions)
        if neuron_set is None or neuron_set.size == 0:
            yield scope
            return
        handle = self.lm.adapter.decoder(self.lm.model).register_forward_pre_hook(scope.hook, with_kwargs=True)
        try:
            yield scope
        finally:
            handle.remove()


class _Scope:
    """Sets `positions` before each forward call of one `generate`: call 0 is the prefill, later calls decode."""

    def __init__(self, scope: str, positions: Positions):
        self.scope, self.positions = scope, positions
        self.mask: torch.Tensor | None = None
        self.calls = 0

    def start(self, mask: torch.Tensor) -> None:
        self.mask, self.calls = mask.bool(), 0

    def finish(self) -> None:
        self.mask = None
        self.positions.nowhere()

    def hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        seq = ids.shape[1]
        if self.mask is None:
            raise RuntimeError("the generation scope hook ran outside Generator._batch")
        if self.calls == 0:
            if seq != self.mask.shape[1]:
                raise RuntimeError(f"prefill of {seq} positions, expected the prompt's {self.mask.shape[1]}")
            if self.scope in ("prompt", "all"):
                self.positions.where(self.mask)
            elif self.scope == "prompt-last":
                self.positions.at_last(torch.full((ids.shape[0],), seq - 1, dtype=torch.long, device=ids.device))
            else:
                self.positions.nowhere()
        else:
            if seq != 1:
                raise RuntimeError(f"a decode step fed {seq} positions; the scope hook expects one per call")
            if self.scope in ("generated", "all"):
                self.positions.everywhere()
            else:
                self.positions.nowhere()
        self.calls += 1
        return None


def _until_stop(tok, new: list[int], stops: Sequence[str]) -> list[int]:
    """The shortest prefix of `new` whose decoded text contains a stop string (binary search: a prefix that contains
    one stays containing it as tokens are added)."""
    lo, hi = 1, len(new)
    while lo < hi:
        mid = (lo + hi) // 2
        text = tok.decode(new[:mid], skip_special_tokens=True)
        if any(s in text for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return new[:lo]


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _first(value):
    values = _as_list(value)
    return values[0] if values else None
