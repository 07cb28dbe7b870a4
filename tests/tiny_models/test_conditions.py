"""`--conditions` on every latent analysis: each condition's rows equal what the `--where` route gives, the plain
side is English from the plain capture, the summary shows the conditions side by side with their difference to
`none`, and conditions the store cannot answer are refused before anything is written."""
from __future__ import annotations

import shutil

import pyarrow.compute as pc
import pytest

from tests.cli_runner import run_cli
from tests.conftest import TATOEBA, capture_into
from tests.stats_helpers import snapshot
from tnstore.analysis import latent
from tnstore.analysis.neurons import import_set, random_baseline
from tnstore.capture.replay import replay
from tnstore.errors import TnstoreError

LANGS = ("ja", "it")
SETS = ("tn", "rand")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """en-ja and en-it test pairs (10 parallel + 10 non-parallel each), their L2 sides replayed with a hand-picked
    set `tn` and its layer-matched random baseline `rand`; a third set `idle` is stored but never replayed."""
    tmp = tmp_path_factory.mktemp("conditions")
    path = tmp / "s"
    for lang in LANGS:
        capture_into(path, TATOEBA / f"en-{lang}.parallel.test.jsonl", "tiny-llama", limit=10, split="test")
        capture_into(path, TATOEBA / f"en-{lang}.nonparallel.jsonl", "tiny-llama", limit=10, split="test",
                     kind="nonparallel")
    csv = tmp / "tn.csv"
    csv.write_text("layer,neuron\n" + "".join(f"{l},{n}\n" for l in (0, 1, 2) for n in (2, 11, 30, 64, 90)))
    import_set(path, csv, "tn")
    import_set(path, csv, "idle")
    random_baseline(path, "tn", match_layers=True, name="rand")
    for kind in ("parallel", "nonparallel"):
        replay(path, list(SETS), kind=kind, device="cpu")
    return path


@pytest.fixture()
def store_path(base, tmp_path):
    shutil.copytree(base, tmp_path / "s")
    return tmp_path / "s"


def _where(name: str, group: bool) -> str:
    """The --where a user writes for condition `name` (spelled differently from tnstore's own predicate)."""
    pick = f"(lang = 'en' AND ablation IS NULL) OR (lang IN ('ja', 'it') AND ablation = '{name}')"
    return f"kind = 'parallel' AND ({pick})" if group else pick


SKIP = {"analysis_id", "where_sql"}


def _rows(table, condition: str | None = None) -> list[dict]:
    if condition is not None:
        table = table.filter(pc.equal(table["condition"], condition))
    rows = [{k: v for k, v in r.items() if k not in SKIP} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in sorted(r)))


ANALYSES = {
    "pca": (latent.pca, {}, True),
    "dims": (latent.dims, {"thresholds": [0.5, 0.9]}, True),
    "centroids": (latent.centroids, {}, True),
    "trajectory": (latent.trajectory, {"lang": "ja", "middle": 3}, True),
    "knn": (latent.knn, {"k": [2, 3]}, False),
    "similarity": (latent.similarity, {}, False),
    "probe": (latent.probe, {"lang": "it", "folds": 2, "layers": [0, 2]}, False),
}


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_each_condition_equals_the_where_route(store_path, name):
    run, options, group = ANALYSES[name]
    both = run(store_path, split="test", conditions=["none", *SETS], **options)
    assert both.conditions == ["none", *SETS]
    assert sorted(set(both.table_arrow.column("condition").to_pylist())) == sorted(["none", *SETS])
    plain = run(store_path, split="test", **options)
    assert _rows(both.table_arrow, "none") == _rows(plain.table_arrow)
    assert set(plain.table_arrow.column("condition").to_pylist()) == {"none"}
    for condition in SETS:
        by_where = run(store_path, split="test", where=_where(condition, group), **options)
        assert set(by_where.table_arrow.column("condition").to_pylist()) == {condition}  # read off the rows
        assert _rows(both.table_arrow, condition) == _rows(by_where.table_arrow)
    # conditions never overwrite each other: every part is still there
    stored = latent.open_store(store_path).query(f"SELECT DISTINCT condition FROM {both.table_name} WHERE analysis_id "
                                                 f"IN ({', '.join(repr(a) for a in both.analysis_ids)})")
    assert sorted(stored.column(0).to_pylist()) == sorted(["none", *SETS])


