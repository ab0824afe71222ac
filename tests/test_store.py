"""The container state store: atomic changes, the single-process lock, pruning, a full disk,
and a real exporter killed with SIGKILL and restarted."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from exposition import Samples, value
from fake_graph import FakeGraph, container, healthy
from procs import BRAND_TOKEN, REGISTRATION, Proc, RunningExporter, exporter_cmd, free_port
from threads_exporter.app import Exporter
from threads_exporter.config import parse_config
from threads_exporter.containers.store import Change, Store, StoreError, StoreLocked
from waiting import eventually, wait_for


@pytest.fixture
def store(tmp_path: Path):
    s = Store(str(tmp_path / "state.db"))
    yield s
    s.close()


def test_registration_is_committed_before_it_returns(store: Store, tmp_path: Path) -> None:
    assert store.register("brand", ["1", "2"], 100.0) == [True, True]
    assert store.register("brand", ["2", "3"], 200.0) == [False, True]
    # Another connection (another process, after a crash) sees it at once.
    other = sqlite3.connect(tmp_path / "state.db")
    rows = other.execute("SELECT id, registered_at, next_poll_at FROM containers ORDER BY id")
    assert rows.fetchall() == [("1", 100.0, 100.0), ("2", 100.0, 100.0), ("3", 200.0, 200.0)]
    other.close()
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = store._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)  # 2 = FULL


def test_change_and_counters_are_one_transaction(store: Store) -> None:
    store.register("brand", ["1", "2"], 100.0)
    good = Change("brand", "1", None, 0, {"status": "ERROR", "polls": 1},
                  (("errors", "brand", "UNKNOWN", 1.0),))
    bad = Change("brand", "2", None, 0, {"registered_at": 5.0},  # not settable: fails
                 (("errors", "brand", "UNKNOWN", 1.0),))
    with pytest.raises(ValueError):
        store.apply([good, bad])
    assert store.get("brand", "1").status is None  # rolled back with the failing one
    assert store.tallies(200, 0).counters == {}
    assert store.apply([good]) == 1
    assert store.tallies(200, 0).counters == {("errors", "brand", "UNKNOWN"): 1.0}


def test_a_stale_change_is_dropped_with_its_counters(store: Store) -> None:
    store.register("brand", ["1"], 100.0)
    first = Change("brand", "1", None, 0, {"status": "ERROR", "polls": 1},
                   (("errors", "brand", "UNKNOWN", 1.0),))
    assert store.apply([first]) == 1
    assert store.apply([first]) == 0  # read before the first applied: would double-count
    assert store.tallies(200, 0).counters == {("errors", "brand", "UNKNOWN"): 1.0}


def test_prune_forgets_final_containers_but_keeps_counters(store: Store) -> None:
    store.register("brand", ["1", "2"], 100.0)
    store.apply([Change("brand", "1", None, 0, {
        "status": "PUBLISHED", "polls": 1, "next_poll_at": None, "finished_at": 150.0},
        (("status_changes", "brand", "PUBLISHED", 1.0),))])
    assert store.prune(149.0) == 0
    assert store.prune(151.0) == 1
    assert [r.id for r in store.listing()] == ["2"]
    assert store.tallies(200, 0).counters == {("status_changes", "brand", "PUBLISHED"): 1.0}


def test_due_is_oldest_first_and_excludes_final(store: Store) -> None:
    store.register("brand", ["1"], 300.0)
    store.register("brand", ["2"], 100.0)
    store.register("other", ["3"], 200.0)
    store.apply([Change("brand", "2", None, 0, {"next_poll_at": None, "polls": 1})])
    assert [r.id for r in store.due(1000, 10)] == ["3", "1"]
    assert [r.id for r in store.due(1000, 1)] == ["3"]
    assert [r.id for r in store.due(1000, 10, ["brand"])] == ["1"]
    assert store.due(250, 10, ["brand"]) == []


def test_next_due_is_the_soonest_container_still_polled(store: Store) -> None:
    assert store.next_due() is None
    store.register("brand", ["1"], 300.0)
    store.register("brand", ["2"], 100.0)
    store.register("other", ["3"], 200.0)
    store.apply([Change("brand", "2", None, 0, {"next_poll_at": None, "polls": 1})])
    assert store.next_due() == 200.0
    assert store.next_due(["brand"]) == 300.0
    assert store.next_due(["nobody"]) is None


def test_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    first = Store(path)
    with pytest.raises(StoreLocked) as e:
        Store(path)
    assert path in str(e.value) and "another threads-exporter" in str(e.value)
    first.close()
    Store(path).close()  # the lock goes with the holder


def test_unusable_location_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as e:
        Store(str(tmp_path / "missing-dir" / "state.db"))
    assert "missing-dir" in str(e.value)


@pytest.fixture
def upstream(fake_graph: FakeGraph) -> FakeGraph:
    """Quota readings for the in-process exporters below; their containers in progress."""
    fake_graph.token("upstream-token-full", healthy(2)).token("upstream-token-ro", healthy(2))
    for cid in ["1", "2", *(str(10**20 + i) for i in range(2000))]:
        fake_graph.container(cid, container("IN_PROGRESS"))
    return fake_graph


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_full_or_read_only_disk_keeps_quota_metrics(tmp_path: Path, upstream: FakeGraph,
                                                    fault: str) -> None:
    config = parse_config({
        "accounts": [{"name": "brand", "access_token": "upstream-token-full", "quotas": ["posts"]}],
        "containers": {"state_path": str(tmp_path / "state.db"), "api_token": "t0ken-full",
                       "track": [{"account": "brand", "id": "1"}]},
    }, env={})
    exp = Exporter(config, transport=upstream.transport())
    try:
        found = {f.name: f for f in exp.scrape(time.monotonic() + 2.5)}
        assert found["threads_exporter_container_store_up"].samples[0].value == 1
        db = exp.tracker.store._db
        if fault == "full":
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
            with pytest.raises(StoreError, match="full"):  # once the last page is used up
                for i in range(2000):
                    exp.register("brand", str(10**20 + i))
        else:
            db.execute("PRAGMA query_only = ON")
            with pytest.raises(StoreError, match="readonly"):
                exp.register("brand", "2")
        found = {f.name: f for f in exp.scrape(time.monotonic() + 2.5)}
        assert found["threads_up"].samples[0].value == 1
        assert found["threads_quota_usage"].samples[0].value == 3
        assert found["threads_exporter_container_store_up"].samples[0].value == 0
        # The container numbers stay visible (the ones registered meanwhile may have been
        # polled too, by the round the first scrape left running).
        assert any(s.value >= 1 for s in found["threads_containers"].samples)
        db.execute("PRAGMA max_page_count = 1000000")  # space freed
        db.execute("PRAGMA query_only = OFF")
        found = {f.name: f for f in exp.scrape(time.monotonic() + 2.5)}
        assert found["threads_exporter_container_store_up"].samples[0].value == 1
        assert exp.register("brand", "2")[0] is True
    finally:
        exp.close()


def test_unusable_state_file_at_start_keeps_serving(tmp_path: Path,
                                                   upstream: FakeGraph) -> None:
    bad = tmp_path / "no-such-dir" / "state.db"
    config = parse_config({
        "accounts": [{"name": "brand", "access_token": "upstream-token-ro", "quotas": ["posts"]}],
        "containers": {"state_path": str(bad), "api_token": "t0ken-ro"},
    }, env={})
    exp = Exporter(config, transport=upstream.transport())
    try:
        found = {f.name: f for f in exp.scrape(time.monotonic() + 2.5)}
        assert found["threads_up"].samples[0].value == 1
        assert found["threads_exporter_container_store_up"].samples[0].value == 0
        with pytest.raises(StoreError, match="no-such-dir"):
            exp.register("brand", "2")
    finally:
        exp.close()


# --- real processes ----------------------------------------------------------------------


def listing(exporter: RunningExporter) -> dict:
    r = httpx.get(exporter.url("/api/v1/containers"), headers=REGISTRATION, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def container_series(found: Samples) -> Samples:
    """The container counters and gauges that must survive a restart."""
    return {k: v for k, v in found.items()
            if k[0].startswith(("threads_container", "threads_exporter_container"))
            and k[0] != "threads_containers_poll_backlog"}


def test_two_exporters_on_one_state_file(tmp_path: Path, container_config: Callable[..., Path],
                                         run_exporter: Callable[..., RunningExporter]) -> None:
    config = container_config("http://127.0.0.1:9")
    run_exporter("--config.file", str(config))
    second = Proc(exporter_cmd("--web.listen-address", f"127.0.0.1:{free_port()}",
                               "--config.file", str(config)), cwd=tmp_path)
    assert second.popen.wait(20) == 1
    out = second.output()
    second.stop()
    assert str(tmp_path / "state.db") in out and "another threads-exporter" in out


def test_kill_9_and_restart_lose_nothing(fake_graph: FakeGraph,
                                         container_config: Callable[..., Path],
                                         run_exporter: Callable[..., RunningExporter]) -> None:
    scripts = {
        "101": [container("IN_PROGRESS"), container("FINISHED"), container("PUBLISHED")],
        "102": [container("IN_PROGRESS"), container("ERROR", "INVALID_DURATION")],
        "103": [container("ERROR", "SOMETHING_NEW")],
        "104": [container("IN_PROGRESS")],
    }
    fake_graph.token(BRAND_TOKEN, healthy(6))
    for cid, answers in scripts.items():
        fake_graph.container(cid, *answers)
    # 104 stays IN_PROGRESS; a long pace keeps it from being polled again after the restart.
    config = container_config(fake_graph.base_url, poll_interval_seconds=1,
                              stuck_poll_interval_seconds=3600, stuck_after_seconds=1)
    exporter = run_exporter("--config.file", str(config))
    for cid in scripts:
        r = httpx.post(exporter.url("/api/v1/containers"), headers=REGISTRATION, timeout=10,
                       json={"account": "brand", "id": cid})
        assert r.status_code == 201

    def played_out() -> None:
        """Scraped until every script is at its end and the exporter has committed the
        stuck one's second poll: nothing is due any more."""
        found = exporter.metrics(timeout_header=3)
        assert value(found, "threads_containers", account="brand", status="PUBLISHED") == 1
        assert value(found, "threads_container_errors_total", account="brand",
                     error_message="INVALID_DURATION") == 1
        assert value(found, "threads_container_errors_total", account="brand",
                     error_message="OTHER") == 1
        assert {c["id"]: c["polls"] for c in listing(exporter)["containers"]}["104"] >= 2

    eventually(played_out, timeout=30, interval=0.3)
    before = exporter.metrics(timeout_header=3)
    listed = listing(exporter)
    exporter.kill()
    served = fake_graph.served()

    restarted = run_exporter("--config.file", str(config))
    assert listing(restarted) == listed
    after = restarted.metrics(timeout_header=3)
    assert container_series(after) == container_series(before)
    assert len(container_series(after)) == 38  # every container series, zeros too
    assert listing(restarted) == listed
    restarted.stop()
    assert fake_graph.served() == served  # nothing final or stuck was asked again


def test_registration_under_load_survives_kill_9(
        container_config: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    """Every 201 the API answered is in the state after a SIGKILL mid-stream."""
    config = container_config("http://127.0.0.1:9")
    acknowledged: list[str] = []
    exporter = run_exporter("--config.file", str(config))
    stop = threading.Event()

    def register() -> None:
        with httpx.Client(timeout=5) as http:
            for i in range(10_000):
                if stop.is_set():
                    return
                try:
                    r = http.post(exporter.url("/api/v1/containers"), headers=REGISTRATION,
                                  json={"account": "brand", "id": str(1000 + i)})
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    acknowledged.append(str(1000 + i))

    t = threading.Thread(target=register)
    t.start()
    wait_for(lambda: len(acknowledged), until=lambda n: n > 10, timeout=30)
    assert t.is_alive()  # the kill lands mid-stream
    exporter.kill()
    stop.set()
    t.join(10)
    assert len(acknowledged) > 10
    restarted = run_exporter("--config.file", str(config))
    listed = {c["id"] for c in listing(restarted)["containers"]}
    assert set(acknowledged) <= listed
