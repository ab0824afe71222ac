"""The HTTP server: connections, TLS, basic auth, request plumbing; routes are in routes.py.

A threading server: a slow or stalled client holds only its own thread. Responses never
contain a token; the landing page names accounts only, HTML-escaped.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from concurrent.futures import CancelledError
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from threads_exporter import __version__
from threads_exporter.app import Exporter
from threads_exporter.redact import REDACT
from threads_exporter.web.routes import CONTAINERS_PATH, Route, route_table

if TYPE_CHECKING:
    from threads_exporter.web.webconfig import WebConfig

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
REQUEST_READ_TIMEOUT = 30.0  # a client that stalls mid-request is dropped after this


class Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, a keep-alive scraper's delayed
    # ACK would add ~40 ms to every scrape after the first few.
    disable_nagle_algorithm = True
    timeout = REQUEST_READ_TIMEOUT
    server_version = f"threads-exporter/{__version__}"
    sys_version = ""

    # --- plumbing ---

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"client": self.client_address[0],
                                         "request": REDACT(format % args)})

    def send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
             headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        extra = self.server.web.headers if self.server.web else {}
        for name, value in {**extra, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_text(self, status: int, text: str) -> None:
        # Redacted like log lines: error texts may quote a config or a request.
        self.send(status, (REDACT(text).rstrip("\n") + "\n").encode())

    def send_json(self, status: int, payload: Any) -> None:
        # Markup characters escaped as Go's encoding/json does, so echoed input stays inert.
        text = json.dumps(payload, indent=1).replace("<", "\\u003c").replace(">", "\\u003e")
        self.send(status, REDACT(text).encode() + b"\n", "application/json")

    def read_body(self) -> bytes | None:
        """The request body, or None after answering 400/413 when it is unusable."""
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self.send_text(HTTPStatus.BAD_REQUEST, "chunked request bodies are not supported")
            return None
        try:
            n = int(length or 0)
        except ValueError:
            n = -1
        if n < 0:
            self.close_connection = True
            self.send_text(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            return None
        if n > MAX_BODY_BYTES:
            self.close_connection = True
            self.send_text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"request body larger than {MAX_BODY_BYTES} bytes")
            return None
        return self.rfile.read(n)

    @property
    def path_only(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def dispatch(self) -> None:
        web = self.server.web
        authorization = self.headers.get("Authorization")
        # The registration API has its own bearer token, checked by its routes; one
        # Authorization header cannot carry both that and basic-auth credentials.
        own_auth = (self.path_only == CONTAINERS_PATH
                    and (authorization or "").lower().startswith("bearer "))
        if web is not None and not own_auth and not web.authorized(authorization):
            self.send(HTTPStatus.UNAUTHORIZED, b"Unauthorized\n",
                      headers={"WWW-Authenticate": 'Basic realm="threads-exporter"'})
            return
        routes = self.server.routes.get(self.path_only)
        if routes is None:
            self.send_text(HTTPStatus.NOT_FOUND, "not found")
            return
        route = routes.get("GET" if self.command == "HEAD" else self.command)
        if route is None:
            self.send(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n",
                      headers={"Allow": ", ".join(sorted(routes))})
            return
        try:
            route(self)
        except CancelledError:  # shutting down: the exporter cancelled in-flight work
            self.send_text(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down")
        except Exception:
            log.exception("request failed", extra={"path": self.path_only})
            self.send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = dispatch


# --- server --------------------------------------------------------------------------------


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], exporter: Exporter, web: WebConfig | None,
                 telemetry_path: str = "/metrics", *, timeout_offset: float = 0.5):
        self.exporter = exporter
        self.web = web
        self.telemetry_path = telemetry_path
        self.timeout_offset = timeout_offset
        self.routes: dict[str, dict[str, Route]] = route_table(telemetry_path)
        host = address[0]
        self._dual_stack = host == "" and socket.has_dualstack_ipv6()
        if self._dual_stack:
            address = ("::", address[1])
        elif host == "":
            address = ("0.0.0.0", address[1])
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # `:port` means every interface, IPv4 and IPv6 alike, as Go's net.Listen has it.
        if self._dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the connection's own thread, so a client that never
        # finishes it cannot stall the accept loop.
        if self.web is not None and self.web.ssl_context is not None:
            request.settimeout(REQUEST_READ_TIMEOUT)
            try:
                request = self.web.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("TLS handshake failed", extra={"client": client_address[0],
                                                         "error": type(e).__name__})
                return
        super().finish_request(request, client_address)


def parse_listen_address(value: str) -> tuple[str, int]:
    """`host:port`, `:port` (all interfaces: host "") or `[v6]:port`."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--web.listen-address: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def serve_in_thread(server: ExporterHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return thread
