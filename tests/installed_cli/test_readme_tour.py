"""The README's tour, run as a user runs it: every line of its bash block through the installed `tnstore`, from
the repo root, on real data with smollm2-135m (only the store and output paths are moved into a temp folder)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.real_model


def tour() -> str:
    section = (REPO / "README.md").read_text("utf-8").split("## A tour", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_the_tour_runs_as_written(tmp_path):
    script = tour()
    assert "S=/tmp/tour-store; T=../shared/data/tatoeba" in script
    script = (script.replace("S=/tmp/tour-store", f"S={tmp_path / 'store'}")
              .replace("T=../shared/data/tatoeba", f"T={SHARED / 'data' / 'tatoeba'}")
              .replace("/tmp/tour-", f"{tmp_path}/tour-"))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONWARNINGS": "ignore"}
    assert shutil.which("tnstore", path=str(bin_dir))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    import tnstore

    s = tnstore.open(tmp_path / "store", mode="r")
    assert tnstore.verify(s).ok
    assert s.sql("SELECT count(DISTINCT condition) FROM latent_pair_similarity").scalar() == 3
    assert s.sql("SELECT count(DISTINCT condition) FROM eval_qa").scalar() == 3
    assert s.sql("SELECT count(*) FROM tn_corr_ratio").scalar() == 2000
    assert (tmp_path / "tour-report.html").stat().st_size > 100_000
    assert len(list((tmp_path / "tour-figs").glob("*.png"))) >= 5
