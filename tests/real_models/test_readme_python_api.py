"""The README's Python example, executed exactly as written, on a smollm2-135m store of real en-ja pairs."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TATOEBA

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.real_model


def python_example() -> str:
    section = README.read_text("utf-8").split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path):
    from tnstore.capture.api import capture_corpus

    for split, limit in (("train", 30), ("test", 10)):
        capture_corpus(store=tmp_path / "store", corpus=TATOEBA / f"en-ja.parallel.{split}.jsonl",
                       model="smollm2-135m", split=split, limit=limit, device="cpu", progress=False)
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(python_example(), str(README), "exec"), namespace)  # noqa: S102  (the README's own text)
    finally:
        os.chdir(cwd)
    values, rows = namespace["x"]
    assert values.shape == (10, 2, 576) and values.dtype == np.float32
    assert rows.column("lang").to_pylist() == ["ja"] * 10
    assert namespace["tn"].height == 0  # queried before the detection ran
    assert namespace["r"].ranking.height == 1000
    s = namespace["s"]
    assert s.sql("SELECT count(*) FROM transfer_neurons WHERE lang = ?", ["ja"]).scalar() == 1000
    assert s.sql("SELECT count(*) FROM tn_corr_ratio WHERE label = 'language'").scalar() == 1000
