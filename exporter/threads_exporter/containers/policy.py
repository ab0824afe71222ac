"""The polling policy, as pure functions over plain data: a stored Row in, a Change out.

Meta's guidance: poll a container once a minute for at most five minutes. So IN_PROGRESS is
polled every poll_interval for stuck_after (5 min), then counted as stuck and polled at the
stuck pace, doubling up to max_poll_interval; FINISHED waits for its publisher (hours,
possibly) and is polled slowly; PUBLISHED, ERROR and EXPIRED are never polled again; a
container without a final status after expire_after (24 h) has expired by Meta's rules and is
marked EXPIRED without another call. A container Meta refuses to answer for (an id that is
no container, a container Meta lost) backs off the same way, one doubling per refusal, while
a transient failure (5xx, timeout) keeps the normal pace.
"""

from __future__ import annotations

from dataclasses import dataclass

from threads_exporter.config import ContainersConfig
from threads_exporter.containers.store import Change, Row
from threads_exporter.fields import (
    ERROR,
    EXPIRED,
    FINAL_STATUSES,
    FINISHED,
    IN_PROGRESS,
    PUBLISHED,
    error_label,
)
from threads_exporter.graph.errors import REFUSED, ApiError
from threads_exporter.graph.parse import ContainerStatus
from threads_exporter.metrics import PROCESSING_BUCKETS, bucket_label

PROCESSED = frozenset({FINISHED, ERROR})  # processing is over: processing_seconds observed

# Counter families in the store.
STATUS_CHANGES = "status_changes"
ERRORS = "errors"
PROCESSING = "processing"
PROCESSING_SUM = "sum"  # the label of the histogram's sum in PROCESSING


@dataclass(frozen=True)
class Policy:
    poll_interval: float = 60.0
    stuck_poll_interval: float = 300.0
    finished_poll_interval: float = 900.0
    stuck_after: float = 300.0
    expire_after: float = 86400.0
    retention: float = 48 * 3600.0
    max_poll_interval: float = 3600.0

    @classmethod
    def from_config(cls, c: ContainersConfig) -> Policy:
        return cls(c.poll_interval_seconds, c.stuck_poll_interval_seconds,
                   c.finished_poll_interval_seconds, c.stuck_after_seconds,
                   c.expire_after_seconds, c.retention_seconds, c.max_poll_interval_seconds)

    @property
    def slowest(self) -> float:
        """The backoff's ceiling; never below the stuck pace it starts from."""
        return max(self.max_poll_interval, self.stuck_poll_interval)


def poll_interval(status: str | None, age: float, policy: Policy,
                  refusals: int = 0) -> float | None:
    """Seconds until the next poll of a container in a status, `age` seconds after its
    registration, after `refusals` polls in a row that Meta refused; None: never again."""
    if status in FINAL_STATUSES:
        return None
    if refusals > 0:
        interval = min(policy.slowest, policy.stuck_poll_interval * 2.0 ** (refusals - 1))
    elif status == FINISHED:
        interval = policy.finished_poll_interval
    elif status == IN_PROGRESS and age >= policy.stuck_after:
        # Doubling: polls at stuck_after + 0, 1, 3, 7, ... stuck paces, up to the ceiling.
        interval = min(policy.slowest, age - policy.stuck_after + policy.stuck_poll_interval)
    else:
        interval = policy.poll_interval  # IN_PROGRESS for now, or never answered yet
    return max(interval, policy.poll_interval)


def next_poll_at(status: str | None, registered_at: float, polled_at: float,
                 policy: Policy, refusals: int = 0) -> float | None:
    interval = poll_interval(status, polled_at - registered_at, policy, refusals)
    return None if interval is None else polled_at + interval


def is_stuck(status: str | None, registered_at: float, now: float, policy: Policy) -> bool:
    return status == IN_PROGRESS and now - registered_at >= policy.stuck_after


def is_expired(row: Row, now: float, policy: Policy) -> bool:
    """Older than expire_after with no final answer: Meta has expired it by now."""
    return row.status not in FINAL_STATUSES and now - row.registered_at >= policy.expire_after


def processing_label(seconds: float) -> str:
    return bucket_label(PROCESSING_BUCKETS, seconds)


def _reach(row: Row, status: str, now: float, message: str | None,
           ) -> tuple[frozenset[str], list[tuple[str, str, str, float]]]:
    """Statuses now reached and the counter increments for the newly reached ones.

    PUBLISHED implies FINISHED: a pipeline that publishes between two polls must still count
    as processed, or fast publishers would vanish from processing_seconds.
    """
    reached = {status} | ({FINISHED} if status == PUBLISHED else set())
    new = reached - row.reached
    a = row.account
    counters = [(STATUS_CHANGES, a, s, 1.0) for s in sorted(new)]
    if ERROR in new:
        counters.append((ERRORS, a, error_label(message), 1.0))
    if new & PROCESSED and not row.reached & PROCESSED:
        seconds = max(0.0, now - row.registered_at)
        counters += [(PROCESSING, a, processing_label(seconds), 1.0),
                     (PROCESSING, a, PROCESSING_SUM, seconds)]
    return row.reached | reached, counters


def observed(row: Row, answer: ContainerStatus, polled_at: float, now: float,
             policy: Policy) -> Change:
    """The change a successful poll makes."""
    reached, counters = _reach(row, answer.status, now, answer.error_message)
    final = answer.status in FINAL_STATUSES
    return Change(row.account, row.id, row.status, row.polls, {
        "status": answer.status,
        "error_message": answer.error_message,
        "reached": reached,
        "first_seen": row.first_seen if row.first_seen is not None else now,
        "last_seen": now,
        "last_polled": polled_at,
        "polls": row.polls + 1,
        "last_error": None,
        "error_reason": None,
        "error_code": None,
        "error_subcode": None,
        "refusals": 0,
        "next_poll_at": next_poll_at(answer.status, row.registered_at, polled_at, policy),
        "finished_at": (row.finished_at or now) if final else None,
    }, tuple(counters))


def failed(row: Row, error: ApiError, polled_at: float, policy: Policy) -> Change:
    """A failed poll: the last known status stays, the poll still counts for the pacing.
    A refusal (Meta answered an error for this id) backs off; anything else keeps the pace."""
    refusals = row.refusals + 1 if error.reason in REFUSED else 0
    return Change(row.account, row.id, row.status, row.polls, {
        "last_polled": polled_at,
        "polls": row.polls + 1,
        "poll_errors": row.poll_errors + 1,
        "last_error": str(error),
        "error_reason": error.reason,
        "error_code": error.code,
        "error_subcode": error.subcode,
        "refusals": refusals,
        "next_poll_at": next_poll_at(row.status, row.registered_at, polled_at, policy, refusals),
    })


def expired(row: Row, now: float) -> Change:
    """Mark a container EXPIRED without asking the API."""
    reached, counters = _reach(row, EXPIRED, now, None)
    return Change(row.account, row.id, row.status, row.polls, {
        "status": EXPIRED,
        "error_message": None,
        "reached": reached,
        "last_error": "no final status within the expiry time; marked EXPIRED without a call",
        "next_poll_at": None,
        "finished_at": now,
    }, tuple(counters))
