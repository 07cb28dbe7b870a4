"""`tnstore eval ...` through the real entry point: bad input ends as one `error:` line and exit 2 with nothing
written; good runs print their summaries."""
from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.tiny_models.test_eval_store import SAMPLE6, make_store
from tnstore.store.store import Store

DATA = Path(str(resources.files("tnstore.data.eval")))
EVAL_TABLES = ("eval_generations", "eval_qa", "eval_qa_summary", "eval_mc", "eval_mc_summary", "eval_gen_metrics")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("cli") / "s")


def rows(store: Path) -> dict[str, int]:
    return {t: Store.open(store).read_table(t).num_rows for t in EVAL_TABLES}


def mkqa_file(path: Path, records: list) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


GOOD = {"example_id": 1, "query": "q", "queries": {"en": "what is the capital of japan", "ja": "日本の首都は"},
        "answers": {"en": [{"type": "entity", "text": "Tokyo", "aliases": []}],
                    "ja": [{"type": "entity", "text": "東京", "aliases": []}]}}


def bad_inputs(tmp: Path, store: Path) -> list[tuple[list, str]]:
    no_ja = {**GOOD, "example_id": 2, "answers": {"en": GOOD["answers"]["en"]}}
    empty = tmp / "empty.jsonl"
    empty.write_text("", "utf-8")
    preds_bad = tmp / "preds_bad.jsonl"
    preds_bad.write_text('{"example_id": 1, "prediction": "x", "binary_answer": "maybe"}\n', "utf-8")
    qa = ["eval", "qa", store, "--langs", "ja", "--max-new-tokens", "2", "--quiet"]
    return [
        (qa + ["--data", mkqa_file(tmp / "a.jsonl.gz", [GOOD, no_ja])], "no answers for language 'ja'"),
        (qa + ["--data", mkqa_file(tmp / "b.jsonl.gz", [GOOD, "{not json"])], "line 2: not valid JSON"),
        (qa + ["--data", mkqa_file(tmp / "c.jsonl.gz", [GOOD, [1, 2]])], "expected a JSON object"),
        (["eval", "qa", store, "--langs", "xx", "--data", SAMPLE6], "unknown language code 'xx'"),
        (qa + ["--data", SAMPLE6, "--conditions", "none,nosuchset"], "--conditions 'nosuchset': no neuron set"),
        (qa + ["--data", SAMPLE6, "--positions", "middle"], "--positions 'middle' is not one of"),
        (qa + ["--data", SAMPLE6, "--template", "no placeholder"], "--template 'no placeholder' must contain {query}"),
        (qa + ["--data", SAMPLE6, "--model", "tiny-gemma3"], "--model tiny-gemma3: its weights"),
        (qa + ["--data", tmp / "missing.jsonl"], "--data"),
        (["eval", "qa", tmp / "nostore", "--langs", "ja", "--data", SAMPLE6], "does not exist"),
        (["eval", "score", "--data", SAMPLE6, "--predictions", empty, "--lang", "ja"], "the predictions file is empty"),
        (["eval", "score", "--data", SAMPLE6, "--predictions", preds_bad, "--lang", "ja"], "`binary_answer` must be"),
        (["eval", "score", "--data", SAMPLE6, "--predictions", empty, "--lang", "ja", "--format", "xml"], "--format"),
        (["eval", "mc", store, "--data", DATA / "mc_demo.ja.test.jsonl", "--lang", "ja", "--method", "vote"],
         "--method 'vote'"),
        (["eval", "mc", store, "--data", DATA / "mc_demo.ja.test.jsonl", "--lang", "fi"], "--lang 'fi'"),
        (["eval", "mc", store, "--data", DATA / "qa_demo.jsonl", "--lang", "ja"], "needs 2 to 10 options"),
        (["eval", "mc", store, "--data", DATA / "mc_demo.ja.test.jsonl", "--lang", "ja", "--method", "loglik",
          "--positions", "generated"], "--positions generated"),
        (["eval", "generate", store, "--prompts", DATA / "open_prompts.jsonl", "--langs", "fi"], "no prompts in fi"),
        (["eval", "generate", store, "--prompts", empty, "--langs", "ja"], "no prompts"),
        (["eval", "show", store, "nosuchid"], "no stored generation for id 'nosuchid'"),
    ]


def test_bad_input_is_one_line_and_exit_2(tmp_path, store, monkeypatch, capsys):
    before = rows(store)
    for args, message in bad_inputs(tmp_path, store):
        code, out, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2, (args, out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, err)
        assert "Traceback" not in err
    assert rows(store) == before


def test_qa_score_and_show_commands(tmp_path, store, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "eval", "qa", store, "--data", SAMPLE6, "--langs", "ja,ko",
                             "--conditions", "none,setA", "--max-new-tokens", "3", "--quiet")
    assert code == 0, err
    assert "3 questions" not in out and "12 questions answered" in out and "delta_f1_gt_0_5" in out
    code, out, _ = run_cli(monkeypatch, capsys, "sql", store, "SELECT count(*) AS n FROM eval_qa_summary", "--format", "csv")
    assert out.splitlines()[1] == "4"
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"example_id": 7631360939705650347, "prediction": "Ridley Scott", "binary_answer": null}\n', "utf-8")
    code, out, err = run_cli(monkeypatch, capsys, "eval", "score", "--data", SAMPLE6, "--predictions", preds,
                             "--lang", "nl", "--format", "json")
    assert code == 0, err
    assert json.loads(out.splitlines()[0]) == {"example_id": "7631360939705650347", "em": 1.0, "f1": 1.0}
    code, out, err = run_cli(monkeypatch, capsys, "eval", "show", store, "7631360939705650347", "--lang", "ja")
    assert code == 0, err
    assert "none (" in out and "setA (" in out and "prompt: 2000年に公開された映画" in out


def test_help_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; from tnstore.cli.app import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['eval', 'qa', '--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'duckdb', 'zarr', 'polars', 'py3langid') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_mc_generate_command(store, monkeypatch, capsys):
    from tnstore.eval.mmlu_prox import extract_letter, template_for

    code, out, err = run_cli(monkeypatch, capsys, "eval", "mc", store, "--data", DATA / "mc_demo.ko.test.jsonl",
                             "--fewshot", DATA / "mc_demo.ko.validation.jsonl", "--lang", "ko", "--conditions",
                             "none,setA", "--shots", "1", "--max-new-tokens", "8", "--limit", "3", "--quiet")
    assert code == 0, err
    assert "6 questions answered" in out and "accuracy" in out
    rows = Store.open(store).query(
        "SELECT m.predicted, m.correct, m.answer, g.output, g.prompt, m.subject FROM eval_mc m JOIN eval_generations g "
        "ON g.eval_id = m.eval_id AND g.condition = m.condition AND g.item_id = m.question_id AND g.task = 'mc'"
    ).to_pylist()
    assert len(rows) == 6
    for row in rows:
        assert row["predicted"] == extract_letter(template_for("ko"), row["output"])
        assert row["correct"] == (row["predicted"] == row["answer"])
        assert row["prompt"].startswith("다음은 수학에 관한 객관식 문제") and row["prompt"].endswith("답변: 한 단계씩 생각해 봅시다.")
    summary = Store.open(store).query("SELECT subject, n_questions FROM eval_mc_summary WHERE condition = 'none' "
                                      "ORDER BY subject").to_pylist()
    assert summary == [{"subject": "*", "n_questions": 3}, {"subject": "math", "n_questions": 3}]
