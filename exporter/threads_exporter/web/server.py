"""The HTTP server: aiohttp on the exporter's event loop, every resource a client can hold
bounded (connections, header bytes, the time to send a request, bodies); routes in routes.py.

aiohttp's low-level server does the protocol (its C parser rejects duplicate Content-Length
and smuggled bodies, and an unread body is drained or the connection closed); this module
adds what Go's net/http gives an exporter-toolkit exporter: a cap on connections, a deadline
for a request to arrive (slowloris), 431 for oversized headers, TLS handshakes with a
deadline, basic auth, and error answers that never echo a request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from threads_exporter import __version__
from threads_exporter.app import Exporter
from threads_exporter.web.basicauth import BCRYPT_SLOTS
from threads_exporter.web.heads import HeadLimitedHandler, HeadTooLarge, peer
from threads_exporter.web.routes import (
    CONTAINERS_PATH,
    Request,
    plain,
    route_table,
)

if TYPE_CHECKING:
    from threads_exporter.web.webconfig import WebConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one client may hold. Go's exporter-toolkit servers answer 431 past 1 MB of
    headers; here a request head is at most max_head bytes in all, in at most max_headers
    lines of max_line bytes. aiohttp's parser keeps each header as bytes and as str until
    the head is answered, so 1,024 connections of 64 KiB heads hold ~130 MB, where 64 lines
    of 8 KiB each would be ~1 GB."""

    max_connections: int = 1024
    max_head: int = 64 * 1024  # bytes from a request's first byte to its blank line
    max_line: int = 8190  # bytes in one header line, and in the request line
    max_headers: int = 64
    request_timeout: float = 10.0  # a request head must arrive within this of its first byte
    body_timeout: float = 10.0  # and its body within this
    idle_timeout: float = 75.0  # keep-alive: an idle connection is closed after this
    max_body: int = 256 * 1024
    shutdown_timeout: float = 0.5  # for requests in flight; SIGTERM must end the process in 2 s


