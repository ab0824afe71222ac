"""Masks secrets in text: the one place that knows what a secret looks like."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "<redacted>"


class Redactor:
    """Masks every known secret, and anything shaped like a token parameter, in text."""

    _PARAM = re.compile(r"((?:access_token|input_token)=)[^&\s\"']+", re.IGNORECASE)
    _BEARER = re.compile(r"(Bearer\s+)[^\s\"']+", re.IGNORECASE)

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        with self._lock:
            self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self.set_secrets((*self._secrets, *secrets))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = self._PARAM.sub(rf"\1{MASK}", text)
        return self._BEARER.sub(rf"\1{MASK}", text)


REDACT = Redactor()


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
