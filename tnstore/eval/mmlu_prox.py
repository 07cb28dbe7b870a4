"""Multiple choice in MMLU-ProX's record format: prompts, answer extraction, and option ranking by log-likelihood.

A record (MMLU-ProX, one JSON object a line; MMLU-Pro's `options` list is read too):

    {"question_id": 70, "question": "...", "option_0": "...", ..., "option_9": null, "answer": "C",
     "answer_index": 2, "cot_content": "A: Let's think step by step. ... The answer is (C).", "category": "math"}

`--method generate` follows lm-evaluation-harness's `mmlu_prox_{lang}` task: a k-shot chain-of-thought prompt in
the question's language (the subject's first k examples, answers worked out), greedy generation until a stop
string, the letter taken from the first match of the language's answer pattern (none: wrong), exact match.
`--method loglik` shows k examples with their answer phrase only, ends the prompt at the phrase's opening "(",
and picks the option letter with the highest log-likelihood as the next tokens.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.eval.records import file_sha256, jsonl_records
from tnstore.models.deactivation import NeuronSet, Positions, deactivated
from tnstore.models.registry import LoadedModel

LETTERS = "ABCDEFGHIJ"
METHODS = ("generate", "loglik")


@dataclass(frozen=True)
class McTemplate:
    """One language's prompt pieces. `description` has {subject} and {ans_suffix}; `answer_phrase` has {} for the
    letter; `cot_source_prefix` is how a record's cot_content starts, replaced by `answer_prefix` in the prompt."""

    question_label: str
    options_label: str
    answer_prefix: str
    cot_source_prefix: str
    description: str
    answer_phrase: str
    pattern: str
    stop_strings: tuple[str, ...]
    subjects: dict[str, str]

    def subject_name(self, category: str) -> str:
        return self.subjects.get(category.replace(" ", "_"), category)


_STOPS = ("</s>", "Q:", "<|im_end|>")
_SUBJECT_KEYS = ("biology", "business", "chemistry", "computer_science", "economics", "engineering", "health",
                 "history", "law", "math", "other", "philosophy", "physics", "psychology")
# en, ja, ko, zh: the strings of lm-evaluation-harness's mmlu_prox tasks; it: its Italian task's; nl (MMLU-ProX has
# no Dutch) written for tnstore in the same shape.
TEMPLATES: dict[str, McTemplate] = {
    "en": McTemplate(
        "Question:", "Options:", "Answer: Let's think step by step.", "A: Let's think step by step.",
        'The following are multiple choice questions (with answers) about {subject}. Think step by step and then '
        'finish your answer with "{ans_suffix}" where X is the correct letter choice.',
        "the answer is ({})", r"answer is \(?([ABCDEFGHIJ])\)?", _STOPS + ("Question:",),
        {k: k for k in _SUBJECT_KEYS}),
    "ja": McTemplate(
        "質問：", "選択肢：", "回答：一歩一歩考えていきましょう。", "A: 一歩一歩考えていきましょう。",
        "以下は{subject}に関する選択問題（解答付き）です。段階的に考え、最後に「{ans_suffix}」と回答を締めくくってください。"
        "Xは正解の選択肢を示す文字です。",
        "答えは ({}) です", r"答えは \(?([ABCDEFGHIJ])\)? です", _STOPS + ("質問：",),
        dict(zip(_SUBJECT_KEYS, ("生物学", "ビジネス", "化学", "コンピュータサイエンス", "経済学", "工学", "健康科学", "歴史",
                                 "法律", "数学", "その他", "哲学", "物理学", "心理学")))),
    "ko": McTemplate(
        "질문：", "선택 사항：", "답변: 한 단계씩 생각해 봅시다.", "A: 한 단계씩 생각해 봅시다.",
        '다음은 {subject}에 관한 객관식 문제(정답 포함)입니다. 단계적으로 생각한 다음 "{ans_suffix}"로 답변을 마무리하세요. '
        "여기서 X는 올바른 선택지 문자입니다.",
        "답은 ({})입니다", r"답은 \(?([ABCDEFGHIJ])\)?입니다", _STOPS + ("질문：",),
        dict(zip(_SUBJECT_KEYS, ("생물학", "경영학", "화학", "컴퓨터 과학", "경제학", "공학", "건강", "역사", "법률", "수학",
                                 "기타", "철학", "물리학", "심리학")))),
    "zh": McTemplate(
        "问题：", "选项：", "答案：让我们一步一步地思考。", "A: 让我们一步一步地思考。",
        '以下是关于{subject}的选择题（带有答案）。请逐步思考，然后以"{ans_suffix}"结束您的回答，其中X是正确的选项字母。',
        "答案是 ({})", r"答案是 \(?([ABCDEFGHIJ])\)?", _STOPS + ("问题：",),
        dict(zip(_SUBJECT_KEYS, ("生物学", "商业", "化学", "计算机科学", "经济学", "工程学", "健康", "历史", "法律", "数学",
                                 "其他", "哲学", "物理学", "心理学")))),
    "it": McTemplate(
        "Domanda:", "Opzioni:", "Risposta: Ragioniamo passo dopo passo.", "A: Ragioniamo passo dopo passo.",
        'Di seguito sono riportate domande a scelta multipla (con risposte) su {subject}. Si prega di ragionare passo '
        'dopo passo e terminare la risposta con "{ans_suffix}", dove X è la lettera dell\'opzione corretta.',
        "La risposta è ({})", r"La risposta è \(?([ABCDEFGHIJ])\)?", _STOPS + ("Domanda:",),
        dict(zip(_SUBJECT_KEYS, ("biologia", "economia aziendale", "chimica", "informatica", "economia", "ingegneria",
                                 "salute", "storia", "diritto", "matematica", "altro", "filosofia", "fisica",
                                 "psicologia")))),
    "nl": McTemplate(
        "Vraag:", "Opties:", "Antwoord: Laten we stap voor stap denken.", "A: Laten we stap voor stap denken.",
        'Hieronder staan meerkeuzevragen (met antwoorden) over {subject}. Denk stap voor stap na en sluit je antwoord '
        'af met "{ans_suffix}", waarbij X de letter van het juiste antwoord is.',
        "Het antwoord is ({})", r"Het antwoord is \(?([ABCDEFGHIJ])\)?", _STOPS + ("Vraag:",),
        dict(zip(_SUBJECT_KEYS, ("biologie", "bedrijfskunde", "scheikunde", "informatica", "economie", "techniek",
                                 "gezondheid", "geschiedenis", "recht", "wiskunde", "overig", "filosofie", "natuurkunde",
                                 "psychologie")))),
}


