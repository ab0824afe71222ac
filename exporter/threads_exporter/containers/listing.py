"""How the registration and listing API shows one container (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from threads_exporter.containers.policy import Policy, is_stuck
from threads_exporter.containers.store import Row


def _time(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(row: Row, now: float, policy: Policy) -> dict[str, Any]:
    """One container as the listing API shows it."""
    return {
        "account": row.account, "id": row.id, "status": row.status,
        "error_message": row.error_message,
        "stuck": is_stuck(row.status, row.registered_at, now, policy),
        "registered_at": _time(row.registered_at), "first_seen": _time(row.first_seen),
        "last_seen": _time(row.last_seen), "last_polled": _time(row.last_polled),
        "next_poll_at": _time(row.next_poll_at), "finished_at": _time(row.finished_at),
        "polls": row.polls, "poll_errors": row.poll_errors, "last_error": row.last_error,
        "last_error_reason": row.error_reason, "last_error_code": row.error_code,
        "last_error_subcode": row.error_subcode,
        # Meta refused the latest poll(s): the id is no container, or Meta lost it.
        "unanswered": row.refusals > 0 and row.next_poll_at is not None,
        "refused_polls": row.refusals,
    }
