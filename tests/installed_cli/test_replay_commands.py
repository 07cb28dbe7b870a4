"""The deactivation commands of the README run through the installed `tnstore` executable on real data: import a
set, draw its layer-matched baseline, replay the L2 side with both, compare the conditions, export the set."""
from __future__ import annotations

import csv
import io

import pytest

from tests.conftest import TATOEBA
from tests.installed_cli.test_documented_commands import tnstore

pytestmark = pytest.mark.real_model


def test_import_random_replay_conditions_export(tmp_path, shared_data):
    store = tmp_path / "s"
    tnstore("capture", "--model", "smollm2-135m", "--corpus", str(TATOEBA / "en-ja.parallel.test.jsonl"), "--split",
            "test", "--limit", "12", "--store", str(store), "--quiet")
    neurons = tmp_path / "neurons.csv"
    neurons.write_text("layer,neuron\n" + "".join(f"{l},{n}\n" for l in (2, 3, 4) for n in range(0, 1500, 50)))
    assert "stored 90 neurons" in tnstore("neurons", "import", str(store), "--name", "paper_ja", str(neurons)).stdout
    out = tnstore("neurons", "random", str(store), "--like", "set=paper_ja", "--match-layers", "--name",
                  "rand_ja").stdout
    assert "seed 42" in out
    out = tnstore("replay", str(store), "--split", "test", "--langs", "ja", "--sets", "paper_ja,rand_ja",
                  "--quiet").stdout
    assert out.count("replayed ja 12 into rows") == 2, out
    out = tnstore("latent", "knn", str(store), "--lang", "ja", "--split", "test", "--k", "3", "--layers", "2:6",
                  "--conditions", "none,paper_ja,rand_ja").stdout
    assert "parallel pairs: en-ja 12" in out and "Δ paper_ja" in out and "Δ rand_ja" in out
    assert "wrote 12 rows to latent_knn" in out  # 3 conditions x 4 layers
    exported = tmp_path / "out.csv"
    tnstore("neurons", "export", str(store), "paper_ja", "--out", str(exported))
    parse = lambda p: [(int(r["layer"]), int(r["neuron"])) for r in csv.DictReader(io.StringIO(p.read_text()))]  # noqa: E731
    assert parse(exported) == parse(neurons)
