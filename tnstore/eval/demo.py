"""The demo's QA step: a few built-in questions answered by the store's model with each language's top-1000
Type-1 set deactivated at the prompt, against none and a random baseline of the same size (method §7)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable, Sequence


def demo_qa_path() -> Path:
    """The built-in QA set: 70 MKQA-format questions (capitals, colours, numbers, animals...) in en, ja, nl, ko, it."""
    return Path(str(resources.files("tnstore.data.eval").joinpath("qa_demo.jsonl")))


def demo_qa(store: Path, echo: Callable[[str], None], langs: Sequence[str] = ("ja",), limit: int = 32,
            top: int = 1000) -> None:
    """For each language: draw a random baseline like its Type-1 set (seed 42), answer the first `limit` demo
    questions under none / the Type-1 set / the baseline with the authors' prompt, and print F1 per condition.

    Japanese by default: gemma-3-270m wraps its nl/ko/it answers in HTML bold, which MKQA's normalisation turns
    into one unmatched token, so only ja shows a base F1 worth comparing at this size (see the README)."""
    from tnstore.analysis.neurons import find_set, random_baseline
    from tnstore.eval.question_answering import qa
    from tnstore.store.store import Store

    for lang in langs:
        set_id = find_set(Store.open(store), {"type": 1, "lang": lang}, top=top)["set_id"]
        baseline = random_baseline(store, set_id, seed=42).name
        result = qa(store, demo_qa_path(), [lang], ["none", set_id, baseline], max_new_tokens=10, limit=limit,
                    batch_size=12)
        names = {"none": "none", set_id: "Type-1 set", baseline: "random"}
        # the summary covers every stored run of these settings: show this step's language and conditions
        for row in result.summary_arrow.to_pylist():
            if row["lang"] == lang and row["condition"] in names:
                echo(f"    {lang} {names[row['condition']]:<10} mean F1 {row['mean_f1']:.3f} over "
                     f"{row['n_questions']} questions")
