"""Accounting of calls, errors, latencies and reported call volume, read at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field

DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class AccountCalls:
    """One account's tallies. Replaced, never changed, on every call: a scrape's snapshot
    shares them with the live stats, and an unchanged one is the same object (the
    exposition reuses its encoding)."""

    requests: Mapping[str, int] = field(default_factory=dict)  # endpoint -> calls
    errors: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, reason)
    # (scope, kind) -> latest call-volume usage ratio Meta reported in headers
    usage: Mapping[tuple[str, str], float] = field(default_factory=dict)


NO_CALLS = AccountCalls()


@dataclass
class ApiStats:
    accounts: dict[str, AccountCalls] = field(default_factory=dict)
    # endpoint -> (bucket counts aligned with DURATION_BUCKETS plus +Inf, sum)
    durations: dict[str, tuple[list[int], float]] = field(default_factory=dict)

    def of(self, account: str) -> AccountCalls:
        return self.accounts.get(account, NO_CALLS)

    def record_usage(self, account: str, usage: dict[tuple[str, str], float]) -> None:
        old = self.of(account)
        self.accounts[account] = AccountCalls(old.requests, old.errors, {**old.usage, **usage})

    def record(self, account: str, endpoint: str, seconds: float, reason: str | None) -> None:
        old = self.of(account)
        requests = dict(old.requests)
        requests[endpoint] = requests.get(endpoint, 0) + 1
        errors = old.errors
        if reason is not None:
            errors = dict(errors)
            errors[(endpoint, reason)] = errors.get((endpoint, reason), 0) + 1
        self.accounts[account] = AccountCalls(requests, errors, old.usage)
        buckets, total = self.durations.get(endpoint) or ([0] * (len(DURATION_BUCKETS) + 1), 0.0)
        buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.durations[endpoint] = (buckets, total + seconds)

    def copy(self) -> ApiStats:
        """A snapshot that later calls do not change (the per-account tallies are shared:
        they are immutable)."""
        return ApiStats(dict(self.accounts),
                        {k: (list(v[0]), v[1]) for k, v in self.durations.items()})
