"""Containers end to end: a real exporter process against an independent Threads API double,
registration over HTTP, states and metrics, pacing; and 10,000 containers within the scrape
timeout."""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from container_double import API_TOKEN, ContainerDouble, answer, samples, value, write_config
from procs import exporter
from threads_exporter.app import Exporter
from threads_exporter.config import parse_config
from threads_exporter.web.server import ExporterHTTPServer

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
POLL_INTERVAL = 1.0

SCRIPTS = {
    "201": [answer("IN_PROGRESS"), answer("IN_PROGRESS"), answer("FINISHED"),
            answer("PUBLISHED")],
    "202": [answer("IN_PROGRESS"), answer("ERROR", "FAILED_PROCESSING_VIDEO")],
    "203": [answer("ERROR", "A_REASON_META_ADDED_LATER")],
    "204": [answer("IN_PROGRESS")],  # never finishes: stuck
}


def test_states_metrics_and_pacing(tmp_path: Path) -> None:
    with ContainerDouble(SCRIPTS) as double:
        config = write_config(tmp_path / "c.yaml", double.base_url, tmp_path / "state.db",
                              poll_interval_seconds=POLL_INTERVAL, stuck_after_seconds=2)
        with exporter("--config.file", str(config)) as (_, base):
            for cid in SCRIPTS:
                r = httpx.post(f"{base}/api/v1/containers", headers=AUTH,
                               json={"account": "brand", "id": cid})
                assert r.status_code == 201, r.text
            errors_seen = []
            end = time.monotonic() + 7
            while time.monotonic() < end:  # scrape much faster than the poll interval
                r = httpx.get(f"{base}/metrics", timeout=10,
                              headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"})
                found = samples(r.text)
                errors_seen.append(value(found, "threads_container_errors_total",
                                         account="brand",
                                         error_message="FAILED_PROCESSING_VIDEO"))
                time.sleep(0.1)
            text = r.text
            listing = {c["id"]: c for c in httpx.get(
                f"{base}/api/v1/containers", headers=AUTH).json()["containers"]}

    def metric(name: str, **labels: str) -> float | None:
        return value(found, name, account="brand", **labels)

    assert [listing[c]["status"] for c in SCRIPTS] == ["PUBLISHED", "ERROR", "ERROR",
                                                       "IN_PROGRESS"]
    assert listing["202"]["error_message"] == "FAILED_PROCESSING_VIDEO"
    assert listing["204"]["stuck"] is True
    assert metric("threads_containers", status="PUBLISHED") == 1
    assert metric("threads_containers", status="ERROR") == 2
    assert metric("threads_containers", status="IN_PROGRESS") == 1
    assert metric("threads_containers_stuck") == 1
    assert metric("threads_container_status_changes_total", status="IN_PROGRESS") == 3
    assert metric("threads_container_status_changes_total", status="FINISHED") == 1
    assert metric("threads_container_status_changes_total", status="PUBLISHED") == 1
    assert metric("threads_container_status_changes_total", status="ERROR") == 2
    assert metric("threads_container_errors_total", error_message="OTHER") == 1
    # Counted once, from the scrape that saw it, however many scrapes followed.
    assert errors_seen[-1] == 1 and errors_seen.count(1) > 20
    assert set(errors_seen) <= {0, 1}
    assert metric("threads_container_processing_seconds_count") == 3  # 201, 202, 203
    polls = sum(len(double.polls(c)) for c in SCRIPTS)
    assert metric("threads_api_requests_total", endpoint="container") == polls

    # Pacing: never two polls of one container closer than the poll interval.
    for cid in SCRIPTS:
        times = double.polls(cid)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= POLL_INTERVAL - 0.05 for g in gaps), (cid, gaps)
    # Final containers are never polled again.
    assert len(double.polls("201")) == 4  # IN_PROGRESS, IN_PROGRESS, FINISHED, PUBLISHED
    assert len(double.polls("202")) == 2
    assert len(double.polls("203")) == 1
    assert len(double.polls("204")) >= 5  # the stuck one, at its (here fast) stuck pace

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                            capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_probe_reports_only_its_account(tmp_path: Path) -> None:
    with ContainerDouble({"301": [answer("ERROR", "INVALID_DURATION")]}) as double:
        config = write_config(tmp_path / "c.yaml", double.base_url, tmp_path / "state.db",
                              track=[{"account": "brand", "id": "301"}])
        with exporter("--config.file", str(config)) as (_, base):
            found = samples(httpx.get(f"{base}/probe?account=brand", timeout=10).text)
    assert value(found, "threads_container_errors_total", account="brand",
                 error_message="INVALID_DURATION") == 1
    assert value(found, "threads_containers", account="brand", status="ERROR") == 1


class SlowUpstream:
    """A Threads API with latency, as an async httpx transport: 10,000 containers."""

    def __init__(self, latency: float):
        self.latency = latency
        self.polls: Counter[str] = Counter()
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/threads_publishing_limit"):
            return httpx.Response(200, json={"data": [{"quota_usage": 3, "config": {
                "quota_total": 250, "quota_duration": 86400}}]})
        if request.url.path.endswith("/debug_token"):
            return httpx.Response(200, json={"data": {"expires_at": 0}})
        cid = request.url.path.rsplit("/", 1)[-1]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        self.polls[cid] += 1
        return httpx.Response(200, json={"status": "IN_PROGRESS", "id": cid})


