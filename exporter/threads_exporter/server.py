"""HTTP server: /metrics, /probe, landing page, health, reload.

A threading server: a slow or stalled client holds only its own thread. Responses never
contain a token; the landing page names accounts only, HTML-escaped.
"""

from __future__ import annotations

import gzip
import hmac
import html
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from threads_exporter import __version__
from threads_exporter.app import Exporter
from threads_exporter.client import REDACT
from threads_exporter.config import ACCOUNT_NAME, Config, valid_container_id
from threads_exporter.store import StoreError
from threads_exporter.tracker import UnknownAccount

if TYPE_CHECKING:
    from threads_exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
CONTAINERS_PATH = "/api/v1/containers"
REQUEST_READ_TIMEOUT = 30.0  # a client that stalls mid-request is dropped after this


class _Families(Collector):
    """Adapts an already-built list of families to prometheus_client's encoders."""

    def __init__(self, families: Iterable[Any]):
        self._families = list(families)

    def collect(self) -> Iterable[Any]:
        return self._families


Route = Callable[["Handler"], None]


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


# --- routes --------------------------------------------------------------------------------


def metrics(h: Handler, account: str | None = None) -> None:
    encoder, content_type = choose_encoder(h.headers.get("Accept") or "")
    compress = "gzip" in (h.headers.get("Accept-Encoding") or "")

    def encode(families: list[Any]) -> bytes:
        body = encoder(_Families(families))
        return gzip.compress(body, compresslevel=5) if compress else body

    body = h.server.exporter.exposition(h.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
                                        account, encode)
    h.send(HTTPStatus.OK, body, content_type, {"Content-Encoding": "gzip"} if compress else {})


def probe(h: Handler) -> None:
    names = h.query.get("account") or []
    if len(names) != 1 or not names[0]:
        h.send_text(HTTPStatus.BAD_REQUEST, "exactly one account parameter is required")
        return
    config = h.server.exporter.config
    if config.account(names[0]) is None:
        # Echo only what could be an account name: no markup from a query reaches a body.
        shown = repr(names[0]) if ACCOUNT_NAME.fullmatch(names[0]) else "(not a valid name)"
        h.send_text(HTTPStatus.BAD_REQUEST,
                    elsewhere(config, names[0]) or f"unknown account {shown}")
        return
    metrics(h, names[0])


def landing(h: Handler) -> None:
    exporter = h.server.exporter
    path = html.escape(h.server.telemetry_path)
    accounts = "".join(
        f'<li>{html.escape(a.name)} (<a href="/probe?account={html.escape(a.name)}">probe</a>)'
        "</li>"
        for a in exporter.config.accounts
    ) or "<li>none configured</li>"
    shard = f" of shard {exporter.config.shard}" if exporter.config.shard else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Threads Exporter</title></head>
<body>
<h1>Threads Exporter</h1>
<p>Version {html.escape(__version__)}. Publishing quotas and media container states of
Threads accounts, as Prometheus metrics.</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="/-/healthy">Health</a> and <a href="/-/ready">readiness</a></li>
<li>Media containers: <code>{CONTAINERS_PATH}</code> (<code>GET</code> lists,
<code>POST {{"account", "id"}}</code> registers; bearer token from
<code>containers.api_token</code>)</li>
</ul>
<h2>Accounts{shard}</h2>
<ul>{accounts}</ul>
</body></html>
"""
    h.send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")


def healthy(h: Handler) -> None:
    h.send_text(HTTPStatus.OK, "Healthy")


def ready(h: Handler) -> None:
    h.send_text(HTTPStatus.OK, "Ready")


def reload(h: Handler) -> None:
    error = h.server.exporter.reload()
    if error is None:
        h.send_text(HTTPStatus.OK, "config reloaded")
    else:
        h.send_text(HTTPStatus.BAD_REQUEST, f"config reload failed: {error}")


def _api_authorized(h: Handler) -> bool:
    """Bearer containers.api_token, compared in constant time; answers 401/403 itself.
    Without a configured token the API is closed, never open by default."""
    token = h.server.exporter.config.containers.api_token
    if not token:
        h.send_json(HTTPStatus.FORBIDDEN, {"error": "the container API is disabled: set "
                                           "containers.api_token in the config"})
        return False
    scheme, _, given = (h.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        h.send(HTTPStatus.UNAUTHORIZED, b'{"error": "a valid bearer token is required"}\n',
               "application/json", {"WWW-Authenticate": 'Bearer realm="threads-exporter"'})
        return False
    return True


def list_containers(h: Handler) -> None:
    if not _api_authorized(h):
        return
    account = (h.query.get("account") or [None])[-1]
    try:
        listing = h.server.exporter.containers(account)
    except StoreError as e:
        h.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e)})
        return
    h.send_json(HTTPStatus.OK, {"containers": listing})


def elsewhere(config: Config, account: str) -> str | None:
    """Where to go instead, for an account another shard serves."""
    owner = config.elsewhere.get(account)
    if owner is None or config.shard is None:
        return None
    return (f"account {account!r} belongs to shard {owner}/{config.shard.total}; this is "
            f"shard {config.shard}")


def register_container(h: Handler) -> None:
    if not _api_authorized(h):
        return
    body = h.read_body()
    if body is None:
        return
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        payload = None
    if not isinstance(payload, dict):
        h.send_json(HTTPStatus.BAD_REQUEST,
                    {"error": 'expected a JSON object {"account": NAME, "id": CONTAINER_ID}'})
        return
    account, cid = payload.get("account"), payload.get("id")
    if not isinstance(account, str) or not account:
        h.send_json(HTTPStatus.BAD_REQUEST, {"error": "account: a configured account name "
                                             "(a string) is required"})
        return
    if not valid_container_id(cid):
        h.send_json(HTTPStatus.BAD_REQUEST, {"error": "id: a container id is a string of "
                                             "digits"})
        return
    misdirected = elsewhere(h.server.exporter.config, account)
    if misdirected is not None:
        h.send_json(HTTPStatus.MISDIRECTED_REQUEST, {"error": misdirected})
        return
    try:
        new, entry = h.server.exporter.register(account, cid)
    except UnknownAccount:
        h.send_json(HTTPStatus.NOT_FOUND, {"error": f"no configured account named {account!r}"})
        return
    except StoreError as e:
        h.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e)})
        return
    h.send_json(HTTPStatus.CREATED if new else HTTPStatus.OK, entry)


# --- server --------------------------------------------------------------------------------


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], exporter: Exporter, web: WebConfig | None,
                 telemetry_path: str = "/metrics"):
        self.exporter = exporter
        self.web = web
        self.telemetry_path = telemetry_path
        self.routes: dict[str, dict[str, Route]] = {
            "/": {"GET": landing},
            telemetry_path: {"GET": metrics},
            "/probe": {"GET": probe},
            "/-/healthy": {"GET": healthy},
            "/-/ready": {"GET": ready},
            "/-/reload": {"POST": reload, "PUT": reload},
            CONTAINERS_PATH: {"GET": list_containers, "POST": register_container},
        }
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

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
    """`host:port`, `:port` (all interfaces) or `[v6]:port`."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--web.listen-address: expected host:port, got {value!r}")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


def serve_in_thread(server: ExporterHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return thread
