"""`tnstore eval qa`: MKQA-style zero-shot QA under deactivation (method §7, §10), and `eval score` for anyone's
predictions. Every generation goes into `eval_generations`, every score into `eval_qa`, the means into
`eval_qa_summary` (schemas/store-v2.json)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import pyarrow as pa

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.eval import runs
from tnstore.eval.mkqa import QaItem, check_lang, default_template, read_mkqa, read_predictions
from tnstore.eval.scoring import best_scores, mean, scored_prediction
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class QaResult(runs.EvalResult):
    """What one `qa` call did; `summary_arrow`: eval_qa_summary's rows of this eval_id."""


def qa(
    store: "str | Path | Store", data: str | Path, langs: Sequence[str], conditions: Sequence[str] = ("none",),
    positions: str = "prompt", max_new_tokens: int = 10, limit: int | None = None, batch_size: int = 8,
    template: str | Mapping[str, str] | None = None, chat_template: bool = False, keep_all: bool = False,
    stop_strings: Sequence[str] = (), model: str | None = None, device: str = "cpu", dtype: str = "float32",
    wait_seconds: float = 0.0, progress: bool = False,
) -> QaResult:
    """Answer MKQA questions (release format) greedily under each condition and score them.

    langs: MKQA language codes; conditions: `none` and/or stored neuron sets; positions: prompt | prompt-last |
    generated | all (see tnstore.eval.generation). template: "{query}" placeholder, one for every language or a dict
    per language (default: the authors' "{query}? " + label). keep_all keeps long_answer/unanswerable questions.
    Running the same call again resumes an interrupted run (stored chunks of 32 questions are kept).
    """
    from tnstore.eval.generation import Generator, GenerationSettings

    t0 = time.perf_counter()
    if isinstance(langs, str):
        langs = [langs]
    langs = [check_lang(lang) for lang in langs]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=tuple(stop_strings),
                                  positions=positions, chat_template=chat_template, batch_size=batch_size).check()
    templates = _templates(template, langs)
    if not isinstance(store, Store) and not Store.exists(store):
        raise runs.no_store_error(store)
    store = open_store(store)
    questions = read_mkqa(data, langs, keep_all=keep_all, limit=limit)
    if not any(questions.items[lang] for lang in langs):
        raise TnstoreError(f"{data}: no questions left after skipping long_answer and unanswerable ones "
                           "(keep_all keeps them)")
    conds = runs.load_conditions(store, list(conditions))
    lm = runs.resolve_model(store, model, device, dtype)
    generator = Generator(lm, settings)
    prov = runs.Provenance(lm.spec, lm.fingerprint(), str(data), questions.sha256)
    eid = runs.eval_id("qa", {
        "model": prov.model_fingerprint, "data": prov.data_sha256, "positions": positions,
        "max_new_tokens": max_new_tokens, "stop_strings": list(stop_strings),
        # the template as given (None: the per-language defaults), so runs over different languages share the id
        "template": dict(template) if isinstance(template, Mapping) else template,
        "chat_template": chat_template, "keep_all": keep_all, "dtype": dtype})
    generated = resumed = 0
    with store.writing("eval qa", wait_seconds):
        work = [(c, lang) for c in conds for lang in langs]
        bar = runs.progress_bar(progress, sum(len(questions.items[lang]) for _, lang in work))
        for condition, lang in work:
            done = runs.finished_chunks(store, "eval_qa", eid, condition, lang)
            for chunk, items in runs.chunks(questions.items[lang]):
                if done.get(chunk, 0) >= len(items):  # a run with a larger limit stored more
                    resumed += len(items)
                    bar.update(len(items))
                    continue
                prompts = [templates[lang].format(query=item.query) for item in items]
                outputs = generator.run(prompts, condition.neurons)
                first = chunk * runs.CHUNK
                store.write_rows("eval_generations", runs.generation_rows(
                    eid, condition, positions, lang, items, first, chunk, outputs, settings, templates[lang], lm, prov))
                store.write_rows("eval_qa", _qa_rows(
                    eid, condition, positions, lang, items, first, chunk, outputs, max_new_tokens, templates[lang], prov))
                generated += len(items)
                bar.update(len(items))
        bar.close()
        store.write_rows("eval_qa_summary", qa_summary(store, eid))
    summary = store.query("SELECT * FROM eval_qa_summary WHERE eval_id = ? ORDER BY lang, condition = 'none' DESC, "
                          "condition", [eid])
    return QaResult(eid, summary, generated, resumed, time.perf_counter() - t0)


def _templates(template: str | Mapping[str, str] | None, langs: Sequence[str]) -> dict[str, str]:
    if template is None:
        return {lang: default_template(lang) for lang in langs}
    given = dict(template) if isinstance(template, Mapping) else {lang: template for lang in langs}
    out = {}
    for lang in langs:
        if lang not in given:
            out[lang] = default_template(lang)
            continue
        text = given[lang]
        try:
            ok = isinstance(text, str) and "{query}" in text and text.format(query="q") is not None
        except (KeyError, IndexError, ValueError):
            ok = False
        if not ok:
            raise ArgumentError("template", f"{{arg}} {text!r} must contain {{query}} and no other {{...}} field "
                                            "(write {{ and }} for literal braces)")
        out[lang] = text
    return out


