"""Masks secrets in text: the one place that knows what a secret looks like."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import NamedTuple

MASK = "<redacted>"


class Redactor:
    """Masks every known secret, and anything shaped like a token parameter, in text.

    Linear in the text, not in the number of secrets: secrets are indexed by their first
    GRAM characters (shorter ones by their length), the text's substrings of those lengths
    are intersected with the index in one set operation, and only the secrets found are
    replaced. 10,000 accounts failing at once cost 10,000 short scans, not 10^8 compares.
    """

    GRAM = 12
    _PARAM = re.compile(r"((?:access_token|input_token)=)[^&\s\"']+", re.IGNORECASE)
    _BEARER = re.compile(r"(Bearer\s+)[^\s\"']+", re.IGNORECASE)

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._index: _Index = _Index({}, {})
        self._lock = threading.Lock()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        found = frozenset(s for s in secrets if s)
        grams: dict[str, list[str]] = {}
        short: dict[int, set[str]] = {}
        for secret in found:
            if len(secret) >= self.GRAM:
                grams.setdefault(secret[:self.GRAM], []).append(secret)
            else:
                short.setdefault(len(secret), set()).add(secret)
        with self._lock:  # one assignment each: readers see the old index or the new one
            self._secrets = found
            self._index = _Index(grams, {n: frozenset(v) for n, v in short.items()})

    def add_secrets(self, secrets: Iterable[str]) -> None:
        with self._lock:
            current = self._secrets
        self.set_secrets((*current, *secrets))

    def __call__(self, text: str) -> str:
        index = self._index
        found: set[str] = set()
        if index.grams and len(text) >= self.GRAM:
            g = self.GRAM
            for gram in index.grams.keys() & {text[i:i + g] for i in range(len(text) - g + 1)}:
                found.update(s for s in index.grams[gram] if s in text)
        for length, secrets in index.short.items():
            if len(text) >= length:
                found.update(secrets & {text[i:i + length]
                                        for i in range(len(text) - length + 1)})
        # Longest first, so a secret containing another is masked whole.
        for secret in sorted(found, key=len, reverse=True):
            text = text.replace(secret, MASK)
        text = self._PARAM.sub(rf"\1{MASK}", text)
        return self._BEARER.sub(rf"\1{MASK}", text)


class _Index(NamedTuple):
    grams: dict[str, list[str]]  # first GRAM characters -> the secrets starting so
    short: dict[int, frozenset[str]]  # length -> the secrets shorter than GRAM


REDACT = Redactor()


# What an error message may quote. Tokens are long runs of letters and digits; short words,
# numbers, paths and URLs are what users need to see to fix a config.
_SHOWN_MAX = 40
_RUN = re.compile(r"(?:[^\W_]|[+=])+")


def could_be_secret(text: str) -> bool:
    """Whether an error message must not quote text: it is long, unprintable or token-like."""
    if len(text) > _SHOWN_MAX or not text.isprintable():
        return True
    return any(_token_like(run) for run in _RUN.findall(text))


def _token_like(run: str) -> bool:
    # A 16-character run of letters and digits, or an 8-character one that mixes both, is
    # what random secrets look like; English words and ids of a few digits are not.
    if len(run) >= 16:
        return True
    return len(run) >= 8 and any(c.isdigit() for c in run) and any(c.isalpha() for c in run)


def shown(value: object) -> str:
    """value as an error message may show it: quoted if harmless, otherwise only described."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (str, int, float)):
        text = value if isinstance(value, str) else repr(value)
        if not could_be_secret(text):
            return repr(value)
        what = "string" if isinstance(value, str) else "number"
        return f"a {len(text)}-character {what} (not shown: it may be a secret)"
    kinds = {dict: "a mapping", list: "a list", type(None): "nothing"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def shown_path(path: str) -> str:
    """A file path as an error message may show it: as is, unless it could be a pasted secret
    (a token, a key's PEM text) rather than a path."""
    if len(path) <= 4096 and path.isprintable() and not any(
            len(run) >= 16 for run in _RUN.findall(path)):
        return path
    return f"a {len(path)}-character path (not shown: it may be a secret)"


class RedactingFilter(logging.Filter):
    """Redacts a record's message and arguments before any handler formats it, so a handler
    that is not ours (a library's, a test's caplog) never sees a secret either."""

    def __init__(self, redactor: Redactor = REDACT) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        for key, value in vars(record).items():
            if isinstance(value, str) and key not in _PLAIN:
                setattr(record, key, self.redactor(value))
        return True


# Fields of every LogRecord that never carry request data.
_PLAIN = frozenset({"name", "levelname", "pathname", "filename", "module", "funcName",
                    "threadName", "processName", "taskName", "msg"})
