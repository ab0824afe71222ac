"""Containers end to end: a real exporter process against the Graph API fake, registration
over HTTP, states and metrics, pacing; and 10,000 containers within the scrape timeout."""

from __future__ import annotations

import itertools
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from exposition import Samples, samples, value
from fake_graph import FakeGraph, container, healthy
from procs import BRAND_TOKEN, REGISTRATION, RunningExporter
from threads_exporter.app import Exporter
from threads_exporter.config import Config, parse_config
from waiting import wait_for

POLL_INTERVAL = 1.0

SCRIPTS = {
    "201": [container("IN_PROGRESS"), container("IN_PROGRESS"), container("FINISHED"),
            container("PUBLISHED")],
    "202": [container("IN_PROGRESS"), container("ERROR", "FAILED_PROCESSING_VIDEO")],
    "203": [container("ERROR", "A_REASON_META_ADDED_LATER")],
    "204": [container("IN_PROGRESS")],  # never finishes: stuck
}


def register(exporter: RunningExporter, *ids: str) -> None:
    for cid in ids:
        r = httpx.post(exporter.url("/api/v1/containers"), headers=REGISTRATION, timeout=10,
                       json={"account": "brand", "id": cid})
        assert r.status_code == 201, r.text


def listing(exporter: RunningExporter) -> dict[str, dict]:
    r = httpx.get(exporter.url("/api/v1/containers"), headers=REGISTRATION, timeout=10)
    return {c["id"]: c for c in r.json()["containers"]}


def test_states_metrics_and_pacing(fake_graph: FakeGraph, container_config: Callable[..., Path],
                                   run_exporter: Callable[..., RunningExporter]) -> None:
    fake_graph.token(BRAND_TOKEN, healthy(6))
    for cid, answers in SCRIPTS.items():
        fake_graph.container(cid, *answers)
    config = container_config(fake_graph.base_url, poll_interval_seconds=POLL_INTERVAL,
                              stuck_after_seconds=2)
    exporter = run_exporter("--config.file", str(config))
    register(exporter, *SCRIPTS)
    errors_seen: list[float | None] = []

    def scrape() -> tuple[str, Samples]:  # much faster than the poll interval
        r = httpx.get(exporter.url(), timeout=10,
                      headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"})
        found = samples(r.text)
        errors_seen.append(value(found, "threads_container_errors_total", account="brand",
                                 error_message="FAILED_PROCESSING_VIDEO"))
        return r.text, found

    def played_out(scraped: tuple[str, Samples]) -> bool:
        """Every script at its end, the stuck one polled at its pace for a while, and many
        scrapes since the error."""
        found = scraped[1]
        return (value(found, "threads_containers", account="brand", status="PUBLISHED") == 1
                and value(found, "threads_containers", account="brand", status="ERROR") == 2
                and value(found, "threads_containers_stuck", account="brand") == 1
                and len(fake_graph.polls("204")) >= 5 and errors_seen.count(1) > 20)

    text, found = wait_for(scrape, until=played_out, timeout=60, interval=0.1,
                           what="the container scripts played out")
    listed = listing(exporter)
    exporter.stop()

    def metric(name: str, **labels: str) -> float | None:
        return value(found, name, account="brand", **labels)

    assert [listed[c]["status"] for c in SCRIPTS] == ["PUBLISHED", "ERROR", "ERROR",
                                                      "IN_PROGRESS"]
    assert listed["202"]["error_message"] == "FAILED_PROCESSING_VIDEO"
    assert listed["204"]["stuck"] is True
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
    polls = sum(len(fake_graph.polls(c)) for c in SCRIPTS)
    assert metric("threads_api_requests_total", endpoint="container") == polls

    # Pacing: never two polls of one container closer than the poll interval.
    for cid in SCRIPTS:
        times = fake_graph.polls(cid)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= POLL_INTERVAL - 0.05 for g in gaps), (cid, gaps)
    # Final containers are never polled again.
    assert len(fake_graph.polls("201")) == 4  # IN_PROGRESS, IN_PROGRESS, FINISHED, PUBLISHED
    assert len(fake_graph.polls("202")) == 2
    assert len(fake_graph.polls("203")) == 1
    assert len(fake_graph.polls("204")) >= 5  # the stuck one, at its (here fast) stuck pace

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                            capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_probe_reports_only_its_account(fake_graph: FakeGraph,
                                        container_config: Callable[..., Path],
                                        run_exporter: Callable[..., RunningExporter]) -> None:
    fake_graph.token(BRAND_TOKEN, healthy(6))
    fake_graph.container("301", container("ERROR", "INVALID_DURATION"))
    config = container_config(fake_graph.base_url, track=[{"account": "brand", "id": "301"}])
    found = run_exporter("--config.file", str(config)).metrics("/probe", account="brand")
    assert value(found, "threads_container_errors_total", account="brand",
                 error_message="INVALID_DURATION") == 1
    assert value(found, "threads_containers", account="brand", status="ERROR") == 1