def test_the_english_side_is_always_the_plain_capture(store_path):
    result = latent.centroids(store_path, split="test", conditions=["none", "tn"])
    rows = result.table_arrow.to_pylist()
    n = {(r["condition"], r["lang_a"]): r["n_a"] for r in rows}
    assert n[("none", "en")] == n[("tn", "en")] == 20 and n[("tn", "ja")] == n[("none", "ja")] == 10
    en_en = {r["condition"]: r["cosine"] for r in rows if r["lang_a"] == r["lang_b"] == "en"}
    assert en_en["none"] == en_en["tn"]


def test_the_summary_puts_conditions_side_by_side_with_their_difference_to_none(store_path):
    result = latent.knn(store_path, [2], split="test", conditions=["none", "tn", "rand"])
    summary = result.summary_arrow.to_pylist()
    assert result.summary_arrow.column_names == ["measure", "hidden_index", "none", "tn", "rand", "Δ tn", "Δ rand"]
    assert {r["measure"] for r in summary} == {"ja k=2", "it k=2"}
    table = {(r["condition"], r["lang"], r["hidden_index"]): r["score"] for r in result.table_arrow.to_pylist()}
    for r in summary:
        lang = r["measure"].split()[0]
        for condition in ("none", "tn", "rand"):
            assert r[condition] == table[(condition, lang, r["hidden_index"])]
        assert r["Δ tn"] == pytest.approx(r["tn"] - r["none"]) and r["Δ rand"] == pytest.approx(r["rand"] - r["none"])
    no_plain = latent.knn(store_path, [2], split="test", conditions=["tn", "rand"])
    assert no_plain.summary_arrow.column_names == ["measure", "hidden_index", "tn", "rand"]
    assert any("add none" in note for note in no_plain.notes)


def test_positions_pick_between_replays_at_last_and_all(store_path):
    last = latent.knn(store_path, [2], lang="ja", split="test", conditions=["none", "tn"])
    replay(store_path, ["tn"], langs=["ja"], positions="all", device="cpu")
    with pytest.raises(TnstoreError, match="replayed at positions all and last; pick one with positions"):
        latent.knn(store_path, [2], lang="ja", split="test", conditions=["none", "tn"])
    again = latent.knn(store_path, [2], lang="ja", split="test", conditions=["none", "tn"], positions="last")
    assert _rows(again.table_arrow, "tn") == _rows(last.table_arrow, "tn")
    every = latent.knn(store_path, [2], lang="ja", split="test", conditions=["none", "tn"], positions="all")
    by_where = latent.knn(store_path, [2], lang="ja", split="test", where=(
        "lang = 'en' AND ablation IS NULL OR lang = 'ja' AND ablation = 'tn' AND "
        "run_id IN (SELECT run_id FROM runs WHERE ablation_scope = 'all')"))
    assert _rows(every.table_arrow, "tn") == _rows(by_where.table_arrow)


def test_a_set_redrawn_under_its_replayed_name_is_refused(store_path):
    random_baseline(store_path, "tn", match_layers=True, name="rand", seed=5)
    with pytest.raises(TnstoreError, match="not those it was replayed with"):
        latent.similarity(store_path, split="test", conditions=["none", "rand"])


