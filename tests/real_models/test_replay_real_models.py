"""Replay on the real packaged models (LLaMA-style smollm2-135m, Gemma 3's sandwich norms in gemma-3-270m) with real
Tatoeba sentences: the stored states equal a forward with deactivating hooks written in the test."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TATOEBA, capture_into
from tests.tiny_models.test_replay import _reference
from tnstore.analysis.neurons import import_set
from tnstore.capture.replay import replay
from tnstore.models.registry import load_model
from tnstore.store.store import Store

pytestmark = pytest.mark.real_model
POSITIONS = ("last",)  # positions all: every tiny family covers it (tests/tiny_models/test_replay.py)


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma-3-270m"])
def replayed(request, tmp_path_factory, shared_data):
    """2 en-ja test pairs, the ja side replayed with 40 neurons in each of layers 1 and 4."""
    spec = request.param
    tmp = tmp_path_factory.mktemp(spec)
    path = tmp / "s"
    capture_into(path, TATOEBA / "en-ja.parallel.test.jsonl", spec, limit=2, split="test", batch_size=1)
    d_mlp = int(Store.open(path).model_facts["d_mlp"])
    rng = np.random.default_rng(0)
    neurons = {layer: sorted(rng.choice(d_mlp, size=40, replace=False).tolist()) for layer in (1, 4)}
    csv = tmp / "set.csv"
    csv.write_text("layer,neuron\n" + "".join(f"{l},{n}\n" for l, ns in neurons.items() for n in ns))
    import_set(path, csv, "set")
    for positions in POSITIONS:
        replay(path, ["set"], positions=positions, device="cpu", batch_size=1)
    return load_model(spec, device="cpu"), Store.open(path), neurons


@pytest.mark.parametrize("positions", POSITIONS)
def test_replay_equals_an_independent_hook(replayed, positions):
    lm, store, neurons = replayed
    rows = store.query("SELECT s.row, s.text FROM sentences s JOIN runs r USING (run_id) WHERE s.ablation = 'set' "
                       "AND r.ablation_scope = ? ORDER BY s.row", [positions]).to_pylist()
    hidden = store.read_rows("hidden", np.array([r["row"] for r in rows]))
    alpha = store.read_rows("mlp_act", np.array([r["row"] for r in rows]))
    plain = store.read_rows("hidden", store.query("SELECT row FROM sentences WHERE ablation IS NULL AND lang = 'ja' "
                                                  "ORDER BY row").column("row").to_numpy())
    for i, row in enumerate(rows):
        want_hidden, want_alpha = _reference(lm, row["text"], neurons, positions)
        for layer, ns in neurons.items():
            assert np.all(alpha[i, layer, ns] == 0)
        for stored, want in ((hidden[i], want_hidden), (alpha[i], want_alpha)):
            for l in range(want.shape[0]):  # float16 storage: compared relative to each layer's scale
                np.testing.assert_allclose(stored[l], want[l], atol=2e-3 * np.abs(want[l]).max(), rtol=0)
    assert np.abs(hidden[:, -1] - plain[:, -1]).max() > 1e-3
