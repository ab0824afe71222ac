"""The exporter's own HTTP engine (graph/transport.py, httpx over aiohttp) against the fake's
real loopback server: every way a connection goes wrong gets its own reason (a refusal is
`connection`, only silence is `timeout`), the timeouts bound each request, the environment's
proxy is used, and no failure's text or log line carries the token."""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest

from fake_graph import Answer, FakeGraph, delay, hang, healthy, refuse, reset_mid_body
from procs import free_port
from threads_exporter.config import Account, ApiConfig
from threads_exporter.graph.client import ThreadsClient
from threads_exporter.graph.errors import ApiError
from threads_exporter.graph.stats import ApiStats
from threads_exporter.graph.transport import Transport

TOKEN = "transport-test-token-4f1d"
ACCOUNT = Account("brand", "me", TOKEN)


def read(base_url: str, deadline: float = 5.0, **api: Any) -> ApiError:
    """The ApiError of one quota reading through the real engine (no test transport)."""
    async def main() -> ApiError:
        client = ThreadsClient(ApiConfig(base_url=base_url, **api), ApiStats())
        try:
            await client.publishing_limit(ACCOUNT, ["posts"], time.monotonic() + deadline)
        except ApiError as e:
            return e
        finally:
            await client.aclose()
        raise AssertionError("the call succeeded")

    return asyncio.run(main())


def assert_no_token(error: ApiError, caplog: pytest.LogCaptureFixture) -> None:
    assert TOKEN not in str(error) and "access_token" not in str(error), str(error)
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert TOKEN not in text and "access_token" not in text, text


def test_a_refused_connection_is_a_connection_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    error = read(f"http://127.0.0.1:{free_port()}")
    assert error.reason == "connection", str(error)
    assert "ConnectError" in str(error)
    assert any("retrying" in r.getMessage() for r in caplog.records)  # the retry logged it
    assert_no_token(error, caplog)


def test_an_unresolvable_host_is_a_connection_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    error = read("http://threads-api.invalid")
    # A resolver that cannot answer at all would make it a timeout; both are honest.
    assert error.reason in ("connection", "timeout"), str(error)
    assert_no_token(error, caplog)


@pytest.mark.parametrize("behaviour", [refuse, reset_mid_body], ids=["closed", "mid-body"])
def test_a_connection_closed_early_is_a_connection_failure(
        fake_graph: FakeGraph, caplog: pytest.LogCaptureFixture,
        behaviour: Callable[..., Answer]) -> None:
    caplog.set_level(logging.DEBUG)
    fake_graph.token(TOKEN, behaviour)
    error = read(fake_graph.base_url)
    assert error.reason == "connection", str(error)
    assert fake_graph.calls(TOKEN) == 2  # transient: retried once
    assert_no_token(error, caplog)


MALFORMED = {
    "oversized header": {"X-Padding": "x" * 100_000},
    "header without a colon": {"X-Fine": "yes\r\nnot a header line"},
    "bad content-length": {"X-Fine": "yes\r\nContent-Length: ten"},
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_http_answer_is_a_classified_failure(
        fake_graph: FakeGraph, caplog: pytest.LogCaptureFixture, name: str) -> None:
    caplog.set_level(logging.DEBUG)
    fake_graph.token(TOKEN, lambda req: Answer(200, b'{"data":[]}', headers=MALFORMED[name]))
    error = read(fake_graph.base_url)
    assert error.reason == "connection", str(error)  # httpx.RemoteProtocolError, as h11 had it
    assert_no_token(error, caplog)


def test_an_upstream_that_never_answers_is_cut_off_at_the_timeout(
        fake_graph: FakeGraph, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake_graph.token(TOKEN, hang)
    start = time.monotonic()
    error = read(fake_graph.base_url, deadline=30, timeout_seconds=0.5)
    took = time.monotonic() - start
    assert error.reason == "timeout", str(error)
    assert fake_graph.calls(TOKEN) == 2 and took < 5, took  # two attempts of 0.5 s each
    assert_no_token(error, caplog)


async def _transport_get(base_url: str, timeout: float,
                         check: Callable[[Transport], Awaitable[Any]]) -> Any:
    transport = Transport(f"{base_url}/v1.0", 4, timeout)
    try:
        return await check(transport)
    finally:
        await transport.aclose()


def test_the_engine_itself_bounds_a_silent_read_at_the_timeout(fake_graph: FakeGraph) -> None:
    """Without the client's own deadline around it: the per-request timeout extension."""
    fake_graph.token(TOKEN, hang)

    async def check(transport: Transport) -> float:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await transport.get("/me/threads_publishing_limit", {"access_token": TOKEN})
        return time.monotonic() - start

    took = asyncio.run(_transport_get(fake_graph.base_url, 0.5, check))
    assert 0.4 < took < 3, took


def test_the_engine_reads_the_raw_body_and_closes_without_warnings(
        fake_graph: FakeGraph) -> None:
    fake_graph.token(TOKEN, healthy(7))

    async def check(transport: Transport) -> int:
        status, body, _ = await transport.get("/me/threads_publishing_limit",
                                              {"access_token": TOKEN, "fields": "quota_usage"})
        assert body.startswith(b'{"data": [{"quota_usage": '), body  # decoded JSON
        return status

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Unclosed client session" and the like
        assert asyncio.run(_transport_get(fake_graph.base_url, 5, check)) == 200


def test_the_environments_proxy_carries_the_calls(fake_graph: FakeGraph,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """threads.test resolves nowhere: the call succeeds only through HTTP_PROXY (the fake,
    which serves the absolute-form request), and fails when NO_PROXY names the host."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake_graph.base_url)
    fake_graph.token(TOKEN, healthy(3))

    async def ok() -> None:
        client = ThreadsClient(ApiConfig(base_url="http://threads.test"), ApiStats())
        try:
            quotas = await client.publishing_limit(ACCOUNT, ["posts"], time.monotonic() + 5)
            assert quotas["posts"].usage > 0
        finally:
            await client.aclose()

    asyncio.run(ok())
    assert fake_graph.calls(TOKEN) == 1
    monkeypatch.setenv("NO_PROXY", "threads.test")
    error = read("http://threads.test")
    assert error.reason in ("connection", "timeout"), str(error)
    assert fake_graph.calls(TOKEN) == 1


def test_closing_waits_for_the_calls_in_flight(fake_graph: FakeGraph) -> None:
    """A reload swaps the transport while calls are in flight: they finish on the old
    connections, which close after them (not under them), without an unclosed session."""
    fake_graph.token(TOKEN, delay(0.5, healthy(1)))

    async def check(transport: Transport) -> list[int]:
        calls = [asyncio.create_task(transport.get("/me/threads_publishing_limit",
                                                   {"access_token": TOKEN}))
                 for _ in range(3)]
        async with asyncio.timeout(5):  # all three at the upstream
            while fake_graph.in_flight() < 3:
                await asyncio.sleep(0.01)
        await transport.aclose()
        answers = await asyncio.wait_for(asyncio.gather(*calls), 5)
        session = transport._pool.client  # type: ignore[attr-defined]
        assert not isinstance(session, aiohttp.ClientSession), "left open"
        return [status for status, _, _ in answers]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert asyncio.run(_transport_get(fake_graph.base_url, 5, check)) == [200] * 3
