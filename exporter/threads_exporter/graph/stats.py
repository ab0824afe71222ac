"""Accounting of calls, errors, latencies and reported call volume, read at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ApiStats:
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # endpoint -> (bucket counts aligned with DURATION_BUCKETS plus +Inf, sum)
    durations: dict[str, tuple[list[int], float]] = field(default_factory=dict)
    # (account, scope, kind) -> latest call-volume usage ratio Meta reported in headers
    usage: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def record_usage(self, account: str, usage: dict[tuple[str, str], float]) -> None:
        for (scope, kind), ratio in usage.items():
            self.usage[(account, scope, kind)] = ratio

    def record(self, account: str, endpoint: str, seconds: float, reason: str | None) -> None:
        key = (account, endpoint)
        self.requests[key] = self.requests.get(key, 0) + 1
        if reason is not None:
            ekey = (account, endpoint, reason)
            self.errors[ekey] = self.errors.get(ekey, 0) + 1
        buckets, total = self.durations.get(endpoint) or ([0] * (len(DURATION_BUCKETS) + 1), 0.0)
        buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.durations[endpoint] = (buckets, total + seconds)

    def copy(self) -> ApiStats:
        """A snapshot that later calls do not change."""
        return ApiStats(dict(self.requests), dict(self.errors),
                        {k: (list(v[0]), v[1]) for k, v in self.durations.items()},
                        dict(self.usage))
