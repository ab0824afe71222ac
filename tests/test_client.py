"""Threads API client: classification, parsing, redaction, retry and permission fallback.

The upstream here is the Graph API fake's in-process transport (tests/fake_graph.py),
independent of the simulator.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from fake_graph import (
    FakeGraph,
    body,
    container,
    delay,
    error_body,
    healthy,
    huge,
    refuse,
    sequence,
)
from fake_graph import graph_error as error_answer
from threads_exporter.config import Account, ApiConfig
from threads_exporter.graph.client import ThreadsClient
from threads_exporter.graph.errors import ApiError, graph_error
from threads_exporter.graph.gate import Gate
from threads_exporter.graph.parse import (
    Quota,
    parse_container,
    parse_debug_token,
    parse_publishing_limit,
    parse_usage_headers,
)
from threads_exporter.graph.stats import ApiStats
from threads_exporter.redact import REDACT

TOKEN = "EAAGtestTOKENvalue1234567890"
ACCOUNT = Account("brand", "me", TOKEN)
ALL = ("posts", "replies", "deletes", "location_searches")


def graph(code: int, message: str = "boom", **extra: object) -> bytes:
    """A Graph error envelope (subcode=..., transient=...), as the fake sends it (with a short
    fbtrace_id: the bodies name the tests)."""
    return json.dumps(error_body(code, message, trace="x", **extra)).encode()  # type: ignore[arg-type]


def full_row() -> dict:
    cfg = {"quota_total": 250, "quota_duration": 86400}
    return {"quota_usage": 4, "config": cfg,
            "reply_quota_usage": 7, "reply_config": {**cfg, "quota_total": 1000},
            "delete_quota_usage": 1, "delete_config": {**cfg, "quota_total": 100},
            "location_search_quota_usage": 0,
            "location_search_config": {**cfg, "quota_total": 500}}


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (400, graph(190, subcode=463), "token_invalid"),
        (400, graph(4), "rate_limited"),
        (400, graph(17), "rate_limited"),
        (400, graph(32), "rate_limited"),
        (400, graph(613), "rate_limited"),
        (500, graph(10), "permission"),  # permission comes back as HTTP 500 on Threads
        (400, graph(200), "permission"),
        (400, graph(299), "permission"),
        (400, graph(100, subcode=33), "invalid_request"),
        (500, graph(100), "invalid_request"),  # the code wins over the status
        (500, graph(1), "server_error"),
        (503, graph(2), "server_error"),
        (400, graph(24), "invalid_request"),  # unknown code: by status
        (500, graph(99999), "server_error"),
        (502, b"<html><h1>502 Bad Gateway</h1></html>", "server_error"),
        (503, b"", "server_error"),
        (429, b"slow down", "rate_limited"),
        (404, b"not here", "invalid_request"),
        (200, b'{"data":[{"quota_us', "bad_response"),
        (200, b"OK", "bad_response"),
    ],
)
def test_failures_are_classified_by_graph_code_then_status(status, body, reason):
    error = graph_error(status, body)
    assert error is not None
    assert error.reason == reason


def test_a_success_is_not_an_error():
    assert graph_error(200, b'{"data": []}') is None


def test_the_graph_code_decides_and_is_transient_never_makes_throttling_retryable():
    # Real throttling answers carry is_transient: true with code 4 (also 17, 32, 613).
    for code in (4, 17, 32, 613):
        error = graph_error(400, graph(code, transient=True))
        assert (error.reason, error.transient) == ("rate_limited", False)
    for code, reason in ((190, "token_invalid"), (10, "permission"), (100, "invalid_request")):
        error = graph_error(400, graph(code, transient=True))
        assert (error.reason, error.transient) == (reason, False)
    assert graph_error(500, graph(2, transient=False)).transient  # server errors: once
    assert graph_error(502, b"<html>").transient


def test_all_groups_are_parsed():
    body = json.dumps({"data": [full_row()]}).encode()
    quotas = parse_publishing_limit(body, ALL)
    assert quotas == {"posts": Quota(4, 250, 86400), "replies": Quota(7, 1000, 86400),
                      "deletes": Quota(1, 100, 86400), "location_searches": Quota(0, 500, 86400)}


def test_a_missing_group_is_unknown_not_zero():
    row = full_row()
    del row["delete_quota_usage"]
    del row["location_search_config"]
    quotas = parse_publishing_limit(json.dumps({"data": [row]}).encode(), ALL)
    assert set(quotas) == {"posts", "replies"}


@pytest.mark.parametrize(
    "bad",
    [
        {"quota_usage": None}, {"quota_usage": "4"}, {"quota_usage": -1},
        {"quota_usage": 10**20}, {"quota_usage": True}, {"quota_usage": 1.5},
        {"config": None}, {"config": {"quota_total": 250}},
        {"config": {"quota_total": 250, "quota_duration": 0}},
    ],
)
def test_malformed_group_is_dropped_and_others_kept(bad):
    row = {**full_row(), **bad, "unexpected_extra": {"x": 1}}
    quotas = parse_publishing_limit(json.dumps({"data": [row]}).encode(), ALL)
    assert "posts" not in quotas
    assert quotas["replies"] == Quota(7, 1000, 86400)


@pytest.mark.parametrize(
    "body",
    [b'{"data": []}', b'{"data": {}}', b'{"result": 1}', b"[]", b'{"data": [1]}',
     b'{"data": [{"unrelated": 1}]}', b"not json", b'{"data":[{"quota_usage":'],
)
def test_response_without_any_quota_is_bad_response(body):
    with pytest.raises(ApiError) as info:
        parse_publishing_limit(body, ALL)
    assert info.value.reason == "bad_response"


def test_container_parsing_keeps_error_message_only_for_error():
    assert parse_container(b'{"status":"ERROR","error_message":"INVALID_BIT_RATE","id":"1"}'
                           ).error_message == "INVALID_BIT_RATE"
    assert parse_container(b'{"status":"FINISHED","error_message":"x"}').error_message is None
    with pytest.raises(ApiError):
        parse_container(b'{"status":"DONE"}')


def test_debug_token_expiry_zero_means_never():
    assert parse_debug_token(b'{"data":{"expires_at":1800000000}}') == 1800000000
    assert parse_debug_token(b'{"data":{"expires_at":0}}') is None
    with pytest.raises(ApiError):
        parse_debug_token(b'{"data":{}}')


def test_redactor_masks_tokens_in_urls_headers_and_known_secrets():
    REDACT.set_secrets([TOKEN])
    text = (f"GET https://x/v1.0/me?fields=a&access_token=abc123 Bearer xyz "
            f"input_token=qq {TOKEN}")
    out = REDACT(text)
    for secret in ("abc123", "xyz", "qq", TOKEN):
        assert secret not in out
    assert out.count("<redacted>") == 4


def test_error_message_echoing_the_token_is_redacted():
    REDACT.set_secrets([TOKEN])
    error = graph_error(400, graph(190, f"Invalid token {TOKEN}"))
    assert TOKEN not in str(error)


# --- the client over the fake's transport -------------------------------------------------


def run(fake: FakeGraph, coro_fn, **api: object):
    async def main():
        client = ThreadsClient(ApiConfig(base_url="http://threads.test", **api), ApiStats(),
                               transport=fake.transport())
        try:
            return await coro_fn(client), client
        finally:
            await client.aclose()

    return asyncio.run(main())


def deadline(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_token_travels_as_query_parameter_with_explicit_fields(fake_graph: FakeGraph):
    fake_graph.token(TOKEN, healthy(3))
    quotas, _ = run(fake_graph, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert set(quotas) == set(ALL)
    (request,) = fake_graph.requests()
    assert request.path == "/v1.0/me/threads_publishing_limit"
    assert request.token == TOKEN
    assert request.query["fields"] == ("quota_usage,config,reply_quota_usage,reply_config,"
                                       "delete_quota_usage,delete_config,"
                                       "location_search_quota_usage,location_search_config")


def test_permission_failure_falls_back_per_group_and_is_remembered(fake_graph: FakeGraph):
    fake_graph.token(TOKEN, error_answer(500, 10, "(#10) no permission",
                                        deny="delete_quota_usage"))

    async def twice(client: ThreadsClient):
        first = await client.read_quotas(ACCOUNT, deadline())
        second = await client.read_quotas(ACCOUNT, deadline())
        return first, second, client.denied_groups(ACCOUNT)

    (first, second, denied), client = run(fake_graph, twice)
    assert set(first) == set(second) == {"posts", "replies", "location_searches"}
    assert denied == {"deletes"}
    # combined, then one per group, then one combined request without deletes
    calls = [r.query["fields"] for r in fake_graph.requests("publishing_limit")]
    assert len(calls) == 1 + 4 + 1
    assert "delete" not in calls[-1]
    assert client.stats.of("brand").errors[("publishing_limit", "permission")] == 2


def test_permission_on_every_group_is_a_permission_failure(fake_graph: FakeGraph):
    fake_graph.token(TOKEN, error_answer(500, 10, "boom"))
    with pytest.raises(ApiError) as info:
        run(fake_graph, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert info.value.reason == "permission"


def test_transient_failure_is_retried_once(fake_graph: FakeGraph):
    fake_graph.token(TOKEN, sequence(body(502, b"<html>Bad Gateway</html>", "text/html"),
                                     healthy(3)))
    quotas, client = run(fake_graph, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert "posts" in quotas
    assert fake_graph.calls(TOKEN) == 2
    assert client.stats.of("brand").requests["publishing_limit"] == 2
    assert client.stats.of("brand").errors[("publishing_limit", "server_error")] == 1


@pytest.mark.parametrize("code", [4, 17, 32, 613, 190, 100, 24])
@pytest.mark.parametrize("transient", [True, None])
def test_non_transient_failure_is_not_retried(fake_graph: FakeGraph, code, transient):
    # Real throttling answers carry is_transient: true; it must not buy an immediate retry.
    fake_graph.token(TOKEN, error_answer(400, code, "boom", transient=transient))
    with pytest.raises(ApiError):
        run(fake_graph, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert fake_graph.calls(TOKEN) == 1


def test_no_retry_when_the_deadline_has_passed(fake_graph: FakeGraph):
    fake_graph.token(TOKEN, error_answer(500, 2, "boom"))
    with pytest.raises(ApiError):
        run(fake_graph, lambda c: c.read_quotas(ACCOUNT, time.monotonic() + 0.01))
    assert fake_graph.calls(TOKEN) <= 1


def test_connection_error_never_carries_the_url(fake_graph: FakeGraph):
    fake_graph.token(TOKEN, refuse)  # the transport's error names the URL, token and all
    with pytest.raises(ApiError) as info:
        run(fake_graph, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert info.value.reason == "connection"
    assert TOKEN not in str(info.value)
    assert "access_token" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_slow_upstream_times_out_at_the_request_timeout(fake_graph: FakeGraph):
    fake_graph.token(TOKEN, delay(5, healthy(3)))
    start = time.monotonic()
    with pytest.raises(ApiError) as info:
        run(fake_graph, lambda c: c.publishing_limit(ACCOUNT, ["posts"], deadline(0.3)),
            timeout_seconds=0.2)
    assert info.value.reason == "timeout"
    assert time.monotonic() - start < 2


def test_oversized_body_is_refused_without_reading_it_all(fake_graph: FakeGraph):
    fake_graph.token(TOKEN, huge(5))  # 5 MiB, in 64 KiB chunks
    with pytest.raises(ApiError) as info:
        run(fake_graph, lambda c: c.publishing_limit(ACCOUNT, ["posts"], deadline()))
    assert info.value.reason == "bad_response"
    assert fake_graph.bytes_sent(TOKEN) < 2 << 20  # it stopped reading past the 1 MiB bound


def test_concurrency_never_exceeds_max_concurrency():
    accounts = [Account(f"a{i}", "me", f"t{i}") for i in range(30)]
    fake = FakeGraph({a.access_token: healthy(i) for i, a in enumerate(accounts)},
                     latency=0.02)

    async def many(client: ThreadsClient):
        return await asyncio.gather(*(client.read_quotas(a, deadline()) for a in accounts))

    results, _ = run(fake, many, max_concurrency=4)
    assert len(results) == 30
    assert fake.peak_in_flight() == 4


async def until(condition, timeout: float = 5.0) -> None:
    """Yield to the event loop until the condition holds (at most `timeout` seconds)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.001)