@dataclass(frozen=True)
class McItem:
    question_id: str
    question: str
    options: tuple[str, ...]
    answer: str  # the correct letter
    subject: str
    cot_content: str


@dataclass(frozen=True)
class McData:
    path: str
    sha256: str
    items: list[McItem]


def template_for(lang: str) -> McTemplate:
    if lang not in TEMPLATES:
        raise ArgumentError("lang", f"{{arg}} {lang!r}: no multiple-choice prompt for this language; there are "
                                    f"{', '.join(TEMPLATES)}")
    return TEMPLATES[lang]


def read_mc(path: str | Path, limit: int | None = None, arg: str = "data") -> McData:
    """MMLU-ProX records in file order (the first `limit`); errors name the line."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ArgumentError("limit", f"{{arg}} must be a positive integer, got {limit!r}")
    items: list[McItem] = []
    seen: set[str] = set()
    for number, record in jsonl_records(path, arg=arg):
        where = f"{path} line {number}"
        if "options" in record:
            options = record["options"]
            if not isinstance(options, list):
                raise TnstoreError(f"{where}: `options` must be a list")
        else:
            options = [record.get(f"option_{i}") for i in range(len(LETTERS))]
        options = [o for o in options if o is not None]
        if not 2 <= len(options) <= len(LETTERS) or not all(isinstance(o, str) for o in options):
            raise TnstoreError(f"{where}: a question needs 2 to 10 options (option_0 .. option_9 or an `options` list) "
                               "given as strings")
        question, answer = record.get("question"), record.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise TnstoreError(f"{where}: no `question` text")
        if isinstance(answer, int) and not isinstance(answer, bool):
            answer = LETTERS[answer] if 0 <= answer < len(options) else None
        if answer is None and isinstance(record.get("answer_index"), int):
            answer = LETTERS[record["answer_index"]] if 0 <= record["answer_index"] < len(options) else None
        if not isinstance(answer, str) or answer.upper() not in LETTERS[:len(options)]:
            raise TnstoreError(f"{where}: `answer` must be one of the letters {LETTERS[:len(options)]}")
        qid = str(record.get("question_id", record.get("id", number)))
        if qid in seen:
            raise TnstoreError(f"{where}: question_id {qid} appears twice")
        seen.add(qid)
        subject = str(record.get("category", record.get("subject", "other")))
        cot = record.get("cot_content") or ""
        if not isinstance(cot, str):
            raise TnstoreError(f"{where}: `cot_content` must be a string")
        items.append(McItem(qid, question, tuple(options), answer.upper(), subject, cot))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise TnstoreError(f"{path}: no questions")
    return McData(str(path), file_sha256(path), items)


def shots_for(item: McItem, pool: Sequence[McItem], k: int) -> list[McItem]:
    """The first k examples of the item's subject in `pool` (never the item itself)."""
    return [x for x in pool if x.subject == item.subject and x.question_id != item.question_id][:k]


