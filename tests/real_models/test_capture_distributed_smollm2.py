"""A 2-rank gloo capture with smollm2-135m on real Tatoeba sentences writes the one-process store, file for file."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import TATOEBA
from tests.tiny_models.test_capture_distributed import REPO, _assert_same_store, _capture_args, _env, _torchrun

pytestmark = pytest.mark.real_model


def test_two_gloo_ranks_with_smollm2_write_the_one_process_store(tmp_path, shared_data):
    corpus = TATOEBA / "en-ja.parallel.train.jsonl"
    args = lambda store: _capture_args(store, corpus, "--limit", "12", "--chunk-rows", "8",  # noqa: E731
                                       "--storage-dtype", "float32", model="smollm2-135m")
    one = subprocess.run([sys.executable, "-m", "tnstore", *args(tmp_path / "one")], capture_output=True, text=True,
                         env=_env(), cwd=REPO)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(_torchrun(2, *args(tmp_path / "two"), port=29621), capture_output=True, text=True,
                         env=_env(), cwd=REPO)
    assert two.returncode == 0, two.stderr
    _assert_same_store(tmp_path / "two", tmp_path / "one")
