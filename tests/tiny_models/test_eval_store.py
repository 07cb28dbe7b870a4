"""Eval runs on a tiny-model store: tables, resume after interruption, summaries against independent arithmetic,
loglik against a separate forward pass, and the readers (the shared MKQA sample must load)."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.conftest import SHARED
from tests.tiny_models.test_eval_scoring import slow_em, slow_f1
from tnstore.store.store import Store

DATA = Path(str(resources.files("tnstore.data.eval")))
QA = DATA / "qa_demo.jsonl"
SAMPLE6 = SHARED / "data" / "mkqa" / "mkqa.sample6.jsonl.gz"


def make_store(path: Path, spec: str = "tiny-llama") -> Path:
    """A store of a tiny model (no capture needed: eval reads only the model facts and the neuron sets) holding one
    hand-made set `setA` of 10 neurons per layer."""
    from tnstore.models.registry import load_model

    lm = load_model(spec)
    store = Store.create(path, lm.facts("float32"))
    rng = np.random.default_rng(0)
    layers = np.repeat(np.arange(lm.n_layers), 10).astype(np.int32)
    neurons = np.concatenate([rng.choice(lm.d_mlp, 10, replace=False) for _ in range(lm.n_layers)]).astype(np.int32)
    k = len(layers)
    with store.writing("test"):
        store.write_rows("neuron_sets", pa.table({
            "name": ["setA"] * k, "origin": ["hand"] * k, "like_set_id": pa.array([None] * k, pa.string()),
            "seed": pa.array([0] * k, pa.int64()), "match_layers": pa.array([None] * k, pa.bool_()),
            "source": pa.array([None] * k, pa.string()), "lang": ["ja"] * k, "type": pa.array([1] * k, pa.int8()),
            "layer_start": pa.array([0] * k, pa.int32()), "layer_end": pa.array([lm.n_layers] * k, pa.int32()),
            "layer": layers, "neuron": neurons}))
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    return make_store(tmp_path / "s")


def test_sample6_and_demo_sets_load():
    from tnstore.eval.mkqa import read_mkqa

    langs = ["ja", "nl", "ko", "it"]
    kept = read_mkqa(SAMPLE6, langs)
    assert kept.n_records == 6 and kept.n_skipped == 3 and [len(kept.items[lang]) for lang in langs] == [3, 3, 3, 3]
    everything = read_mkqa(SAMPLE6, langs, keep_all=True)
    assert len(everything.items["ja"]) == 6 and sum(not q.answerable for q in everything.items["ja"]) == 3
    gladiator = next(q for q in kept.items["ko"] if q.example_id == "7631360939705650347")
    assert gladiator.golds == ("리들리 스콧",)
    hafthor = next(q for q in kept.items["nl"] if q.example_id == "-7449157003522518870")
    assert set(hafthor.golds) == {"Hafþór Júlíus Björnsson", "Hafthor Julius Bjornsson"}
    demo = read_mkqa(QA, ["en", "ja", "nl", "ko", "it"])
    assert all(len(demo.items[lang]) >= 60 for lang in demo.items) and demo.n_skipped == 2


def test_qa_tables_and_summary(store):
    from tnstore.eval.question_answering import qa

    result = qa(store, QA, ["ja", "it"], ["none", "setA"], max_new_tokens=4, limit=20, batch_size=8)
    assert result.generated == 80 and result.resumed == 0
    s = Store.open(store, mode="r")
    rows = s.query("SELECT q.*, g.output, g.prompt FROM eval_qa q JOIN eval_generations g ON g.eval_id = q.eval_id "
                   "AND g.condition = q.condition AND g.lang = q.lang AND g.item_id = q.example_id").to_pylist()
    assert len(rows) == 80
    for row in rows:
        golds = json.loads(row["golds"])
        assert row["prediction"] == row["output"]
        assert row["f1"] == pytest.approx(max(slow_f1(row["output"], g, row["lang"]) for g in golds))
        assert row["em"] == max(slow_em(row["output"], g, row["lang"]) for g in golds)
        label = {"ja": "答え: ", "it": "Risposta: "}[row["lang"]]
        assert row["prompt"] == row["query"] + "? " + label
        assert row["n_neurons"] == (40 if row["condition"] == "setA" else 0)
    summary = {(r["lang"], r["condition"]): r for r in result.summary_arrow.to_pylist()}
    for lang in ("ja", "it"):
        base = {r["example_id"]: r["f1"] for r in rows if r["lang"] == lang and r["condition"] == "none"}
        cond = {r["example_id"]: r["f1"] for r in rows if r["lang"] == lang and r["condition"] == "setA"}
        assert summary[(lang, "setA")]["mean_f1"] == pytest.approx(np.mean(list(cond.values())))
        high = [q for q, f in base.items() if f > 0.5]
        assert summary[(lang, "setA")]["n_base_gt_0_5"] == len(high)
        if high:
            assert summary[(lang, "setA")]["delta_f1_gt_0_5"] == pytest.approx(np.mean([cond[q] - base[q] for q in high]))
        assert summary[(lang, "none")]["delta_f1_gt_0_5"] in (None, 0.0)


def test_interrupted_run_resumes_to_the_same_rows(tmp_path, monkeypatch):
    from tnstore.eval import generation as gen_module
    from tnstore.eval.question_answering import qa

    whole = make_store(tmp_path / "whole")
    broken = make_store(tmp_path / "broken")
    args = dict(data=QA, langs=["ko"], conditions=["none", "setA"], max_new_tokens=3, limit=40, batch_size=16)
    qa(whole, **args)
    real_run = gen_module.Generator.run
    calls = {"n": 0}

    def failing(self, prompts, neuron_set=None):
        calls["n"] += 1
        if calls["n"] == 3:  # none: chunks 0 and 1 done; setA: dies in its first chunk
            raise KeyboardInterrupt
        return real_run(self, prompts, neuron_set)
    monkeypatch.setattr(gen_module.Generator, "run", failing)
    with pytest.raises(KeyboardInterrupt):
        qa(broken, **args)
    monkeypatch.setattr(gen_module.Generator, "run", real_run)
    assert Store.open(broken).query("SELECT count(*) AS n FROM eval_qa").column("n")[0].as_py() == 40
    again = qa(broken, **args)
    assert again.resumed == 40 and again.generated == 40
    cols = "condition, lang, example_id, prediction, em, f1"
    a = Store.open(whole).query(f"SELECT {cols} FROM eval_qa ORDER BY ALL")
    b = Store.open(broken).query(f"SELECT {cols} FROM eval_qa ORDER BY ALL")
    assert a.equals(b) and a.num_rows == 80
    assert Store.open(broken).query("SELECT count(*) AS n FROM eval_generations").column("n")[0].as_py() == 80
    # a smaller limit later finds its questions stored and leaves the other rows alone
    fewer = qa(broken, **{**args, "limit": 20})
    assert (fewer.generated, fewer.resumed) == (0, 40)
    assert Store.open(broken).query(f"SELECT {cols} FROM eval_qa ORDER BY ALL").equals(a)


def test_score_predictions_file(tmp_path):
    from tnstore.eval.question_answering import score

    preds = tmp_path / "preds.jsonl"
    lines = [
        {"example_id": 7631360939705650347, "prediction": "リドリー・スコット監督", "binary_answer": None, "no_answer_prob": 0.1},
        {"example_id": "-7449157003522518870", "prediction": "ハフソル", "binary_answer": None},
        {"example_id": 2961317153244610375, "prediction": "", "binary_answer": None, "no_answer_prob": 0.9},
        {"example_id": 36228854473990432, "prediction": "2017年", "binary_answer": "", "no_answer_prob": 0},
    ]
    preds.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), "utf-8")
    result = score(SAMPLE6, preds, "ja")
    got = {r["example_id"]: (r["em"], r["f1"]) for r in result.rows_arrow.to_pylist()}
    golds = {"7631360939705650347": ["リドリー・スコット"], "-7449157003522518870": ["ハフソー・ユリウス・ビョルンソン",
             "ハフソル・ユリウス・ビョルンソン"], "2961317153244610375": [""], "36228854473990432": None}
    for example_id, (em, f1) in got.items():
        if golds[example_id] is None:
            continue
        pred = next(str(p["prediction"]) for p in lines if str(p["example_id"]) == example_id)
        assert f1 == pytest.approx(max(slow_f1(pred, g, "ja") for g in golds[example_id]))
        assert em == max(slow_em(pred, g, "ja") for g in golds[example_id])
    assert got["2961317153244610375"] == (1.0, 1.0) and got["36228854473990432"][1] == pytest.approx(2 * (4 / 5) / (1 + 4 / 5))
    assert result.n_missing == 2 and result.n_answerable == 3


def test_loglik_matches_a_separate_forward(store):
    """Stored option log-likelihoods against log_softmax of one plain forward per option (no deactivation) and
    with the set zeroed by this test's own hook at every prompt position."""
    from tnstore.eval.mmlu_prox import LETTERS, loglik_prompt, read_mc, shots_for, template_for
    from tnstore.eval.multiple_choice import mc
    from tnstore.models.registry import load_model

    data, fewshot = DATA / "mc_demo.it.test.jsonl", DATA / "mc_demo.it.validation.jsonl"
    mc(store, data, "it", ["none", "setA"], method="loglik", shots=1, fewshot=fewshot, limit=4)
    rows = Store.open(store).query("SELECT condition, question_id, option_logliks, predicted FROM eval_mc "
                                   "ORDER BY condition, item_index").to_pylist()
    lm = load_model("tiny-llama")
    items, pool = read_mc(data, limit=4).items, read_mc(fewshot).items
    s = Store.open(store)
    from tnstore.analysis.neurons import load_set

    neuron_set = load_set(s, "setA")
    for row in rows:
        item = next(i for i in items if i.question_id == row["question_id"])
        prompt = loglik_prompt(template_for("it"), item, shots_for(item, pool, 1))
        base = lm.tokenizer(prompt).input_ids
        expected = []
        for letter in LETTERS[:len(item.options)]:
            ids = lm.tokenizer(prompt + letter).input_ids
            handles = []
            if row["condition"] == "setA":
                for layer, idx in neuron_set.neurons.items():
                    index = torch.as_tensor(idx)

                    def hook(module, args, index=index):
                        a = args[0].clone()
                        a[:, :len(base), index] = 0
                        return (a,)
                    handles.append(lm.adapter.down_proj(lm.adapter.layers(lm.model)[layer]).register_forward_pre_hook(hook))
            with torch.no_grad():
                logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0], -1)
            for h in handles:
                h.remove()
            expected.append(sum(float(logp[len(base) - 1 + j, t]) for j, t in enumerate(ids[len(base):])))
        assert row["option_logliks"] == pytest.approx(expected, abs=1e-4)
        assert row["predicted"] == LETTERS[int(np.argmax(expected))]


