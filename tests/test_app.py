"""The exporter's scrape path in-process: deadline and render reserve."""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest

from fake_graph import FakeGraph, hang
from threads_exporter.app import Exporter
from threads_exporter.config import Account, ApiConfig, Config
from threads_exporter.web.routes import scrape_budget


@pytest.fixture
def hanging_exporter(fake_graph: FakeGraph):
    """An exporter whose one account's upstream never answers."""
    fake_graph.token("token", hang)
    config = Config(api=ApiConfig(base_url="http://threads.test", timeout_seconds=30),
                    accounts=(Account("slow", "me", "token"),))
    exporter = Exporter(config, transport=fake_graph.transport())
    yield exporter
    exporter.close()


@pytest.mark.parametrize(
    ("header", "budget"),
    [("10", 9.5), ("2.5", 2.0), (None, 9.5), ("soon", 9.5), ("-3", 9.5), ("nan", 9.5),
     ("0.2", 0.05), ("100000", 299.5)],
)
def test_scrape_budget_is_prometheus_timeout_minus_offset(header, budget):
    assert scrape_budget(header, 0.5) == pytest.approx(budget)


def test_unfinished_account_answers_at_the_deadline_as_timeout(hanging_exporter):
    start = time.monotonic()
    families = {f.name: f for f in hanging_exporter.scrape(time.monotonic() + 1)}
    assert time.monotonic() - start < 1.5
    assert [s.value for s in families["threads_up"].samples] == [0]
    reasons = [s.labels["reason"] for s in families["threads_last_error_reason"].samples]
    assert reasons == ["timeout"]


def test_slow_encoding_is_kept_in_reserve_so_answers_stay_in_time(hanging_exporter):
    def slow_gzip(body: bytes) -> bytes:
        time.sleep(0.6)
        return b"encoded"

    # The first exposition learns how long encoding takes.
    hanging_exporter.exposition(time.monotonic() + 1.5, None, generate_latest, slow_gzip)
    start = time.monotonic()
    assert hanging_exporter.exposition(start + 1.5, None, generate_latest,
                                       slow_gzip) == b"encoded"
    # Without the reserve: 1.5 s waiting for the account plus 0.6 s encoding, past 2 s.
    assert time.monotonic() - start < 2.0