def many_containers(tmp_path: Path, accounts: dict[str, list[str]],
                    api: dict | None = None) -> Config:
    return parse_config({
        "api": {"max_concurrency": 16, **(api or {})},
        "accounts": [{"name": n, "access_token": f"upstream-token-{n}", "quotas": ["posts"]}
                     for n in accounts],
        "containers": {"state_path": str(tmp_path / "state.db"),
                       "track": [{"account": n, "id": i} for n, ids in accounts.items()
                                 for i in ids]},
    }, env={})


def slow_upstream(accounts: dict[str, list[str]], latency: float | tuple[float, float],
                  ) -> FakeGraph:
    """Quota readings at once, container polls (all IN_PROGRESS) after `latency`."""
    fake = FakeGraph(latency={"container": latency})
    for n, ids in accounts.items():
        fake.token(f"upstream-token-{n}", healthy(2))
        for i in ids:
            fake.container(i, container("IN_PROGRESS"))
    return fake


def test_ten_thousand_containers_within_the_scrape_timeout(
        tmp_path: Path, serve_exporter: Callable[..., tuple[Exporter, str]]) -> None:
    n = 10_000
    timeout = 1.5  # seconds, as Prometheus announces it
    accounts = {"brand": [str(10**9 + i) for i in range(n)]}
    upstream = slow_upstream(accounts, latency=0.02)
    _, base = serve_exporter(many_containers(tmp_path, accounts),
                             transport=upstream.transport())
    durations, backlogs = [], []
    with httpx.Client(timeout=30) as http:
        for _ in range(4):
            start = time.monotonic()
            r = http.get(f"{base}/metrics",
                         headers={"X-Prometheus-Scrape-Timeout-Seconds": str(timeout)})
            durations.append(time.monotonic() - start)
            assert r.status_code == 200
            found = samples(r.text)
            backlogs.append(value(found, "threads_containers_poll_backlog", account="brand"))
            assert value(found, "threads_up", account="brand") == 1
    polls = upstream.answered("container")
    print(f"scrape seconds with {n} due containers: {[round(d, 3) for d in durations]}; "
          f"backlog {backlogs}; polls {sum(polls.values())}")
    assert max(durations) < timeout
    assert upstream.peak_in_flight("container") <= 16
    assert max(polls.values()) == 1  # none polled twice within its interval
    polled = sum(polls.values())
    assert 300 < polled < n  # real progress, but not everything at once
    # Under load the first scrape may end before the state file is read (it then reports no
    # container series, there being no earlier reading); the ones that report it shrink.
    reported = [b for b in backlogs if b is not None]
    assert len(reported) >= 3 and backlogs[1:] == reported[-3:]
    assert reported == sorted(reported, reverse=True) and reported[-1] < n
    # Oldest due first: all were due at once, so the ids polled are any; none twice.


