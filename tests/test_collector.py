"""Collector: cache, shared in-flight reads, backoff, deadline, and the families it builds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from prometheus_client.exposition import generate_latest

from exposition import labels, samples, series, value
from threads_exporter.calls import api_families
from threads_exporter.config import Account, ApiConfig, Config
from threads_exporter.graph.errors import ApiError
from threads_exporter.graph.parse import Quota
from threads_exporter.graph.stats import ApiStats
from threads_exporter.metrics import histogram_buckets
from threads_exporter.quotas.families import quota_families
from threads_exporter.quotas.reader import QuotaReader as QuotaCollector
from threads_exporter.quotas.reader import Reading, backoff_delay

QUOTAS = {"posts": Quota(10, 250, 86400), "replies": Quota(20, 1000, 86400)}


@dataclass
class FakeClient:
    """Scripted answers per account: a dict of quotas, an ApiError, or a delay then quotas."""

    answers: dict[str, object]
    delay: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    token_calls: int = 0
    expiry: float | ApiError | None = 1_900_000_000.0
    api: ApiConfig = field(default_factory=lambda: ApiConfig(timeout_seconds=5))

    async def read_quotas(self, account: Account, deadline: float) -> dict[str, Quota]:
        self.calls[account.name] = self.calls.get(account.name, 0) + 1
        await asyncio.sleep(self.delay.get(account.name, 0.01))
        answer = self.answers[account.name]
        if isinstance(answer, ApiError):
            raise answer
        return answer  # type: ignore[return-value]

    async def token_expiry(self, account: Account, deadline: float) -> float | None:
        self.token_calls += 1
        if isinstance(self.expiry, ApiError):
            raise self.expiry
        return self.expiry


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def make(answers: dict[str, object], **kw: object) -> tuple[QuotaCollector, FakeClient, Clock]:
    client = FakeClient(answers, **kw)
    accounts = tuple(Account(n, "me", f"token-{n}") for n in answers)
    clock = Clock()
    collector = QuotaCollector(client, Config(accounts=accounts, cache_ttl_seconds=60),
                               clock=clock)
    return collector, client, clock


LOOP = asyncio.new_event_loop()  # one loop for all scrapes, as in the exporter


def scrape(collector: QuotaCollector, clock: Clock, budget: float = 2.0, times: int = 1):
    async def main():
        return await asyncio.gather(
            *(collector.scrape(clock() + budget) for _ in range(times)))

    return LOOP.run_until_complete(main())


def by_name(readings: list[Reading]) -> dict[str, Reading]:
    return {r.account: r for r in readings}


def test_concurrent_scrapes_share_one_request_per_account():
    collector, client, clock = make({"a": QUOTAS, "b": QUOTAS}, delay={"a": 0.2, "b": 0.2})
    results = scrape(collector, clock, times=10)
    assert client.calls == {"a": 1, "b": 1}
    assert all(r.up for readings in results for r in readings)


def test_reading_is_cached_for_the_ttl_then_refreshed():
    collector, client, clock = make({"a": QUOTAS})
    scrape(collector, clock)
    clock.offset = 59
    scrape(collector, clock)
    assert client.calls == {"a": 1}
    clock.offset = 61
    scrape(collector, clock)
    assert client.calls == {"a": 2}


def test_failure_reports_reason_without_quotas_and_backs_off():
    error = ApiError("rate_limited", "(#4) Application request limit reached", 4)
    collector, client, clock = make({"bad": error, "good": QUOTAS})
    (readings,) = scrape(collector, clock)
    bad = by_name(readings)["bad"]
    assert (bad.up, bad.quotas, bad.error_reason) == (False, None, "rate_limited")
    assert by_name(readings)["good"].quotas == QUOTAS
    clock.offset = backoff_delay("rate_limited", 1) - 1
    scrape(collector, clock)
    assert client.calls["bad"] == 1
    clock.offset = backoff_delay("rate_limited", 1) + 1
    scrape(collector, clock)
    assert client.calls["bad"] == 2


def test_backoff_grows_and_is_longer_for_rate_limits():
    assert backoff_delay("server_error", 1) < backoff_delay("server_error", 2)
    assert backoff_delay("rate_limited", 1) > backoff_delay("server_error", 1)
    assert backoff_delay("server_error", 50) == 300


def test_slow_account_times_out_alone_and_fills_the_cache_later():
    collector, client, clock = make({"slow": QUOTAS, "fast": QUOTAS}, delay={"slow": 0.5})
    start = time.monotonic()
    (readings,) = scrape(collector, clock, budget=0.2)
    assert time.monotonic() - start < 0.45
    slow, fast = by_name(readings)["slow"], by_name(readings)["fast"]
    assert (slow.up, slow.error_reason) == (False, "timeout")
    assert fast.up
    LOOP.run_until_complete(asyncio.sleep(0.4))
    (readings,) = scrape(collector, clock, budget=0.2)
    assert by_name(readings)["slow"].up
    assert client.calls["slow"] == 1


def test_token_expiry_failure_leaves_expiry_unknown_and_account_up():
    collector, _, clock = make({"a": QUOTAS}, expiry=ApiError("permission", "no"))
    (readings,) = scrape(collector, clock)
    assert readings[0].up
    assert readings[0].token_expiry is None


def test_token_expiry_is_asked_rarely():
    collector, client, clock = make({"a": QUOTAS})
    scrape(collector, clock)
    clock.offset = 3000
    scrape(collector, clock)
    assert client.token_calls == 1
    clock.offset = 3700
    scrape(collector, clock)
    assert client.token_calls == 2


def test_reconfigure_keeps_cache_of_unchanged_accounts_only():
    collector, client, clock = make({"a": QUOTAS, "b": QUOTAS})
    scrape(collector, clock)
    accounts = (Account("a", "me", "token-a"), Account("b", "me", "rotated"))
    collector.reconfigure(Config(accounts=accounts))
    scrape(collector, clock)
    assert client.calls == {"a": 1, "b": 2}


# --- families ------------------------------------------------------------------------------


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def exposition(families) -> str:
    return generate_latest(_Families(families)).decode()


def test_failed_reading_yields_up_zero_and_reason_but_never_zero_quotas():
    found = samples(exposition(quota_families([
        Reading("ok", QUOTAS, last_success=1700000000.0, token_expiry=1800000000.0),
        Reading("down", None, "token_invalid", "expired", last_success=1600000000.0),
    ])))
    assert value(found, "threads_up", account="ok") == 1
    assert value(found, "threads_up", account="down") == 0
    assert value(found, "threads_quota_usage", account="ok", quota="posts") == 10
    assert value(found, "threads_quota_limit", account="ok", quota="replies") == 1000
    assert value(found, "threads_quota_window_seconds", account="ok", quota="posts") == 86400
    assert not [lbl for _, lbl in found if ("account", "down") in lbl and "quota" in dict(lbl)]
    assert series(found, "threads_last_error_reason") == {
        labels(account="down", reason="token_invalid"): 1}
    assert value(found, "threads_last_success_timestamp_seconds", account="down") == 1.6e9
    assert value(found, "threads_token_expiry_timestamp_seconds", account="ok") == 1.8e9


def test_api_families_count_requests_errors_and_latency():
    stats = ApiStats()
    stats.record("a", "publishing_limit", 0.03, None)
    stats.record("a", "publishing_limit", 7.0, "timeout")
    stats.record("b", "container", 0.2, None)
    found = samples(exposition(api_families(stats)))
    assert value(found, "threads_api_requests_total", account="a",
                 endpoint="publishing_limit") == 2
    assert value(found, "threads_api_errors_total", account="a", endpoint="publishing_limit",
                 reason="timeout") == 1
    assert value(found, "threads_api_request_duration_seconds_bucket",
                 endpoint="publishing_limit", le="0.05") == 1
    assert value(found, "threads_api_request_duration_seconds_bucket",
                 endpoint="publishing_limit", le="+Inf") == 2
    assert value(found, "threads_api_request_duration_seconds_count", endpoint="container") == 1
    only_b = samples(exposition(api_families(stats, {"b"})))
    accounts = {dict(lbl).get("account") for _, lbl in only_b}
    assert "b" in accounts and "a" not in accounts


def test_histogram_buckets_are_cumulative():
    assert histogram_buckets([1, 2], [3, 0, 2]) == [("1.0", 3), ("2.0", 3), ("+Inf", 5)]
