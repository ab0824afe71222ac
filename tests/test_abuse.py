"""The exporter's own HTTP server under abuse: a crowd of scrapers, stalled clients, malformed
and oversized requests, unknown paths, and markup smuggled in through any input."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from exposition import samples, value
from fake_graph import FakeGraph, healthy
from procs import RunningExporter, exporter, write_config
from threads_exporter.app import Exporter
from threads_exporter.config import Account, ApiConfig, Config

ACCOUNTS = [f"acct-{i:02d}" for i in range(20)]
SCRIPT = "<script>alert(1)</script>"
API_TOKEN = "registration-token-for-abuse-tests"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeGraph]:
    # Slow enough that the scrapers overlap.
    with FakeGraph({f"tok-{n}": healthy(i) for i, n in enumerate(ACCOUNTS)},
                   latency=0.2) as fake:
        yield fake


@pytest.fixture(scope="module")
def running(upstream: FakeGraph, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("abuse") / "config.yaml"
    write_config(path, upstream.base_url, {n: f"tok-{n}" for n in ACCOUNTS}, timeout=5,
                 containers={"api_token": API_TOKEN, "state_path": str(path.with_suffix(".db"))})
    with exporter("--config.file", str(path), cwd=path.parent) as (_, base):
        yield base


def raw(base: str, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are and read the answer until the server closes or stops."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_fifty_concurrent_scrapers_share_one_reading(running: str, upstream: FakeGraph) -> None:
    start = threading.Barrier(50)
    answers: list[httpx.Response] = []

    def scrape() -> None:
        start.wait()
        answers.append(httpx.get(running + "/metrics", timeout=30))

    threads = [threading.Thread(target=scrape) for _ in range(50)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    took = time.monotonic() - began
    assert len(answers) == 50 and {a.status_code for a in answers} == {200}
    assert took < 10  # Prometheus' default scrape timeout
    for answer in answers:
        found = samples(answer.text)
        assert all(value(found, "threads_up", account=n) == 1 for n in ACCOUNTS)
    # One upstream call per account, whatever the number of scrapers.
    assert upstream.calls(endpoint="publishing_limit") == len(ACCOUNTS)


@contextmanager
def stalled_clients(base: str, n: int) -> Iterator[None]:
    """n connections that start a request and never finish it."""
    host, port = base.removeprefix("http://").split(":")
    partial = [b"", b"GET /metr", b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
               b"POST /api/v1/containers HTTP/1.1\r\nAuthorization: Bearer " + API_TOKEN.encode()
               + b"\r\nContent-Length: 5000\r\n\r\n{\"account\":"]
    with ExitStack() as stack:
        for i in range(n):
            s = stack.enter_context(socket.create_connection((host, int(port)), timeout=5))
            s.sendall(partial[i % len(partial)])
        yield


def test_stalled_clients_do_not_block_scrapes(running: str) -> None:
    with stalled_clients(running, 200):
        began = time.monotonic()
        r = httpx.get(running + "/metrics", timeout=10)
        assert r.status_code == 200
        assert httpx.get(running + "/-/healthy", timeout=10).status_code == 200
        assert time.monotonic() - began < 5


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"HELLO\r\n\r\n", b"400"),
    (b"GET /metrics HTTP/9.9\r\n\r\n", b"505"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"414"),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
     b"431"),
    # Nine lines of 8 KB: each line and their count are within bounds, the head (72 KB) is not.
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 8000) for i in range(9))
     + b"\r\n", b"431"),
    (b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
    (b"GET /metrics/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     b"404"),
    (b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"405"),
    (f"GET /{SCRIPT} HTTP/7\r\n\r\n".encode(), b"400"),
])
def test_malformed_requests_get_a_clean_error(running: str, request_bytes: bytes,
                                              status: bytes) -> None:
    answer = raw(running, request_bytes)
    # A request it cannot parse gets its answer in HTTP/1.0, as Go's net/http does.
    assert answer.startswith((b"HTTP/1.1 " + status, b"HTTP/1.0 " + status)), answer[:300]
    assert b"<script" not in answer.lower()
    # The server is still fine afterwards.
    assert httpx.get(running + "/-/healthy", timeout=10).status_code == 200


def test_a_body_past_the_head_limit_sent_with_its_head_is_read_as_a_body(running: str) -> None:
    """The 64 KiB limit counts head bytes only: a 200 KB batch arriving in the same packets as
    its head is registered, not refused as a header bomb."""
    batch = b'[{"account": "acct-00", "id": "90210"}' + b" " * 200_000 + b"]"
    answer = raw(running, b"POST /api/v1/containers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(batch)
                 + batch)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    listed = httpx.get(running + "/api/v1/containers", headers=AUTH, timeout=10).json()
    assert {"acct-00", "90210"} <= {v for c in listed["containers"] for v in c.values()}


def test_a_hundred_pipelined_requests_in_one_write_are_all_answered(running: str) -> None:
    """More than aiohttp queues at once (32): the rest wait in its parser and are answered in
    turn, none refused as an oversized head."""
    host, port = running.removeprefix("http://").split(":")
    head = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall((head + b"\r\n") * 99 + head + b"Connection: close\r\n\r\n")
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert answer.count(b"HTTP/1.1 200 OK") == 100, answer[-300:]


def answers(base: str, *writes: bytes) -> list[bytes]:
    """The status codes answered on one connection to writes sent a moment apart (so that
    each arrives in a read of its own), read until the server closes."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for data in writes:
            s.sendall(data)
            time.sleep(0.05)
        got = b"".join(iter(lambda: s.recv(65536), b""))
    return re.findall(rb"HTTP/1\.[01] (\d{3}) ", got)


