"""Per-output statistics of free generation: language (offline ID), distinct-n, repeated n-grams, length, lines.

Language ID is py3langid (langid.py's model, 97 languages, shipped inside the wheel as a numpy array: nothing is
fetched at run time); it is loaded once per process. Text units for the n-gram statistics are characters for
languages written without spaces (ja, zh, th, km) and whitespace-separated words elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

CHAR_LANGS = ("ja", "zh", "th", "km")


@dataclass(frozen=True)
class TextStats:
    detected_lang: str  # ISO 639-1 code, "" for an output with no letters
    lang_prob: float  # the identifier's normalised probability of detected_lang (0 when undetermined)
    n_chars: int
    n_units: int  # characters (ja, zh, th, km) or words
    n_lines: int  # line breaks + 1; 0 for an empty output
    distinct_1: float | None  # unique units / units (None with no units)
    distinct_2: float | None  # unique unit bigrams / bigrams (None with fewer than 2 units)
    repeated_4gram_rate: float | None  # share of 4-grams repeating an earlier 4-gram of the output (None if none)


def base_lang(code: str) -> str:
    """MKQA-style codes to ISO 639-1: zh_cn -> zh."""
    return code.split("_")[0].split("-")[0].lower()


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of `text`; ("", 0.0) when it has no letters to judge."""
    if not any(ch.isalpha() for ch in text):
        return "", 0.0
    lang, prob = _identifier().classify(text)
    return str(lang), float(prob)


def units(text: str, lang: str) -> list[str]:
    if base_lang(lang) in CHAR_LANGS:
        return [ch for ch in text.lower() if not ch.isspace()]
    return text.lower().split()


def distinct(seq: list[str], n: int) -> float | None:
    """Unique n-grams / n-grams of `seq`; None when it has no n-gram (stored as null, never NaN)."""
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def text_stats(text: str, expected_lang: str) -> TextStats:
    """Statistics of one output; `expected_lang` picks the text units (characters or words)."""
    detected, prob = identify(text)
    seq = units(text, expected_lang)
    d4 = distinct(seq, 4)
    return TextStats(detected, prob, len(text), len(seq), text.count("\n") + 1 if text else 0,
                     distinct(seq, 1), distinct(seq, 2), None if d4 is None else 1.0 - d4)
