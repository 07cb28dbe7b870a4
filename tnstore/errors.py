"""The exceptions a user can act on. The CLI turns each into one line on stderr and exit code 2.

    TnstoreError    any problem with the user's input or store, with a message that says what to do
    ArgumentError   a bad argument of a library function; the message names the argument, and the CLI renders
                    that name as the flag the user typed (`limit` -> `--limit`)
    SqlError        a SQL statement (the user's own, or one built on their predicate) that DuckDB refused
    ReadOnlyError   a write to a store opened read-only (or one the process cannot write)
    DamagedStoreError  a file of the store is missing, truncated, corrupt or unsafe; the message names the file
                    and says to run `tnstore verify`
    RemoteStoreError   a write to a remote store, which is read-only; names the `results` folder to pass instead
"""
from __future__ import annotations

import re
from typing import Callable

_PLACEHOLDER = re.compile(r"\{arg(?::([A-Za-z_][A-Za-z0-9_]*))?\}")


class TnstoreError(Exception):
    """A problem with the user's input or store, with a message that says what to do."""


class ArgumentError(TnstoreError, ValueError):
    """A bad value for argument `arg`. `template` holds `{arg}` where the argument's name goes, and `{arg:other}`
    where another argument is named.

    str(error) names the Python arguments (`limit must be at least 1`); `rendered(flag)` lets the CLI name the
    flags instead (`--limit must be at least 1`).
    """

    def __init__(self, arg: str, template: str):
        self.arg = arg
        self.template = template if _PLACEHOLDER.search(template) else "{arg} " + template
        super().__init__(self.rendered(lambda name: name))

    def __reduce__(self):  # a cluster worker's error crosses processes pickled: keep both fields
        return type(self), (self.arg, self.template)

    def rendered(self, name_of: Callable[[str], str]) -> str:
        """The message with the arguments' names spelled by `name_of` (e.g. as CLI flags)."""
        return _PLACEHOLDER.sub(lambda m: name_of(m.group(1) or self.arg), self.template)


class SqlError(TnstoreError):
    """DuckDB refused a statement; `reason` is DuckDB's first line."""

    def __init__(self, reason: str, context: str = "SQL failed"):
        self.reason = reason
        self.context = context
        super().__init__(f"{context}: {reason}")

    def __reduce__(self):
        return type(self), (self.reason, self.context)


class ReadOnlyError(TnstoreError):
    """A write to a store that is open read-only."""


class DamagedStoreError(TnstoreError):
    """A store file that is missing, truncated, corrupt, or unsafe to follow (a link out of the store, a path that
    leaves it). The message names the file and, given `store`, ends with the `tnstore verify` to run."""

    def __init__(self, message: str, store: str | None = None):
        self.store = store
        self.detail = message
        hint = f"; run `tnstore verify {store}` to list every damaged file" if store else ""
        super().__init__(message + hint)

    def for_store(self, store: str) -> "DamagedStoreError":
        """This error with the store named (and the verify hint added), unless it names one already."""
        return self if self.store else DamagedStoreError(self.detail, store)


class RemoteStoreError(ArgumentError, ReadOnlyError):
    """A write to a remote (read-only) store without a local results folder; names the `results` argument."""
