"""A real Prometheus server scrapes the real exporter, directly and through /probe."""

from __future__ import annotations

import time

from procs import exporter, prom_query, prometheus


def wait_for(url: str, expr: str, series: int = 1, timeout: float = 30.0) -> list[dict]:
    """The query's result once it holds at least `series` series."""
    end = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < end:
        result = prom_query(url, expr)
        if len(result) >= series:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{expr} returned {len(result)} series within {timeout}s, "
                         f"wanted {series}")


def test_quota_usage_arrives_in_prometheus():
    probe_job = """  - job_name: threads-probe
    metrics_path: /probe
    static_configs: [{targets: [brand, expired]}]
    relabel_configs:
      - {source_labels: [__address__], target_label: __param_account}
      - {source_labels: [__param_account], target_label: instance}
      - {target_label: __address__, replacement: %s}
"""
    with exporter("--demo") as (_, base):
        target = base.removeprefix("http://")
        with prometheus([target], extra_scrape=probe_job % target) as url:
            usage = wait_for(url, 'threads_quota_usage{job="threads-exporter",account="brand"}')
            assert {r["metric"]["quota"] for r in usage} == {
                "posts", "replies", "deletes", "location_searches"}
            assert all(0 <= float(r["value"][1]) <= 1000 for r in usage)
            up = wait_for(url, 'threads_up{job="threads-probe"}', series=2)
            assert {r["metric"]["instance"]: r["value"][1] for r in up} == {
                "brand": "1", "expired": "0"}
            scrape = wait_for(url, 'up{job=~"threads-.*"}', series=3)
            assert {r["value"][1] for r in scrape} == {"1"}
