"""One scriptable fake of the Threads Graph API for every test that needs an upstream.

It is independent of threads_exporter (neither its simulator nor its field maps): it spells
the API the way Meta documents it, so the exporter is checked against something it did not
write itself.

Scripting
  * per access token, how ``GET /{user}/threads_publishing_limit`` answers: a Behaviour
    (healthy rows, Graph errors, HTML 5xx, truncated / not-JSON / wrong-shape bodies, slow,
    huge, reset, hang, refuse), or ``sequence(...)`` of them (the n-th call gets the n-th,
    the last one repeats);
  * per container id, its answers to ``GET /{id}``: the n-th poll gets the n-th answer, the
    last one repeats;
  * latency for every request or per endpoint, fixed or jittered (``(low, high)``).
  ``debug_token`` answers for every scripted token. Unknown tokens, container ids and paths
  get the Graph errors the real API gives.

Observing
  a request log (method, path, token, endpoint, fields, arrival and answer times), counts per
  token, endpoint and container, requests in flight and their peak, bytes sent per token.

Connecting, two ways over the same handler logic
  * ``with FakeGraph(...) as fake:`` serves HTTP on loopback at ``fake.base_url``, for the
    exporter process;
  * ``fake.transport()`` is an httpx async transport, for in-process ``Exporter`` and
    ``ThreadsClient`` tests that take ``transport=``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

DAY = 86400
HANG_SECONDS = 60.0  # a hanging answer gives up after this, or when the fake stops

# The documented field names of threads_publishing_limit, spelled here on purpose:
# usage field -> (config field, quota_total, the exporter's `quota` label for the group).
GROUPS: dict[str, tuple[str, int, str]] = {
    "quota_usage": ("config", 250, "posts"),
    "reply_quota_usage": ("reply_config", 1000, "replies"),
    "delete_quota_usage": ("delete_config", 100, "deletes"),
    "location_search_quota_usage": ("location_search_config", 500, "location_searches"),
}


# --- requests and answers ------------------------------------------------------------------


@dataclass
class Request:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    token: str
    endpoint: str  # publishing_limit, container, debug_token, or unknown
    cid: str | None  # the container id of a container poll
    n: int  # this is the n-th request (from 1) of this token to this endpoint, or of this id
    arrived: float  # time.time()
    done: float | None = None  # when the answer was sent whole; None: not (yet, or ever)

    @property
    def fields(self) -> list[str]:
        asked = self.query.get("fields", "")
        return asked.split(",") if asked else []


@dataclass(frozen=True)
class Answer:
    """What the fake sends: a status and body, or one of the ways a connection goes wrong."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before anything is sent
    length: int | None = None  # the Content-Length announced, when it is not the real one
    filler: bytes = b""  # sent `repeat` times after the body, then `tail`: a huge body
    repeat: int = 0
    tail: bytes = b""
    reset: bool = False  # the connection is cut after what was sent
    hang: bool = False  # no answer at all (until HANG_SECONDS, or the fake stops)
    refuse: bool = False  # the connection is closed without an answer

    @property
    def size(self) -> int:
        return len(self.body) + len(self.filler) * self.repeat + len(self.tail)

    def chunks(self) -> Iterator[bytes]:
        if self.body:
            yield self.body
        for _ in range(self.repeat):
            yield self.filler
        if self.tail:
            yield self.tail


Behaviour = Callable[[Request], Answer]
Script = Mapping[str, Any] | Behaviour  # a container poll's answer: its fields, or a Behaviour


def json_answer(status: int, payload: Any, **kw: Any) -> Answer:
    return Answer(status, json.dumps(payload).encode(), **kw)


