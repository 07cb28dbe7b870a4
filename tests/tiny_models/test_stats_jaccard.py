"""`tnstore stats jaccard` against Python set arithmetic on the same top-n lists."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.cli_runner import run_cli
from tests.stats_helpers import model_facts, random_neurons, snapshot, write_tn_set
from tnstore.store.store import Store


@pytest.fixture(scope="module")
def tn_store(tmp_path_factory):
    """Type-1 sets of 14 over 3 layers × 6 neurons (so they overlap), a bigger ja set, a euclidean ja/ko pair."""
    rng = np.random.default_rng(2)
    path = tmp_path_factory.mktemp("jaccard") / "store"
    store = Store.create(path, model_facts(4, 6, "float32"))
    sets = {}
    for lang in ["ja", "nl", "ko", "it"]:
        sets[f"{lang}-t1"] = random_neurons(rng, 14, (0, 3), 6)
        write_tn_set(store, f"{lang}-t1", lang, 1, sets[f"{lang}-t1"], layers=(0, 3))
    sets["ja-big"] = random_neurons(rng, 18, (0, 3), 6)
    write_tn_set(store, "ja-big", "ja", 1, sets["ja-big"], layers=(0, 3))
    for lang in ["ja", "ko"]:
        sets[f"{lang}-euc"] = random_neurons(rng, 12, (0, 3), 6)
        write_tn_set(store, f"{lang}-euc", lang, 1, sets[f"{lang}-euc"], layers=(0, 3), dist="euclidean")
    return path, sets


def _expected(a: list, b: list, top: int, layer: int | None) -> tuple[int, int, int, float]:
    sa = {p for p in a[:top] if layer is None or p[0] == layer}
    sb = {p for p in b[:top] if layer is None or p[0] == layer}
    return len(sa), len(sb), len(sa & sb), len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize("top", [5, 14])
def test_jaccard_equals_set_arithmetic(tn_store, top, capsys, monkeypatch):
    path, sets = tn_store
    code, out, err = run_cli(monkeypatch, capsys, "stats", "jaccard", path, "--type", 1, "--top", top, "--by-layer")
    assert code == 0, err
    assert "per layer" in out and "ja-ko" in out
    rows = Store.open(path).query("SELECT * FROM tn_jaccard WHERE top = ?", [top]).to_pylist()
    pairs = [("cosine", f"{a}-t1", f"{b}-t1") for a, b in itertools.combinations(["it", "ja", "ko", "nl"], 2)]
    if top <= 12:  # the euclidean sets hold only a top 12
        pairs.append(("euclidean", "ja-euc", "ko-euc"))
    seen = set()
    for dist, set_a, set_b in pairs:
        for layer in [None, 0, 1, 2]:
            n_a, n_b, n_ab, jac = _expected(sets[set_a], sets[set_b], top, layer)
            match = [r for r in rows if (r["set_a"], r["set_b"], r["layer"]) == (set_a, set_b, layer)]
            if n_a + n_b == 0:
                assert not match
                continue
            (row,) = match
            assert row["dist"] == dist
            assert (row["n_a"], row["n_b"], row["n_intersection"]) == (n_a, n_b, n_ab)
            assert row["jaccard"] == pytest.approx(jac, rel=1e-12)
            seen.add((set_a, set_b, layer))
    assert len(rows) == len(seen)  # nothing else: the bigger ja set is not used while ja-t1 holds the top n


def test_bigger_set_is_used_when_the_smaller_is_too_short(tn_store, capsys, monkeypatch):
    path, sets = tn_store
    code, _, err = run_cli(monkeypatch, capsys, "stats", "jaccard", path, "--type", 1, "--top", 12,
                           "--sets", "set_id IN ('ja-big', 'nl-t1')")
    assert code == 0, err
    (row,) = Store.open(path).query("SELECT * FROM tn_jaccard WHERE top = 12 AND layer IS NULL AND "
                                  "sets_sql IS NOT NULL").to_pylist()
    assert (row["set_a"], row["set_b"]) == ("ja-big", "nl-t1")
    assert row["jaccard"] == pytest.approx(_expected(sets["ja-big"], sets["nl-t1"], 12, None)[3])


def test_rerun_replaces_its_part(tn_store, capsys, monkeypatch):
    path, _ = tn_store
    for _ in range(2):
        assert run_cli(monkeypatch, capsys, "stats", "jaccard", path, "--type", 1, "--top", 3)[0] == 0
    n = Store.open(path).query("SELECT count(*) AS n FROM tn_jaccard WHERE top = 3").column("n")[0].as_py()
    assert n == len({(r["set_a"], r["set_b"], r["layer"]) for r in Store.open(path).query(
        "SELECT * FROM tn_jaccard WHERE top = 3").to_pylist()})


@pytest.mark.parametrize("args, message", [
    (("--type", 2, "--top", 5), "at least two languages"),
    (("--type", 1, "--top", 15), "at least two languages"),
    (("--type", 3, "--top", 5), "--type 3"),
    (("--type", 1, "--top", 0), "--top 0"),
    (("--type", 1, "--top", 5, "--sets", "no_such_column = 1"), "--sets"),
])
def test_errors_are_one_line_and_change_nothing(tn_store, args, message, capsys, monkeypatch):
    path, _ = tn_store
    before = snapshot(path)
    code, out, err = run_cli(monkeypatch, capsys, "stats", "jaccard", path, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert snapshot(path) == before
