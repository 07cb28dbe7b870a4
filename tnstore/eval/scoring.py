"""MKQA's answer normalisation and token F1 / exact match, as Apple's official evaluation (`mkqa_eval_util.py` of
the MKQA release, Longpre et al. 2021) defines them; and scoring a predictions file in MKQA's official format.

The rules, in the official order: lower-case (Python's `str.lower`, full Unicode); drop the 32 ASCII punctuation
characters (full-width marks stay); replace the language's article pattern by a space (`re.sub`, Unicode `\\b`);
then tokens: every non-whitespace character for the "mixed segmentation" languages (zh_cn, zh_hk, zh_tw, ja, th,
km), whitespace-separated words elsewhere; the normalised string is the tokens joined by single spaces.
EM compares the normalised strings. F1 is the harmonic mean of token precision and recall over the multiset
overlap; when either side has no tokens it is 1 if both are empty, else 0. A question scores the maximum over its
gold answers (the answer texts, None read as "", and their aliases, deduplicated).

Quirks kept because the official code has them: the fr and it patterns have no closing `\\b`, so they also strip
word prefixes ("italia" -> " talia", "lago" -> " go"); their elided forms (l', dell', un') can never match because
the apostrophe is removed first; languages without a pattern (ja, ko, zh, ...) keep every word; `zh` alone (not
zh_cn/zh_hk/zh_tw) is not segmented into characters; the Arabic pattern's first alternative `\\sال^` can never
match, so every occurrence of "ال" is replaced.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

# MKQA's 26 language codes (the keys of a release record's `queries` and `answers`).
MKQA_LANGS = ("ar", "da", "de", "en", "es", "fi", "fr", "he", "hu", "it", "ja", "km", "ko", "ms", "nl", "no", "pl",
              "pt", "ru", "sv", "th", "tr", "vi", "zh_cn", "zh_hk", "zh_tw")
CHAR_SEGMENTED = frozenset({"zh_cn", "zh_hk", "zh_tw", "ja", "th", "km"})
_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"ال",
    "nl": r"\b(de|het|een|des|der|den)\b",
    "sv": r"\b(en|ett)\b",
    "da": r"\b(en|et)\b",
    "no": r"\b(en|et|ei)\b",
    "fr": r"\b(le|la|l'|les|du|de|d'|des|un|une|des)",
    "pt": r"\b(o|a|os|as|um|uma|uns|umas)\b",
    "it": r"\b(il|lo|la|l'|i|gli|le|del|dello|della|dell'|dei|degli|degl'|delle|un'|uno|una|un)",
    "fi": r"\b(se|yks|yksi)\b",
    "hu": r"\b(a|az|egy)\b",
}
ARTICLE_PATTERNS = {lang: re.compile(pattern) for lang, pattern in _ARTICLES.items()}
_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


def tokens(text: str, lang: str) -> list[str]:
    """The normalised tokens of `text` in MKQA language `lang` (see the module docstring)."""
    text = text.lower().translate(_ASCII_PUNCTUATION)
    pattern = ARTICLE_PATTERNS.get(lang)
    if pattern is not None:
        text = pattern.sub(" ", text)
    if lang in CHAR_SEGMENTED:
        return [ch for ch in text if not ch.isspace()]
    return text.split()


def normalize(text: str, lang: str) -> str:
    """MKQA's normalised answer string: the tokens joined by single spaces."""
    return " ".join(tokens(text, lang))


def exact_match(prediction: str, gold: str, lang: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize(prediction, lang) == normalize(gold, lang))


def token_f1(prediction: str, gold: str, lang: str) -> float:
    """Token-multiset F1 of the normalised prediction against one gold answer (both empty: 1.0)."""
    pred, ref = tokens(prediction, lang), tokens(gold, lang)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_scores(prediction: str, golds: Sequence[str], lang: str) -> tuple[float, float]:
    """(EM, F1) of `prediction`, each the maximum over the gold answers (which must not be empty)."""
    if not golds:
        raise ValueError("a question needs at least one gold answer (an unanswerable one has [''])")
    return (max(exact_match(prediction, g, lang) for g in golds), max(token_f1(prediction, g, lang) for g in golds))


def scored_prediction(prediction: str | None, binary_answer: str | None) -> str:
    """What MKQA scores: a yes/no `binary_answer` (lower-cased) replaces the prediction text; None is ""."""
    return binary_answer.lower() if binary_answer else (prediction or "")


@dataclass(frozen=True)
class Prediction:
    """One line of MKQA's official predictions format."""

    example_id: str
    prediction: str
    binary_answer: str | None
    no_answer_prob: float


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
