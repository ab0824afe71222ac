"""Quota metric families from Readings (pure), built fresh for every scrape."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from threads_exporter.metrics import gauge
from threads_exporter.quotas.reader import Reading


def quota_families(readings: Iterable[Reading]) -> list[Metric]:
    up = gauge("threads_up")
    usage = gauge("threads_quota_usage")
    limit = gauge("threads_quota_limit")
    window = gauge("threads_quota_window_seconds")
    success = gauge("threads_last_success_timestamp_seconds")
    failure = gauge("threads_last_error_reason")
    expiry = gauge("threads_token_expiry_timestamp_seconds")
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