def test_ten_thousand_containers_within_the_scrape_timeout(tmp_path: Path) -> None:
    n = 10_000
    timeout = 1.5  # seconds, as Prometheus announces it
    config = parse_config({
        "api": {"max_concurrency": 16},
        "accounts": [{"name": "brand", "access_token": "upstream-token-10k",
                      "quotas": ["posts"]}],
        "containers": {"state_path": str(tmp_path / "state.db"),
                       "track": [{"account": "brand", "id": str(10**9 + i)} for i in range(n)]},
    }, env={})
    upstream = SlowUpstream(latency=0.02)
    exp = Exporter(config, transport=httpx.MockTransport(upstream))
    server = ExporterHTTPServer(("127.0.0.1", 0), exp, None)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                     daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    durations, backlogs = [], []
    try:
        with httpx.Client(timeout=30) as http:
            for _ in range(4):
                start = time.monotonic()
                r = http.get(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": str(timeout)})
                durations.append(time.monotonic() - start)
                assert r.status_code == 200
                found = samples(r.text)
                backlogs.append(value(found, "threads_containers_poll_backlog", account="brand"))
                assert value(found, "threads_up", account="brand") == 1
    finally:
        server.shutdown()
        server.server_close()
        exp.close()
    print(f"scrape seconds with {n} due containers: {[round(d, 3) for d in durations]}; "
          f"backlog {backlogs}; polls {sum(upstream.polls.values())}")
    assert max(durations) < timeout
    assert upstream.most_in_flight <= 16
    assert max(upstream.polls.values()) == 1  # none polled twice within its interval
    polled = sum(upstream.polls.values())
    assert 300 < polled < n  # real progress, but not everything at once
    assert backlogs == sorted(backlogs, reverse=True) and backlogs[-1] < n
    # Oldest due first: all were due at once, so the ids polled are any; none twice.


def test_upstream_slower_than_the_scrape_starts_only_what_can_run(tmp_path: Path) -> None:
    config = parse_config({
        "api": {"max_concurrency": 16, "timeout_seconds": 5},
        "accounts": [{"name": "brand", "access_token": "upstream-token-slow",
                      "quotas": ["posts"]}],
        "containers": {"state_path": str(tmp_path / "state.db"),
                       "track": [{"account": "brand", "id": str(10**9 + i)}
                                 for i in range(1000)]},
    }, env={})
    upstream = SlowUpstream(latency=2.0)
    exp = Exporter(config, transport=httpx.MockTransport(upstream))
    try:
        for _ in range(3):
            start = time.monotonic()
            families = {f.name: f for f in exp.scrape(time.monotonic() + 0.5)}
            assert time.monotonic() - start < 1.0
            assert families["threads_up"].samples[0].value == 1
        # One poll per worker was started and is still running; nothing queued behind them.
        assert 0 < upstream.in_flight <= 15  # one slot of 16 kept for quota readings
        assert sum(upstream.polls.values()) == 0
    finally:
        exp.close()


class JitteryUpstream(SlowUpstream):
    """Answers spread out in time (10-30 ms), as real ones are, not in lockstep waves."""

    @property
    def latency(self) -> float:
        return random.uniform(0.5, 1.5) * self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._latency = value


def test_a_probe_is_not_held_up_by_another_scrape_still_polling(tmp_path: Path) -> None:
    """A scrape waits for the commit of what was polled before it reports, not for results
    that a concurrent scrape's round keeps producing."""
    config = parse_config({
        "api": {"max_concurrency": 16},
        "accounts": [{"name": n, "access_token": f"upstream-token-{n}", "quotas": ["posts"]}
                     for n in ("brand", "other")],
        "containers": {"state_path": str(tmp_path / "state.db"),
                       "track": [{"account": "brand", "id": str(10**9 + i)}
                                 for i in range(10_000)]
                       + [{"account": "other", "id": str(2 * 10**9)}]},
    }, env={})
    exp = Exporter(config, transport=httpx.MockTransport(JitteryUpstream(latency=0.02)))
    store = exp.tracker.store
    assert store is not None
    apply = store.apply

    def slow_apply(changes):  # a disk whose fsync takes 30 ms: results arrive meanwhile
        time.sleep(0.03)
        return apply(changes)

    store.apply = slow_apply  # type: ignore[method-assign]
    try:
        busy = threading.Thread(target=exp.scrape, args=(time.monotonic() + 4.5,))  # polls for ~4 s
        busy.start()
        time.sleep(1.0)
        start = time.monotonic()
        families = {f.name: f for f in exp.scrape(time.monotonic() + 1, "other")}
        took = time.monotonic() - start
        busy.join()
    finally:
        exp.close()
    assert took < 1.0
    assert families["threads_exporter_container_store_up"].samples[0].value == 1
    polled = {s.labels["status"]: s.value for s in families["threads_containers"].samples}
    assert polled["IN_PROGRESS"] == 1