class _Protocol(HeadLimitedHandler):
    """aiohttp's request handler with heads bounded (heads.py), plus the connection cap, the
    request deadline and error answers that do not quote the request."""

    _counted = False
    _deadline: asyncio.TimerHandle | None = None
    _busy = False

    @property
    def _guard(self) -> _Server:
        manager = self._manager
        assert isinstance(manager, _Server)
        return manager

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard.active >= guard.limits.max_connections:
            # Over the cap: answered at once and closed, never queued behind the others.
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                                b"Retry-After: 1\r\nContent-Length: 0\r\n\r\n")
            transport.close()
            guard.refused += 1
            return
        guard.active += 1
        self._counted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._counted:
            return
        self._counted = False
        self._guard.active -= 1
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        if self._deadline is None and not self._busy:
            self._arm()  # the first byte of a new request starts its clock
        super().data_received(data)

    def head_limit(self) -> int:
        return self._guard.limits.max_head

    def eof_received(self) -> None:
        if self._counted:
            super().eof_received()

    def request_started(self) -> None:
        self._busy = True
        self._disarm()

    def request_done(self) -> None:
        self._busy = False

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.limits.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self._busy and self.transport is not None:
            log.debug("client too slow to send its request; closed", extra={
                "client": peer(self.transport)})
            self.transport.close()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own answer quotes the offending bytes (a header line may hold a
        # credential), and logs them with a traceback: answer and log the kind only.
        if isinstance(exc, BadHttpMessage):
            status = _status_for(exc)
        log.debug("bad request", extra={"client": peer(self.transport), "status": status,
                                        "error": type(exc).__name__ if exc else None})
        response = plain(status, HTTPStatus(status).phrase)
        response.force_close()
        return response


def _status_for(exc: BadHttpMessage) -> int:
    """The status Go's net/http gives a request it cannot take (aiohttp says 400 for all)."""
    if isinstance(exc, HeadTooLarge):
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    if isinstance(exc, LineTooLong):
        line = bytes(exc.args[0][:8]) if exc.args and isinstance(exc.args[0], (bytes, bytearray)) \
            else b""
        # The request line's target starts with / (or is absolute): the URI is too long.
        if line.startswith((b"/", b"*", b"http:", b"https:")):
            return HTTPStatus.REQUEST_URI_TOO_LONG
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    text = str(exc)
    if "Too many headers" in text:
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    if "Invalid HTTP version" in text:
        return HTTPStatus.HTTP_VERSION_NOT_SUPPORTED
    return HTTPStatus.BAD_REQUEST


class _Server(web.Server):
    """The protocol factory: one _Protocol per connection, counted."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
                 limits: Limits) -> None:
        super().__init__(handler, handler_cancellation=True, access_log=None,
                         max_line_size=limits.max_line, max_field_size=limits.max_line,
                         max_headers=limits.max_headers, keepalive_timeout=limits.idle_timeout,
                         lingering_time=1.0)
        self.limits = limits
        self.active = 0
        self.refused = 0

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class HttpServer:
    """The exporter's HTTP front on its event loop: start() binds, stop() closes."""

    def __init__(self, exporter: Exporter, web_config: WebConfig | None,
                 telemetry_path: str = "/metrics", *, timeout_offset: float = 0.5,
                 enable_lifecycle: bool = False, limits: Limits = Limits()):
        self.exporter = exporter
        self.web = web_config
        self.telemetry_path = telemetry_path
        self.timeout_offset = timeout_offset
        self.enable_lifecycle = enable_lifecycle
        self.limits = limits
        self.routes = route_table(telemetry_path)
        self._server: _Server | None = None  # made on the loop, in start()
        self._bcrypt = ThreadPoolExecutor(BCRYPT_SLOTS, thread_name_prefix="bcrypt")
        self._listener: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int) -> None:
        """Listen; `host` "" means every interface, IPv4 and IPv6 (dual-stack where the host
        has IPv6, as Go's net.Listen has it). Raises OSError when the address is taken."""
        ssl_context = self.web.ssl_context if self.web is not None else None
        sock = _bind(host, port)
        self._server = _Server(self._handle, self.limits)
        self._listener = await asyncio.get_running_loop().create_server(
            self._server, sock=sock, ssl=ssl_context, backlog=512,
            ssl_handshake_timeout=self.limits.request_timeout if ssl_context else None)
        bound = sock.getsockname()
        self.address = (str(bound[0]), int(bound[1]))

    async def stop(self) -> None:
        """Stop accepting, give requests in flight shutdown_timeout to finish, close."""
        if self._listener is not None and self._server is not None:
            self._listener.close()
            # aiohttp waits twice per connection (for the handler to finish, then for it to
            # end once cancelled), each up to the timeout given: half each.
            await self._server.shutdown(self.limits.shutdown_timeout / 2)
            await self._listener.wait_closed()
            self._listener = None
        self._bcrypt.shutdown(wait=False, cancel_futures=True)

    async def _handle(self, raw: web.BaseRequest) -> web.StreamResponse:
        protocol = raw.protocol
        if isinstance(protocol, _Protocol):
            protocol.request_started()
        try:
            response = await self._dispatch(Request(raw, self))
        finally:
            if isinstance(protocol, _Protocol):
                protocol.request_done()
        headers = self.web.headers if self.web is not None else {}
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        response.headers["Server"] = f"threads-exporter/{__version__}"
        return response

    async def _dispatch(self, request: Request) -> web.StreamResponse:
        raw = request.raw
        authorization = raw.headers.get("Authorization")
        # The registration API has its own bearer token, checked by its routes; one
        # Authorization header cannot carry both that and basic-auth credentials.
        own_auth = (raw.path == CONTAINERS_PATH
                    and (authorization or "").lower().startswith("bearer "))
        if self.web is not None and not own_auth and not await self._authorized(authorization):
            response = plain(HTTPStatus.UNAUTHORIZED, "Unauthorized")
            response.headers["WWW-Authenticate"] = 'Basic realm="threads-exporter"'
            return response
        routes = self.routes.get(raw.path)
        if routes is None:
            return plain(HTTPStatus.NOT_FOUND, "not found")
        route = routes.get("GET" if raw.method == "HEAD" else raw.method)
        if route is None:
            response = plain(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")
            response.headers["Allow"] = ", ".join(sorted(routes))
            return response
        try:
            return await route(request)
        except asyncio.CancelledError:
            raise  # the client went away, or the exporter is stopping
        except Exception:
            log.exception("request failed", extra={"path": raw.path})
            return plain(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    async def _authorized(self, authorization: str | None) -> bool:
        auth = self.web.basic_auth if self.web is not None else None
        if auth is None:
            return True
        verdict = auth.cached(authorization)  # a dict lookup: a cached scrape never waits
        if verdict is not None:
            return verdict
        # bcrypt is CPU work: off the loop, on threads of its own, so neither API calls nor
        # the encoding of a scrape ever queue behind an attacker's guesses.
        return await asyncio.get_running_loop().run_in_executor(
            self._bcrypt, auth.authorized, authorization)


def _bind(host: str, port: int) -> socket.socket:
    if host == "" and socket.has_dualstack_ipv6():
        sock = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True,
                                    reuse_port=False)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host or "0.0.0.0", port), family=family)
    sock.setblocking(False)
    return sock


def parse_listen_address(value: str) -> tuple[str, int]:
    """`host:port`, `:port` (all interfaces: host "") or `[v6]:port`."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--web.listen-address: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


class ExporterHTTPServer:
    """An HttpServer started on the exporter's loop from another thread: for the command
    line and for tests, which hold the exporter synchronously."""

    def __init__(self, address: tuple[str, int], exporter: Exporter,
                 web_config: WebConfig | None, telemetry_path: str = "/metrics", *,
                 timeout_offset: float = 0.5, enable_lifecycle: bool = False,
                 limits: Limits = Limits()):
        self.http = HttpServer(exporter, web_config, telemetry_path,
                               timeout_offset=timeout_offset, enable_lifecycle=enable_lifecycle,
                               limits=limits)
        self._exporter = exporter
        exporter.call(self.http.start(*address), timeout=10)
        self.server_address = self.http.address

    def shutdown(self) -> None:
        self._exporter.call(self.http.stop(), timeout=self.http.limits.shutdown_timeout + 5)
