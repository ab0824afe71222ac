"""Scrape-driven quota collection: cache, shared in-flight reads, backoff, deadline, families.

The async half (QuotaCollector) runs on the exporter's event loop and turns a scrape into a
Snapshot of plain data. The pure half (quota_families, api_families) turns a Snapshot into
metric families, built fresh for every scrape as prometheus_client's custom collectors do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from threads_exporter.client import (
    BAD_RESPONSE,
    DURATION_BUCKETS,
    RATE_LIMITED,
    TIMEOUT,
    TOKEN_INVALID,
    ApiError,
    ApiStats,
    Quota,
    ThreadsClient,
)
from threads_exporter.config import Account, Config

log = logging.getLogger(__name__)

# Backoff after a failed reading: (first delay, longest delay) in seconds. Errors that will not
# heal by retrying soon (throttling, a dead token) wait longer.
BACKOFF = (15.0, 300.0)
SLOW_BACKOFF = (60.0, 900.0)


@dataclass(frozen=True)
class Reading:
    """The latest quota reading of one account, as a scrape reports it."""

    account: str
    quotas: dict[str, Quota] | None  # None when the reading failed
    error_reason: str | None = None
    error_message: str | None = None
    last_success: float | None = None  # Unix time
    token_expiry: float | None = None

    @property
    def up(self) -> bool:
        return self.quotas is not None


@dataclass
class _AccountState:
    account: Account
    quotas: dict[str, Quota] | None = None
    fresh_until: float = 0.0  # monotonic
    last_success: float | None = None  # wall clock
    error: ApiError | None = None
    retry_at: float = 0.0  # monotonic
    failures: int = 0
    task: asyncio.Task[None] | None = None
    token_expiry: float | None = None
    token_checked_at: float | None = None  # monotonic
    token_task: asyncio.Task[None] | None = None


def backoff_delay(reason: str, failures: int) -> float:
    first, longest = SLOW_BACKOFF if reason in (RATE_LIMITED, TOKEN_INVALID) else BACKOFF
    return min(longest, first * 2 ** max(0, failures - 1))


@dataclass
class QuotaCollector:
    client: ThreadsClient
    config: Config
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _states: dict[str, _AccountState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reconfigure(self.config)

    def reconfigure(self, config: Config) -> None:
        """Adopt a new config; accounts whose name and token are unchanged keep their cache."""
        self.config = config
        states = {}
        for account in config.accounts:
            old = self._states.get(account.name)
            if old is not None and old.account == account:
                states[account.name] = old
            else:
                states[account.name] = _AccountState(account)
        self._states = states

    async def scrape(self, deadline: float, names: Sequence[str] | None = None) -> list[Reading]:
        """Readings of the named accounts (all by default), waiting for fresh ones until
        the deadline (a monotonic time). Accounts not done by then read as timed out; their
        requests go on and fill the cache for the next scrape."""
        states = [self._states[n] for n in (names if names is not None else self._states)]
        waits: list[asyncio.Task[None]] = []
        for state in states:
            task = self._refresh(state, deadline)
            if task is not None:
                waits.append(task)
            token_task = self._check_token(state, deadline)
            if token_task is not None:
                waits.append(token_task)
        if waits:
            await asyncio.wait(waits, timeout=max(0.0, deadline - self.clock()))
        return [self._reading(s) for s in states]

    def _refresh(self, state: _AccountState, deadline: float) -> asyncio.Task[None] | None:
        now = self.clock()
        if state.task is not None:
            return state.task  # another scrape already asked: share its request
        if state.quotas is not None and now < state.fresh_until:
            return None
        if state.error is not None and now < state.retry_at:
            return None
        state.task = asyncio.create_task(self._read(state, deadline))
        return state.task

    async def _read(self, state: _AccountState, deadline: float) -> None:
        # The first attempt always gets its full timeout even past this scrape's deadline, so
        # a slow account's answer still lands in the cache for the next scrape.
        deadline = max(deadline, self.clock() + self.client.api.timeout_seconds)
        try:
            quotas = await self.client.read_quotas(state.account, deadline)
        except Exception as e:
            if isinstance(e, ApiError):
                error = e
            else:  # never let one account's bug take down a scrape
                log.exception("quota reading crashed", extra={"account": state.account.name})
                error = ApiError(BAD_RESPONSE, f"unexpected {type(e).__name__}")
            self._failed(state, error)
        else:
            state.quotas = quotas
            state.error = None
            state.failures = 0
            state.fresh_until = self.clock() + self.config.cache_ttl_seconds
            state.last_success = self.wall()
        finally:
            state.task = None

    def _failed(self, state: _AccountState, error: ApiError) -> None:
        state.failures += 1
        state.error = error
        state.quotas = None
        state.retry_at = self.clock() + backoff_delay(error.reason, state.failures)
        log.warning("quota reading failed", extra={
            "account": state.account.name, "reason": error.reason, "error": str(error),
            "retry_in_seconds": round(state.retry_at - self.clock(), 1)})

    def _check_token(self, state: _AccountState, deadline: float) -> asyncio.Task[None] | None:
        """Ask debug_token rarely; a failure leaves the expiry unknown and threads_up alone."""
        if state.token_task is not None:
            return state.token_task
        now = self.clock()
        checked = state.token_checked_at
        if checked is not None and now - checked < self.config.token_check_interval_seconds:
            return None
        state.token_checked_at = now
        state.token_task = asyncio.create_task(self._read_token(state, deadline))
        return state.token_task

    async def _read_token(self, state: _AccountState, deadline: float) -> None:
        deadline = max(deadline, self.clock() + self.client.api.timeout_seconds)
        try:
            state.token_expiry = await self.client.token_expiry(state.account, deadline)
        except ApiError as e:
            state.token_expiry = None
            log.info("token expiry unknown", extra={
                "account": state.account.name, "reason": e.reason, "error": str(e)})
        finally:
            state.token_task = None

    def _reading(self, state: _AccountState) -> Reading:
        name = state.account.name
        common = {"last_success": state.last_success, "token_expiry": state.token_expiry}
        if state.quotas is not None and state.task is None:
            return Reading(name, dict(state.quotas), **common)
        if state.error is not None and state.task is None:
            return Reading(name, None, state.error.reason, str(state.error), **common)
        return Reading(name, None, TIMEOUT, "no answer before the scrape deadline", **common)


# --- metric families (pure) ----------------------------------------------------------------


def quota_families(readings: Iterable[Reading]) -> list[Metric]:
    up = GaugeMetricFamily("threads_up", "1 if the latest quota reading of the account "
                           "succeeded, else 0", labels=["account"])
    usage = GaugeMetricFamily("threads_quota_usage", "Actions used in the current rolling "
                              "window", labels=["account", "quota"])
    limit = GaugeMetricFamily("threads_quota_limit", "Actions allowed in the rolling window "
                              "(quota_total)", labels=["account", "quota"])
    window = GaugeMetricFamily("threads_quota_window_seconds", "Length of the rolling quota "
                               "window (quota_duration)", labels=["account", "quota"])
    success = GaugeMetricFamily("threads_last_success_timestamp_seconds", "Unix time of the "
                                "last successful quota reading", labels=["account"])
    failure = GaugeMetricFamily("threads_last_error_reason", "1 for the reason the latest "
                                "quota reading failed; absent while the account is up",
                                labels=["account", "reason"])
    expiry = GaugeMetricFamily("threads_token_expiry_timestamp_seconds", "Unix time the "
                               "access token expires (debug_token expires_at)",
                               labels=["account"])
    for r in readings:
        up.add_metric([r.account], 1 if r.up else 0)
        for quota, q in (r.quotas or {}).items():
            usage.add_metric([r.account, quota], q.usage)
            limit.add_metric([r.account, quota], q.total)
            window.add_metric([r.account, quota], q.duration)
        if r.last_success is not None:
            success.add_metric([r.account], r.last_success)
        if r.error_reason is not None:
            failure.add_metric([r.account, r.error_reason], 1)
        if r.token_expiry is not None:
            expiry.add_metric([r.account], r.token_expiry)
    return [up, usage, limit, window, success, failure, expiry]


def api_families(stats: ApiStats, accounts: set[str] | None = None) -> list[Metric]:
    """The exporter's own call accounting; accounts limits the per-account series."""
    requests = CounterMetricFamily("threads_api_requests", "Calls made to the Threads API",
                                   labels=["account", "endpoint"])
    errors = CounterMetricFamily("threads_api_errors", "Failed calls to the Threads API, by "
                                 "reason", labels=["account", "endpoint", "reason"])
    for (account, endpoint), n in sorted(stats.requests.items()):
        if accounts is None or account in accounts:
            requests.add_metric([account, endpoint], n)
    for (account, endpoint, reason), n in sorted(stats.errors.items()):
        if accounts is None or account in accounts:
            errors.add_metric([account, endpoint, reason], n)
    usage = GaugeMetricFamily("threads_api_usage_ratio", "Call-volume usage Meta reports in "
                              "X-App-Usage / X-Business-Use-Case-Usage headers, where it does",
                              labels=["account", "scope", "kind"])
    for (account, scope, kind), ratio in sorted(stats.usage.items()):
        if accounts is None or account in accounts:
            usage.add_metric([account, scope, kind], ratio)
    families: list[Metric] = [requests, errors, usage]
    if accounts is None:
        latency = HistogramMetricFamily("threads_api_request_duration_seconds", "Latency of "
                                        "calls to the Threads API", labels=["endpoint"])
        for endpoint, (counts, total) in sorted(stats.durations.items()):
            latency.add_metric([endpoint], histogram_buckets(DURATION_BUCKETS, counts), total)
        families.append(latency)
    return families


def histogram_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, int]]:
    """Cumulative (le, count) pairs from per-bucket counts (the last one is +Inf)."""
    out = []
    running = 0
    for bound, n in zip((*map(floatToGoString, bounds), "+Inf"), counts, strict=True):
        running += n
        out.append((bound, running))
    return out


def copy_stats(stats: ApiStats) -> ApiStats:
    return ApiStats(dict(stats.requests), dict(stats.errors),
                    {k: (list(v[0]), v[1]) for k, v in stats.durations.items()},
                    dict(stats.usage))