def registration(n: int, body: bytes | None = None, close: bool = False) -> tuple[bytes, bytes]:
    """A registration POST's head, and its ~100 KB body."""
    body = body or b'{"account": "acct-01", "id": "%d"}' % n + b" " * 100_000
    return (b"POST /api/v1/containers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + API_TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
            + (b"Connection: close\r\n" if close else b"")
            + b"Content-Length: %d\r\n\r\n" % len(body), body)


HEALTHY = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
BIG_LINES = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 8000) for i in range(8))  # 64 KB


def test_a_post_behind_forty_pipelined_requests_has_its_body_read_as_a_body(
        running: str) -> None:
    """Its head is parsed after aiohttp's queue of 32 drains; its 100 KB body still counts
    as a body, not as a head."""
    head, body = registration(7001, close=True)
    assert answers(running, HEALTHY * 40 + head, body) == [b"200"] * 40 + [b"201"]


def test_a_head_arriving_with_the_end_of_the_body_before_it_starts_its_own_count(
        running: str) -> None:
    first_head, first_body = registration(7002)
    second_head, second_body = registration(7003, close=True)
    assert answers(running, first_head, first_body + second_head, second_body) == [
        b"201", b"201"]


def test_a_registration_that_expects_100_continue_gets_it_then_its_answer(
        running: str) -> None:
    """curl asks before sending a body and waits a second for the 100; a wrong token gets
    its 401 instead, without being invited to send."""
    host, port = running.removeprefix("http://").split(":")
    body = b'{"account": "acct-02", "id": "7004"}'

    def ask(token: str) -> socket.socket:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"POST /api/v1/containers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + token.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        return s

    with ask(API_TOKEN) as s:
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim[:100]
        s.sendall(body)
        final = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):] + b"".join(
            iter(lambda: s.recv(65536), b""))
    assert final.startswith(b"HTTP/1.1 201"), final[:200]
    with ask("wrong") as s:
        assert s.recv(65536).startswith(b"HTTP/1.1 401"), "no 100 for a refused request"


def test_requests_pipelined_behind_an_upgrade_request_are_all_answered(running: str) -> None:
    """aiohttp keeps what follows an Upgrade request until it has answered it (no websocket
    here: answered as a plain request); those requests are not one oversized head."""
    upgrade = (b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
               b"Upgrade: websocket\r\n\r\n")
    padded = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 100 + b"\r\n\r\n"
    close = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert answers(running, HEALTHY * 20 + upgrade + padded * 600 + close) == [b"200"] * 622


def test_a_head_that_begins_in_the_same_read_as_a_request_is_still_bounded(
        running: str) -> None:
    """64 KB of it arrives with the request before it and 64 KB more after: 431, not 200."""
    second = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n"
    assert answers(running, HEALTHY + second + BIG_LINES, BIG_LINES + b"\r\n") == [
        b"200", b"431"]


@pytest.mark.parametrize("path", [
    f"/?q={SCRIPT}", f"/probe?account={SCRIPT}", f"/probe?account=acct-00&account={SCRIPT}",
    f"/metrics?x={SCRIPT}", f"/{SCRIPT}", f"/-/healthy?{SCRIPT}", f"/-/ready/{SCRIPT}",
])
def test_no_markup_from_input_reaches_a_response(running: str, path: str) -> None:
    for encoded in (path, path.replace("<", "%3C").replace(">", "%3E")):
        r = httpx.get(running + encoded, timeout=10, headers={"X-Evil": SCRIPT})
        assert "<script" not in r.text.lower(), (encoded, r.status_code, r.text[:300])


def test_landing_page_escapes_account_names(
        serve_exporter: Callable[..., tuple[Exporter, str]]) -> None:
    # The config loader only admits [a-zA-Z0-9_.-]+; the page must not rely on that.
    names = ["plain.name_1-x", '<script>alert("x")</script>&']
    config = Config(api=ApiConfig(base_url="http://127.0.0.1:9"),
                    accounts=tuple(Account(n, "me", f"tok-{i}") for i, n in enumerate(names)))
    _, base = serve_exporter(config)
    page = httpx.get(f"{base}/", timeout=10).text
    assert "plain.name_1-x" in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "<script" not in page.lower()
    assert "tok-" not in page


