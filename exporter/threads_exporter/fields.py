"""The Threads API's field names and value sets, as documented: the one place they live."""

from __future__ import annotations

from collections.abc import Iterable

QUOTA_GROUPS: tuple[str, ...] = ("posts", "replies", "deletes", "location_searches")

# API field names for each quota group: (usage field, config field).
QUOTA_FIELDS: dict[str, tuple[str, str]] = {
    "posts": ("quota_usage", "config"),
    "replies": ("reply_quota_usage", "reply_config"),
    "deletes": ("delete_quota_usage", "delete_config"),
    "location_searches": ("location_search_quota_usage", "location_search_config"),
}

CONTAINER_STATUSES: tuple[str, ...] = ("IN_PROGRESS", "FINISHED", "PUBLISHED", "ERROR", "EXPIRED")
IN_PROGRESS, FINISHED, PUBLISHED, ERROR, EXPIRED = CONTAINER_STATUSES
FINAL_STATUSES = frozenset({PUBLISHED, ERROR, EXPIRED})

# The documented error_message values of a container in ERROR (sic: INVALID_ASPEC_RATIO).
ERROR_MESSAGES: tuple[str, ...] = (
    "FAILED_DOWNLOADING_VIDEO", "FAILED_PROCESSING_AUDIO", "FAILED_PROCESSING_VIDEO",
    "INVALID_ASPEC_RATIO", "INVALID_BIT_RATE", "INVALID_DURATION", "INVALID_FRAME_RATE",
    "INVALID_AUDIO_CHANNELS", "INVALID_AUDIO_CHANNEL_LAYOUT", "UNKNOWN",
)
OTHER_ERROR = "OTHER"  # any error_message not documented: keeps the label set bounded

# Graph's call-volume headers: header -> scope label; kinds each may report, in percent.
USAGE_HEADERS: dict[str, str] = {"x-app-usage": "app", "x-business-use-case-usage": "business"}
USAGE_KINDS: tuple[str, ...] = ("call_count", "total_cputime", "total_time")

# The exporter's endpoints, as the `endpoint` label names them.
ENDPOINTS: tuple[str, ...] = ("publishing_limit", "container", "debug_token", "me")


def quota_fields(groups: Iterable[str]) -> str:
    """The `fields` parameter that asks for the given quota groups."""
    return ",".join(f for g in groups for f in QUOTA_FIELDS[g])


def error_label(message: str | None) -> str:
    """The bounded `error_message` label for what Meta sent."""
    return message if message in ERROR_MESSAGES else OTHER_ERROR
