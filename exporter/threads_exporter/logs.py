"""Log set-up: logfmt or JSON lines on stderr, every line passed through the redactor."""

from __future__ import annotations

import json
import logging
import sys
import time

from threads_exporter.redact import REDACT, RedactingFilter

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": {"WARNING": "warn"}.get(record.levelname, record.levelname.lower()),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info and record.exc_info[0] is not None:
        # Type and message only: tracebacks can quote locals such as request URLs.
        fields["exception"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
    # Every value redacted as text before it is quoted or escaped: a secret holding a quote,
    # a backslash or non-ASCII would no longer match once escaped.
    return {k: v if isinstance(v, (int, float, bool)) or v is None else REDACT(str(v))
            for k, v in fields.items()}


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        return json.dumps(text)
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())
        return REDACT(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return REDACT(json.dumps(_fields(record), default=str, ensure_ascii=False))


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    # Redacted before formatting too, so the record a handler sees never holds a secret.
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # httpx and httpcore log request URLs, which carry tokens: keep them quiet at any level.
    for name in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