def error_body(code: int, message: str, *, subcode: int | None = None, type: str | None = None,
               transient: bool | None = None, trace: str = "AbCdEf0123_x",
               user: tuple[str, str] | None = None) -> dict[str, Any]:
    """Graph's error envelope. error_subcode and is_transient are there when the error has
    them, as on the real API."""
    error: dict[str, Any] = {
        "message": message,
        "type": type or ("OAuthException" if code in (102, 104, 190, 2500) else
                         "THApiException"),
        "code": code,
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if transient is not None:
        error["is_transient"] = transient
    if user is not None:  # localized texts for the end user, as Meta sends them
        error["error_user_title"], error["error_user_msg"] = user
    error["fbtrace_id"] = trace
    return {"error": error}


# --- answers recorded from the real API (see ../shared/threads-api.md, "Real answers") -------

# Throttling: is_transient true with code 4 (four independent pastes, e.g. react-share#70).
THROTTLED = error_body(4, "(#4) Application request limit reached", transient=True)
# A container Meta lost (fbsamples/threads_api#70), also seen right after FINISHED.
MEDIA_NOT_FOUND = error_body(24, "Media Not Found", subcode=4279009, user=(
    "Medien nicht gefunden", "Die angeforderten Medien wurden nicht gefunden."))
# A published media id asked for `status` (exileum/meta-mcp#143).
NONEXISTING_STATUS = error_body(100, "(#100) Tried accessing nonexisting field (status)")
# A token reading another user's object (baguskto/threads-mcp): reads like an outage.
UNEXPECTED = error_body(2, "An unexpected error has occurred. Please retry your request "
                           "later.", transient=True)
# debug_token asked with the user's own token on an app in development mode
# (tirthpatell/fia-f1-docs-bot#50).
DEV_MODE_DEBUG_TOKEN = error_body(100, "(#100) The App_id in the input_token did not match "
                                       "the Viewing App", type="OAuthException")


def recorded(status: int, payload: dict[str, Any]) -> Behaviour:
    """A recorded answer, as a behaviour or a container poll's script step."""
    return lambda req: json_answer(status, payload)


# --- publishing-limit behaviours -----------------------------------------------------------


def healthy_row(base: int) -> dict[str, Any]:
    """A full publishing-limit row whose usages are base+1..base+4, distinct per account."""
    row: dict[str, Any] = {}
    for i, (usage, (config, total, _)) in enumerate(GROUPS.items(), start=1):
        row[usage] = base + i
        row[config] = {"quota_total": total, "quota_duration": DAY}
    return row


def expected_quotas(base: int) -> dict[str, float]:
    """What the exporter must report as threads_quota_usage{quota} for healthy(base)."""
    return {label: float(base + i) for i, (_, _, label) in enumerate(GROUPS.values(), start=1)}


def healthy(base: int = 0, *, headers: Mapping[str, str] | None = None,
            **extra: Any) -> Behaviour:
    """Answers the requested fields (posts' when none are named); `extra` keys are added to
    the row (fields the exporter does not know), `headers` to the answer."""
    def answer(req: Request) -> Answer:
        asked = req.fields or ["quota_usage", "config"]
        row = {k: v for k, v in healthy_row(base).items() if k in asked}
        return json_answer(200, {"data": [{**row, **extra}], "paging": {"cursors": {}}},
                           headers=dict(headers or {}))
    return answer


def graph_error(status: int, code: int, message: str, *, deny: str | None = None,
                base: int = 0, subcode: int | None = None, type: str | None = None,
                transient: bool | None = None) -> Behaviour:
    """A Graph error envelope; with `deny`, only requests naming that field fail and the
    others are answered healthily (a token lacking one permission)."""
    def answer(req: Request) -> Answer:
        if deny is not None and deny not in req.fields:
            return healthy(base)(req)
        return json_answer(status, error_body(code, message, subcode=subcode, type=type,
                                              transient=transient))
    return answer


def body(status: int, payload: bytes, content_type: str = "application/json") -> Behaviour:
    """Exactly these bytes: HTML error pages, truncated or not-JSON bodies."""
    return lambda req: Answer(status, payload, content_type)


def row(data: Any) -> Behaviour:
    """A 200 whose `data` is whatever is given: rows of the wrong shape."""
    return lambda req: json_answer(200, {"data": data})


def huge(megabytes: int) -> Behaviour:
    """A valid-looking JSON body of many megabytes, streamed until the client hangs up."""
    head = b'{"data":[{"quota_usage":1,"padding":"'
    return lambda req: Answer(200, head, filler=b"x" * 65536, repeat=megabytes * 16,
                              tail=b'"}]}')


def hang(req: Request) -> Answer:
    """Accepts the request and never answers."""
    return Answer(hang=True)


def refuse(req: Request) -> Answer:
    """Closes the connection without an answer."""
    return Answer(refuse=True)


def reset_mid_body(req: Request) -> Answer:
    """Announces 1000 bytes, sends a few, cuts the connection."""
    return Answer(200, b'{"data":[{"quota_us', length=1000, reset=True)


def delay(seconds: float, then: Behaviour) -> Behaviour:
    """`then`, after `seconds`."""
    def answer(req: Request) -> Answer:
        later = then(req)
        return replace(later, delay=later.delay + seconds)
    return answer


def sequence(*behaviours: Behaviour) -> Behaviour:
    """The n-th call of a token gets the n-th behaviour; the last one repeats."""
    return lambda req: behaviours[min(req.n, len(behaviours)) - 1](req)


# --- container answers ---------------------------------------------------------------------


def container(status: str, error_message: str | None = None) -> dict[str, Any]:
    """A container poll's answer (the fake adds the id)."""
    answer: dict[str, Any] = {"status": status}
    if error_message is not None:
        answer["error_message"] = error_message
    return answer


# --- the fake ------------------------------------------------------------------------------

Latency = float | tuple[float, float]
_VERSIONED = re.compile(r"/v[0-9]+\.[0-9]+(/.*)")
_DIGITS = re.compile(r"[0-9]+")


class FakeGraph:
    """The Threads Graph API, scripted per token and per container id."""

    def __init__(self, tokens: Mapping[str, Behaviour] | None = None,
                 containers: Mapping[str, list[Script]] | None = None, *,
                 latency: Latency | Mapping[str, Latency] = 0.0):
        self.tokens: dict[str, Behaviour] = dict(tokens or {})
        self.containers: dict[str, list[Script]] = {
            cid: list(answers) for cid, answers in (containers or {}).items()}
        # Seconds before every answer, or per endpoint ({"container": 2.0}).
        self.latency = latency
        self.expires_at: dict[str, float] = {}  # debug_token's expires_at per token
        # The user each token belongs to: /me answers it, and threads_publishing_limit of
        # another numeric user id answers code 2, as the real API does. Unlisted: "1".
        self.users: dict[str, str] = {}
        # Tokens of apps in development mode: debug_token refuses them as access_token, and
        # answers only when asked with one of the app access tokens.
        self.dev_mode: set[str] = set()
        self.app_tokens: set[str] = set()
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._bytes: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()  # by endpoint; "" is every endpoint
        self._peak: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._server: _Server | None = None

    # --- scripting ---

    def token(self, token: str, behaviour: Behaviour, *,
              expires_at: float | None = None) -> FakeGraph:
        self.tokens[token] = behaviour
        if expires_at is not None:
            self.expires_at[token] = expires_at
        return self

    def container(self, cid: str, *answers: Script) -> FakeGraph:
        self.containers[cid] = list(answers)
        return self

    # --- connecting ---

    def start(self) -> FakeGraph:
        """Serve HTTP on a free loopback port (see base_url)."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(self)
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                             name="fake-graph", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging and delayed answers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGraph:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake serves HTTP only once started (with FakeGraph(...))")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def transport(self) -> FakeTransport:
        """An in-process httpx transport answering from the same scripts and log."""
        return FakeTransport(self)

    # --- observing ---

    def requests(self, endpoint: str | None = None, *, token: str | None = None,
                 cid: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.log if (endpoint is None or r.endpoint == endpoint)
                    and (token is None or r.token == token) and (cid is None or r.cid == cid)]

    def calls(self, token: str | None = None, endpoint: str | None = None) -> int:
        """Requests received (answered or not), of a token and/or to an endpoint."""
        return len(self.requests(endpoint, token=token))

    def polls(self, cid: str) -> list[float]:
        """Arrival times of the polls of one container."""
        return [r.arrived for r in self.requests("container", cid=cid)]

    def served(self) -> dict[str, int]:
        """Polls received per container id."""
        with self._lock:
            return {key: n for (endpoint, key), n in self._counts.items()
                    if endpoint == "container"}

    def answered(self, endpoint: str = "container") -> Counter[str]:
        """Requests answered whole, per container id (per token for other endpoints)."""
        return Counter(r.cid if r.endpoint == "container" else r.token
                       for r in self.requests(endpoint) if r.done is not None)

    def container_paths(self) -> list[str]:
        """Paths of every request that was not a quota reading or a debug_token call."""
        return [r.path for r in self.requests()
                if r.endpoint not in ("publishing_limit", "debug_token")]

    def bytes_sent(self, token: str) -> int:
        with self._lock:
            return self._bytes[token]

    def in_flight(self, endpoint: str | None = None) -> int:
        with self._lock:
            return self._in_flight[endpoint or ""]

    def peak_in_flight(self, endpoint: str | None = None) -> int:
        with self._lock:
            return self._peak[endpoint or ""]

    # --- the handler logic both ways of connecting share ---

    def _arrive(self, method: str, target: str) -> Request:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        token = query.get("access_token", "")
        endpoint, cid = _classify(url.path)
        with self._lock:
            key = (endpoint, cid if cid is not None else token)
            self._counts[key] += 1
            req = Request(method, url.path, query, token, endpoint, cid, self._counts[key],
                          time.time())
            self.log.append(req)
            for k in ("", endpoint):
                self._in_flight[k] += 1
                self._peak[k] = max(self._peak[k], self._in_flight[k])
        return req

    def _leave(self, req: Request) -> None:
        with self._lock:
            for k in ("", req.endpoint):
                self._in_flight[k] -= 1

    def _sent(self, req: Request, n: int) -> None:
        with self._lock:
            self._bytes[req.token] += n

    def _done(self, req: Request) -> None:
        with self._lock:
            req.done = time.time()

    def _answer(self, req: Request) -> Answer:
        answer = self._decide(req)
        latency = self.latency
        if isinstance(latency, Mapping):
            latency = latency.get(req.endpoint, 0.0)
        if isinstance(latency, tuple):
            latency = random.uniform(*latency)
        return replace(answer, delay=answer.delay + latency) if latency else answer

    def _debug_token(self, token: str) -> Answer:
        if token not in self.tokens:
            return json_answer(400, error_body(
                190, "Invalid OAuth access token - Cannot parse access token"))
        expires = self.expires_at.get(token, time.time() + 30 * DAY)
        return json_answer(200, {"data": {
            "app_id": "1000000000000001", "type": "USER", "application": "fake-graph",
            "expires_at": int(expires), "is_valid": True,
            "scopes": ["threads_basic", "threads_content_publish"],
            "user_id": self.users.get(token, "1")}})

    def _decide(self, req: Request) -> Answer:
        if req.method != "GET":
            return json_answer(400, error_body(
                100, f"Unsupported {req.method.lower()} request.", subcode=33))
        if req.endpoint == "unknown":
            return json_answer(400, error_body(2500, f"Unknown path components: {req.path}"))
        if not req.token:
            return json_answer(400, error_body(
                104, "An access token is required to request this resource."))
        if req.endpoint == "debug_token" and req.token in self.app_tokens:
            return self._debug_token(req.query.get("input_token", ""))
        if req.token not in self.tokens:
            return json_answer(400, error_body(
                190, "Invalid OAuth access token - Cannot parse access token"))
        if req.endpoint == "me":
            return json_answer(200, {"id": self.users.get(req.token, "1")})
        if req.endpoint == "debug_token":
            if req.token in self.dev_mode:
                return json_answer(400, DEV_MODE_DEBUG_TOKEN)
            return self._debug_token(req.token)
        if req.endpoint == "publishing_limit":
            user = req.path.split("/")[2]
            if user not in ("me", self.users.get(req.token, user)):
                return json_answer(500, UNEXPECTED)
            return self.tokens[req.token](req)
        assert req.cid is not None
        script = self.containers.get(req.cid)
        if not script:
            return json_answer(400, error_body(
                100, f"Unsupported get request. Object with ID '{req.cid}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this "
                "operation.", subcode=33))
        step = script[min(req.n, len(script)) - 1]
        if callable(step):
            return step(req)
        return json_answer(200, {**step, "id": req.cid})


def _classify(path: str) -> tuple[str, str | None]:
    m = _VERSIONED.fullmatch(path)
    if m is None:
        return "unknown", None
    parts = m.group(1).strip("/").split("/")
    if parts == ["debug_token"]:
        return "debug_token", None
    if parts == ["me"]:
        return "me", None
    if len(parts) == 2 and parts[1] == "threads_publishing_limit" and parts[0]:
        return "publishing_limit", None
    if len(parts) == 1 and _DIGITS.fullmatch(parts[0]):
        return "container", parts[0]
    return "unknown", None


# --- way 1: a real HTTP server on loopback -------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines carry tokens

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        req = fake._arrive(self.command, self.path)
        try:
            self._send(fake, req, fake._answer(req))
        finally:
            fake._leave(req)

    def _send(self, fake: FakeGraph, req: Request, answer: Answer) -> None:
        if answer.hang:
            fake._stopping.wait(HANG_SECONDS)
            self.close_connection = True
            return
        if answer.delay and fake._stopping.wait(answer.delay):
            self.close_connection = True
            return
        if answer.refuse:
            self.close_connection = True
            return
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(answer.size if answer.length is None
                                               else answer.length))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            for chunk in answer.chunks():
                self.wfile.write(chunk)
                fake._sent(req, len(chunk))
        except OSError:  # the client hung up
            self.close_connection = True
            return
        if answer.reset:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        fake._done(req)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeGraph):
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that aborts its connection (aiohttp after a bad answer) is fine
        super().handle_error(request, client_address)


# --- way 2: an in-process httpx transport --------------------------------------------------


class FakeTransport(httpx.AsyncBaseTransport):
    """The fake as an httpx transport: no socket; delays and hangs are asyncio sleeps (they
    never block the caller's event loop), a refused connection is httpx.ConnectError, a reset
    is httpx.ReadError in the middle of the body."""

    def __init__(self, fake: FakeGraph):
        self.fake = fake

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fake = self.fake
        req = fake._arrive(request.method, request.url.raw_path.decode("ascii"))
        try:
            answer = fake._answer(req)
            if answer.hang:
                await asyncio.sleep(HANG_SECONDS)
                raise httpx.RemoteProtocolError("Server disconnected without sending a "
                                                "response.", request=request)
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if answer.refuse:
                # As httpcore words it: with the URL, which the exporter must never repeat.
                raise httpx.ConnectError(f"[Errno 111] Connection refused: {request.url}",
                                         request=request)
            headers = {"Content-Type": answer.content_type,
                       "Content-Length": str(answer.size if answer.length is None
                                             else answer.length), **answer.headers}
            return httpx.Response(answer.status, headers=headers,
                                  stream=_Body(fake, req, answer), request=request)
        finally:
            fake._leave(req)


class _Body(httpx.AsyncByteStream):
    def __init__(self, fake: FakeGraph, req: Request, answer: Answer):
        self.fake, self.req, self.answer = fake, req, answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.answer.chunks():
            self.fake._sent(self.req, len(chunk))
            yield chunk
        if self.answer.reset:
            raise httpx.ReadError("peer closed connection without sending complete message "
                                  "body")
        self.fake._done(self.req)
