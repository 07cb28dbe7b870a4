"""`tnstore eval mc`: MMLU-ProX-style multiple choice under deactivation (method §7, §10): `eval_mc` per question,
`eval_mc_summary` per subject and overall; the generations of `--method generate` go into `eval_generations`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from tnstore.errors import ArgumentError
from tnstore.eval import runs
from tnstore.eval.mmlu_prox import (LETTERS, METHODS, McItem, continuations, cot_prompt, extract_letter, loglik_prompt,
                                   option_logliks, read_mc, shots_for, template_for)
from tnstore.store.store import Store, open_store


@dataclass(frozen=True)
class McResult(runs.EvalResult):
    """What one `mc` call did; `summary_arrow`: eval_mc_summary's rows of this eval_id."""


def mc(
    store: "str | Path | Store", data: str | Path, lang: str, conditions: Sequence[str] = ("none",),
    method: str = "generate", shots: int = 5, fewshot: str | Path | None = None, positions: str = "prompt",
    max_new_tokens: int = 512, limit: int | None = None, batch_size: int = 4, model: str | None = None,
    device: str = "cpu", dtype: str = "float32", wait_seconds: float = 0.0, progress: bool = False,
) -> McResult:
    """Answer MMLU-ProX records in language `lang` under each condition.

    method generate: `shots`-shot chain of thought (examples: the subject's first records of `fewshot`, the
    validation split; default: of `data` itself, never the question), greedy until the language's stop strings or
    `max_new_tokens`, the letter from the language's answer pattern. method loglik: the option letter with the
    highest log-likelihood (positions prompt, prompt-last or all; nothing is generated). Re-running resumes.
    """
    from tnstore.eval.generation import Generator, GenerationSettings

    t0 = time.perf_counter()
    if method not in METHODS:
        raise ArgumentError("method", f"{{arg}} {method!r} is not one of {', '.join(METHODS)}")
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise ArgumentError("shots", f"{{arg}} must be an integer >= 0, got {shots!r}")
    template = template_for(lang)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=template.stop_strings,
                                  positions=positions, batch_size=batch_size).check()
    if method == "loglik" and positions == "generated":
        raise ArgumentError("positions", "{arg} generated: --method loglik generates nothing; use prompt, "
                                         "prompt-last or all")
    if not isinstance(store, Store) and not Store.exists(store):
        raise runs.no_store_error(store)
    store = open_store(store)
    questions = read_mc(data, limit=limit)
    pool = read_mc(fewshot, arg="fewshot").items if fewshot is not None else questions.items
    conds = runs.load_conditions(store, list(conditions))
    lm = runs.resolve_model(store, model, device, dtype)
    prov = runs.Provenance(lm.spec, lm.fingerprint(), str(data), questions.sha256)
    from tnstore.eval.records import file_sha256

    eid = runs.eval_id("mc", {
        "model": prov.model_fingerprint, "data": prov.data_sha256, "lang": lang, "method": method, "shots": shots,
        "fewshot": file_sha256(fewshot) if fewshot is not None else None, "positions": positions,
        "max_new_tokens": max_new_tokens if method == "generate" else None, "dtype": dtype})
    build = cot_prompt if method == "generate" else loglik_prompt
    prompts = [build(template, item, shots_for(item, pool, shots)) for item in questions.items]
    generator = Generator(lm, settings) if method == "generate" else None
    if generator is None:
        for prompt, item in zip(prompts, questions.items):  # refuse before anything is written
            continuations(lm, prompt, LETTERS[:len(item.options)])
    generated = resumed = 0
    with store.writing("eval mc", wait_seconds):
        bar = runs.progress_bar(progress, len(conds) * len(questions.items))
        for condition in conds:
            done = runs.finished_chunks(store, "eval_mc", eid, condition, lang)
            for chunk, items in runs.chunks(questions.items):
                if done.get(chunk, 0) >= len(items):  # a run with a larger limit stored more
                    resumed += len(items)
                    bar.update(len(items))
                    continue
                first = chunk * runs.CHUNK
                texts = prompts[first:first + len(items)]
                if generator is not None:
                    outputs = generator.run(texts, condition.neurons)
                    predicted = [extract_letter(template, g.text) for g in outputs]
                    logliks = [None] * len(items)
                    store.write_rows("eval_generations", runs.generation_rows(
                        eid, condition, positions, lang, items, first, chunk, outputs, settings, "mmlu-prox-cot", lm,
                        prov, task="mc", ids=[item.question_id for item in items]))
                else:
                    logliks = [option_logliks(lm, text, LETTERS[:len(item.options)], condition.neurons, positions)
                               for text, item in zip(texts, items)]
                    predicted = [LETTERS[max(range(len(ll)), key=ll.__getitem__)] for ll in logliks]
                store.write_rows("eval_mc", _mc_rows(eid, condition, positions, lang, method, shots, items, first,
                                                     chunk, predicted, logliks, max_new_tokens, prov))
                generated += len(items)
                bar.update(len(items))
        bar.close()
        store.write_rows("eval_mc_summary", mc_summary(store, eid))
    summary = store.query("SELECT * FROM eval_mc_summary WHERE eval_id = ? ORDER BY condition = 'none' DESC, "
                          "condition, subject = '*', subject", [eid])
    return McResult(eid, summary, generated, resumed, time.perf_counter() - t0)


def _mc_rows(eid, condition, positions, lang, method, shots, items: Sequence[McItem], first, chunk, predicted,
             logliks, max_new_tokens, prov) -> pa.Table:
    n = len(items)
    return pa.table({
        **runs.condition_columns(n, eid, condition, positions, lang),
        "method": [method] * n, "shots": pa.array([shots] * n, pa.int32()),
        "question_id": [item.question_id for item in items],
        "item_index": pa.array(range(first, first + n), pa.int64()), "chunk": pa.array([chunk] * n, pa.int64()),
        "subject": [item.subject for item in items], "answer": [item.answer for item in items],
        "predicted": predicted, "correct": [p == item.answer for p, item in zip(predicted, items)],
        "n_options": pa.array([len(item.options) for item in items], pa.int32()),
        "option_logliks": pa.array(logliks, pa.list_(pa.float32())),
        "max_new_tokens": pa.array([max_new_tokens if method == "generate" else None] * n, pa.int32()),
        **prov.columns(n),
    })


SUMMARY_SQL = """
WITH q AS (SELECT * FROM eval_mc WHERE eval_id = ?)
SELECT eval_id, condition, min(set_digest) AS set_digest, max(n_neurons) AS n_neurons, min(positions) AS positions,
       lang, min(method) AS method, min(shots) AS shots, coalesce(subject, '*') AS subject,
       count(*) AS n_questions, count(*) FILTER (WHERE correct) AS n_correct,
       count(*) FILTER (WHERE correct) / count(*) AS accuracy, count(*) FILTER (WHERE predicted IS NULL) AS n_unanswered,
       min(model_spec) AS model_spec, min(model_fingerprint) AS model_fingerprint, min(data) AS data,
       min(data_sha256) AS data_sha256
FROM q GROUP BY GROUPING SETS ((eval_id, condition, lang, subject), (eval_id, condition, lang))
ORDER BY condition, lang, subject
"""


def mc_summary(store: Store, eid: str) -> pa.Table:
    table = store.query(SUMMARY_SQL, [eid])
    return table.append_column("created_at", pa.array([runs.now()] * table.num_rows, pa.timestamp("us", tz="UTC")))
