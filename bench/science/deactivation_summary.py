"""Tables of the issue-12 science check from a store filled by bench/science/deactivation.sh, as markdown.

    .venv/bin/python bench/science/deactivation_summary.py STORE

Per layer (hidden index) and L2: the parallel-pair similarity of hidden states and the mutual k-NN score (k=10)
under none / the top-1000 Type-1 set / its layer-matched random baseline, the drops (none - condition) and their
ratio; the cosine of the L2 centroid to the English one under none / Type-2 / its baseline; the App. I matrices.
"""
from __future__ import annotations

import sys

import tnstore

LANGS = ("ja", "it")


def t1(lang: str) -> str:
    return f"type1_{lang}_train_cosine_layers0-11_top1000"


def t2(lang: str) -> str:
    return f"type2_{lang}_train_cosine_layers11-18_top1000"


def fmt(v: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


NOISE = 1e-3  # a random-baseline drop below this is no measurable drop: a ratio to it means nothing


def middle(n_hidden: int) -> range:
    """The middle half of the layer outputs (hidden indices round(L/4) .. round(3L/4))."""
    n_layers = n_hidden - 1
    return range(round(n_layers / 4), round(3 * n_layers / 4) + 1)


def drops(store, sql: str, lang: str, tn: str, rand: str, params: list) -> list[str]:
    rows = store.query(sql, params).to_pylist()
    by = {(r["condition"], r["hidden_index"]): r["v"] for r in rows}
    out = ["| hidden index | none | TN | random | drop TN | drop random | ratio |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    indices = sorted({i for _, i in by})
    kept = {}
    for index in indices:
        none, a, b = by.get(("none", index)), by.get((tn, index)), by.get((rand, index))
        if None in (none, a, b):
            continue
        da, db = none - a, none - b
        kept[index] = (da, db)
        ratio = f"{da / db:.0f}" if db >= NOISE else f"(random < {NOISE:g})"
        out.append(f"| {index} | {fmt(none)} | {fmt(a)} | {fmt(b)} | {fmt(da)} | {fmt(db)} | {ratio} |")
    mid = [i for i in middle(max(indices) + 1) if i in kept]
    ma = sum(kept[i][0] for i in mid) / len(mid)
    mb = sum(kept[i][1] for i in mid) / len(mid)
    ratio = f"{ma / mb:.0f}" if mb >= NOISE else f"(random < {NOISE:g})"
    out.append(f"| mean {mid[0]}..{mid[-1]} | | | | {fmt(ma)} | {fmt(mb)} | {ratio} |")
    return out


def main() -> None:
    store = tnstore.open(sys.argv[1], mode="r")
    lines = []
    for lang in LANGS:
        tn, rand = t1(lang), f"rand1_{lang}"
        lines += [f"### {lang}: parallel-pair similarity of hidden states, mean cos(en, {lang}) (test split)", ""]
        lines += drops(store, "SELECT condition, hidden_index, mean_cos AS v FROM latent_pair_similarity WHERE "
                              "lang = ? AND split = 'test' AND array_name = 'hidden' AND kind = 'parallel' AND "
                              "condition IN ('none', ?, ?)", lang, tn, rand, [lang, tn, rand])
        lines += ["", f"### {lang}: mutual k-NN score, k = 10 (test split)", ""]
        lines += drops(store, "SELECT condition, hidden_index, score AS v FROM latent_knn WHERE lang = ? AND split = "
                              "'test' AND k = 10 AND tie_seed = 0 AND condition IN ('none', ?, ?)", lang, tn, rand,
                       [lang, tn, rand])
        tn2, rand2 = t2(lang), f"rand2_{lang}"
        rows = store.query("SELECT condition, hidden_index, cosine FROM latent_centroid_cos WHERE lang_a = 'en' AND "
                           "lang_b = ? AND split = 'test' AND condition IN ('none', ?, ?) AND where_sql LIKE ?",
                           [lang, tn2, rand2, f"%en-{lang}.%"]).to_pylist()
        by = {(r["condition"], r["hidden_index"]): r["cosine"] for r in rows}
        lines += ["", f"### {lang}: cos(C_en, C_{lang}) with the top-1000 Type-2 set deactivated (test split)", "",
                  "| hidden index | none | Type-2 | random | Type-2 - none | random - none |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for index in sorted({i for _, i in by}):
            none, a, b = (by.get((c, index)) for c in ("none", tn2, rand2))
            if None not in (none, a, b):
                lines.append(f"| {index} | {fmt(none)} | {fmt(a)} | {fmt(b)} | {fmt(a - none)} | {fmt(b - none)} |")
        lines.append("")
    for type_ in (1, 2):
        rows = store.query("SELECT input_lang, set_lang, hidden_index, n, cosine FROM crossling_deactivation WHERE "
                           "type = ? AND split = 'test' AND report_layer", [type_]).to_pylist()
        if not rows:
            continue
        index = rows[0]["hidden_index"]
        lines += [f"### App. I, Type-{type_}: cos(C_L2, C_L2 with L1's top-1000 set off), hidden index {index}", "",
                  "| L1 (set) \\ L2 (input) | " + " | ".join(LANGS) + " |", "|---|" + "---:|" * len(LANGS)]
        cell = {(r["set_lang"], r["input_lang"]): r["cosine"] for r in rows}
        for l1 in LANGS:
            lines.append(f"| {l1} | " + " | ".join(fmt(cell.get((l1, l2))) for l2 in LANGS) + " |")
        lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