def test_answer_patterns_and_prompts():
    from tnstore.eval.mmlu_prox import McItem, cot_prompt, extract_letter, template_for

    cases = {"en": "so the answer is (C).", "ja": "よって、答えは (C) です。", "ko": "따라서 답은 (C)입니다.",
             "it": "Quindi La risposta è C.", "nl": "Dus Het antwoord is (C).", "zh": "所以答案是 (C)"}
    for lang, text in cases.items():
        assert extract_letter(template_for(lang), text) == "C"
        assert extract_letter(template_for(lang), "no letter here") is None
    t = template_for("ja")
    item = McItem("1", "2たす2は？", ("3", "4"), "B", "math", "A: 一歩一歩考えていきましょう。 2たす2は4です。 答えは (B) です。")
    prompt = cot_prompt(t, item, [item])
    assert prompt.startswith("以下は数学に関する選択問題") and prompt.endswith("B. 4\n回答：一歩一歩考えていきましょう。")
    assert "回答：一歩一歩考えていきましょう。 2たす2は4です。 答えは (B) です。\n\n質問：" in prompt


def test_generate_metrics_follow_the_outputs(store):
    from tnstore.eval.open_ended import generate
    from tnstore.eval.textstats import identify

    result = generate(store, DATA / "open_prompts.jsonl", ["ja", "nl"], ["none", "setA"], max_new_tokens=6, limit=4)
    rows = Store.open(store).query(
        "SELECT m.*, g.output FROM eval_gen_metrics m JOIN eval_generations g USING (eval_id, condition, lang, item_id)"
    ).to_pylist()
    assert len(rows) == 16 and result.generated == 16
    for row in rows:
        assert row["detected_lang"] == identify(row["output"])[0]
        assert row["in_expected_lang"] == (row["detected_lang"] == row["lang"])
        assert row["n_chars"] == len(row["output"])
    share = {(r["condition"], r["lang"]): r["share_expected_lang"] for r in result.summary_arrow.to_pylist()}
    for key, value in share.items():
        subset = [r["in_expected_lang"] for r in rows if (r["condition"], r["lang"]) == key]
        assert value == pytest.approx(np.mean(subset))


def test_text_statistics_from_their_definitions():
    from tnstore.eval.textstats import identify, text_stats

    s = text_stats("a b a b a b", "en")
    assert (s.n_units, s.distinct_1, s.distinct_2) == (6, 2 / 6, 2 / 5)
    assert s.repeated_4gram_rate == pytest.approx(1 - 2 / 3)  # 4-grams abab, baba, abab: one repeat of three
    j = text_stats("東京東京\n大阪", "ja")
    assert (j.n_units, j.n_lines, j.distinct_1) == (6, 2, 4 / 6)
    assert identify("") == ("", 0.0)
    short = text_stats("x", "en")
    assert short.distinct_2 is None and short.repeated_4gram_rate is None and short.distinct_1 == 1.0
    # the demo prompts are short: the identifier must still name their languages
    prompts = [json.loads(line) for line in (DATA / "open_prompts.jsonl").read_text("utf-8").splitlines()]
    hits = [identify(p[lang])[0] == lang for p in prompts for lang in ("en", "ja", "nl", "ko", "it")]
    assert np.mean(hits) >= 0.9
