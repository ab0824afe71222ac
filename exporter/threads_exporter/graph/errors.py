"""Failed calls: the reasons, the error type, and classification of Graph answers."""

from __future__ import annotations

import json
from typing import Any

from threads_exporter.redact import REDACT

# Reasons, as in threads_api_errors_total{reason}.
TOKEN_INVALID = "token_invalid"
RATE_LIMITED = "rate_limited"
PERMISSION = "permission"
INVALID_REQUEST = "invalid_request"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION = "connection"
BAD_RESPONSE = "bad_response"
REASONS = (TOKEN_INVALID, RATE_LIMITED, PERMISSION, INVALID_REQUEST, SERVER_ERROR, TIMEOUT,
           CONNECTION, BAD_RESPONSE)
# Retried once at once, whatever the answer's is_transient says: Meta sets is_transient on
# throttling (code 4), where an immediate retry only spends more of the budget.
TRANSIENT = frozenset({SERVER_ERROR, TIMEOUT, CONNECTION})
# Meta answered, and refused this very request: asking again soon gets the same answer.
REFUSED = frozenset({INVALID_REQUEST, PERMISSION})


class ApiError(Exception):
    """A failed call. The message is safe to log: it never holds a URL or a token."""

    def __init__(self, reason: str, message: str, code: int | None = None,
                 subcode: int | None = None):
        self.reason = reason
        self.code = code
        self.subcode = subcode
        self.transient = reason in TRANSIENT
        text = REDACT(message)[:300]
        where = "" if code is None else f" (code {code}" + (
            f", subcode {subcode})" if subcode is not None else ")")
        super().__init__(f"{reason}: {text}{where}")


def reason_for_code(code: int) -> str | None:
    if code == 190:
        return TOKEN_INVALID
    if code in (4, 17, 32, 613):
        return RATE_LIMITED
    if code == 10 or 200 <= code <= 299:
        return PERMISSION
    if code in (1, 2):
        return SERVER_ERROR
    if code == 100:
        return INVALID_REQUEST
    return None


def reason_for_status(status: int) -> str:
    if status == 429:
        return RATE_LIMITED
    if status == 401:
        return TOKEN_INVALID
    if status == 403:
        return PERMISSION
    if status >= 500:
        return SERVER_ERROR
    return INVALID_REQUEST


def graph_error(status: int, body: bytes) -> ApiError | None:
    """The error a response carries, or None for a success. Graph code first, status second."""
    payload = load_json(body)
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        code, subcode = _int(err.get("code")), _int(err.get("error_subcode"))
        reason = (reason_for_code(code) if code is not None else None) or (
            reason_for_status(status) if status >= 400 else INVALID_REQUEST
        )
        message = err.get("message")
        message = message if isinstance(message, str) else "Graph API error"
        return ApiError(reason, message, code, subcode)
    if status >= 400:
        return ApiError(reason_for_status(status), f"HTTP {status} without a Graph error body")
    if payload is None:
        return ApiError(BAD_RESPONSE, f"HTTP {status} body is not JSON")
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def load_json(body: bytes) -> Any:
    """The JSON in a body, or None when there is none."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
