"""`tnstore replay`: the L2 side of sentences already in the store, run again with neuron sets deactivated.

Checked on a tiny model of every family against a forward with hooks written here (not tnstore's): an empty set
gives the plain capture bit for bit; α of the deactivated neurons is 0 at the last token and every other stored
value is what the independent hook gives, at positions last and all. Then what replay records, reuses, refuses
and resumes."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.cli_runner import run_cli
from tests.conftest import TATOEBA, capture_into
from tnstore.analysis.neurons import import_set, random_baseline
from tnstore.capture.forward import PER_SENTENCE_ARRAYS
from tnstore.capture.replay import replay
from tnstore.errors import TnstoreError
from tnstore.models.deactivation import NeuronSet
from tnstore.models.registry import load_model
from tnstore.models.tiny import TINY_FAMILIES
from tnstore.store.store import Store

PAIRS = TATOEBA / "en-ja.parallel.test.jsonl"
NONPARALLEL = TATOEBA / "en-ja.nonparallel.jsonl"
SET = {1: [3, 17, 40], 2: [0, 5, 95]}  # 0-based decoder layers of the 4-layer tiny models (d_mlp 96)


def _import(store_path, tmp_path, name="handpicked", neurons=SET):
    csv = tmp_path / f"{name}.csv"
    csv.write_text("layer,neuron\n" + "".join(f"{l},{n}\n" for l, ns in neurons.items() for n in ns))
    import_set(store_path, csv, name)


def _rows(store: Store, where: str) -> np.ndarray:
    return store.query(f"SELECT row FROM sentences WHERE {where} ORDER BY row").column("row").to_numpy()


def _arrays(store: Store, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: store.read_rows(name, rows) for name in PER_SENTENCE_ARRAYS}


def _reference(lm, text: str, neurons: dict[int, list[int]], positions: str) -> tuple[np.ndarray, np.ndarray]:
    """(hidden (L+1, d), alpha (L, d_mlp)) at the last token of one unpadded forward of the CausalLM, with the
    neurons zeroed at the input of each layer's mlp.down_proj by hooks written here."""
    layers = lm.model.model.layers
    alpha = {}
    handles = []
    for index, layer in enumerate(layers):
        def hook(module, args, index=index):
            x = args[0].clone()
            if index in neurons:
                if positions == "last":
                    x[:, -1, neurons[index]] = 0
                else:
                    x[:, :, neurons[index]] = 0
            alpha[index] = x[0, -1].clone()
            return (x,)
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            out = lm.model(**lm.tokenizer(text, return_tensors="pt"), output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    hidden = torch.stack([h[0, -1] for h in out.hidden_states]).numpy()
    return hidden, torch.stack([alpha[i] for i in range(len(layers))]).numpy()


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def family_store(request, tmp_path_factory):
    """4 en-ja pairs captured one sentence at a time, replayed with an empty set and with SET at both scopes."""
    family = request.param
    tmp = tmp_path_factory.mktemp(f"replay-{family}")
    path = tmp / "s"
    capture_into(path, PAIRS, family, limit=4, split="test", batch_size=1)
    _import(path, tmp)
    common = dict(split="test", device="cpu", batch_size=1, storage_dtype="float32")
    replay(path, [NeuronSet("empty", {})], **common)
    replay(path, ["handpicked"], positions="last", **common)
    replay(path, ["handpicked"], positions="all", **common)
    return family, Store.open(path)


def test_an_empty_set_replays_the_plain_capture_bit_for_bit(family_store):
    _, store = family_store
    plain = _rows(store, "ablation IS NULL AND lang = 'ja'")
    empty = _rows(store, "ablation = 'empty'")
    assert len(plain) == len(empty) == 4
    got, want = _arrays(store, empty), _arrays(store, plain)
    for name in PER_SENTENCE_ARRAYS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("positions", ["last", "all"])
def test_deactivated_alpha_is_zero_and_everything_else_matches_an_independent_hook(family_store, positions):
    family, store = family_store
    rows = store.query("SELECT s.row, s.text FROM sentences s JOIN runs r USING (run_id) WHERE s.ablation = "
                       "'handpicked' AND r.ablation_scope = ? ORDER BY s.row", [positions]).to_pylist()
    plain = _arrays(store, _rows(store, "ablation IS NULL AND lang = 'ja'"))
    stored = _arrays(store, np.array([r["row"] for r in rows]))
    lm = load_model(family)
    first = min(SET)
    for i, row in enumerate(rows):
        hidden, alpha = _reference(lm, row["text"], SET, positions)
        for layer, neurons in SET.items():
            assert np.all(stored["mlp_act"][i, layer, neurons] == 0)
        np.testing.assert_allclose(stored["mlp_act"][i], alpha, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stored["hidden"][i], hidden, rtol=1e-5, atol=1e-5)
    # before the first deactivated layer's MLP nothing changes, and its other neurons keep their plain values
    np.testing.assert_array_equal(stored["hidden"][:, : first + 1], plain["hidden"][:, : first + 1])
    others = np.setdiff1d(np.arange(stored["mlp_act"].shape[2]), SET[first])
    np.testing.assert_array_equal(stored["mlp_act"][:, first, others], plain["mlp_act"][:, first, others])
    assert np.abs(stored["hidden"][:, -1] - plain["hidden"][:, -1]).max() > 1e-4


def test_positions_all_and_last_differ(family_store):
    _, store = family_store
    by = {p: store.read_rows("hidden", store.query(
        "SELECT s.row FROM sentences s JOIN runs r USING (run_id) WHERE s.ablation = 'handpicked' AND "
        "r.ablation_scope = ? ORDER BY s.row", [p]).column("row").to_numpy()) for p in ("last", "all")}
    assert np.abs(by["last"][:, -1] - by["all"][:, -1]).max() > 1e-5


# ------------------------------------------------------------------------------------------------ bookkeeping
@pytest.fixture()
def store_path(tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp() / "replay-base"
    if not base.exists():
        capture_into(base / "s", PAIRS, "tiny-llama", limit=12, split="test")
        capture_into(base / "s", NONPARALLEL, "tiny-llama", limit=6, split="test", kind="nonparallel")
        _import(base / "s", base)
        random_baseline(base / "s", "handpicked", match_layers=True, name="rand")
    shutil.copytree(base / "s", tmp_path / "s")
    return tmp_path / "s"


def test_replay_runs_the_l2_side_only_and_records_each_set(store_path, monkeypatch):
    loads = []
    import tnstore.models.registry as registry

    real = registry.load_model
    monkeypatch.setattr(registry, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    result = replay(store_path, ["handpicked", "rand"], device="cpu", chunk_rows=4)
    assert len(loads) == 1  # two sets, one model load
    assert result.selected == {"ja": 12}
    store = Store.open(store_path)
    runs = store.query("SELECT origin, ablation, ablation_scope, ablation_digest, ablation_size, split, kind, "
                       "n_sentences FROM runs WHERE origin = 'replay' ORDER BY ablation").to_pylist()
    digest = {name: s.digest() for name, s in ((n, __import__("tnstore").neurons.load_set(store, n))
                                               for n in ("handpicked", "rand"))}
    assert runs == [{"origin": "replay", "ablation": name, "ablation_scope": "last", "ablation_digest": digest[name],
                     "ablation_size": 6, "split": "test", "kind": "parallel", "n_sentences": 12}
                    for name in ("handpicked", "rand")]
    same = "lang, text, pair_id, split, kind, source, source_line"
    plain = store.query(f"SELECT {same} FROM sentences WHERE ablation IS NULL AND kind = 'parallel' AND lang = 'ja' "
                        "ORDER BY row").to_pylist()
    for name in ("handpicked", "rand"):
        assert store.query(f"SELECT {same} FROM sentences WHERE ablation = ? ORDER BY row", [name]).to_pylist() == plain
    # the same command again: nothing to run, the model is not loaded
    again = replay(store_path, ["handpicked", "rand"], device="cpu")
    assert len(loads) == 1 and again.model is None
    assert [(r.reused, r.run_id) for r in again.runs] == [({"ja": 12}, None)] * 2


def test_limit_where_and_kind_pick_the_sentences_and_reuse_what_is_there(store_path):
    first = replay(store_path, ["handpicked"], limit=3, device="cpu")
    assert first.runs[0].replayed == {"ja": 3}
    more = replay(store_path, ["handpicked"], limit=5, device="cpu")
    assert (more.runs[0].replayed, more.runs[0].reused) == ({"ja": 2}, {"ja": 3})
    store = Store.open(store_path)
    # The first 5 in corpus order, each once (a run stores its rows longest first, so not the first 5 rows).
    wanted = store.query("SELECT pair_id FROM sentences WHERE ablation IS NULL AND kind = 'parallel' AND lang = 'ja' "
                         "ORDER BY source, source_line, row LIMIT 5").column(0).to_pylist()
    replayed = store.query("SELECT pair_id FROM sentences WHERE ablation = 'handpicked'").column(0).to_pylist()
    assert sorted(replayed) == sorted(wanted) and len(set(replayed)) == 5
    non = replay(store_path, ["handpicked"], kind="nonparallel", where="source_line <= 4", device="cpu")
    assert non.runs[0].kind == "nonparallel" and non.runs[0].replayed == {"ja": 4}
    with pytest.raises(TnstoreError, match="is not one of"):
        replay(store_path, ["handpicked"], positions="middle")


def test_nothing_to_replay_names_the_missing_capture(store_path, capsys, monkeypatch):
    for args, message in [
        (("--langs", "ko"), "no plain ko sentences of split test, kind parallel"),
        (("--split", "train"), "no plain any L2 sentences of split train"),
        (("--kind", "mono"), "--kind mono"),
    ]:
        code, out, err = run_cli(monkeypatch, capsys, "replay", store_path, "--sets", "handpicked", *args)
        assert code == 2 and err.count("\n") == 1, err
        assert message in err and "capture them first: tnstore capture --store" in err, err
    code, _, err = run_cli(monkeypatch, capsys, "replay", store_path, "--sets", "nope")
    assert code == 2 and "--sets 'nope': no neuron set" in err


def test_a_set_changed_under_the_same_name_is_refused(store_path):
    replay(store_path, ["rand"], limit=2, device="cpu")
    random_baseline(store_path, "handpicked", match_layers=True, name="rand", seed=1)  # redrawn, same name
    with pytest.raises(TnstoreError, match="replayed before with other neurons"):
        replay(store_path, ["rand"], device="cpu")


def test_another_models_weights_are_refused(store_path):
    with pytest.raises(TnstoreError, match="are not the store's model tiny-llama"):
        replay(store_path, ["handpicked"], model="tiny-gemma3", device="cpu")


def test_cli_prints_what_it_replayed(store_path, capsys, monkeypatch):
    code, out, err = run_cli(monkeypatch, capsys, "replay", store_path, "--sets", "handpicked,rand", "--limit", "2",
                             "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "plain sentences to cover: ja 2" in out
    assert "handpicked (6 neurons, digest" in out and "replayed ja 2 into rows" in out and "rand (6 neurons" in out


def test_an_interrupted_replay_resumes_to_the_same_arrays(store_path, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    shutil.copytree(store_path, clean)
    import tnstore.capture.runner as runner

    real, calls = runner.capture_block, []

    def dies_on_the_second_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "capture_block", dies_on_the_second_block)
    with pytest.raises(KeyboardInterrupt):
        replay(store_path, ["handpicked"], device="cpu", chunk_rows=4)
    assert not _rows(Store.open(store_path), "ablation = 'handpicked'").size  # nothing visible yet
    monkeypatch.setattr(runner, "capture_block", real)
    resumed = replay(store_path, ["handpicked"], device="cpu", chunk_rows=4)
    replay(clean, ["handpicked"], device="cpu", chunk_rows=4)
    assert resumed.runs[0].replayed == {"ja": 12}
    got = _arrays(Store.open(store_path), _rows(Store.open(store_path), "ablation = 'handpicked'"))
    want = _arrays(Store.open(clean), _rows(Store.open(clean), "ablation = 'handpicked'"))
    for name in PER_SENTENCE_ARRAYS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_store_with_a_results_folder_reuses_replays_but_cannot_add_them(store_path, tmp_path):
    replay(store_path, ["handpicked"], device="cpu")
    shared = Store.open(store_path, results=tmp_path / "results")  # e.g. a remote store: tables go elsewhere
    again = replay(shared, ["handpicked"], device="cpu")
    assert again.model is None and again.runs[0].reused == {"ja": 12}
    with pytest.raises(TnstoreError, match="a replay writes arrays into the store itself"):
        replay(shared, ["rand"], device="cpu")