def _qa_rows(eid, condition, positions, lang, items: Sequence[QaItem], first, chunk, outputs, max_new_tokens, template,
             prov) -> pa.Table:
    n = len(items)
    scores = [best_scores(g.text, item.golds, lang) for item, g in zip(items, outputs)]
    return pa.table({
        **runs.condition_columns(n, eid, condition, positions, lang),
        "example_id": [item.example_id for item in items],
        "item_index": pa.array(range(first, first + n), pa.int64()), "chunk": pa.array([chunk] * n, pa.int64()),
        "query": [item.query for item in items], "prediction": [g.text for g in outputs],
        "golds": [json.dumps(list(item.golds), ensure_ascii=False) for item in items],
        "answer_type": [",".join(item.answer_types) for item in items],
        "em": [s[0] for s in scores], "f1": [s[1] for s in scores],
        "max_new_tokens": pa.array([max_new_tokens] * n, pa.int32()), "template": [template] * n,
        **prov.columns(n),
    })


SUMMARY_SQL = """
WITH q AS (SELECT * FROM eval_qa WHERE eval_id = ?),
base AS (SELECT lang, example_id, f1 AS base_f1 FROM q WHERE condition = 'none')
SELECT q.eval_id, q.condition, min(q.set_digest) AS set_digest, max(q.n_neurons) AS n_neurons,
       min(q.positions) AS positions, q.lang, count(*) AS n_questions, avg(q.em) AS mean_em, avg(q.f1) AS mean_f1,
       count(*) FILTER (WHERE base_f1 > 0.5) AS n_base_gt_0_5,
       avg(base_f1) FILTER (WHERE base_f1 > 0.5) AS base_f1_gt_0_5,
       avg(q.f1) FILTER (WHERE base_f1 > 0.5) AS f1_gt_0_5,
       avg(q.f1 - base_f1) FILTER (WHERE base_f1 > 0.5) AS delta_f1_gt_0_5,
       count(*) FILTER (WHERE base_f1 > 0.8) AS n_base_gt_0_8,
       avg(base_f1) FILTER (WHERE base_f1 > 0.8) AS base_f1_gt_0_8,
       avg(q.f1) FILTER (WHERE base_f1 > 0.8) AS f1_gt_0_8,
       avg(q.f1 - base_f1) FILTER (WHERE base_f1 > 0.8) AS delta_f1_gt_0_8,
       max(q.max_new_tokens) AS max_new_tokens, min(q.template) AS template,
       min(q.model_spec) AS model_spec, min(q.model_fingerprint) AS model_fingerprint, min(q.data) AS data,
       min(q.data_sha256) AS data_sha256
FROM q LEFT JOIN base ON q.lang = base.lang AND q.example_id = base.example_id
GROUP BY q.eval_id, q.condition, q.lang
ORDER BY q.lang, q.condition
"""


def qa_summary(store: Store, eid: str) -> pa.Table:
    """eval_qa_summary's rows for one eval_id, from the stored eval_qa rows."""
    table = store.query(SUMMARY_SQL, [eid])
    return table.append_column("created_at", pa.array([runs.now()] * table.num_rows, pa.timestamp("us", tz="UTC")))


# ---------------------------------------------------------------------------------------------- eval score
@dataclass(frozen=True)
class ScoreResult:
    """Per-question EM/F1 of a predictions file (`rows_arrow`: example_id, em, f1) and the means; `n_missing`
    questions of the data had no prediction (they are not scored)."""

    lang: str
    rows_arrow: pa.Table
    mean_em: float
    mean_f1: float
    n_answerable: int
    answerable_em: float
    answerable_f1: float
    n_missing: int

    @property
    def rows(self) -> "pl.DataFrame":
        import polars as pl

        return pl.from_arrow(self.rows_arrow)


def score(data: str | Path, predictions: str | Path, lang: str) -> ScoreResult:
    """Score MKQA's official predictions format against an MKQA release file for `lang`, as the official evaluation
    does per question (binary_answer replaces the prediction; max over the answer texts and aliases). Every question
    of the file counts (the skip rule of `qa` does not apply); a prediction for an unknown example_id is an error."""
    check_lang(lang, arg="lang")
    questions = {item.example_id: item for item in read_mkqa(data, [lang], keep_all=True).items[lang]}
    preds = read_predictions(predictions)
    unknown = [p.example_id for p in preds if p.example_id not in questions]
    if unknown:
        raise TnstoreError(f"{predictions}: {len(unknown)} predictions name no question of {data} "
                           f"(first: example_id {unknown[0]})")
    rows = []
    for p in preds:
        item = questions[p.example_id]
        em, f1 = best_scores(scored_prediction(p.prediction, p.binary_answer), item.golds, lang)
        rows.append((p.example_id, em, f1, item.answerable))
    answerable = [r for r in rows if r[3]]
    table = pa.table({"example_id": [r[0] for r in rows], "em": [r[1] for r in rows], "f1": [r[2] for r in rows]})
    return ScoreResult(lang, table, mean(r[1] for r in rows), mean(r[2] for r in rows), len(answerable),
                       mean(r[1] for r in answerable), mean(r[2] for r in answerable), len(questions) - len(rows))
