"""Threads API client: classification, parsing, redaction, retry and permission fallback.

The upstream here is httpx.MockTransport with scripted answers, independent of the simulator.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest

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
    return json.dumps({"error": {"message": message, "type": "THApiException", "code": code,
                                 "fbtrace_id": "x", **extra}}).encode()


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
        (400, graph(190, error_subcode=463), "token_invalid"),
        (400, graph(4), "rate_limited"),
        (400, graph(17), "rate_limited"),
        (400, graph(32), "rate_limited"),
        (400, graph(613), "rate_limited"),
        (500, graph(10), "permission"),  # permission comes back as HTTP 500 on Threads
        (400, graph(200), "permission"),
        (400, graph(299), "permission"),
        (400, graph(100, error_subcode=33), "invalid_request"),
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
        error = graph_error(400, graph(code, is_transient=True))
        assert (error.reason, error.transient) == ("rate_limited", False)
    for code, reason in ((190, "token_invalid"), (10, "permission"), (100, "invalid_request")):
        error = graph_error(400, graph(code, is_transient=True))
        assert (error.reason, error.transient) == (reason, False)
    assert graph_error(500, graph(2, is_transient=False)).transient  # server errors: once
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


# --- the client over a scripted transport --------------------------------------------------


def run(handler: Callable[[httpx.Request], httpx.Response], coro_fn, **api: object):
    async def main():
        client = ThreadsClient(ApiConfig(base_url="http://threads.test", **api), ApiStats(),
                               transport=httpx.MockTransport(handler))
        try:
            return await coro_fn(client), client
        finally:
            await client.aclose()

    return asyncio.run(main())


def deadline(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_token_travels_as_query_parameter_with_explicit_fields():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"data": [full_row()]})

    quotas, _ = run(handler, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert set(quotas) == set(ALL)
    (url,) = seen
    assert url.path == "/v1.0/me/threads_publishing_limit"
    assert url.params["access_token"] == TOKEN
    assert url.params["fields"] == ("quota_usage,config,reply_quota_usage,reply_config,"
                                    "delete_quota_usage,delete_config,"
                                    "location_search_quota_usage,location_search_config")


def test_permission_failure_falls_back_per_group_and_is_remembered():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        fields = request.url.params["fields"]
        calls.append(fields)
        if "delete" in fields:
            return httpx.Response(500, content=graph(10, "(#10) no permission"))
        row = {k: v for k, v in full_row().items() if k in fields.split(",")}
        return httpx.Response(200, json={"data": [row]})

    async def twice(client: ThreadsClient):
        first = await client.read_quotas(ACCOUNT, deadline())
        second = await client.read_quotas(ACCOUNT, deadline())
        return first, second, client.denied_groups(ACCOUNT)

    (first, second, denied), client = run(handler, twice)
    assert set(first) == set(second) == {"posts", "replies", "location_searches"}
    assert denied == {"deletes"}
    # combined, then one per group, then one combined request without deletes
    assert len(calls) == 1 + 4 + 1
    assert "delete" not in calls[-1]
    assert client.stats.errors[("brand", "publishing_limit", "permission")] == 2


def test_permission_on_every_group_is_a_permission_failure():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content=graph(10))

    with pytest.raises(ApiError) as info:
        run(handler, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert info.value.reason == "permission"


def test_transient_failure_is_retried_once():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(502, content=b"<html>Bad Gateway</html>")
        return httpx.Response(200, json={"data": [full_row()]})

    quotas, client = run(handler, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert "posts" in quotas
    assert len(calls) == 2
    assert client.stats.requests[("brand", "publishing_limit")] == 2
    assert client.stats.errors[("brand", "publishing_limit", "server_error")] == 1


@pytest.mark.parametrize("code", [4, 17, 32, 613, 190, 100, 24])
@pytest.mark.parametrize("is_transient", [True, None])
def test_non_transient_failure_is_not_retried(code, is_transient):
    calls = []
    extra = {} if is_transient is None else {"is_transient": is_transient}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, content=graph(code, **extra))

    with pytest.raises(ApiError):
        run(handler, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert len(calls) == 1


def test_no_retry_when_the_deadline_has_passed():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500, content=graph(2))

    with pytest.raises(ApiError):
        run(handler, lambda c: c.read_quotas(ACCOUNT, time.monotonic() + 0.01))
    assert len(calls) <= 1


def test_connection_error_never_carries_the_url():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    with pytest.raises(ApiError) as info:
        run(handler, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert info.value.reason == "connection"
    assert TOKEN not in str(info.value)
    assert "access_token" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_slow_upstream_times_out_at_the_request_timeout():
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={"data": [full_row()]})

    start = time.monotonic()
    with pytest.raises(ApiError) as info:
        run(handler, lambda c: c.publishing_limit(ACCOUNT, ["posts"], deadline(0.3)),
            timeout_seconds=0.2)
    assert info.value.reason == "timeout"
    assert time.monotonic() - start < 2


def test_oversized_body_is_refused_without_reading_it_all():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * (5 << 20))

    with pytest.raises(ApiError) as info:
        run(handler, lambda c: c.publishing_limit(ACCOUNT, ["posts"], deadline()))
    assert info.value.reason == "bad_response"


def test_concurrency_never_exceeds_max_concurrency():
    active = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return httpx.Response(200, json={"data": [full_row()]})

    accounts = [Account(f"a{i}", "me", f"t{i}") for i in range(30)]

    async def many(client: ThreadsClient):
        return await asyncio.gather(*(client.read_quotas(a, deadline()) for a in accounts))

    results, _ = run(handler, many, max_concurrency=4)
    assert len(results) == 30
    assert peak == 4


def test_quota_readings_go_before_due_polls_and_polls_never_take_the_last_slot():
    started: list[str] = []
    active = {"poll": 0, "reading": 0}
    peak = {"poll": 0, "all": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        kind = "reading" if request.url.path.endswith("_limit") else "poll"
        started.append(kind)
        active[kind] += 1
        peak["poll"] = max(peak["poll"], active["poll"])
        peak["all"] = max(peak["all"], sum(active.values()))
        await asyncio.sleep(0.05)
        active[kind] -= 1
        if kind == "reading":
            return httpx.Response(200, json={"data": [full_row()]})
        return httpx.Response(200, json={"status": "IN_PROGRESS"})

    async def both(client: ThreadsClient):
        polls = [asyncio.create_task(client.container_status(ACCOUNT, str(10**9 + i),
                                                             deadline()))
                 for i in range(100)]
        await asyncio.sleep(0.01)  # every poll slot busy, 85 polls waiting
        begun = len(started)
        start = time.monotonic()
        first = asyncio.create_task(client.read_quotas(Account("a0", "me", "t0"), deadline()))
        await asyncio.sleep(0.005)
        assert started[begun:] == ["reading"]  # at once, on the slot polls never take
        rest = [client.read_quotas(Account(f"a{i}", "me", f"t{i}"), deadline())
                for i in range(1, 6)]
        await asyncio.gather(first, *rest)
        took = time.monotonic() - start
        await asyncio.gather(*polls)
        return begun, took

    (begun, took), _ = run(handler, both, max_concurrency=16)
    assert begun == 15 and peak["poll"] == 15 and peak["all"] <= 16
    # The waiting readings took the next freed slots, ahead of the 85 polls due before them.
    assert started[begun:begun + 6] == ["reading"] * 6
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


def test_container_id_must_be_digits_before_any_call():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, json={"status": "FINISHED"})

    with pytest.raises(ValueError):
        run(handler, lambda c: c.container_status(ACCOUNT, "../me", deadline()))
    assert calls == []


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


def test_usage_headers_are_recorded_per_account():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [full_row()]},
                              headers={"X-App-Usage": '{"call_count": 40}'})

    _, client = run(handler, lambda c: c.read_quotas(ACCOUNT, deadline()))
    assert client.stats.usage == {("brand", "app", "call_count"): 0.4}