def test_quota_readings_go_before_due_polls_and_polls_never_take_the_last_slot():
    readers = [Account(f"a{i}", "me", f"t{i}") for i in range(6)]
    fake = FakeGraph({a.access_token: healthy(i) for i, a in enumerate([ACCOUNT, *readers])},
                     {str(10**9 + i): [container("IN_PROGRESS")] for i in range(100)},
                     latency=0.05)

    def started() -> list[str]:
        kinds = {"publishing_limit": "reading", "container": "poll"}
        return [kinds[r.endpoint] for r in fake.requests()]

    async def both(client: ThreadsClient):
        polls = [asyncio.create_task(client.container_status(ACCOUNT, str(10**9 + i),
                                                             deadline()))
                 for i in range(100)]
        await until(lambda: fake.in_flight("container") == 15)  # every poll slot busy
        begun = len(started())
        start = time.monotonic()
        first = asyncio.create_task(client.read_quotas(readers[0], deadline()))
        await until(lambda: len(started()) > begun)
        assert started()[begun:] == ["reading"]  # at once, on the slot polls never take
        rest = [client.read_quotas(a, deadline()) for a in readers[1:]]
        await asyncio.gather(first, *rest)
        took = time.monotonic() - start
        await asyncio.gather(*polls)
        return begun, took

    (begun, took), _ = run(fake, both, max_concurrency=16)
    assert begun == 15 and fake.peak_in_flight("container") == 15
    assert fake.peak_in_flight() <= 16
    # The waiting readings took the next freed slots, ahead of the 85 polls due before them.
    assert started()[begun:begun + 6] == ["reading"] * 6
    assert took < 0.15  # one in-flight poll's latency, not the backlog's (85 x 0.05 / 15)


