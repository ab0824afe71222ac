"""The registration API: auth, validation (nothing reaches the upstream), 404/201/200."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fake_graph import FakeGraph, container, healthy
from threads_exporter.app import Exporter
from threads_exporter.config import Config, load_config, parse_config
from threads_exporter.containers import scheduler
from threads_exporter.containers.store import Store
from threads_exporter.containers.tracker import ContainerTracker
from threads_exporter.graph.client import ThreadsClient
from threads_exporter.web.server import Limits

API_TOKEN = "s3cret-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TOKEN = "upstream-token-abc"

Api = tuple[str, FakeGraph, Exporter]


@pytest.fixture
def upstream(fake_graph: FakeGraph) -> FakeGraph:
    return fake_graph.token(TOKEN, healthy(2)).container("42", container("IN_PROGRESS"))


def config(tmp_path: Path, **containers: Any) -> Config:
    return parse_config({
        "accounts": [{"name": "brand", "access_token": TOKEN, "quotas": ["posts"]}],
        "containers": {"state_path": str(tmp_path / "state.db"), **containers},
    }, env={})


@pytest.fixture
def api(tmp_path: Path, upstream: FakeGraph,
        serve_exporter: Callable[..., tuple[Exporter, str]]) -> Api:
    exporter, base = serve_exporter(config(tmp_path, api_token=API_TOKEN),
                                    transport=upstream.transport())
    return base, upstream, exporter


def post(base: str, payload: Any = None, *, content: bytes | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/containers", json=payload, content=content,
                      headers=AUTH if headers is None else headers, timeout=10)


def test_register_new_then_known_then_listed(api: Api) -> None:
    base, _, _ = api
    r = post(base, {"account": "brand", "id": "17889615691921648"})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"] == "application/json"
    entry = r.json()
    assert entry["account"] == "brand" and entry["id"] == "17889615691921648"
    assert entry["status"] is None and entry["polls"] == 0
    assert post(base, {"account": "brand", "id": "17889615691921648"}).status_code == 200
    listing = httpx.get(f"{base}/api/v1/containers", headers=AUTH).json()["containers"]
    assert [(c["account"], c["id"]) for c in listing] == [("brand", "17889615691921648")]
    assert set(listing[0]) >= {"status", "error_message", "first_seen", "last_seen", "polls"}


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Basic {API_TOKEN}"},
    {"Authorization": "Bearer"},
    {"Authorization": f"Bearer {API_TOKEN}x"},
])
def test_without_the_bearer_token_401(api: Api,
                                      headers: dict[str, str]) -> None:
    base, _, exporter = api
    r = post(base, {"account": "brand", "id": "123"}, headers=headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert API_TOKEN not in r.text
    assert httpx.get(f"{base}/api/v1/containers", headers=headers).status_code == 401
    assert exporter.containers() == []


@pytest.mark.parametrize(("payload", "content"), [
    ({"account": "brand", "id": "../me"}, None),
    ({"account": "brand", "id": "1 OR 1"}, None),
    ({"account": "brand", "id": "me"}, None),
    ({"account": "brand", "id": "123/threads_publishing_limit"}, None),
    ({"account": "brand", "id": "\uff11\uff12\uff13"}, None),  # fullwidth digits
    ({"account": "brand", "id": "123\n"}, None),
    ({"account": "brand", "id": 17889615691921648}, None),  # a number loses digits in JS
    ({"account": "brand", "id": ""}, None),
    ({"account": "brand"}, None),
    ({"id": "123"}, None),
    ({"account": 5, "id": "123"}, None),
    ([], None),  # an empty batch
    (None, b"not json"),
    (None, b""),
    (None, b"\xff\xfe"),
])
def test_bad_requests_400_and_nothing_upstream(api: Api,
                                               payload: Any, content: bytes | None) -> None:
    base, upstream, exporter = api
    r = post(base, payload, content=content)
    assert r.status_code == 400, r.text
    assert "error" in r.json()
    assert exporter.containers() == []
    exporter.scrape(time.monotonic() + 4.5)  # a scrape would poll anything registered
    assert upstream.container_paths() == []


def test_unknown_account_404(api: Api) -> None:
    base, upstream, exporter = api
    r = post(base, {"account": "nobody", "id": "123"})
    assert r.status_code == 404 and "nobody" in r.json()["error"]
    exporter.scrape(time.monotonic() + 4.5)
    assert upstream.container_paths() == []


def test_registered_container_is_polled_with_its_id_only(
        api: Api) -> None:
    base, upstream, exporter = api
    assert post(base, {"account": "brand", "id": "42"}).status_code == 201
    exporter.scrape(time.monotonic() + 4.5)
    assert upstream.container_paths() == ["/v1.0/42"]
    (poll,) = upstream.requests("container")
    assert (poll.token, poll.fields) == (TOKEN, ["status", "error_message"])


def test_no_api_token_configured_means_closed(
        tmp_path: Path, upstream: FakeGraph,
        serve_exporter: Callable[..., tuple[Exporter, str]]) -> None:
    upstream.container("7", container("IN_PROGRESS"))
    exporter, base = serve_exporter(config(tmp_path, track=[{"account": "brand", "id": "7"}]),
                                    transport=upstream.transport())
    for r in (post(base, {"account": "brand", "id": "123"}),
              httpx.get(f"{base}/api/v1/containers", headers=AUTH)):
        assert r.status_code == 403
        assert "containers.api_token" in r.json()["error"]
    assert [c["id"] for c in exporter.containers()] == ["7"]  # config tracking still works


def test_wrong_methods_and_big_bodies(api: Api) -> None:
    base, _, _ = api
    r = httpx.delete(f"{base}/api/v1/containers", headers=AUTH)
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    r = post(base, content=b"{" + b" " * Limits().max_body + b"}")
    assert r.status_code == 413


def test_reload_adopts_new_tracked_containers(tmp_path: Path, fake_graph: FakeGraph) -> None:
    path = tmp_path / "config.yaml"

    def write(track: list[str]) -> None:
        path.write_text(yaml.safe_dump({
            "accounts": [{"name": "brand", "access_token": "upstream-token-reload"}],
            "containers": {"state_path": str(tmp_path / "state.db"),
                           "track": [{"account": "brand", "id": i} for i in track]}}))

    fake_graph.token("upstream-token-reload", healthy(2))
    write(["1"])
    exporter = Exporter(load_config(path), str(path), transport=fake_graph.transport())
    try:
        write(["1", "2"])
        assert exporter.reload() is None
        assert [c["id"] for c in exporter.containers()] == ["1", "2"]
    finally:
        exporter.close()


def test_a_batch_registers_in_one_go_with_a_result_per_item(api: Api) -> None:
    base, _, exporter = api
    batch = [{"account": "brand", "id": str(1000 + i)} for i in range(5)]
    batch += [{"account": "brand", "id": "1000"},  # twice in one batch: known the second time
              {"account": "nobody", "id": "7"}, {"account": "brand", "id": "x1"}, ["brand", "8"]]
    r = post(base, batch)
    assert r.status_code == 200
    statuses = [(x["account"], x["id"], x["status"]) for x in r.json()["results"]]
    assert statuses == [("brand", str(1000 + i), 201) for i in range(5)] + [
        ("brand", "1000", 200), ("nobody", "7", 404), ("brand", "x1", 400), (None, None, 400)]
    assert sorted(c["id"] for c in exporter.containers()) == [str(1000 + i) for i in range(5)]
    too_many = post(base, [{"account": "brand", "id": str(i)} for i in range(1001)])
    assert too_many.status_code == 400 and "1000" in too_many.json()["error"]


def test_the_listing_pages_with_a_cursor(api: Api) -> None:
    base, _, _ = api
    ids = [str(2000 + i) for i in range(25)]
    assert post(base, [{"account": "brand", "id": i} for i in ids]).status_code == 200
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": "10", **({"after": after} if after else {})}
        page = httpx.get(f"{base}/api/v1/containers", params=params, headers=AUTH,
                         timeout=10).json()
        seen += [c["id"] for c in page["containers"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert (pages, sorted(seen)) == (3, ids) and len(seen) == len(set(seen))
    for bad in ({"limit": "0"}, {"limit": "many"}, {"after": "not-a-cursor"}):
        r = httpx.get(f"{base}/api/v1/containers", params=bad, headers=AUTH, timeout=10)
        assert r.status_code == 400, bad


def test_past_the_per_account_cap_registration_is_429(
        tmp_path: Path, fake_graph: FakeGraph,
        serve_exporter: Callable[..., tuple[Exporter, str]]) -> None:
    fake_graph.token(TOKEN, healthy(1))
    _, base = serve_exporter(config(tmp_path, api_token=API_TOKEN, max_tracked_per_account=3),
                             transport=fake_graph.transport())
    r = post(base, [{"account": "brand", "id": str(i)} for i in range(5)])
    assert [x["status"] for x in r.json()["results"]] == [201, 201, 201, 429, 429]
    one = post(base, {"account": "brand", "id": "9"})
    assert one.status_code == 429 and "max_tracked_per_account" in one.json()["error"]
    assert post(base, {"account": "brand", "id": "1"}).status_code == 200  # known: fine


def test_a_long_track_list_registers_every_entry_once(tmp_path: Path,
                                                      fake_graph: FakeGraph) -> None:
    path = tmp_path / "config.yaml"
    accounts = [f"brand{i}" for i in range(3)]
    ids = [str(10_000_000 + n) for n in range(20_000)]
    track = [{"account": accounts[n % 3], "id": i} for n, i in enumerate(ids)]
    path.write_text(yaml.safe_dump({
        "accounts": [{"name": a, "access_token": f"upstream-token-{a}"} for a in accounts],
        "containers": {"state_path": str(tmp_path / "state.db"),
                       "track": track + track[:100]}}))  # repeats are one entry
    config = load_config(path)
    assert len(config.containers.track) == 20_000
    for _ in range(2):  # a restart registers nothing twice and loses nothing
        exporter = Exporter(config, str(path), transport=fake_graph.transport())
        try:
            listed = exporter.containers()
            # The store holds them now: the running exporter keeps no copy of the list.
            assert exporter.config.containers.track == ()
            assert exporter.tracker.config.containers.track == ()
            assert exporter.reload() is None and exporter.config.containers.track == ()
        finally:
            exporter.close()
        assert sorted((c["account"], c["id"]) for c in listed) == sorted(
            (t["account"], t["id"]) for t in track)


def test_a_container_registered_between_scrapes_is_polled_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle round (nothing tracked) would look again only after its step; a registration
    wakes it. The step is made far longer than the wait, so only the wake can pass."""
    monkeypatch.setattr(scheduler, "IDLE_STEP", 60.0)
    config = parse_config({
        "accounts": [{"name": "brand", "access_token": "t"}],
        "containers": {"state_path": str(tmp_path / "s.db"), "api_token": "a"}}, env={})
    fake = FakeGraph().token("t", healthy(10))
    fake.container("501", *[container("IN_PROGRESS")] * 5)

    async def main() -> None:
        client = ThreadsClient(config.api, transport=fake.transport())
        tracker = ContainerTracker(client, config, Store(config.containers.state_path))
        try:
            start = time.monotonic()
            # A scrape whose polling goes on for two minutes in the background.
            await tracker.scrape(start + 1, poll_until=start + 120)
            await asyncio.sleep(0.2)  # the round is idle by now, with nothing tracked
            assert fake.polls("501") == []
            await tracker.register("brand", "501")
            for _ in range(200):  # up to 10 s
                if fake.polls("501"):
                    break
                await asyncio.sleep(0.05)
            assert fake.polls("501"), "not polled after its registration"
        finally:
            await tracker.aclose()
            await client.aclose()

    asyncio.run(main())
