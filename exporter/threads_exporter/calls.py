"""Metric families of the exporter's calls to the Threads API (pure, from an ApiStats)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from threads_exporter.graph.stats import DURATION_BUCKETS, AccountCalls, ApiStats
from threads_exporter.metrics import counter, gauge, histogram, histogram_buckets


def call_families(calls: Iterable[tuple[str, AccountCalls]]) -> list[Metric]:
    """Per-account call counts, errors and reported usage."""
    requests = counter("threads_api_requests_total")
    errors = counter("threads_api_errors_total")
    usage = gauge("threads_api_usage_ratio")
    for account, c in calls:
        for endpoint, n in sorted(c.requests.items()):
            requests.add_metric([account, endpoint], n)
        for (endpoint, reason), n in sorted(c.errors.items()):
            errors.add_metric([account, endpoint, reason], n)
        for (scope, kind), ratio in sorted(c.usage.items()):
            usage.add_metric([account, scope, kind], ratio)
    return [requests, errors, usage]


def latency_family(stats: ApiStats) -> Metric:
    """The exporter-wide latency histogram (per endpoint, not per account)."""
    latency = histogram("threads_api_request_duration_seconds")
    for endpoint, (counts, total) in sorted(stats.durations.items()):
        latency.add_metric([endpoint], histogram_buckets(DURATION_BUCKETS, counts), total)
    return latency


def api_families(stats: ApiStats, accounts: set[str] | None = None) -> list[Metric]:
    """Every call family; `accounts` limits the per-account series (and leaves out the
    exporter-wide latency histogram)."""
    names = sorted(stats.accounts if accounts is None else accounts & stats.accounts.keys())
    families = call_families((a, stats.accounts[a]) for a in names)
    return families if accounts is not None else [*families, latency_family(stats)]