def test_gate_hands_a_slot_on_when_its_waiter_is_cancelled():
    async def main():
        gate = Gate(2, reserved=1)
        await gate.acquire(poll=True)
        poll = asyncio.create_task(gate.acquire(poll=True))  # the one poll slot is taken
        await gate.acquire(poll=False)
        readings = [asyncio.create_task(gate.acquire(poll=False)) for _ in range(2)]
        await asyncio.sleep(0)
        gate.release(poll=True)
        readings[0].cancel()  # handed the slot, cancelled before it ran: passed on
        await asyncio.gather(readings[0], return_exceptions=True)
        assert readings[1].done() and not poll.done()
        poll.cancel()  # cancelled while waiting: forgotten
        await asyncio.gather(poll, return_exceptions=True)
        gate.release(poll=False)
        gate.release(poll=False)
        for _ in range(2):  # nothing leaked: both slots are free again
            await asyncio.wait_for(gate.acquire(poll=False), 0.1)

    asyncio.run(main())


def test_container_id_must_be_digits_before_any_call(fake_graph: FakeGraph):
    fake_graph.container("1", container("FINISHED"))
    with pytest.raises(ValueError):
        run(fake_graph, lambda c: c.container_status(ACCOUNT, "../me", deadline()))
    assert fake_graph.requests() == []


def test_usage_headers_become_ratios_when_present():
    usage = parse_usage_headers(httpx.Headers({
        "X-App-Usage": '{"call_count": 28, "total_time": 25, "total_cputime": 25}',
        "X-Business-Use-Case-Usage": '{"123": [{"type": "THREADS", "call_count": 5, '
                                     '"total_cputime": 90, "total_time": 7}]}',
    }))
    assert usage[("app", "call_count")] == 0.28
    assert usage[("business", "total_cputime")] == 0.9
    assert parse_usage_headers(httpx.Headers({"X-App-Usage": "garbage"})) == {}
    assert parse_usage_headers(httpx.Headers({})) == {}


def test_usage_headers_are_recorded_per_account(fake_graph: FakeGraph):
    fake_graph.token(TOKEN, healthy(3, headers={"X-App-Usage": '{"call_count": 40}'}))
    _, client = run(fake_graph, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert client.stats.of("brand").usage == {("app", "call_count"): 0.4}
