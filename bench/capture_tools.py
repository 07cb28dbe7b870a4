"""One capture tool in a worker process, for bench/bench_capture_vs_hooks.py: load the model (untimed), then time
one full pass over the sentences each time a line `run` arrives on stdin, answering one JSON line.

    python bench/capture_tools.py TOOL --model-dir DIR --sentences FILE.json --batch-size 32 [--corpus FILE]

TOOL: bare | tnstore | hooks-decoder | hooks-full | nnsight | transformer-lens. Every tool but tnstore gets the
sentences already sorted by length over the whole corpus (the researcher sorts them) and runs them in batches of
--batch-size in that order, right-padded; tnstore gets the corpus file and does its own batching, as a user runs
it. Each tool captures, per sentence at its last real token: the hidden state of every layer (embeddings
included), the residual before each MLP, the MLP activations alpha (down_proj's input) and each MLP's output,
as float32 on the CPU; the answer carries a checksum of the alpha rows so the driver can check they agree.
Imports are inside the tools: each runs in the environment that has its library (bench/make_envs.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the same for every tool (tnstore sets it on import)


def hooks(model, tokenizer, batches: list[list[str]], decoder_only: bool) -> dict:
    """The researcher's script: forward hooks on the decoder's layers, last-token rows copied to the CPU."""
    import torch

    layers, taps = model.model.layers, {}

    def keep(name, i):
        return lambda module, args, out=None: taps.setdefault(name, {}).__setitem__(i, (args[0] if out is None else out))

    handles = [h for i, layer in enumerate(layers) for h in (
        layer.post_attention_layernorm.register_forward_pre_hook(keep("resid_pre_mlp", i)),
        layer.mlp.down_proj.register_forward_pre_hook(keep("mlp_act", i)),
        layer.mlp.register_forward_hook(keep("mlp_out", i)))]
    rows = {name: [] for name in ("hidden", "resid_pre_mlp", "mlp_act", "mlp_out")}
    with torch.inference_mode():
        for texts in batches:
            enc = tokenizer(texts, padding=True, return_tensors="pt")
            last = enc["attention_mask"].sum(1) - 1
            pick = lambda t: t[torch.arange(len(texts)), last].float().cpu()  # noqa: E731
            out = (model.model if decoder_only else model)(**enc, output_hidden_states=True, use_cache=False)
            rows["hidden"].append(torch.stack([pick(h) for h in out.hidden_states], 1))
            for name in ("resid_pre_mlp", "mlp_act", "mlp_out"):
                rows[name].append(torch.stack([pick(taps[name][i]) for i in range(len(layers))], 1))
    for h in handles:
        h.remove()
    return {name: torch.cat(parts).numpy() for name, parts in rows.items()}


def bare(model, tokenizer, batches: list[list[str]]) -> dict:
    """The decoder alone (no LM head, no hooks, no hidden-state outputs): the floor every tool is measured against."""
    import torch

    with torch.inference_mode():
        for texts in batches:
            enc = tokenizer(texts, padding=True, return_tensors="pt")
            model.model(**enc, use_cache=False)
    return {}


def nnsight_capture(lm, batches: list[list[str]]) -> dict:
    """nnsight's LanguageModel: the same quantities saved from a trace per batch."""
    import nnsight
    import torch

    n_layers = len(lm.model.layers)
    rows = {name: [] for name in ("hidden", "resid_pre_mlp", "mlp_act", "mlp_out")}
    for texts in batches:
        enc = lm.tokenizer(texts, padding=True, return_tensors="pt")
        last = enc["attention_mask"].sum(1) - 1
        at = torch.arange(len(texts))
        with torch.inference_mode(), lm.trace(dict(enc)):
            saved = nnsight.save({"hidden": [lm.model.embed_tokens.output[at, last].save()]})
            for i, layer in enumerate(lm.model.layers):
                saved.setdefault("resid_pre_mlp", []).append(layer.post_attention_layernorm.input[at, last].save())
                saved.setdefault("mlp_act", []).append(layer.mlp.down_proj.input[at, last].save())
                saved.setdefault("mlp_out", []).append(layer.mlp.output[at, last].save())
                if i < n_layers - 1:
                    saved["hidden"].append(_first(layer.output)[at, last].save())
            saved["hidden"].append(lm.model.norm.output[at, last].save())
        for name, values in saved.items():
            rows[name].append(torch.stack([_value(v).float().cpu() for v in values], 1))
    return {name: torch.cat(parts).numpy() for name, parts in rows.items()}


