"""The main job on the built-in default: capture the demo corpus with Gemma-3-270M, detect transfer neurons,
and print a few SQL results, each from a file a user can copy out of `queries/`."""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Callable

from tnstore.capture.api import capture_corpus
from tnstore.cli.render import render
from tnstore.queries import load as load_query
from tnstore.store.store import Store

DEMO_LANGS = ("ja", "nl", "ko", "it")


def demo_corpus_path() -> Path:
    """The built-in corpus: 140 everyday sentences written for tnstore, each in en, ja, nl, ko and it."""
    return Path(str(resources.files("tnstore.data").joinpath("demo_corpus.jsonl")))


def run_demo(store: Path, model: str, echo: Callable[[str], None]) -> None:
    t0 = time.perf_counter()
    echo(f"1/5 capture: {model} over the built-in demo corpus (first use converts the model once)")
    echo("    " + capture_corpus(store=store, corpus=demo_corpus_path(), model=model, split="train", storage_dtype="float16",
                          progress=True, command=f"tnstore demo --model {model}").describe())
    _show(store, echo, "Sentences per language", load_query("sentences_by_lang"))

    from tnstore.analysis.detect import detect

    echo("2/5 detect: Type-1 and Type-2 transfer neurons for every language (top 1000)")
    for lang in DEMO_LANGS:
        for tn_type in (1, 2):
            result = detect(store, type=tn_type, lang=lang, top=1000)
            echo(f"    type {tn_type} {lang}: {result.n_candidates} candidates scored on {result.n_sentences} "
                 f"sentences in {result.seconds:.1f} s")
    _show(store, echo, "Top Type-1 transfer neurons for ja", load_query("ranking"), "rank, layer, neuron, score", "rank <= 10")
    _show(store, echo, "Where the top-1000 Type-1 set of ja sits (neurons per layer)", load_query("distribution"))

    from tnstore.analysis.stats import corr_ratio, jaccard

    echo("3/5 stats: correlation ratio of every TN with its language, Jaccard overlap of the sets")
    corr_ratio(store, label="language", progress=False)
    jaccard(store, type=1, top=1000)
    _show(store, echo, "Mean eta^2 of the top-10/100/1000 TNs vs the language label", load_query("tn_summary"),
          "lang, type, eta2_top10, eta2_top100, eta2_top1000, sig_eta2_gt_0_1, sig_eta2_gt_0_25")
    _show(store, echo, "Jaccard overlap of top-1000 Type-1 sets", load_query("jaccard"),
          "lang_a, lang_b, n_intersection, jaccard", "layer IS NULL")
    from tnstore.analysis import latent
    from tnstore.report import build

    echo("4/5 latent space (PCA, dimensionality, centroids, k-NN, trajectory) and the report")
    for analysis in (latent.pca, latent.dims, latent.centroids, latent.knn, latent.trajectory):
        analysis(store)
    report = build(store, Path(store).with_name(Path(store).name + "-report.html"))
    echo(f"    report: {report.path.resolve()} ({report.figures} figures, {report.seconds:.1f} s); open it in a browser")
    from tnstore.eval.demo import demo_qa

    echo("5/5 eval: built-in questions answered with the Type-1 set deactivated at the prompt vs none and random")
    demo_qa(store, echo)
    echo(f"done in {time.perf_counter() - t0:.0f} s. Explore with: tnstore sql {store} \"SELECT * FROM transfer_neurons LIMIT 5\"")


def _show(store: Path, echo: Callable[[str], None], title: str, query: str, columns: str = "*",
          where: str = "true") -> None:
    """Print a shipped query's result; `columns`/`where` trim it for the screen (the query file is unchanged)."""
    echo(f"\n== {title}")
    trimmed = f"SELECT {columns} FROM (\n{query}\n) AS result WHERE {where}"
    echo(render(Store.open(store, mode="r").query(trimmed), "table", max_rows=20))
