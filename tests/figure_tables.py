"""Synthetic result tables with the store's schemas (schemas/store-v2.json), for drawing figures without a model:
small ones in the figure tests, 8B-shaped ones (32 layers, 1000 TNs x 4 languages x 2 types) in bench_plot.

The values follow the paper's shapes loosely (languages converge mid-stack, Type-1 neurons early, Type-2 late)
so a figure drawn from them can be read, but nothing here is a measurement. Every table conforms to its schema;
columns no figure reads (most of eval_*) are null."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tnstore.store.schema import arrow_schema, conform, table_names

LANGS = ("en", "ja", "nl", "ko", "it")
L2S = ("ja", "nl", "ko", "it")
FAR = {"en": 0.0, "ja": 1.0, "ko": 0.9, "nl": 0.35, "it": 0.4}


@dataclass
class Shape:
    n_layers: int = 4  # decoder layers; hidden indices 0..n_layers
    n_sentences: int = 24  # per language
    d_model: int = 32
    d_mlp: int = 64
    top: int = 10
    langs: tuple[str, ...] = LANGS
    n_questions: int = 30


def _mid(h: int, n_hidden: int) -> float:
    """1 mid-stack, 0 at both ends: how shared the space is at hidden index h."""
    return math.sin(math.pi * h / max(1, n_hidden - 1))


def tables(shape: Shape = Shape(), conditions: tuple[str, ...] = ("none",), seed: int = 0) -> dict[str, pa.Table]:
    """Every result table a figure reads, keyed by table name; latent tables hold one copy per condition
    (`condition` column)."""
    rng = np.random.default_rng(seed)
    s = shape
    n_hidden = s.n_layers + 1
    out: dict[str, list[dict]] = {name: [] for name in (
        "latent_pca", "latent_dims", "latent_centroid_cos", "latent_knn", "latent_pair_similarity",
        "latent_probe", "latent_trajectory", "transfer_neurons", "tn_jaccard", "tn_corr_ratio", "lang_neurons",
        "crossling_deactivation", "eval_qa", "eval_qa_summary", "eval_mc_summary", "eval_gen_metrics")}
    base = dict(where_sql="kind = 'parallel' AND ablation IS NULL", split="train")
    pair = dict(where_sql="ablation IS NULL", split="train")
    centres = {lang: rng.normal(size=2) * 3 for lang in s.langs}
    for ci, condition in enumerate(conditions):
        cond = {"condition": condition}
        damp = 1.0 - 0.3 * ci  # deactivation pulls the L2 away from the shared space
        row = 0
        for h in range(n_hidden):
            together = _mid(h, n_hidden) * damp
            for lang in s.langs:
                for _ in range(s.n_sentences):
                    x, y = centres[lang] * (1 - 0.85 * together) + rng.normal(size=2)
                    out["latent_pca"].append({**base, **cond, "analysis_id": "latent_pca-abc", "hidden_index": h,
                                              "n": s.n_sentences * len(s.langs), "evr1": 0.3, "evr2": 0.1,
                                              "row": row, "lang": lang, "pc1": float(x), "pc2": float(y)})
                    row += 1
                for threshold in (0.9, 0.95, 0.99):
                    k = int(2 + s.d_model * 0.5 * threshold * (0.3 + together) * (1 + 0.1 * FAR[lang]))
                    out["latent_dims"].append({**base, **cond, "analysis_id": "latent_dims-abc", "centered": False,
                                               "lang": lang, "hidden_index": h, "n": s.n_sentences,
                                               "d": s.d_model, "threshold": threshold, "k": min(k, s.d_model)})
                for other in s.langs:
                    cos = 1.0 if lang == other else 1 - 0.5 * abs(FAR[lang] - FAR[other]) * (1 - 0.8 * together)
                    out["latent_centroid_cos"].append({**base, **cond, "analysis_id": "latent_centroid_cos-abc",
                                                       "hidden_index": h, "lang_a": lang, "lang_b": other,
                                                       "n_a": s.n_sentences, "n_b": s.n_sentences,
                                                       "cosine": float(cos)})
            for lang in (l for l in s.langs if l != "en"):
                for k in (5, 10):
                    score = 0.05 + 0.5 * together * (1 - 0.3 * FAR[lang]) + 0.02 * k / 10
                    out["latent_knn"].append({**pair, **cond, "analysis_id": f"latent_knn-{lang}", "lang": lang,
                                              "hidden_index": h, "k": k, "n_pairs": s.n_sentences,
                                              "score": float(score), "tie_seed": 0, "n_duplicate_en": 0,
                                              "n_duplicate_l2": 0, "n_identical_pairs": 0})
                for array_name in ("hidden", "mlp_act"):
                    if array_name == "mlp_act" and h == 0:
                        continue
                    for kind, gap in (("parallel", 0.35), ("nonparallel", 0.0)):
                        mean = 0.3 + 0.3 * together + gap * together * (1 - 0.3 * FAR[lang])
                        out["latent_pair_similarity"].append({
                            **pair, **cond, "analysis_id": f"latent_pair_similarity-{lang}", "lang": lang,
                            "array_name": array_name, "hidden_index": h, "kind": kind, "n_pairs": s.n_sentences,
                            "mean_cos": float(mean), "std_cos": 0.05 + 0.02 * FAR[lang]})
                out["latent_probe"].append({**pair, **cond, "analysis_id": f"latent_probe-{lang}", "lang": lang,
                                            "folds": 10, "seed": 0, "n_parallel": s.n_sentences,
                                            "n_nonparallel": s.n_sentences, "hidden_index": h,
                                            "accuracy": float(0.55 + 0.4 * together), "accuracy_std": 0.04,
                                            "converged": True})
            middle = max(2, round(s.n_layers * 10 / 32))
            if 2 <= h <= middle:
                for lang in s.langs:
                    out["latent_trajectory"].append({**base, **cond, "analysis_id": f"latent_trajectory-{lang}",
                                                     "lang": lang, "middle": middle, "hidden_index": h,
                                                     "n": s.n_sentences, "cos_to_path": float(0.2 + 0.6 * h / middle),
                                                     "step_norm": 1.0})
    t1_end = max(1, round(s.n_layers * 20 / 32))
    sets = {}
    for type_, (start, end) in ((1, (0, t1_end)), (2, (t1_end, s.n_layers))):
        for lang in L2S:
            set_id = f"type{type_}_{lang}_train_cosine_layers{start}-{end}_top{s.top}"
            sets[(type_, lang)] = set_id
            weights = np.array([1.0 + (end - 1 - l if type_ == 1 else l - start) for l in range(start, end)])
            layers = rng.choice(np.arange(start, end), size=s.top, p=weights / weights.sum())
            neurons = rng.choice(s.d_mlp, size=s.top, replace=s.top > s.d_mlp)
            for rank, (layer, neuron) in enumerate(zip(layers, neurons), start=1):
                out["transfer_neurons"].append({
                    "set_id": set_id, "analysis_id": set_id.rsplit("_top", 1)[0], "lang": lang, "type": type_,
                    "split": "train", "where_sql": "ablation IS NULL", "dist": "cosine", "layer_start": start,
                    "layer_end": end, "top": s.top, "rank": rank, "layer": int(layer), "neuron": int(neuron),
                    "score": float(1.0 / rank)})
                eta = float(np.clip(rng.beta(2, 6) * (1.6 if lang in ("ja", "ko") else 0.8), 0, 1))
                for label, spec, positive in (("language", None, lang), ("family", "en,nl,it:ja,ko",
                                                                         "ja,ko" if lang in ("ja", "ko") else "en,nl,it")):
                    out["tn_corr_ratio"].append({
                        "stats_id": "gs-1", "label": label, "label_spec": spec, "where_sql": "ablation IS NULL",
                        "split": "train", "positive": positive, "set_id": set_id, "lang": lang, "type": type_,
                        "rank": rank, "layer": int(layer), "neuron": int(neuron), "n": s.n_sentences * 5,
                        "n_groups": 2, "eta2": eta, "anova_f": 10.0, "df_between": 1,
                        "df_within": s.n_sentences * 5 - 2, "anova_p": float(rng.uniform(0, 0.2)),
                        "mwu_p": float(rng.uniform(0, 0.2))})
        for i, a in enumerate(L2S):
            for b in L2S[i + 1:]:
                jac = 0.2 + 0.5 * (1 - abs(FAR[a] - FAR[b]))
                common = dict(type=type_, top=s.top, sets_sql=None, split="train", dist="cosine", lang_a=a,
                              lang_b=b, set_a=sets[(type_, a)], set_b=sets[(type_, b)])
                out["tn_jaccard"].append({**common, "layer": None, "n_a": s.top, "n_b": s.top,
                                          "n_intersection": int(s.top * jac), "jaccard": float(jac)})
                for layer in range(start, end):
                    out["tn_jaccard"].append({**common, "layer": layer, "n_a": 3, "n_b": 3, "n_intersection": 1,
                                              "jaccard": float(np.clip(jac + rng.normal(0, 0.1), 0, 1))})
        for set_lang in L2S:
            for input_lang in L2S:
                cos = 0.9 - 0.4 * (set_lang == input_lang) - 0.1 * (1 - abs(FAR[set_lang] - FAR[input_lang]))
                out["crossling_deactivation"].append({
                    "type": type_, "input_lang": input_lang, "set_lang": set_lang, "set_id": sets[(type_, set_lang)],
                    "split": "test", "positions": "last", "hidden_index": end, "report_layer": True,
                    "n": s.n_sentences, "cosine": float(cos)})
    lang_neurons = _lang_neurons(s, rng)
    eval_conditions = ("none", sets[(1, "ja")], f"random_{sets[(1, 'ja')]}_seed42")
    run = {"eval_id": "qa-0123abcd", "positions": "prompt", "max_new_tokens": 10}
    for lang in L2S:
        for q in range(s.n_questions):
            f1_base = float(rng.choice([0.0, 0.5, 0.67, 1.0], p=[0.3, 0.2, 0.1, 0.4]))
            for condition in eval_conditions:
                f1 = f1_base if condition == "none" else (
                    f1_base * float(rng.uniform(0.2, 1.0)) if condition.startswith("type")
                    else f1_base * float(rng.uniform(0.9, 1.0)))
                out["eval_qa"].append({**run, "example_id": f"q{q}", "lang": lang, "condition": condition,
                                       "prediction": "東京" if lang == "ja" else "x", "f1": f1, "em": float(f1 == 1.0)})
        for condition in eval_conditions:
            out["eval_qa_summary"].append({**run, "lang": lang, "condition": condition, "n_questions": s.n_questions,
                                           "mean_f1": 0.5, "mean_em": 0.3})
            for subject, acc in (("*", 0.4 - 0.15 * condition.startswith("type")), ("biology", 0.9)):
                out["eval_mc_summary"].append({"eval_id": "mc-0123abcd", "lang": lang, "condition": condition,
                                               "subject": subject, "accuracy": acc, "n_questions": 30})
            for p in range(10):
                detected = lang if rng.uniform() > 0.4 * condition.startswith("type") else "en"
                out["eval_gen_metrics"].append({"eval_id": "generate-0123abcd", "item_id": f"p{p}", "lang": lang,
                                                "condition": condition, "detected_lang": detected,
                                                "in_expected_lang": detected == lang})
    result = {"lang_neurons": lang_neurons}
    out.pop("lang_neurons")
    known = set(table_names())
    for name, rows in out.items():
        table = pa.Table.from_pylist(rows)
        if name.startswith("eval_") and name in known:
            table = _with_schema_columns(name, table.append_column("chunk", pa.array([0] * table.num_rows, pa.int32()))
                                         if "chunk" in arrow_schema(name).names else table)
        elif name in known:
            table = _with_schema_columns(name, table)
        result[name] = table
    return result


def _with_schema_columns(name: str, table: pa.Table) -> pa.Table:
    """A store table as the commands write it; the columns no figure reads (most of eval_*) are null."""
    schema = arrow_schema(name)
    return conform(name, pa.table({f.name: table.column(f.name) if f.name in table.column_names
                                   else pa.nulls(table.num_rows, f.type) for f in schema}))


def _lang_neurons(s: Shape, rng: np.random.Generator) -> pa.Table:
    """Every neuron of every layer against each language (built column-wise: 2.3M rows at the 8B shape)."""
    per = s.n_layers * s.d_mlp
    langs = np.repeat(np.array(s.langs, dtype=object), per)
    scale = np.repeat(np.array([1.5 if lang in ("ja", "ko") else 1.0 for lang in s.langs]), per)
    n = len(langs)
    return conform("lang_neurons", pa.table({
        "stats_id": pa.array(["gs-1"] * n), "where_sql": pa.array(["ablation IS NULL"] * n),
        "split": pa.array(["train"] * n), "lang": pa.array(langs.tolist()),
        "layer": np.tile(np.repeat(np.arange(s.n_layers, dtype=np.int32), s.d_mlp), len(s.langs)),
        "neuron": np.tile(np.arange(s.d_mlp, dtype=np.int32), s.n_layers * len(s.langs)),
        "n": np.full(n, s.n_sentences * len(s.langs), dtype=np.int64),
        "eta2": rng.beta(1, 8, size=n) * scale, "anova_f": np.ones(n), "anova_p": np.full(n, 0.5)}))


def model_facts(shape: Shape, spec: str = "synthetic-8b-shaped") -> dict:
    """A `model` table row for a store that holds only these tables (no arrays)."""
    return {"model_spec": spec, "model_source": "synthetic", "family": "llama", "architecture": "LlamaForCausalLM",
            "n_layers": shape.n_layers, "d_model": shape.d_model, "d_mlp": shape.d_mlp, "vocab_size": 32000,
            "compute_dtype": "float32", "storage_dtype": "float16", "fingerprint": "synthetic",
            "tokenizer_adds_bos": True, "bos_token": "<s>", "mlp_out_norm": None}


# Sentences written for these tests (one short everyday sentence per language), so reports show CJK text.
SENTENCES = {
    "en": "The station is close to my house.",
    "ja": "駅は私の家から近いです。",
    "nl": "Het station is dicht bij mijn huis.",
    "ko": "역은 우리 집에서 가깝습니다.",
    "it": "La stazione è vicina a casa mia.",
}


def capture_rows(run_id: str = "run-synthetic", split: str = "train") -> dict[str, pa.Table]:
    """A `runs` row and its `sentences` (one pair id across the five languages), as a capture would write."""
    from datetime import datetime, timezone

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    sentences = [{"row": i, "run_id": run_id, "lang": lang, "text": text, "pair_id": "demo:1", "split": split,
                  "kind": "parallel", "source": "synthetic.jsonl", "source_line": 1, "n_tokens": 8 + i,
                  "ablation": None} for i, (lang, text) in enumerate(SENTENCES.items())]
    run = {"run_id": run_id, "origin": "capture",
           "command": "tnstore capture --model synthetic --corpus synthetic.jsonl",
           "corpus": "synthetic.jsonl", "corpus_sha256": "0" * 64, "split": split, "kind": "parallel",
           "limit_rows": None, "row_start": 0, "row_end": len(sentences), "n_sentences": len(sentences),
           "batch_size": 8, "device": "cpu", "compute_dtype": "float32", "storage_dtype": "float16",
           "ablation": None, "ablation_scope": None, "ablation_digest": None, "ablation_size": None,
           "seconds": 1.5, "started_at": now, "finished_at": now,
           "tnstore_version": "0.2.0"}
    return {"sentences": conform("sentences", pa.Table.from_pylist(sentences)),
            "runs": conform("runs", pa.Table.from_pylist([run]))}
