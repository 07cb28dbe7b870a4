"""The generation runner on the real gemma-3-270m (float32): batched equals one-at-a-time token for token, `none`
equals plain `model.generate`, and the prompt scope changes the output (demo QA prompts, a few tokens)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tnstore.eval.generation import Generator, GenerationSettings
from tnstore.eval.mkqa import default_template, read_mkqa
from tnstore.models.deactivation import NeuronSet
from tnstore.models.registry import load_model

pytestmark = pytest.mark.real_model


def test_gemma_batched_equals_single_and_plain():
    lm = load_model("gemma-3-270m")
    data = read_mkqa(Path(str(resources.files("tnstore.data.eval").joinpath("qa_demo.jsonl"))), ["ja", "it"], limit=6)
    prompts = [default_template(lang).format(query=q.query) for lang in ("ja", "it") for q in data.items[lang]]
    rng = np.random.default_rng(42)
    flat = rng.choice(11 * lm.d_mlp, size=1000, replace=False)
    neurons = NeuronSet.from_pairs("random1000", flat // lm.d_mlp, flat % lm.d_mlp)
    batched = Generator(lm, GenerationSettings(max_new_tokens=6, batch_size=len(prompts))).run(prompts)
    single = Generator(lm, GenerationSettings(max_new_tokens=6, batch_size=1))
    assert [g.token_ids for g in batched] == [g.token_ids for g in single.run(prompts)]
    for prompt, g in zip(prompts, batched):
        enc = lm.tokenizer(prompt, return_tensors="pt")
        plain = lm.model.generate(**enc, max_new_tokens=6, do_sample=False, top_p=None, top_k=None, temperature=None)
        assert list(g.token_ids) == plain[0, enc.input_ids.shape[1]:].tolist()[:len(g.token_ids)]
    off_b = Generator(lm, GenerationSettings(max_new_tokens=6, batch_size=len(prompts))).run(prompts, neurons)
    assert [g.token_ids for g in off_b] == [g.token_ids for g in single.run(prompts, neurons)]
    assert any(a.token_ids != b.token_ids for a, b in zip(off_b, batched))
