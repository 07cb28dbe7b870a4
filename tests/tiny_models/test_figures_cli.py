"""`tnstore plot` on a store holding synthetic result tables (written through Store.write_rows, no model): the
list, every figure to files, and the one-line errors (exit 2) for missing tables and bad arguments."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.figure_tables import Shape, capture_rows, model_facts, tables
from tnstore.store.schema import table_names
from tnstore.store.store import Store

SHAPE = Shape(n_layers=6, n_sentences=8, d_mlp=16, top=10)
PNG = b"\x89PNG\r\n\x1a\n"
# Left out of the test stores, so a missing analysis of each kind is there to be listed.
LEFT_OUT = ("latent_probe", "eval_qa", "eval_qa_summary")
ALWAYS_READY = ("pca", "dims", "centroids", "knn", "similarity", "similarity-act", "trajectory", "tn-layers", "jaccard",
                "jaccard-matrix", "tn-eta2", "tn-significance", "lang-neurons", "mc-accuracy", "gen-language")


def ready_figures() -> list[str]:
    """What the synthetic store can draw: crossling once the store format has its table (issue 12)."""
    return list(ALWAYS_READY) + (["crossling"] if "crossling_deactivation" in table_names() else [])


def write_store(path: Path, shape: Shape = SHAPE, skip: tuple[str, ...] = ()) -> Path:
    """A store of the synthetic result tables the store format has (not `skip`), and one captured sentence per
    language (no arrays: figures and reports read tables only)."""
    store = Store.create(path, model_facts(shape, "synthetic-tiny"))
    with store.writing("synthetic tables"):
        for name, table in tables(shape).items():
            if name in table_names() and name not in skip:
                store.write_rows(name, table)
        rows = capture_rows()
        store.write_rows("sentences", rows["sentences"])
        store.write_rows("runs", rows["runs"])
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("plot") / "store", skip=LEFT_OUT)


def test_list_says_which_figures_are_ready_and_how_to_make_the_rest(monkeypatch, capsys, store):
    code, out, err = run_cli(monkeypatch, capsys, "plot", store, "--list")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert "ready" in lines["pca"] and "latent_pca (" in lines["pca"]
    assert "missing" in lines["probe"] and f"tnstore latent probe {store}" in lines["probe"]
    assert "missing" in lines["qa-scatter"] and "tnstore eval qa" in lines["qa-scatter"]
    if "crossling" not in ready_figures():
        assert "missing" in lines["crossling"] and "tnstore replay cross-lingual" in lines["crossling"]
    assert out.strip().splitlines()[-1].startswith(f"{len(ready_figures())} of 19 figures can be drawn")


def test_a_missing_table_is_one_line_naming_the_command(monkeypatch, capsys, store, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "plot", store, "probe", "--out", tmp_path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: figure probe: table latent_probe is empty")
    assert f"make it with `tnstore latent probe {store}`" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, flag", [
    (("pca", "--format", "jpg"), "--format"),
    (("pca", "--type", "1"), "--type"),
    (("tn-layers", "--type", "3"), "--type"),
    (("pca", "--layers", "40,41"), "--layers"),
    (("jaccard-matrix", "--layers", "1"), "--layers"),
])
def test_bad_arguments_name_the_flag(monkeypatch, capsys, store, tmp_path, args, flag):
    code, out, err = run_cli(monkeypatch, capsys, "plot", store, *args, "--out", tmp_path / "figs")
    assert code == 2 and err.startswith("error: ") and flag in err and err.count("\n") == 1
    assert not (tmp_path / "figs").exists() or list((tmp_path / "figs").iterdir()) == []


def test_all_on_a_store_without_results_is_one_line(monkeypatch, capsys, tmp_path):
    empty = write_store(tmp_path / "empty", skip=tuple(table_names()))
    code, out, err = run_cli(monkeypatch, capsys, "plot", empty, "all", "--out", tmp_path / "figs")
    assert code == 2 and err.count("\n") == 1 and f"tnstore plot {empty} --list" in err


def test_unknown_figure_and_no_name(monkeypatch, capsys, store):
    code, _, err = run_cli(monkeypatch, capsys, "plot", store, "heatmap")
    assert code == 2 and "no figure named 'heatmap'" in err and "tn-layers" in err
    code, _, err = run_cli(monkeypatch, capsys, "plot", store)
    assert code == 2 and "--list" in err


def test_all_draws_every_ready_figure_and_lists_the_rest(monkeypatch, capsys, store, tmp_path):
    out_dir = tmp_path / "figs"
    code, out, err = run_cli(monkeypatch, capsys, "plot", store, "all", "--out", out_dir)
    assert code == 0, err
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == sorted(f"{n}.png" for n in ready_figures())
    assert all((out_dir / name).read_bytes()[:8] == PNG for name in written)
    assert out.count("wrote ") == len(ready_figures())
    assert "skipped figure probe" in out and "skipped figure qa-scatter" in out


@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_formats(monkeypatch, capsys, store, tmp_path, fmt, magic):
    code, out, err = run_cli(monkeypatch, capsys, "plot", store, "tn-layers", "--type", "1", "--format", fmt,
                             "--out", tmp_path)
    assert code == 0, err
    assert (tmp_path / f"tn-layers.{fmt}").read_bytes()[:len(magic)] == magic
    assert out.strip() == f"wrote {tmp_path / f'tn-layers.{fmt}'}"


def test_several_analysis_groups_give_one_file_each(tmp_path):
    """A latent analysis stored for two splits draws one figure per split, named after it."""
    import pyarrow.compute as pc

    from tnstore.figures.output import plot

    path = write_store(tmp_path / "store")
    store = Store.open(path)
    knn = store.read_table("latent_knn")
    test = knn.set_column(knn.schema.get_field_index("split"), "split", pc.utf8_replace_slice(
        knn["split"], 0, 10, "test")).set_column(knn.schema.get_field_index("analysis_id"), "analysis_id",
                                                 pc.binary_join_element_wise(knn["analysis_id"], "-test", ""))
    with store.writing("test split"):
        store.write_rows("latent_knn", test)
    result = plot(store, "knn", tmp_path / "out")
    names = sorted(p.name for p in result.written)
    assert len(names) == 2 and names[0].startswith("knn-test-") and names[1].startswith("knn-train-")


def test_plot_and_help_import_no_plotting_or_query_engine():
    """`tnstore --help` must stay light: the plot and report commands import matplotlib etc. only when run."""
    import subprocess

    code = ("import sys; from tnstore.cli import app; "
            "heavy = [m for m in ('matplotlib', 'polars', 'duckdb', 'torch', 'zarr', 'jinja2') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
