"""The generation runner against plain HF generate and against an independent slow greedy loop (no KV cache, its own
zeroing hook), on tiny models of several families."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tnstore.eval.generation import SCOPES, Generator, GenerationSettings
from tnstore.models.deactivation import NeuronSet
from tnstore.models.registry import load_model

PROMPTS = ["The cat sat on", "Hi", "Tokyo is the capital of Japan and", "ab", "Een korte zin?", "東京は日本の"]
FAMILIES = ["tiny-llama", "tiny-gemma3", "tiny-qwen2", "tiny-cohere"]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(spec):
        if spec not in cache:
            lm = load_model(spec)
            lm.model.double()  # float64: no near-ties between cached and uncached logits
            cache[spec] = lm
        return cache[spec]
    return get


def some_neurons(lm, per_layer=24, seed=0) -> NeuronSet:
    rng = np.random.default_rng(seed)
    layers = np.repeat(np.arange(lm.n_layers), per_layer)
    neurons = np.concatenate([rng.choice(lm.d_mlp, per_layer, replace=False) for _ in range(lm.n_layers)])
    return NeuronSet.from_pairs("some", layers, neurons)


def reference_greedy(lm, prompt: str, max_new: int, neuron_set: NeuronSet | None, scope: str) -> list[int]:
    """Greedy decoding written from the definition: recompute the whole sequence at every step (no cache, no
    padding) with α zeroed by a hook of this test at the scope's positions."""
    ids = list(lm.tokenizer(prompt).input_ids)
    n_prompt = len(ids)
    eos = lm.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    handles = []
    if neuron_set is not None:
        def hook_for(index):
            def hook(module, args):
                alpha = args[0].clone()
                seq = alpha.shape[1]
                pos = torch.zeros(seq, dtype=torch.bool)
                if scope in ("prompt", "all"):
                    pos[:n_prompt] = True
                if scope == "prompt-last":
                    pos[n_prompt - 1] = True
                if scope in ("generated", "all"):
                    pos[n_prompt:] = True
                sub = alpha[:, :, index]
                sub[:, pos] = 0
                alpha[:, :, index] = sub
                return (alpha,)
            return hook
        layers = lm.adapter.layers(lm.model)
        for layer, neurons in neuron_set.neurons.items():
            handles.append(lm.adapter.down_proj(layers[layer]).register_forward_pre_hook(
                hook_for(torch.as_tensor(neurons, dtype=torch.long))))
    try:
        new = []
        with torch.no_grad():
            for _ in range(max_new):
                logits = lm.model(torch.tensor([ids])).logits[0, -1]
                token = int(torch.argmax(logits))
                ids.append(token)
                new.append(token)
                if token in eos:
                    break
    finally:
        for h in handles:
            h.remove()
    return new


@pytest.mark.parametrize("spec", FAMILIES)
def test_none_equals_plain_generate(models, spec):
    lm = models(spec)
    runner = Generator(lm, GenerationSettings(max_new_tokens=8, batch_size=4))
    out = runner.run(PROMPTS)
    for prompt, gen in zip(PROMPTS, out):
        enc = lm.tokenizer(prompt, return_tensors="pt")
        plain = lm.model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
        expected = plain[0, enc.input_ids.shape[1]:].tolist()
        assert list(gen.token_ids) == expected[:len(gen.token_ids)]
        assert gen.stop_reason in ("eos", "length")
        if gen.stop_reason == "length":
            assert list(gen.token_ids) == expected
        assert gen.n_prompt_tokens == enc.input_ids.shape[1]


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-gemma3"])
@pytest.mark.parametrize("scope", SCOPES)
def test_scopes_match_slow_reference_and_batching(models, spec, scope):
    lm = models(spec)
    neuron_set = some_neurons(lm)
    batched = Generator(lm, GenerationSettings(max_new_tokens=6, batch_size=len(PROMPTS), positions=scope))
    single = Generator(lm, GenerationSettings(max_new_tokens=6, batch_size=1, positions=scope))
    out_b = batched.run(PROMPTS, neuron_set)
    out_s = single.run(PROMPTS, neuron_set)
    plain = single.run(PROMPTS)
    for prompt, b, s in zip(PROMPTS, out_b, out_s):
        assert b.token_ids == s.token_ids, prompt
        assert list(b.token_ids) == reference_greedy(lm, prompt, 6, neuron_set, scope), prompt
    assert any(b.token_ids != p.token_ids for b, p in zip(out_b, plain)), "deactivation changed nothing"


@pytest.mark.parametrize("scope", SCOPES)
def test_hooks_touch_exactly_the_scope_positions(models, scope):
    """What down_proj actually receives (a forward hook sees the args after the zeroing pre-hooks): the set's α is 0
    exactly at the scope's positions of each call, other neurons untouched."""
    lm = models("tiny-llama")
    neuron_set = some_neurons(lm, per_layer=10, seed=3)
    layer = 2
    index = torch.as_tensor(neuron_set.neurons[layer], dtype=torch.long)
    others = torch.as_tensor(np.setdiff1d(np.arange(lm.d_mlp), neuron_set.neurons[layer]), dtype=torch.long)
    calls = []
    down = lm.adapter.down_proj(lm.adapter.layers(lm.model)[layer])
    handle = down.register_forward_hook(lambda m, args, out: calls.append(args[0].detach().clone()))
    prompts = ["a longer prompt here", "short"]
    try:
        Generator(lm, GenerationSettings(max_new_tokens=4, batch_size=2, positions=scope)).run(prompts, neuron_set)
    finally:
        handle.remove()
    lengths = [len(lm.tokenizer(p).input_ids) for p in prompts]
    width = max(lengths)
    prefill, steps = calls[0], calls[1:]
    assert prefill.shape[1] == width and all(c.shape[1] == 1 for c in steps) and len(steps) == 3
    for row, n in enumerate(lengths):
        real = torch.arange(width) >= width - n
        zeroed = (prefill[row][:, index] == 0).all(dim=1)
        expected = {"prompt": real, "all": real, "generated": torch.zeros(width, dtype=torch.bool),
                    "prompt-last": torch.arange(width) == width - 1}[scope]
        # (the tiny models embed padding as zeros, so every α is 0 there: only real positions can tell)
        assert torch.equal(zeroed[real], expected[real])
        assert (prefill[row][real & ~expected][:, index] != 0).all()
        assert (prefill[row][real][:, others] != 0).float().mean() > 0.99
    for step in steps:
        zeroed = (step[:, 0, index] == 0).all(dim=1)
        assert bool(zeroed.all()) == (scope in ("generated", "all"))
        if scope not in ("generated", "all"):
            assert (step[:, 0, index] != 0).all()


def test_stop_strings_cut_the_text(models):
    lm = models("tiny-llama")
    free = Generator(lm, GenerationSettings(max_new_tokens=12, batch_size=3)).run(PROMPTS[:3])
    # stop at a piece of the free continuation of the first prompt: the cut text is what came before it
    target = free[0].text
    assert len(target) >= 6
    stop = target[3:5]
    cut = Generator(lm, GenerationSettings(max_new_tokens=12, batch_size=3, stop_strings=(stop,))).run(PROMPTS[:3])
    assert cut[0].stop_reason == "stop"
    assert cut[0].text == target[:target.find(stop)]
    assert stop in lm.tokenizer.decode(list(cut[0].token_ids)) and cut[0].n_new_tokens <= free[0].n_new_tokens
    assert stop not in lm.tokenizer.decode(list(cut[0].token_ids)[:-1])
