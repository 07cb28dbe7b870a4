"""Turning the CLI's strings into the library's typed arguments. Errors name the flag the user typed."""
from __future__ import annotations

import re

from tnstore.errors import TnstoreError

LIKE_KEYS = ("type", "lang", "split", "dist", "layers", "top", "set")


def layer_range(text: str | None, flag: str = "--layers") -> range | None:
    """`A:B` -> range(A, B) (0-based decoder layers, B excluded); None stays None (the library's default)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match:
        raise TnstoreError(f"{flag} {text!r} must look like A:B (0-based decoder layers, B excluded), e.g. 0:20")
    return range(int(match.group(1)), int(match.group(2)))


def index_list(text: str | None, flag: str = "--layers") -> list[int] | None:
    """`A:B` (B excluded) or `0,8,16` -> a list of indices; None or empty stays None (all)."""
    if text is None or not text.strip():
        return None
    span = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if span:
        start, end = int(span.group(1)), int(span.group(2))
        if start >= end:
            raise TnstoreError(f"{flag} {text}: need A < B (B is excluded)")
        return list(range(start, end))
    if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", text):
        raise TnstoreError(f"{flag} {text!r} must be A:B (B excluded) or a list like 0,8,16")
    return sorted({int(v) for v in text.split(",")})


def names(text: str | None, flag: str) -> list[str] | None:
    """'none,SET,RAND' -> ['none', 'SET', 'RAND']; None stays None (the library checks the names)."""
    if text is None:
        return None
    values = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not v for v in values):
        raise TnstoreError(f"{flag} {text!r} must be a comma-separated list of names, e.g. none,SET")
    return values


def numbers(text: str, flag: str, kind: type = float) -> list:
    """'0.1,0.25,0.5' -> [0.1, 0.25, 0.5] (as `kind`)."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise TnstoreError(f"{flag} {text!r} must be a comma-separated list of numbers")
    return values


def like(spec: str) -> dict[str, str]:
    """`type=1,lang=ja[,split=..,dist=..,layers=A:B,top=N,set=SET_ID]` -> {key: value}."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value or key not in LIKE_KEYS:
            raise TnstoreError(f"--like {spec!r}: write key=value pairs separated by commas, keys {', '.join(LIKE_KEYS)}")
        out[key] = value
    if not out:
        raise TnstoreError("--like is empty; name the transfer-neuron set, e.g. --like type=1,lang=ja")
    return out


def families(spec: str) -> list[list[str]]:
    """'en,nl,it:ja,ko' -> [['en','nl','it'], ['ja','ko']] (the library checks them)."""
    parts = [[lang.strip() for lang in part.split(",")] for part in spec.split(":")]
    if len(parts) < 2 or any(not lang for family in parts for lang in family):
        raise TnstoreError(f"--family {spec!r}: write two or more comma-separated language lists joined by ':', "
                           "e.g. en,nl,it:ja,ko")
    return parts


def choice(value: str, allowed: tuple[str, ...], flag: str) -> str:
    if value not in allowed:
        raise TnstoreError(f"{flag} {value!r} is not one of {', '.join(allowed)}")
    return value


def scheduler(text: str | None, flag: str = "--scheduler"):
    """`tcp://HOST:PORT` (a running dask scheduler) or `local:N` (a LocalCluster of N worker processes) -> a
    tnstore.Scheduler; None stays None (run in this process)."""
    if text is None:
        return None
    from tnstore.compute.cluster import Scheduler

    text = text.strip()
    local = re.fullmatch(r"local:(\d+)", text)
    if local:
        return Scheduler.local(int(local.group(1)))
    if re.fullmatch(r"(tcp|tls|ucx|ws|wss)://\S+", text):
        return Scheduler.at(text)
    raise TnstoreError(f"{flag} {text!r} must be a dask scheduler address such as tcp://10.0.0.5:8786, or local:N "
                       "for N local worker processes")