def _question_block(t: McTemplate, item: McItem) -> str:
    options = "".join(f"{LETTERS[i]}. {opt}\n" for i, opt in enumerate(item.options))
    return f"{t.question_label}\n{item.question}\n{t.options_label}\n{options}"


def _description(t: McTemplate, item: McItem) -> str:
    return t.description.format(subject=t.subject_name(item.subject), ans_suffix=t.answer_phrase.format("X")) + "\n\n"


def cot_prompt(t: McTemplate, item: McItem, shots: Sequence[McItem]) -> str:
    """The harness-style k-shot chain-of-thought prompt; it ends with the answer prefix the model continues."""
    parts = [_description(t, item)]
    for shot in shots:
        if not shot.cot_content:
            raise TnstoreError(f"few-shot example {shot.question_id} has no cot_content; use --method loglik or "
                               "examples with worked answers")
        parts.append(_question_block(t, shot) + shot.cot_content.replace(t.cot_source_prefix, t.answer_prefix) + "\n\n")
    parts.append(_question_block(t, item) + t.answer_prefix)
    return "".join(parts)


def loglik_prompt(t: McTemplate, item: McItem, shots: Sequence[McItem]) -> str:
    """k examples answered by the answer phrase alone; ends at the phrase's "(" before the letter."""
    opening = t.answer_phrase.split("{}")[0]
    parts = [_description(t, item)]
    for shot in shots:
        parts.append(_question_block(t, shot) + t.answer_phrase.format(shot.answer) + "\n\n")
    parts.append(_question_block(t, item) + opening)
    return "".join(parts)


def extract_letter(t: McTemplate, text: str) -> str | None:
    """The letter of the first match of the language's answer pattern, or None."""
    match = re.search(t.pattern, text)
    return match.group(1) if match else None


def continuations(lm: LoadedModel, prompt: str, letters: str) -> tuple[list[int], list[list[int]]]:
    """(prompt token ids, each letter's continuation ids); an error if the tokenizer merges a letter into the
    prompt's last token (then the letter has no log-likelihood of its own)."""
    tok = lm.tokenizer
    base = list(tok(prompt).input_ids)
    conts = []
    for letter in letters:
        full = list(tok(prompt + letter).input_ids)
        if full[:len(base)] != base or len(full) == len(base):
            raise TnstoreError(f"the tokenizer of {lm.spec} merges the option letter {letter!r} into the prompt's "
                               "last token; --method loglik cannot score it, use --method generate")
        conts.append(full[len(base):])
    return base, conts


def option_logliks(lm: LoadedModel, prompt: str, letters: str, neuron_set: NeuronSet | None,
                   scope: str) -> list[float]:
    """log p(letter | prompt) for each letter (summed over its tokens), with `neuron_set` deactivated at the prompt's
    positions (`scope` prompt/all: every prompt position; prompt-last: the last one); the letters' own tokens are
    never deactivated. One forward when every letter is one token, else one row per letter. Returns
    (len(letters),) floats."""
    tok = lm.tokenizer
    base, conts = continuations(lm, prompt, letters)
    width = len(base) + max(len(c) for c in conts)
    rows = [base + c for c in conts] if any(len(c) > 1 for c in conts) else [base]
    ids = torch.full((len(rows), width), tok.pad_token_id if tok.pad_token_id is not None else 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.as_tensor(row)
        mask[r, :len(row)] = 1
    at = torch.zeros_like(ids, dtype=torch.bool)
    if scope == "prompt-last":
        at[:, len(base) - 1] = True
    else:
        at[:, :len(base)] = True
    positions = Positions()
    positions.where(at.to(lm.device))
    with deactivated(lm, neuron_set, positions), torch.inference_mode():
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    out = []
    for k, cont in enumerate(conts):
        r = k if len(rows) > 1 else 0
        out.append(float(sum(logp[r, len(base) - 1 + j, t] for j, t in enumerate(cont))))
    return out
