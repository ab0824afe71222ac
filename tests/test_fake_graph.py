"""The Graph API fake itself: it answers in the API's shapes, by its scripts, and the same
whether reached over loopback HTTP or through its in-process transport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from fake_graph import (
    FakeGraph,
    body,
    container,
    graph_error,
    healthy,
    reset_mid_body,
    sequence,
)
from waiting import wait_for

USER = "/v1.0/me/threads_publishing_limit"


def over_http(fake: FakeGraph, path: str, **params: str) -> httpx.Response:
    return httpx.get(fake.base_url + path, params=params, timeout=5)


def in_process(fake: FakeGraph, path: str, **params: str) -> httpx.Response:
    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=fake.transport(),
                                     base_url="http://graph.test") as client:
            r = await client.get(path, params=params)
            await r.aread()
            return r
    return asyncio.run(get())


Get = Callable[..., httpx.Response]
WAYS = pytest.mark.parametrize("get", [over_http, in_process], ids=["http", "transport"])


@WAYS
def test_answers_in_the_api_shapes(fake_graph: FakeGraph, get: Get) -> None:
    fake_graph.token("t", healthy(10)).container("17", container("ERROR", "INVALID_DURATION"))
    r = get(fake_graph, USER, access_token="t", fields="quota_usage,config")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["data"] == [{"quota_usage": 11, "config": {"quota_total": 250,
                                                               "quota_duration": 86400}}]
    assert get(fake_graph, "/v1.0/17", access_token="t").json() == {
        "status": "ERROR", "error_message": "INVALID_DURATION", "id": "17"}
    expiry = get(fake_graph, "/v1.0/debug_token", access_token="t", input_token="t").json()
    assert expiry["data"]["expires_at"] > 0 and expiry["data"]["is_valid"] is True


@WAYS
def test_unknown_tokens_ids_and_paths_get_graph_errors(fake_graph: FakeGraph, get: Get) -> None:
    fake_graph.token("t", healthy())
    cases = [
        (USER, {"access_token": "nope"}, 190),  # unknown token
        (USER, {}, 104),  # no token
        ("/v1.0/99", {"access_token": "t"}, 100),  # unknown container
        ("/v1.0/me/other", {"access_token": "t"}, 2500),  # unknown edge
        ("/me", {"access_token": "t"}, 2500),  # no version
    ]
    for path, params, code in cases:
        r = get(fake_graph, path, **params)
        error = r.json()["error"]
        assert r.status_code == 400 and error["code"] == code, (path, error)
        assert {"message", "type", "code", "fbtrace_id"} <= set(error)
    assert get(fake_graph, "/v1.0/99", access_token="t").json()["error"]["error_subcode"] == 33


@WAYS
def test_scripts_play_in_order_and_the_last_answer_repeats(fake_graph: FakeGraph,
                                                           get: Get) -> None:
    fake_graph.token("t", sequence(body(502, b"<html>Bad Gateway</html>", "text/html"),
                                   graph_error(400, 4, "(#4) limit", transient=True),
                                   healthy(1)))
    fake_graph.container("5", container("IN_PROGRESS"), container("FINISHED"))
    statuses = [get(fake_graph, USER, access_token="t", fields="quota_usage,config")
                for _ in range(4)]
    assert [r.status_code for r in statuses] == [502, 400, 200, 200]
    assert statuses[1].json()["error"]["is_transient"] is True
    assert [get(fake_graph, "/v1.0/5", access_token="t").json()["status"]
            for _ in range(3)] == ["IN_PROGRESS", "FINISHED", "FINISHED"]
    assert fake_graph.calls("t", "publishing_limit") == 4
    assert fake_graph.served() == {"5": 3}
    assert [r.n for r in fake_graph.requests("container")] == [1, 2, 3]
    # Counted once the last byte is written, which may be just after the client has it.
    wait_for(lambda: fake_graph.answered("container"), until=lambda a: a == {"5": 3},
             timeout=10, what="three answers counted")


@WAYS
def test_a_token_without_one_permission(fake_graph: FakeGraph, get: Get) -> None:
    fake_graph.token("t", graph_error(500, 10, "(#10) no permission", deny="delete_quota_usage"))
    assert get(fake_graph, USER, access_token="t",
               fields="quota_usage,config,delete_quota_usage").status_code == 500
    r = get(fake_graph, USER, access_token="t", fields="quota_usage,config")
    assert r.status_code == 200 and set(r.json()["data"][0]) == {"quota_usage", "config"}


@WAYS
def test_a_reset_is_a_transport_error(fake_graph: FakeGraph, get: Get) -> None:
    fake_graph.token("t", reset_mid_body)
    with pytest.raises(httpx.TransportError):
        get(fake_graph, USER, access_token="t")
    assert fake_graph.answered("publishing_limit") == {}


def test_both_ways_log_the_same_requests(fake_graph: FakeGraph) -> None:
    fake_graph.token("t", healthy(3))
    bodies = []
    for get in (over_http, in_process):
        bodies.append(json.loads(get(fake_graph, USER, access_token="t",
                                     fields="quota_usage").content))
        # An answer over HTTP is in flight until its last byte is written, which may be just
        # after the client has it.
        wait_for(fake_graph.in_flight, until=lambda n: n == 0, timeout=10,
                 what="the answer finished")
    assert bodies[0] == bodies[1]
    log = fake_graph.requests()
    assert [(r.path, r.token, r.endpoint, r.fields) for r in log] == [
        (USER, "t", "publishing_limit", ["quota_usage"])] * 2
    assert log[0].arrived <= log[1].arrived
    assert fake_graph.in_flight() == 0 and fake_graph.peak_in_flight() == 1
