"""Pure parsers: response bodies and headers in, plain readings out (or a BAD_RESPONSE)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from threads_exporter.fields import (
    CONTAINER_STATUSES,
    ERROR,
    ERROR_MESSAGES,
    QUOTA_FIELDS,
    USAGE_HEADERS,
    USAGE_KINDS,
)
from threads_exporter.graph.errors import BAD_RESPONSE, ApiError, load_json
from threads_exporter.redact import REDACT

_SANE_MAX = 10**12  # larger counts are not a real quota


@dataclass(frozen=True)
class Quota:
    usage: int
    total: int
    duration: int


@dataclass(frozen=True)
class ContainerStatus:
    status: str
    error_message: str | None = None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if value != int(value) or not 0 <= value <= _SANE_MAX:
        return None
    return int(value)


def parse_publishing_limit(body: bytes, groups: Sequence[str]) -> dict[str, Quota]:
    """Quota readings for the requested groups present in a response.

    A group whose fields are missing or malformed is left out (unknown, never 0). A response
    with none of the requested groups is an error.
    """
    payload = load_json(body)
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise ApiError(BAD_RESPONSE, "publishing limit response has no data list")
    if not data or not isinstance(data[0], dict):
        raise ApiError(BAD_RESPONSE, "publishing limit response has empty data")
    row = data[0]
    found: dict[str, Quota] = {}
    for group in groups:
        usage_key, config_key = QUOTA_FIELDS[group]
        config = row.get(config_key)
        if not isinstance(config, dict):
            continue
        usage = _count(row.get(usage_key))
        total = _count(config.get("quota_total"))
        duration = _count(config.get("quota_duration"))
        if usage is None or total is None or not duration:
            continue
        found[group] = Quota(usage=usage, total=total, duration=duration)
    if not found:
        raise ApiError(BAD_RESPONSE, "publishing limit response holds none of the quota fields")
    return found


def parse_container(body: bytes) -> ContainerStatus:
    payload = load_json(body)
    status = payload.get("status") if isinstance(payload, dict) else None
    if not isinstance(status, str) or status not in CONTAINER_STATUSES:
        raise ApiError(BAD_RESPONSE, "container response has no known status")
    message = payload.get("error_message")
    if status != ERROR or not isinstance(message, str) or not message:
        message = None
    elif message not in ERROR_MESSAGES:
        # Stored and listed as sent; an undocumented text could echo a token back.
        message = REDACT(message)[:300]
    return ContainerStatus(status=status, error_message=message)


def parse_debug_token(body: bytes) -> float | None:
    """expires_at as a Unix time; None when the token never expires (expires_at 0)."""
    payload = load_json(body)
    data = payload.get("data") if isinstance(payload, dict) else None
    expires = data.get("expires_at") if isinstance(data, dict) else None
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) \
            or not 0 <= expires < float("inf"):
        raise ApiError(BAD_RESPONSE, "debug_token response has no expires_at")
    return float(expires) or None


def parse_me(body: bytes) -> str:
    """The user id in a /me?fields=id answer."""
    payload = load_json(body)
    user_id = payload.get("id") if isinstance(payload, dict) else None
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not user_id.isascii() or not user_id.isdigit():
        raise ApiError(BAD_RESPONSE, "/me response has no numeric id")
    return user_id


def parse_usage_headers(headers: Mapping[str, str]) -> dict[tuple[str, str], float]:
    """Call-volume usage from Graph's usage headers as {(scope, kind): ratio}.

    Whether graph.threads.net sends them is not documented: absent or malformed headers
    give nothing, and nothing else depends on them.
    """
    found: dict[tuple[str, str], float] = {}
    for header, scope in USAGE_HEADERS.items():
        payload = load_json(headers[header].encode()) if header in headers else None
        if not isinstance(payload, dict):
            continue
        entries = [payload] if scope == "app" else [
            e for v in payload.values() if isinstance(v, list) for e in v if isinstance(e, dict)]
        for entry in entries:
            for kind in USAGE_KINDS:
                percent = entry.get(kind)
                if isinstance(percent, (int, float)) and not isinstance(percent, bool) \
                        and 0 <= percent <= 10_000:
                    found[(scope, kind)] = max(found.get((scope, kind), 0.0), percent / 100)
    return found