def test_upstream_slower_than_the_scrape_starts_only_what_can_run(tmp_path: Path) -> None:
    accounts = {"brand": [str(10**9 + i) for i in range(1000)]}
    upstream = slow_upstream(accounts, latency=2.0)
    exp = Exporter(many_containers(tmp_path, accounts, {"timeout_seconds": 5}),
                   transport=upstream.transport())
    try:
        for _ in range(3):
            start = time.monotonic()
            families = {f.name: f for f in exp.scrape(time.monotonic() + 0.5)}
            assert time.monotonic() - start < 1.0
            assert families["threads_up"].samples[0].value == 1
        # One poll per worker was started and is still running; nothing queued behind them.
        assert 0 < upstream.in_flight("container") <= 15  # one slot of 16 kept for quotas
        assert sum(upstream.answered("container").values()) == 0
    finally:
        exp.close()


def test_a_probe_is_not_held_up_by_another_scrape_still_polling(tmp_path: Path) -> None:
    """A scrape waits for the commit of what was polled before it reports, not for results
    that a concurrent scrape's round keeps producing."""
    accounts = {"brand": [str(10**9 + i) for i in range(10_000)],
                "other": [str(2 * 10**9)]}
    # Answers spread out in time (10-30 ms), as real ones are, not in lockstep waves.
    upstream = slow_upstream(accounts, latency=(0.01, 0.03))
    exp = Exporter(many_containers(tmp_path, accounts), transport=upstream.transport())
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
        # Once its answers are coming in and being committed:
        wait_for(lambda: sum(upstream.answered("container").values()),
                 until=lambda n: n >= 50, timeout=4)
        still_polling = busy.is_alive()
        start = time.monotonic()
        families = {f.name: f for f in exp.scrape(time.monotonic() + 1, "other")}
        took = time.monotonic() - start
        busy.join()
    finally:
        exp.close()
    assert still_polling
    assert took < 1.0
    assert families["threads_exporter_container_store_up"].samples[0].value == 1
    polled = {s.labels["status"]: s.value for s in families["threads_containers"].samples}
    assert polled["IN_PROGRESS"] == 1


def _scraped_twice(fake_graph: FakeGraph, container_config: Callable[..., Path],
                   run_exporter: Callable[..., RunningExporter], cid: str,
                   interval: float) -> int:
    """An exporter tracking one container that stays IN_PROGRESS (due every second),
    scraped twice `interval` seconds apart; the container's polls so far."""
    fake_graph.token(BRAND_TOKEN, healthy(20))
    fake_graph.container(cid, *[container("IN_PROGRESS")] * 200)
    config = container_config(fake_graph.base_url, track=[{"account": "brand", "id": cid}])
    exporter = run_exporter("--config.file", str(config))
    exporter.metrics()
    time.sleep(interval)
    exporter.metrics()
    return len(fake_graph.polls(cid))


def test_polling_goes_on_between_scrapes_and_stops_without_a_scraper(
        fake_graph: FakeGraph, container_config: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    """Scraped every ~3 s, a container due every second is polled in between too (at its own
    interval, not the scrape interval); once scrapes stop, so does polling."""
    after_scrape = _scraped_twice(fake_graph, container_config, run_exporter, "401", 3)
    # No scrape from here on: polls keep coming at about one a second for ~3 s.
    wait_for(lambda: len(fake_graph.polls("401")) >= after_scrape + 2, timeout=15,
             what="polls between scrapes")
    # The carried window is at most the last interval (3 s, bounded by MAX_CARRY): polling
    # stops, and the count stays put.
    def settled() -> bool:
        before = len(fake_graph.polls("401"))
        time.sleep(2.5)
        return len(fake_graph.polls("401")) == before
    wait_for(settled, timeout=30, what="polling to stop without a scraper")


def test_between_scrapes_a_container_is_polled_at_its_interval_not_a_step_late(
        fake_graph: FakeGraph, container_config: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    """Its answer takes half a second; it is due a second after the poll started. An idle
    round that looked again only every second would poll it every 1.5 s."""
    fake_graph.latency = {"container": 0.5}
    first = _scraped_twice(fake_graph, container_config, run_exporter, "402", 4)
    wait_for(lambda: len(fake_graph.polls("402")) >= first + 4, timeout=20,
             what="polls after the scrape")
    times = fake_graph.polls("402")[first - 1:]
    # Arrival times: load lengthens some gaps, never shortens one; the median stays near 1 s.
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert 0.95 < statistics.median(gaps) < 1.3, gaps
