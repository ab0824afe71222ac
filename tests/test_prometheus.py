"""A real Prometheus server scrapes the real exporter, directly and through /probe."""

from __future__ import annotations

from collections.abc import Callable

from procs import PrometheusServer, RunningExporter
from waiting import wait_for

PROBE_JOB = """  - job_name: threads-probe
    metrics_path: /probe
    static_configs: [{targets: [brand, expired]}]
    relabel_configs:
      - {source_labels: [__address__], target_label: __param_account}
      - {source_labels: [__param_account], target_label: instance}
      - {target_label: __address__, replacement: %s}
"""


def test_quota_usage_arrives_in_prometheus(
        run_exporter: Callable[..., RunningExporter],
        run_prometheus: Callable[..., PrometheusServer]):
    exporter = run_exporter("--demo")
    target = exporter.base.removeprefix("http://")
    prom = run_prometheus([target], extra_scrape=PROBE_JOB % target)

    def query(expr: str) -> Callable[[], list[dict]]:
        return lambda: prom.query(expr)

    usage = wait_for(query('threads_quota_usage{job="threads-exporter",account="brand"}'),
                     timeout=30)
    assert {r["metric"]["quota"] for r in usage} == {
        "posts", "replies", "deletes", "location_searches"}
    assert all(0 <= float(r["value"][1]) <= 1000 for r in usage)
    # Each probe reports its own account. Waited for, not read once: on a loaded machine a
    # scrape may miss Prometheus' 1 s timeout, and the series go stale until the next one.
    wait_for(query('threads_up{job="threads-probe"}'),
             until=lambda up: {r["metric"]["instance"]: r["value"][1] for r in up} == {
                 "brand": "1", "expired": "0"}, timeout=30)
    wait_for(query('up{job=~"threads-.*"}'),
             until=lambda up: len(up) == 3 and {r["value"][1] for r in up} == {"1"},
             timeout=30)
