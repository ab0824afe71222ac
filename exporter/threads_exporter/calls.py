"""Metric families of the exporter's calls to the Threads API (pure, from an ApiStats)."""

from __future__ import annotations

from prometheus_client.core import Metric

from threads_exporter.graph.stats import DURATION_BUCKETS, ApiStats
from threads_exporter.metrics import counter, gauge, histogram, histogram_buckets


def api_families(stats: ApiStats, accounts: set[str] | None = None) -> list[Metric]:
    """Call counts, errors and reported usage; `accounts` limits the per-account series
    (and leaves out the exporter-wide latency histogram)."""
    requests = counter("threads_api_requests_total")
    errors = counter("threads_api_errors_total")
    usage = gauge("threads_api_usage_ratio")
    for (account, endpoint), n in sorted(stats.requests.items()):
        if accounts is None or account in accounts:
            requests.add_metric([account, endpoint], n)
    for (account, endpoint, reason), n in sorted(stats.errors.items()):
        if accounts is None or account in accounts:
            errors.add_metric([account, endpoint, reason], n)
    for (account, scope, kind), ratio in sorted(stats.usage.items()):
        if accounts is None or account in accounts:
            usage.add_metric([account, scope, kind], ratio)
    families = [requests, errors, usage]
    if accounts is None:
        latency = histogram("threads_api_request_duration_seconds")
        for endpoint, (counts, total) in sorted(stats.durations.items()):
            latency.add_metric([endpoint], histogram_buckets(DURATION_BUCKETS, counts), total)
        families.append(latency)
    return families
