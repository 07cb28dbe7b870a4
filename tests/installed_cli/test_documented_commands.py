"""The README's commands, run as a user runs them: the installed `tnstore` executable on real data."""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TATOEBA

pytestmark = pytest.mark.real_model

TNSTORE = shutil.which("tnstore", path=str(Path(sys.executable).parent)) or "tnstore"


def tnstore(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([TNSTORE, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, f"tnstore {' '.join(args)} failed:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("acceptance") / "s"
    tnstore("capture", "--model", "smollm2-135m", "--corpus", str(TATOEBA / "en-ja.parallel.train.jsonl"),
            "--limit", "60", "--store", str(path), "--dtype", "float32", "--storage-dtype", "float32", "--quiet")
    tnstore("capture", "--model", "smollm2-135m", "--corpus", str(TATOEBA / "en-ja.parallel.test.jsonl"),
            "--split", "test", "--limit", "20", "--store", str(path), "--quiet")
    return path


def test_capture_summary_and_sql_counts(store):
    out = tnstore("sql", str(store), "SELECT lang, split, count(*) AS n FROM sentences GROUP BY ALL ORDER BY split DESC, lang",
                  "--format", "csv").stdout
    assert list(csv.DictReader(io.StringIO(out))) == [
        {"lang": "en", "split": "train", "n": "60"}, {"lang": "ja", "split": "train", "n": "60"},
        {"lang": "en", "split": "test", "n": "20"}, {"lang": "ja", "split": "test", "n": "20"},
    ]


def test_info_describes_model_rows_and_arrays(store):
    out = tnstore("info", str(store)).stdout
    assert "smollm2-135m" in out and "LlamaForCausalLM" in out and "layers=30" in out
    assert "160 captured sentences in 2 runs" in out
    assert "mlp_act" in out and "(30, 1536)" in out


def test_pairs_link_both_sides(store):
    out = tnstore("sql", str(store), "SELECT count(*) AS n FROM sentences a JOIN sentences b USING (pair_id, split) "
                                     "WHERE a.lang = 'en' AND b.lang = 'ja'", "--format", "csv").stdout
    assert out.splitlines()[1] == "80"


def test_shipped_queries_run(store):
    repo = Path(__file__).resolve().parents[2]
    out = tnstore("sql", str(store), (repo / "queries" / "sentences_by_lang.sql").read_text(), "--format", "csv").stdout
    assert len(out.splitlines()) == 5
