"""Answers no real API sends but a broken proxy or a hostile upstream can: every one becomes
a classified, counted, paced failure (bad_response), and none can blow up memory."""

from __future__ import annotations

import asyncio
import gzip
import resource
import time
import zlib
from pathlib import Path

import pytest

from fake_graph import Answer, FakeGraph
from threads_exporter.app import Exporter
from threads_exporter.config import Account, ApiConfig, parse_config
from threads_exporter.graph.client import ThreadsClient
from threads_exporter.graph.errors import ApiError
from threads_exporter.graph.parse import parse_debug_token
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
    "NaN status": ({}, b'{"status":NaN}'),
    "huge plain body": ({}, b'{"data":[{"pad":"' + b"x" * (4 << 20) + b'"}]}'),
}


def call(fake: FakeGraph, headers: dict[str, str], body: bytes, what: str, over: str = "socket"):
    """One call of the client, answered by the fake with exactly these bytes (streamed in
    chunks as a socket delivers them, never decoded by the fake): over loopback through the
    exporter's own engine (over="socket"), or through the fake's in-process transport."""
    behaviour = lambda req: Answer(200, body, headers=headers)  # noqa: E731
    fake.token(ACCOUNT.access_token, behaviour)
    fake.container("1788", behaviour)

    async def main():
        client = ThreadsClient(
            ApiConfig(base_url=fake.base_url if over == "socket" else "http://threads.test"),
            ApiStats(), transport=fake.transport() if over == "transport" else None)
        try:
            deadline = time.monotonic() + 5
            if what == "quotas":
                return await client.read_quotas(ACCOUNT, deadline), client.stats
            return await client.container_status(ACCOUNT, "1788", deadline), client.stats
        finally:
            await client.aclose()

    return asyncio.run(main())


OVER = ["socket", "transport"]  # the engine's own bytes, and httpx's Response directly


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("what", ["quotas", "container"])
@pytest.mark.parametrize("over", OVER)
def test_a_hostile_answer_is_one_counted_bad_response(fake_graph: FakeGraph, name: str,
                                                      what: str, over: str) -> None:
    headers, body = HOSTILE[name]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(ApiError) as info:
        call(fake_graph, headers, body, what, over)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert info.value.reason == "bad_response", str(info.value)
    # The 512 MiB bomb never inflates past the 1 MiB cap (plus what the test itself holds).
    assert grown < 24 * 1024, f"peak RSS grew by {grown} KiB"
    assert fake_graph.calls() == 1  # not retried: a bad answer is not a transient one


@pytest.mark.parametrize("over", OVER)
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_well_formed_compressed_answer_is_read(fake_graph: FakeGraph, over: str,
                                                 encoding: str) -> None:
    """Over the socket this is what shows the engine hands over the raw bytes: were they
    inflated on the way (aiohttp's default), _read_bounded would fail to inflate them again."""
    packed = gzip.compress(QUOTAS) if encoding == "gzip" else zlib.compress(QUOTAS)
    quotas, _ = call(fake_graph, {"Content-Encoding": encoding}, packed, "quotas", over)
    assert quotas["posts"].usage == 1 and fake_graph.calls() == 1


@pytest.mark.parametrize("over", OVER)
def test_the_cap_is_on_the_decoded_body(fake_graph: FakeGraph, over: str) -> None:
    fits = b'{"status":"FINISHED","pad":"' + b"x" * (MAX_BODY_BYTES - 100) + b'"}'
    answer, _ = call(fake_graph, {"Content-Encoding": "gzip"}, gzip.compress(fits), "container",
                     over)
    assert answer.status == "FINISHED"


@pytest.mark.parametrize("name", ["invalid gzip", "deep JSON", "NaN status"])
def test_a_container_answering_garbage_is_polled_once_per_interval(
        tmp_path: Path, fake_graph: FakeGraph, name: str) -> None:
    headers, body = HOSTILE[name]
    fake_graph.token(ACCOUNT.access_token, lambda req: Answer(200, QUOTAS))
    fake_graph.container("1788", lambda req: Answer(200, body, headers=headers))
    config = parse_config({
        "api": {"base_url": "http://threads.test"},
        "accounts": [{"name": "brand", "access_token": ACCOUNT.access_token,
                      "quotas": ["posts"]}],
        "containers": {"state_path": str(tmp_path / "state.db"), "api_token": "api-token",
                       "track": [{"account": "brand", "id": "1788"}]},
    }, env={})
    exp = Exporter(config, transport=fake_graph.transport())
    try:
        for _ in range(5):
            exp.scrape(time.monotonic() + 1)
        [entry] = exp.containers()
    finally:
        exp.close()
    # One poll: the next is a poll interval (60 s) away, not at once (it was ~100/s).
    assert len(fake_graph.polls("1788")) == 1
    assert entry["last_error_reason"] == "bad_response" and entry["poll_errors"] == 1
    assert exp.stats.of("brand").errors[("container", "bad_response")] == 1


def test_nan_and_infinity_are_no_expiry() -> None:
    for body in (b'{"data":{"expires_at":NaN}}', b'{"data":{"expires_at":Infinity}}'):
        with pytest.raises(ApiError, match="bad_response"):
            parse_debug_token(body)


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
        client = ThreadsClient(config.api, transport=FakeGraph().transport())
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


def test_a_slow_store_is_not_reported_down(tmp_path: Path) -> None:
    """A scrape that runs out of time reading the state file says nothing about whether the
    file takes writes: threads_exporter_container_store_up stays 1."""
    from threads_exporter.containers.store import Store
    from threads_exporter.containers.tracker import ContainerTracker

    config = parse_config({
        "accounts": [{"name": "brand", "access_token": "t"}],
        "containers": {"state_path": str(tmp_path / "s.db"), "api_token": "a"}}, env={})

    async def main() -> tuple[bool, bool]:
        client = ThreadsClient(config.api, transport=FakeGraph().transport())
        store = Store(config.containers.state_path)
        tracker = ContainerTracker(client, config, store)
        try:
            first = await tracker.scrape(time.monotonic() + 2)
            real = store.tallies
            store.tallies = lambda *a: (time.sleep(1.0), real(*a))[1]  # type: ignore[method-assign]
            slow = await tracker.scrape(time.monotonic() + 0.3)
            return first.store_ok, slow.store_ok
        finally:
            await tracker.aclose()
            await client.aclose()

    assert asyncio.run(main()) == (True, True)
