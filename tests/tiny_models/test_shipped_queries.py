"""Every shipped queries/*.sql runs through `tnstore sql` on a store the commands have filled, and its answer equals
the same question answered in plain Python from the stored tables (read without SQL)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.cli_runner import run_cli
from tests.conftest import MKQA, TATOEBA, capture_into
from tests.stats_helpers import eta2_reference
from tnstore import queries
from tnstore.store.store import Store

TOP = 50
# A user edits a query's `params` row; these are the edits this store needs (a tiny model has 288 Type-1
# candidates, so the default top 1000 does not exist). Every other query runs exactly as shipped.
EDITS = {name: [("1000 AS top", f"{TOP} AS top")] for name in ("ranking", "distribution", "overlap", "jaccard")}


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    path = tmp_path_factory.mktemp("queries") / "s"
    capture_into(path, MKQA, "tiny-llama", limit=24)
    for lang in ("ja", "ko"):
        capture_into(path, TATOEBA / f"en-{lang}.parallel.train.jsonl", "tiny-llama", limit=30)
    capture_into(path, TATOEBA / "en-ja.nonparallel.jsonl", "tiny-llama", limit=24, kind="nonparallel")
    commands = [
        ("detect", path, "--type", 1, "--lang", "ja", "--top", TOP),
        ("detect", path, "--type", 1, "--lang", "ko", "--top", TOP),
        ("detect", path, "--type", 2, "--lang", "ja", "--top", TOP),
        ("stats", "corr-ratio", path),
        ("stats", "lang-neurons", path),
        ("stats", "jaccard", path, "--type", 1, "--top", TOP),
        ("latent", "centroids", path),
        ("latent", "knn", path, "--k", "3"),
        ("latent", "similarity", path, "--lang", "ja"),
    ]
    return path, commands


def _run(monkeypatch, capsys, path: Path, name: str) -> list[dict]:
    sql = queries.load(name)
    for old, new in EDITS.get(name, []):
        assert old in sql, (name, old)
        sql = sql.replace(old, new)
    code, out, err = run_cli(monkeypatch, capsys, "sql", path, sql, "--format", "json", "--max-rows", "100000")
    assert code == 0, (name, err)
    return [json.loads(line) for line in out.splitlines()]


def half_up(value: float, digits: int) -> float:
    """SQL's round(): halves away from zero (Python's round() goes to the even digit)."""
    from decimal import ROUND_HALF_UP, Decimal

    return float(Decimal(repr(value)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _table(path: Path, name: str) -> list[dict]:
    return Store.open(path).read_table(name).to_pylist()


# ------------------------------------------------------------------------------------------------ expectations
def expect_sentences_by_lang(path):
    rows = _table(path, "sentences")
    partners = defaultdict(set)
    for r in rows:
        partners[(r["pair_id"], r["split"])].add(r["lang"])
    groups = defaultdict(list)
    for r in rows:
        groups[(r["lang"], r["split"], r["kind"])].append(r)
    out = []
    for (lang, split, kind), members in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        tokens = [m["n_tokens"] for m in members]
        out.append({"lang": lang, "split": split, "kind": kind, "sentences": len(members),
                    "n_pairs": sum(1 for m in members if partners[(m["pair_id"], split)] - {lang}),
                    "mean_tokens": half_up(float(np.mean(tokens)), 1), "max_tokens": max(tokens)})
    return out


def _set(path, lang, type_):
    return [r for r in _table(path, "transfer_neurons")
            if (r["lang"], r["type"], r["top"], r["dist"], r["split"]) == (lang, type_, TOP, "cosine", "train")]


def expect_ranking(path):
    members = sorted(_set(path, "ja", 1), key=lambda r: (r["set_id"], r["rank"]))
    return [{k: r[k] for k in ("set_id", "rank", "layer", "neuron", "score")} for r in members]


def expect_distribution(path):
    members = _set(path, "ja", 1)
    start, end, set_id = members[0]["layer_start"], members[0]["layer_end"], members[0]["set_id"]
    counts = [sum(1 for r in members if r["layer"] == layer) for layer in range(start, end)]
    return [{"set_id": set_id, "layer": layer, "n": n, "pct": half_up(100.0 * n / len(members), 2)}
            for layer, n in zip(range(start, end), counts)]


def expect_overlap(path):
    a = {(r["layer"], r["neuron"]) for r in _set(path, "ja", 1)}
    b = {(r["layer"], r["neuron"]) for r in _set(path, "ko", 1)}
    layers = sorted({layer for layer, _ in a | b})

    def row(layer, pick):
        sa, sb = {c for c in a if pick(c)}, {c for c in b if pick(c)}
        return {"layer": layer, "n_a": len(sa), "n_b": len(sb), "n_shared": len(sa & sb),
                "jaccard": half_up(len(sa & sb) / len(sa | sb), 4)}
    return [row(layer, lambda c, layer=layer: c[0] == layer) for layer in layers] + [row(None, lambda c: True)]


def expect_jaccard(path):
    a = {(r["layer"], r["neuron"]) for r in _set(path, "ja", 1)}
    b = {(r["layer"], r["neuron"]) for r in _set(path, "ko", 1)}
    set_a, set_b = _set(path, "ja", 1)[0]["set_id"], _set(path, "ko", 1)[0]["set_id"]
    out = []
    for layer in [None] + sorted({layer for layer, _ in a | b}):
        sa = {c for c in a if layer is None or c[0] == layer}
        sb = {c for c in b if layer is None or c[0] == layer}
        out.append({"type": 1, "top": TOP, "split": "train", "dist": "cosine", "lang_a": "ja", "lang_b": "ko",
                    "set_a": set_a, "set_b": set_b, "layer": layer, "n_a": len(sa), "n_b": len(sb),
                    "n_intersection": len(sa & sb), "jaccard": len(sa & sb) / len(sa | sb)})
    return out


def _activations(path) -> tuple[np.ndarray, np.ndarray]:
    """(mlp_act (N, L, D) float64 of the default selection: every plain train row, langs (N,))."""
    store = Store.open(path)
    rows = [r for r in _table(path, "sentences") if r["split"] == "train" and r["ablation"] is None]
    rows.sort(key=lambda r: r["row"])
    acts = store.read_rows("mlp_act", np.array([r["row"] for r in rows])).astype(np.float64)
    return acts, np.array([r["lang"] for r in rows])


def expect_eta2(path):
    acts, langs = _activations(path)
    n, n_layers, d = acts.shape
    eta = eta2_reference(acts.reshape(n, -1), np.where(langs == "ja", "ja", "rest"))
    return [{"label_id": "ja", "layer": layer, "neuron": neuron, "n": n, "k": 2, "eta2": eta[layer * d + neuron]}
            for layer in range(n_layers) for neuron in range(d)]


def expect_tn_summary(path):
    rows = [r for r in _table(path, "tn_corr_ratio") if r["set_id"] and r["label"] == "language"
            and r["where_sql"] == "ablation IS NULL" and r["split"] == "train"]
    out = []
    by_set = defaultdict(list)
    for r in rows:
        by_set[(r["type"], r["lang"], r["set_id"], r["positive"])].append(r)
    for (type_, lang, set_id, positive), members in sorted(by_set.items()):
        def mean_eta(limit):
            values = [m["eta2"] for m in members if m["rank"] <= limit]
            return float(np.mean(values)) if values else None
        share = lambda test: float(np.mean([1.0 if test(m) else 0.0 for m in members]))  # noqa: E731
        out.append({"positive": positive, "lang": lang, "type": type_, "set_id": set_id, "n_tn": len(members),
                    "eta2_top10": mean_eta(10), "eta2_top100": mean_eta(100), "eta2_top1000": mean_eta(1000),
                    "sig": share(lambda m: m["anova_p"] < 0.05),
                    "sig_eta2_gt_0_1": share(lambda m: m["anova_p"] < 0.05 and m["eta2"] > 0.1),
                    "sig_eta2_gt_0_25": share(lambda m: m["anova_p"] < 0.05 and m["eta2"] > 0.25),
                    "mwu_sig": share(lambda m: m["mwu_p"] < 0.05)})
    return out


def expect_lang_neurons(path):
    rows = [r for r in _table(path, "lang_neurons") if r["where_sql"] == "ablation IS NULL" and r["split"] == "train"]
    counts = defaultdict(int)
    for r in rows:
        for t in (0.1, 0.25, 0.5):
            counts[(r["lang"], t, r["layer"])] += int(r["eta2"] is not None and r["eta2"] > t)
    return [{"lang": lang, "threshold": t, "layer": layer, "n_neurons": n}
            for (lang, t, layer), n in sorted(counts.items())]


def expect_latent_centroid_en(path):
    rows = [r for r in _table(path, "latent_centroid_cos") if r["lang_a"] == "en" and r["lang_b"] != "en"
            and r["split"] == "train"]
    best = defaultdict(lambda: -np.inf)
    for r in rows:
        best[(r["where_sql"], r["lang_b"])] = max(best[(r["where_sql"], r["lang_b"])], r["cosine"])
    return [{"where_sql": r["where_sql"], "lang": r["lang_b"], "hidden_index": r["hidden_index"],
             "cosine": r["cosine"], "closest": r["cosine"] == best[(r["where_sql"], r["lang_b"])]}
            for r in sorted(rows, key=lambda r: (r["where_sql"], r["lang_b"], r["hidden_index"]))]


def expect_latent_knn_peak(path):
    groups = defaultdict(list)
    for r in _table(path, "latent_knn"):
        if r["split"] == "train":
            groups[(r["where_sql"], r["lang"], r["k"], r["n_pairs"])].append(r)
    out = []
    for (where, lang, k, n_pairs), members in sorted(groups.items()):
        members.sort(key=lambda r: r["hidden_index"])
        peak = max(members, key=lambda r: r["score"])
        out.append({"where_sql": where, "lang": lang, "k": k, "n_pairs": n_pairs, "peak_index": peak["hidden_index"],
                    "peak_score": peak["score"], "first_score": members[0]["score"],
                    "last_score": members[-1]["score"]})
    return out


def expect_latent_similarity_gap(path):
    cells = defaultdict(dict)
    for r in _table(path, "latent_pair_similarity"):
        if (r["lang"], r["array_name"], r["split"]) == ("ja", "hidden", "train"):
            cells[(r["where_sql"], r["hidden_index"])][r["kind"]] = r["mean_cos"]
    gaps = {key: v["parallel"] - v["nonparallel"] for key, v in cells.items()}
    widest = defaultdict(lambda: -np.inf)
    for (where, _), gap in gaps.items():
        widest[where] = max(widest[where], gap)
    return [{"where_sql": where, "lang": "ja", "array_name": "hidden", "hidden_index": index,
             "parallel_cos": cells[(where, index)]["parallel"], "nonparallel_cos": cells[(where, index)]["nonparallel"],
             "gap": gaps[(where, index)], "widest": gaps[(where, index)] == widest[where]}
            for where, index in sorted(cells)]


EXPECTED = {name[len("expect_"):]: fn for name, fn in globals().items() if name.startswith("expect_")}


def test_every_shipped_query_has_a_check():
    assert sorted(EXPECTED) == queries.names()


def _same(got: list[dict], want: list[dict], name: str) -> None:
    assert len(got) == len(want), name
    for g, w in zip(got, want):
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, key, g, w)
            else:
                assert g[key] == value, (name, key, g, w)


@pytest.mark.parametrize("name", queries.names())
def test_shipped_query_answers_its_question(filled, name, monkeypatch, capsys):
    path, commands = filled
    if not (path / "tables" / "tn_corr_ratio").exists():  # fill once, through the commands a user runs
        for command in commands:
            code, _, err = run_cli(monkeypatch, capsys, *command)
            assert code == 0, (command, err)
    got = _run(monkeypatch, capsys, path, name)
    want = EXPECTED[name](path)
    assert want, f"{name}: the store should give this query something to answer"
    _same(got, want, name)