@pytest.mark.parametrize("args, message", [
    (("knn", "--conditions", "none,idle"), "no sentences of split test were replayed with 'idle'; run `tnstore "
                                           "replay STORE --split test --sets idle` first"),
    (("knn", "--conditions", "none,nope"), "(and no neuron set has that name"),
    (("similarity", "--conditions", "none,tn", "--split", "train"), "--split train: the store has no sentences"),
    (("knn", "--conditions", "none,tn,none"), "--conditions names none more than once"),
    (("knn", "--conditions", "none,,tn"), "comma-separated list of names"),
    (("knn", "--positions", "all"), "--positions picks which replays a condition reads; give --conditions too"),
    (("pca", "--conditions", "none,tn", "--positions", "middle"), "--positions 'middle' is not one of last, all"),
    (("pca", "--conditions", "none,tn", "--positions", "all"), "--positions all: 'tn' was replayed at positions last"),
])
def test_conditions_the_store_cannot_answer_are_one_line_errors(store_path, capsys, monkeypatch, args, message):
    before = snapshot(store_path)
    code, out, err = run_cli(monkeypatch, capsys, "latent", args[0], store_path, "--split", "test", *args[1:])
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert snapshot(store_path) == before


def test_a_kind_that_was_not_replayed_is_named(store_path, tmp_path):
    csv = tmp_path / "more.csv"
    csv.write_text("layer,neuron\n1,1\n")
    import_set(store_path, csv, "more")
    replay(store_path, ["more"], langs=["ja"], device="cpu")  # parallel only
    with pytest.raises(TnstoreError, match="no ja sentences of kind nonparallel, split test were replayed with "
                                           "'more'; run `tnstore replay STORE --split test --sets more --kind "
                                           "nonparallel --langs ja` first"):
        latent.similarity(store_path, lang="ja", split="test", conditions=["none", "more"])
    result = latent.knn(store_path, [2], lang="ja", split="test", conditions=["none", "more"])
    assert result.conditions == ["none", "more"]


def test_cli_prints_the_counts_and_the_conditions_side_by_side(store_path, capsys, monkeypatch):
    code, out, err = run_cli(monkeypatch, capsys, "latent", "similarity", store_path, "--lang", "ja", "--split",
                             "test", "--conditions", "none,tn,rand", "--layers", "1:3")
    assert code == 0, err
    assert "pairs: en-ja 10 parallel / 10 non-parallel" in out
    assert "measure" in out and "Δ tn" in out and "Δ rand" in out and "ja h par" in out
    assert "wrote 24 rows to latent_pair_similarity" in out  # 3 conditions x 2 layers x (h, act) x 2 kinds


@pytest.mark.parametrize("where", [None, "source_line <= 8"])
@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_figures_draw_every_condition_of_one_selection_in_one_figure(store_path, name, where):
    # Each condition is stored with its own where_sql (the selection plus the condition's clause); the figure
    # registry groups rows by the selection without that clause, so the conditions land side by side.
    from tnstore.analysis.conditions import selection_of
    from tnstore.figures import registry

    run, options, _ = ANALYSES[name]
    result = run(store_path, split="test", where=where, conditions=["none", *SETS], **options)
    rows = result.table_arrow.to_pylist()
    assert len({r["where_sql"] for r in rows}) == 3  # three predicates stored...
    assert {selection_of(r["where_sql"], r["condition"]) for r in rows} == {where and f"({where})"}  # ...one selection
    if where is None:  # the default selection without --conditions is the same selection
        plain = run(store_path, split="test", **options).table_arrow.to_pylist()
        assert {selection_of(r["where_sql"], r["condition"]) for r in plain} == {None}
    store = latent.open_store(store_path)
    kinds = [k for k in registry.figure_types() if k.tables == (result.table_name,)]
    assert kinds
    for kind in kinds:
        groups = [g for g in kind.read(store) if g.data.height]
        mine = [g for g in groups if set(g.data["analysis_id"].to_list()) & set(result.analysis_ids)]
        assert len(mine) == 1 and set(mine[0].data["condition"].to_list()) == {"none", *SETS}
