"""The example notebook (examples/*.py, percent format) runs end to end, as a script, on a tiny model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tnstore

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_end_to_end(example, tmp_path):
    env = {**os.environ, "TNSTORE_EXAMPLE_MODEL": "tiny-llama", "TNSTORE_EXAMPLE_STORE": str(tmp_path / "store")}
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    s = tnstore.open(tmp_path / "store", mode="r")
    assert s.sql("SELECT count(*) FROM transfer_neurons").scalar() > 0
    assert s.sql("SELECT count(*) FROM tn_corr_ratio").scalar() > 0
    assert s.sql("SELECT count(*) FROM latent_knn").scalar() > 0
    assert s.sql("SELECT count(DISTINCT condition) FROM latent_knn").scalar() == 3  # none, the set, its baseline
    assert "cos(C_en, C_ja) per hidden index" in done.stdout


def test_there_is_an_example():
    assert EXAMPLES