def tl_capture(bridge, tokenizer, batches: list[list[str]]) -> dict:
    """TransformerLens's TransformerBridge: run_with_cache over the hooks of the same quantities."""
    import torch

    n_layers = bridge.cfg.n_layers
    names = {"resid_pre_mlp": "blocks.{}.hook_resid_mid", "mlp_act": "blocks.{}.mlp.out.hook_in",
             "mlp_out": "blocks.{}.hook_mlp_out", "hidden": "blocks.{}.hook_resid_post"}
    wanted = {pattern.format(i) for pattern in names.values() for i in range(n_layers)} | {"hook_embed", "ln_final.hook_out"}
    rows = {name: [] for name in names}
    with torch.inference_mode():
        for texts in batches:
            enc = tokenizer(texts, padding=True, return_tensors="pt")
            last = enc["attention_mask"].sum(1) - 1
            at = torch.arange(len(texts))
            _, cache = bridge.run_with_cache(enc["input_ids"], attention_mask=enc["attention_mask"],
                                             names_filter=lambda name: name in wanted)
            pick = lambda key: cache[key][at, last].float().cpu()  # noqa: E731
            for name, pattern in names.items():
                keys = [pattern.format(i) for i in range(n_layers)]
                if name == "hidden":
                    keys = ["hook_embed"] + keys[:-1] + ["ln_final.hook_out"]
                rows[name].append(torch.stack([pick(k) for k in keys], 1))
    return {name: torch.cat(parts).numpy() for name, parts in rows.items()}


def _first(value):
    return value[0] if isinstance(value, tuple) else value


def _value(saved):
    return getattr(saved, "value", saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tool")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--model-spec", default="smollm2-135m", help="tnstore's name for the model (tool tnstore)")
    parser.add_argument("--sentences", required=True, help="JSON list of the sentences, sorted by length")
    parser.add_argument("--corpus", help="the corpus file tnstore captures (tool tnstore)")
    parser.add_argument("--limit", type=int, help="records of --corpus (tool tnstore)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    texts = json.loads(Path(args.sentences).read_text("utf-8"))
    batches = [texts[i:i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
    run = _load(args, batches)
    run(batches[:1])  # the first forward allocates; every tool gets the same warm-up
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        seconds, out = run(batches)
        alpha = out.get("mlp_act")
        print(json.dumps({"seconds": seconds, "alpha_sum": None if alpha is None else float(alpha.sum(dtype="f8")),
                          "alpha_abs": None if alpha is None else float(abs(alpha).sum(dtype="f8")),
                          "rows": None if alpha is None else int(alpha.shape[0])}), flush=True)


def _load(args, batches):
    """The tool's model (untimed) and a function running it over batches, returning (seconds, captured)."""
    import torch

    def timed(fn):
        def run(todo):
            t0 = time.perf_counter()
            out = fn(todo)
            return time.perf_counter() - t0, out
        return run

    torch.set_grad_enabled(False)
    if args.tool == "tnstore":
        import numpy as np
        import tnstore
        from tnstore.capture.corpus import load_corpus
        from tnstore.capture.runner import CaptureSettings, run_capture
        from tnstore.models.registry import load_model

        lm = load_model(args.model_spec, device="cpu")
        corpus = load_corpus(args.corpus, limit=args.limit)

        def run_tnstore(todo):
            tmp = Path(tempfile.mkdtemp(prefix="tnstore-bench-"))
            try:
                use = corpus if len(todo) == len(batches) else load_corpus(args.corpus, limit=2)
                t0 = time.perf_counter()
                run_capture(tmp / "s", lm, use, CaptureSettings(batch_size=args.batch_size, progress=False))
                seconds = time.perf_counter() - t0
                alpha = tnstore.open(tmp / "s", mode="r").states("mlp_act", split="all").values  # untimed check
                return seconds, {"mlp_act": alpha.astype(np.float32)}
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        return run_tnstore
    if args.tool == "transformer-lens":
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
        tokenizer.padding_side = "right"
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="eager")
        bridge = TransformerBridge.boot_transformers(args.model_dir, hf_model=model.eval(), tokenizer=tokenizer,
                                                     device="cpu", dtype=torch.float32)
        return timed(lambda todo: tl_capture(bridge, tokenizer, todo))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    if args.tool == "bare":
        return timed(lambda todo: bare(model, tokenizer, todo))
    if args.tool in ("hooks-decoder", "hooks-full"):
        return timed(lambda todo: hooks(model, tokenizer, todo, decoder_only=args.tool == "hooks-decoder"))
    if args.tool == "nnsight":
        from nnsight import LanguageModel

        warnings.filterwarnings("ignore", message="LanguageModel is deprecated")
        lm = LanguageModel(model, tokenizer=tokenizer)
        lm.tokenizer.padding_side = "right"  # LanguageModel sets left padding; the last-token indices assume right
        return timed(lambda todo: nnsight_capture(lm, todo))
    raise SystemExit(f"unknown tool {args.tool!r}")


if __name__ == "__main__":
    main()
