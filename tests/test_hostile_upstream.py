"""Answers no real API sends but a broken proxy or a hostile upstream can: every one becomes
a classified, counted, paced failure (bad_response), and none can blow up memory."""

from __future__ import annotations

import asyncio
import gzip
import resource
import time
import zlib
from pathlib import Path

import httpx
import pytest

from threads_exporter.app import Exporter
from threads_exporter.config import Account, ApiConfig, parse_config
from threads_exporter.graph.client import ThreadsClient
from threads_exporter.graph.errors import ApiError
from threads_exporter.graph.stats import ApiStats
from threads_exporter.graph.transport import MAX_BODY_BYTES

ACCOUNT = Account("brand", "me", "hostile-upstream-token")
QUOTAS = b'{"data":[{"quota_usage":1,"config":{"quota_total":250,"quota_duration":86400}}]}'


def gzip_bomb(inflated: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    out = [compressor.compress(block) for _ in range(inflated >> 20)]
    return b"".join(out) + compressor.flush()


HOSTILE = {
    "invalid gzip": ({"Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage-not-deflate"),
    "gzip bomb": ({"Content-Encoding": "gzip"}, gzip_bomb(512 << 20)),
    "deflate bomb": ({"Content-Encoding": "deflate"}, zlib.compress(b"{" * (64 << 20), 9)),
    "unknown encoding": ({"Content-Encoding": "br"}, b"\x0b\x02\x80"),
    "deep JSON": ({}, b"[" * 200_000 + b"]" * 200_000),
    "deep JSON object": ({}, b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    "NaN usage": ({}, b'{"data":[{"quota_usage":NaN,"config":{"quota_total":250,'
                      b'"quota_duration":86400}}]}'),
    "Infinity total": ({}, b'{"data":[{"quota_usage":1,"config":{"quota_total":Infinity,'
                           b'"quota_duration":86400}}]}'),
    "NaN expiry": ({}, b'{"data":{"expires_at":NaN}}'),
    "NaN status": ({}, b'{"status":NaN}'),
    "huge plain body": ({}, b'{"data":[{"pad":"' + b"x" * (4 << 20) + b'"}]}'),
}


def streamed(headers: dict[str, str], body: bytes) -> httpx.Response:
    """A response streamed in 64 KiB chunks as a socket delivers it (httpx would read, and
    decode, a bytes body whole before the exporter ever saw it)."""
    async def chunks():
        for i in range(0, len(body), 1 << 16):
            yield body[i:i + (1 << 16)]

    return httpx.Response(200, headers=headers, content=chunks())


def call(headers: dict[str, str], body: bytes, what: str):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return streamed(headers, body)

    async def main():
        client = ThreadsClient(ApiConfig(base_url="http://threads.test"), ApiStats(),
                               transport=httpx.MockTransport(handler))
        try:
            deadline = time.monotonic() + 5
            if what == "quotas":
                return await client.read_quotas(ACCOUNT, deadline), client.stats, calls
            if what == "expiry":
                return await client.token_expiry(ACCOUNT, deadline), client.stats, calls
            return await client.container_status(ACCOUNT, "1788", deadline), client.stats, calls
        finally:
            await client.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("what", ["quotas", "expiry", "container"])
def test_a_hostile_answer_is_one_counted_bad_response(name: str, what: str) -> None:
    headers, body = HOSTILE[name]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(ApiError) as info:
        call(headers, body, what)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert info.value.reason == "bad_response", str(info.value)
    # The 512 MiB bomb never inflates past the 1 MiB cap (plus what the test itself holds).
    assert grown < 24 * 1024, f"peak RSS grew by {grown} KiB"


def test_a_well_formed_gzip_answer_is_read() -> None:
    quotas, _, calls = call({"Content-Encoding": "gzip"}, gzip.compress(QUOTAS), "quotas")
    assert quotas["posts"].usage == 1 and len(calls) == 1


def test_the_cap_is_on_the_decoded_body() -> None:
    fits = b'{"status":"FINISHED","pad":"' + b"x" * (MAX_BODY_BYTES - 100) + b'"}'
    answer, _, _ = call({"Content-Encoding": "gzip"}, gzip.compress(fits), "container")
    assert answer.status == "FINISHED"


@pytest.mark.parametrize("name", ["invalid gzip", "deep JSON", "NaN status"])
def test_a_container_answering_garbage_is_polled_once_per_interval(tmp_path: Path,
                                                                    name: str) -> None:
    headers, body = HOSTILE[name]
    polls: list[float] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/1788"):
            polls.append(time.monotonic())
            return streamed(headers, body)
        return httpx.Response(200, content=QUOTAS)

    config = parse_config({
        "api": {"base_url": "http://threads.test"},
        "accounts": [{"name": "brand", "access_token": "hostile-upstream-token",
                      "quotas": ["posts"]}],
        "containers": {"state_path": str(tmp_path / "state.db"), "api_token": "api-token",
                       "track": [{"account": "brand", "id": "1788"}]},
    }, env={})
    exp = Exporter(config, transport=httpx.MockTransport(upstream))
    try:
        for _ in range(5):
            exp.scrape(time.monotonic() + 1)
        [entry] = exp.containers()
    finally:
        exp.close()
    assert len(polls) == 1  # the next poll is a poll interval (60 s) away, not at once
    assert entry["last_error_reason"] == "bad_response" and entry["poll_errors"] == 1
    assert exp.stats.errors[("brand", "container", "bad_response")] == 1


def test_scrapes_do_not_each_cost_an_fsync(tmp_path: Path) -> None:
    """The store proves the disk writable at most every HEARTBEAT_EVERY seconds when nothing
    else is written: a commit is an fsync, which a 1 s scrape interval must not pay for."""
    from threads_exporter.containers.store import Store
    from threads_exporter.containers.tracker import HEARTBEAT_EVERY, ContainerTracker

    config = parse_config({
        "accounts": [{"name": "brand", "access_token": "t"}],
        "containers": {"state_path": str(tmp_path / "s.db"), "api_token": "a"}}, env={})
    now = [1_000_000.0]
    beats: list[float] = []

    async def main() -> None:
        client = ThreadsClient(config.api, transport=httpx.MockTransport(
            lambda r: httpx.Response(500)))
        store = Store(config.containers.state_path)
        real = store.heartbeat
        store.heartbeat = lambda t: (beats.append(t), real(t))[1]  # type: ignore[method-assign]
        tracker = ContainerTracker(client, config, store, clock=lambda: now[0])
        try:
            for _ in range(40):  # 40 scrapes, one a second
                await tracker.scrape(time.monotonic() + 1)
                now[0] += 1
        finally:
            await tracker.aclose()
            await client.aclose()

    asyncio.run(main())
    assert len(beats) == -(-40 // int(HEARTBEAT_EVERY)), beats
