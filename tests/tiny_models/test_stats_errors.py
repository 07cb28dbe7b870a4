"""Inputs a user can fix end as one line on stderr, exit code 2, and a store exactly as it was."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_runner import run_cli
from tests.stats_helpers import random_neurons, snapshot, write_synthetic_store, write_tn_set


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    rng = np.random.default_rng(4)
    langs = list(rng.choice(["en", "ja", "nl", "ko", "it"], 80))
    path = tmp_path_factory.mktemp("errors") / "store"
    store = write_synthetic_store(path, rng.standard_normal((80, 2, 5)), langs)
    for lang in ["ja", "ko"]:
        write_tn_set(store, f"{lang}-t1", lang, 1, random_neurons(rng, 4, (0, 2), 5), layers=(0, 2))
    return path


CORR = ("stats", "corr-ratio")


@pytest.mark.parametrize("args, message", [
    (CORR + ("--label-sql", "CASE WHEN lang = 'zz' THEN 'a' END"), "NULL for every sentence"),
    (CORR + ("--label", "sql", "--label-sql", "'everyone'"), "into one group ('everyone')"),
    (CORR + ("--where", "lang = 'zz'"), "selects no sentences"),
    (CORR + ("--where", "lang IN ('ja', 'en')"), "language 'ko' has no sentences"),
    (CORR + ("--where", "lang = 'ja'", "--sets", "lang = 'ja'"), "into one group ('ja')"),
    (CORR + ("--label", "family", "--family", "en,nl:ja,nl"), "in more than one family"),
    (CORR + ("--label", "family", "--family", "en,nl,it"), "joined by ':'"),
    (CORR + ("--label", "family", "--family", "en,,it:ja"), "joined by ':'"),
    (CORR + ("--label", "family", "--family", "en,nl,it:ja,zz"), "zz has no sentences"),
    (CORR + ("--where", "lang = = 'ja'"), "--where"),
    (CORR + ("--where", "no_such_column > 1"), "not valid SQL over the sentences table"),
    (CORR + ("--label", "sql", "--label-sql", "no_such_column || 'x'"), "--label-sql"),
    (CORR + ("--label", "bogus"), "--label 'bogus'"),
    (CORR + ("--label", "family", "--label-sql", "lang"), "only used with --label sql"),
    (CORR + ("--sets", "lang = 'zz'"), "no transfer-neuron sets match"),
    (CORR + ("--sets", "no_such_column = 1"), "--sets"),
    (("stats", "lang-neurons", "--thresholds", "0.1,abc"), "--thresholds"),
    (("stats", "lang-neurons", "--thresholds", "1.5"), "--thresholds"),
    (("stats", "lang-neurons", "--where", "lang = 'ja'"), "into one group ('ja')"),
    (("stats", "groups", "--group-by", "lang +"), "--group-by"),
])
def test_error_is_one_line_and_store_is_unchanged(store_path, args, message, capsys, monkeypatch):
    before = snapshot(store_path)
    command, rest = args[:2], args[2:]
    code, out, err = run_cli(monkeypatch, capsys, *command, store_path, *rest)
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert snapshot(store_path) == before


def test_no_sets_without_all_neurons(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    path = tmp_path / "s"
    write_synthetic_store(path, rng.standard_normal((20, 1, 3)), ["en", "ja"] * 10)
    code, _, err = run_cli(monkeypatch, capsys, "stats", "corr-ratio", path)
    assert code == 2 and "run `tnstore detect` first, or pass --all-neurons" in err
    code, _, err = run_cli(monkeypatch, capsys, "stats", "corr-ratio", path, "--all-neurons")
    assert code == 0, err


def test_the_installed_command_exits_2(store_path):
    tnstore = Path(sys.executable).with_name("tnstore")
    before = snapshot(store_path)
    done = subprocess.run([str(tnstore), "stats", "corr-ratio", str(store_path), "--where", "lang = 'zz'"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --where") and done.stderr.count("\n") == 1
    assert snapshot(store_path) == before
