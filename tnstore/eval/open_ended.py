"""`tnstore eval generate`: free generation from a prompts file under deactivation (method §7: Type-2 deactivation
switches the output language). Outputs go into `eval_generations`, per-output statistics into `eval_gen_metrics`.

Prompts file (JSONL), either one prompt per line  {"id": "p1", "lang": "ja", "prompt": "..."}  or one record per
item with a prompt per language  {"id": "p1", "en": "...", "ja": "...", ...}  (the demo set's shape).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.eval import runs
from tnstore.eval.records import file_sha256, jsonl_records
from tnstore.store.store import Store, open_store


@dataclass(frozen=True)
class Prompt:
    item_id: str
    lang: str
    text: str


@dataclass(frozen=True)
class GenerateResult(runs.EvalResult):
    """What one `generate` call did; `summary_arrow`: per condition and language, the outputs, the share in the
    expected language and mean statistics."""


def read_prompts(path: str | Path, langs: Sequence[str], limit: int | None = None) -> dict[str, list[Prompt]]:
    """lang -> prompts in file order (the first `limit` per language)."""
    if not langs:
        raise ArgumentError("langs", "{arg} is empty; name at least one language, e.g. ja")
    out: dict[str, list[Prompt]] = {lang: [] for lang in langs}
    seen: set[tuple[str, str]] = set()
    n = 0
    for number, record in jsonl_records(path, arg="prompts"):
        n += 1
        where = f"{path} line {number}"
        item_id = str(record.get("id", number))
        if "prompt" in record:
            if not isinstance(record.get("lang"), str) or not isinstance(record["prompt"], str):
                raise TnstoreError(f"{where}: a prompt record needs string `lang` and `prompt`")
            pairs = [(record["lang"], record["prompt"])]
        else:
            pairs = [(k, v) for k, v in record.items() if k != "id"]
            if not all(isinstance(v, str) for _, v in pairs):
                raise TnstoreError(f"{where}: expected {{\"id\", \"lang\", \"prompt\"}} or {{\"id\", <lang>: <prompt>, ...}}"
                                   " with string prompts")
        for lang, text in pairs:
            if lang in out and (limit is None or len(out[lang]) < limit):
                if (item_id, lang) in seen:
                    raise TnstoreError(f"{where}: prompt id {item_id} appears twice for {lang}")
                seen.add((item_id, lang))
                if not text.strip():
                    raise TnstoreError(f"{where}: empty prompt for {lang}")
                out[lang].append(Prompt(item_id, lang, text))
    if n == 0:
        raise TnstoreError(f"{path}: no prompts")
    missing = [lang for lang in langs if not out[lang]]
    if missing:
        raise ArgumentError("langs", f"{{arg}}: {path} has no prompts in {', '.join(missing)}")
    return out


def generate(
    store: "str | Path | Store", prompts: str | Path, langs: Sequence[str], conditions: Sequence[str] = ("none",),
    positions: str = "prompt", max_new_tokens: int = 128, limit: int | None = None, batch_size: int = 8,
    chat_template: bool = False, stop_strings: Sequence[str] = (), model: str | None = None, device: str = "cpu",
    dtype: str = "float32", wait_seconds: float = 0.0, progress: bool = False,
) -> GenerateResult:
    """Generate greedily from each prompt under each condition; store outputs and their statistics. Re-running
    resumes an interrupted run."""
    from tnstore.eval.generation import Generator, GenerationSettings
    from tnstore.eval.textstats import base_lang, text_stats

    t0 = time.perf_counter()
    if isinstance(langs, str):
        langs = [langs]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=tuple(stop_strings),
                                  positions=positions, chat_template=chat_template, batch_size=batch_size).check()
    if limit is not None:
        runs.check_positive("limit", limit)
    if not isinstance(store, Store) and not Store.exists(store):
        raise runs.no_store_error(store)
    store = open_store(store)
    items = read_prompts(prompts, list(langs), limit)
    conds = runs.load_conditions(store, list(conditions))
    lm = runs.resolve_model(store, model, device, dtype)
    generator = Generator(lm, settings)
    prov = runs.Provenance(lm.spec, lm.fingerprint(), str(prompts), file_sha256(prompts))
    eid = runs.eval_id("generate", {
        "model": prov.model_fingerprint, "data": prov.data_sha256, "positions": positions,
        "max_new_tokens": max_new_tokens, "stop_strings": list(stop_strings), "chat_template": chat_template,
        "dtype": dtype})
    generated = resumed = 0
    with store.writing("eval generate", wait_seconds):
        work = [(c, lang) for c in conds for lang in langs]
        bar = runs.progress_bar(progress, sum(len(items[lang]) for _, lang in work))
        for condition, lang in work:
            done = runs.finished_chunks(store, "eval_gen_metrics", eid, condition, lang)
            for chunk, batch in runs.chunks(items[lang]):
                if done.get(chunk, 0) >= len(batch):  # a run with a larger limit stored more
                    resumed += len(batch)
                    bar.update(len(batch))
                    continue
                outputs = generator.run([p.text for p in batch], condition.neurons)
                first = chunk * runs.CHUNK
                store.write_rows("eval_generations", runs.generation_rows(
                    eid, condition, positions, lang, batch, first, chunk, outputs, settings, "{prompt}", lm, prov,
                    task="generate", ids=[p.item_id for p in batch]))
                stats = [text_stats(g.text, lang) for g in outputs]
                n = len(batch)
                store.write_rows("eval_gen_metrics", pa.table({
                    **runs.condition_columns(n, eid, condition, positions, lang),
                    "item_id": [p.item_id for p in batch],
                    "item_index": pa.array(range(first, first + n), pa.int64()),
                    "chunk": pa.array([chunk] * n, pa.int64()),
                    "detected_lang": [s.detected_lang for s in stats], "lang_prob": [s.lang_prob for s in stats],
                    "in_expected_lang": [s.detected_lang == base_lang(lang) for s in stats],
                    "n_chars": pa.array([s.n_chars for s in stats], pa.int64()),
                    "n_units": pa.array([s.n_units for s in stats], pa.int64()),
                    "n_lines": pa.array([s.n_lines for s in stats], pa.int32()),
                    "n_new_tokens": pa.array([g.n_new_tokens for g in outputs], pa.int32()),
                    "distinct_1": [s.distinct_1 for s in stats], "distinct_2": [s.distinct_2 for s in stats],
                    "repeated_4gram_rate": [s.repeated_4gram_rate for s in stats],
                    "stop_reason": [g.stop_reason for g in outputs],
                    "max_new_tokens": pa.array([max_new_tokens] * n, pa.int32()),
                    **prov.columns(n),
                }))
                generated += n
                bar.update(n)
        bar.close()
    return GenerateResult(eid, gen_summary(store, eid), generated, resumed, time.perf_counter() - t0)


SUMMARY_SQL = """
SELECT condition, lang, count(*) AS n_outputs, avg(in_expected_lang::DOUBLE) AS share_expected_lang,
       mode(detected_lang) AS most_detected,
       avg(distinct_1) AS distinct_1, avg(distinct_2) AS distinct_2, avg(repeated_4gram_rate) AS repeated_4gram_rate,
       avg(n_new_tokens) AS mean_new_tokens, avg(n_lines) AS mean_lines
FROM eval_gen_metrics WHERE eval_id = ?
GROUP BY condition, lang ORDER BY lang, condition = 'none' DESC, condition
"""


def gen_summary(store: Store, eid: str) -> pa.Table:
    """Per condition and language of one eval_id: the share of outputs in the expected language and mean statistics
    (an output too short for a statistic has null there and is left out of its mean)."""
    return store.query(SUMMARY_SQL, [eid])
