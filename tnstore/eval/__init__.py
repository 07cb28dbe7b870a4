"""Generation and downstream evaluation under deactivation (method §7; paper §6.2, App. J).

    import tnstore
    r = tnstore.eval.qa("store", data="mkqa.jsonl.gz", langs=["ja", "it"], conditions=["none", "type1_ja_...", "rand_ja"],
                        positions="prompt", max_new_tokens=10)
    r.summary                                             # eval_qa_summary rows (Polars)
    tnstore.eval.score("mkqa.jsonl.gz", "preds.jsonl", lang="ja").rows
    tnstore.eval.mc("store", data="mmlu_prox_ja.jsonl", lang="ja", conditions=[...], method="loglik", shots=5)
    tnstore.eval.generate("store", prompts="prompts.jsonl", langs=["ja"], conditions=[...], max_new_tokens=128)

One module, one job: generation (the greedy runner and its deactivation scopes), mkqa + scoring (MKQA's format
and official metrics), mmlu_prox (records, prompts, answer extraction, loglik), textstats (language ID, distinct-n),
question_answering / multiple_choice / open_ended (runs over a data set under conditions, writing the eval_*
tables), runs (what they share), show (outputs side by side). Importing this package loads no torch: each public
name is imported on first use.
"""
from importlib import import_module as _import_module

_PUBLIC = {
    "qa": ("tnstore.eval.question_answering", "qa"),
    "score": ("tnstore.eval.question_answering", "score"),
    "mc": ("tnstore.eval.multiple_choice", "mc"),
    "generate": ("tnstore.eval.open_ended", "generate"),
    "side_by_side": ("tnstore.eval.show", "side_by_side"),
    "Generator": ("tnstore.eval.generation", "Generator"),
    "GenerationSettings": ("tnstore.eval.generation", "GenerationSettings"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tnstore.eval' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(_import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