def test_unknown_probe_target_is_400_and_not_echoed(
        config_file: Callable[..., Path], run_exporter: Callable[..., RunningExporter]) -> None:
    exporter = run_exporter("--config.file",
                            str(config_file("http://127.0.0.1:9", {"a": "tok-a"})))
    r = httpx.get(exporter.url("/probe"), params={"account": "missing.one"}, timeout=10)
    # Never echoed: a token pasted as the name must not come back, redacted or not (the
    # difference would tell a guess that is a configured token).
    assert r.status_code == 400 and "missing.one" not in r.text
    assert httpx.get(exporter.url("/probe"), timeout=10).status_code == 400


def post(base: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(base + "/api/v1/containers", content=body, timeout=10,
                      headers={**AUTH, "Content-Type": "application/json", **(headers or {})})


@pytest.mark.parametrize(("body", "status"), [
    (b'{"account": "acct-00"', 400),  # truncated JSON
    (b"[]", 400),
    (b'"just a string"', 400),
    (b"\xff\xfe\x00garbage", 400),
    (b"", 400),
    (b"[" * 30000 + b"]" * 30000, 400),  # nesting deeper than the parser's recursion limit
    (b'{"account": "acct-00"}', 400),
    (b'{"account": "acct-00", "id": 17889615691921648}', 400),  # a number, not a string
    (b'{"account": "acct-00", "id": "1788961569192164x"}', 400),
    (b'{"account": "acct-00", "id": "../../1"}', 400),
    (b'{"account": "acct-00", "id": ""}', 400),
    (b'{"account": "acct-00", "id": "' + b"1" * 65 + b'"}', 400),
    (b'{"account": ["acct-00"], "id": "1"}', 400),
    (b'{"account": "' + SCRIPT.encode() + b'", "id": "1"}', 404),
    (b'{"account": "nobody", "id": "1"}', 404),
])
def test_registration_api_rejects_malformed_bodies(running: str, upstream: FakeGraph,
                                                    body: bytes, status: int) -> None:
    containers_before = upstream.calls(endpoint="container")
    r = post(running, body)
    assert r.status_code == status, r.text
    assert "<script" not in r.text.lower()
    assert r.json()["error"]
    # Nothing invalid was sent upstream.
    assert upstream.calls(endpoint="container") == containers_before


@pytest.mark.parametrize(("headers", "status"), [
    ({"Authorization": ""}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": f"Basic {API_TOKEN}"}, 401),
    ({"Authorization": f"Bearer {API_TOKEN}x"}, 401),
    ({"Content-Length": "10000000"}, 413),
    ({"Content-Length": "-5"}, 400),
    ({"Content-Length": "many"}, 400),
    ({"Transfer-Encoding": "chunked"}, 400),
])
def test_registration_api_auth_and_size_limits(running: str, headers: dict[str, str],
                                               status: int) -> None:
    body = b'{"account": "acct-00", "id": "1"}'
    extra = "\r\n".join(f"{k}: {v}" for k, v in {**AUTH, "Content-Length": str(len(body)),
                                                  **headers}.items())
    # Sent raw: an honest client cannot send a Content-Length that disagrees with its body.
    answer = raw(running, f"POST /api/v1/containers HTTP/1.1\r\nHost: x\r\n{extra}\r\n"
                          "Connection: close\r\n\r\n".encode() + body)
    # Requests the parser refuses are answered in HTTP/1.0, as Go's net/http does.
    assert answer.startswith((f"HTTP/1.1 {status}".encode(), f"HTTP/1.0 {status}".encode())), \
        answer[:300]
    assert API_TOKEN.encode() not in answer


def test_registration_api_body_limit_without_sending_the_body(running: str) -> None:
    # The size is judged from the headers: 413 comes back although no byte of the body was sent.
    answer = raw(running, b"POST /api/v1/containers HTTP/1.1\r\nHost: x\r\nAuthorization: "
                          b"Bearer " + API_TOKEN.encode() + b"\r\nContent-Length: 1000000000\r\n"
                          b"\r\n", timeout=10)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]


def test_registration_api_accepts_a_good_body_after_all_that(running: str) -> None:
    cid = "17889615691921648"
    assert post(running, b'{"account": "acct-01", "id": "%s"}' % cid.encode()).status_code \
        in (200, 201)
    assert post(running, b'{"account": "acct-01", "id": "%s"}' % cid.encode()).status_code \
        == 200
    listing = httpx.get(running + "/api/v1/containers", headers=AUTH, timeout=10).json()
    assert any(c["id"] == cid for c in listing["containers"])
