"""The registration API: auth, validation (nothing reaches the upstream), 404/201/200."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from threads_exporter.app import Exporter
from threads_exporter.config import load_config, parse_config
from threads_exporter.web.server import ExporterHTTPServer

API_TOKEN = "s3cret-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


class Upstream:
    """An httpx transport standing in for the Threads API; records every request path."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path.endswith("/threads_publishing_limit"):
            return httpx.Response(200, json={"data": [{"quota_usage": 3, "config": {
                "quota_total": 250, "quota_duration": 86400}}]})
        return httpx.Response(200, json={"status": "IN_PROGRESS", "id": "1"})

    def container_paths(self) -> list[str]:
        return [p for p in self.paths
                if not p.endswith(("/threads_publishing_limit", "/debug_token"))]


def start(tmp_path: Path, upstream: Upstream, **containers: Any,
          ) -> tuple[Exporter, ExporterHTTPServer, str]:
    config = parse_config({
        "accounts": [{"name": "brand", "access_token": "upstream-token-abc", "quotas": ["posts"]}],
        "containers": {"state_path": str(tmp_path / "state.db"), **containers},
    }, env={})
    exporter = Exporter(config, transport=httpx.MockTransport(upstream))
    server = ExporterHTTPServer(("127.0.0.1", 0), exporter, None)
    # A short poll interval: shutdown() waits for it, once per test.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                     daemon=True).start()
    return exporter, server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Upstream, Exporter]]:
    upstream = Upstream()
    exporter, server, base = start(tmp_path, upstream, api_token=API_TOKEN)
    yield base, upstream, exporter
    server.shutdown()
    server.server_close()
    exporter.close()


def post(base: str, payload: Any = None, *, content: bytes | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/containers", json=payload, content=content,
                      headers=AUTH if headers is None else headers, timeout=10)


def test_register_new_then_known_then_listed(api: tuple[str, Upstream, Exporter]) -> None:
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
def test_without_the_bearer_token_401(api: tuple[str, Upstream, Exporter],
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
    (["brand", "123"], None),
    (None, b"not json"),
    (None, b""),
    (None, b"\xff\xfe"),
])
def test_bad_requests_400_and_nothing_upstream(api: tuple[str, Upstream, Exporter],
                                               payload: Any, content: bytes | None) -> None:
    base, upstream, exporter = api
    r = post(base, payload, content=content)
    assert r.status_code == 400, r.text
    assert "error" in r.json()
    assert exporter.containers() == []
    exporter.scrape(time.monotonic() + 4.5)  # a scrape would poll anything registered
    assert upstream.container_paths() == []


def test_unknown_account_404(api: tuple[str, Upstream, Exporter]) -> None:
    base, upstream, exporter = api
    r = post(base, {"account": "nobody", "id": "123"})
    assert r.status_code == 404 and "nobody" in r.json()["error"]
    exporter.scrape(time.monotonic() + 4.5)
    assert upstream.container_paths() == []


def test_registered_container_is_polled_with_its_id_only(
        api: tuple[str, Upstream, Exporter]) -> None:
    base, upstream, exporter = api
    assert post(base, {"account": "brand", "id": "42"}).status_code == 201
    exporter.scrape(time.monotonic() + 4.5)
    assert upstream.container_paths() == ["/v1.0/42"]


def test_no_api_token_configured_means_closed(tmp_path: Path) -> None:
    upstream = Upstream()
    exporter, server, base = start(tmp_path, upstream, track=[{"account": "brand", "id": "7"}])
    try:
        for r in (post(base, {"account": "brand", "id": "123"}),
                  httpx.get(f"{base}/api/v1/containers", headers=AUTH)):
            assert r.status_code == 403
            assert "containers.api_token" in r.json()["error"]
        assert [c["id"] for c in exporter.containers()] == ["7"]  # config tracking still works
    finally:
        server.shutdown()
        server.server_close()
        exporter.close()


def test_wrong_methods_and_big_bodies(api: tuple[str, Upstream, Exporter]) -> None:
    base, _, _ = api
    r = httpx.delete(f"{base}/api/v1/containers", headers=AUTH)
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    r = post(base, content=b"{" + b" " * 100_000 + b"}")
    assert r.status_code == 413


def test_reload_adopts_new_tracked_containers(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"

    def write(track: list[str]) -> None:
        path.write_text(yaml.safe_dump({
            "accounts": [{"name": "brand", "access_token": "upstream-token-reload"}],
            "containers": {"state_path": str(tmp_path / "state.db"),
                           "track": [{"account": "brand", "id": i} for i in track]}}))

    write(["1"])
    exporter = Exporter(load_config(path), str(path),
                        transport=httpx.MockTransport(Upstream()))
    try:
        write(["1", "2"])
        assert exporter.reload() is None
        assert [c["id"] for c in exporter.containers()] == ["1", "2"]
    finally:
        exporter.close()
