"""What each HTTP path answers: metrics, probe, landing page, health, reload, containers.

Every answer that carries text goes through the redactor, and none quotes what a client sent
beyond a configured account name: an error page must not become an oracle or an echo.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import html
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from threads_exporter import __version__
from threads_exporter.app import Exporter, StoreError, UnknownAccount
from threads_exporter.config import valid_container_id
from threads_exporter.redact import REDACT, shown

if TYPE_CHECKING:
    from threads_exporter.web.server import HttpServer

CONTAINERS_PATH = "/api/v1/containers"
DEFAULT_SCRAPE_TIMEOUT = 10.0  # Prometheus' default scrape_timeout
MAX_SCRAPE_TIMEOUT = 300.0
STORE_RETRY_AFTER = "5"  # seconds, for a registration the state file could not take


class Request:
    """One request, with what its route needs from the server."""

    def __init__(self, raw: web.BaseRequest, server: HttpServer):
        self.raw = raw
        self.server = server

    @property
    def exporter(self) -> Exporter:
        return self.server.exporter

    @property
    def headers(self) -> Any:
        return self.raw.headers

    def query(self, name: str) -> list[str]:
        return self.raw.query.getall(name, [])


Route = Callable[[Request], Awaitable[web.StreamResponse]]


def plain(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    # Redacted like log lines: error texts may quote a config.
    return web.Response(status=status, body=(REDACT(text).rstrip("\n") + "\n").encode(),
                        content_type="text/plain", charset="utf-8", headers=headers)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None,
                  ) -> web.Response:
    # Redacted before serialising, so a secret with a quote or a backslash in it cannot
    # escape the mask by being escaped; markup escaped as Go's encoding/json does.
    text = json.dumps(_redacted(payload), indent=1).replace("<", "\\u003c").replace(">", "\\u003e")
    return web.Response(status=status, body=text.encode() + b"\n",
                        content_type="application/json", headers=headers)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return REDACT(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def scrape_budget(header: str | None, offset: float) -> float:
    """Seconds a scrape may spend: Prometheus' announced timeout
    (X-Prometheus-Scrape-Timeout-Seconds) minus a safety margin."""
    try:
        timeout = float(header) if header else DEFAULT_SCRAPE_TIMEOUT
    except ValueError:
        timeout = DEFAULT_SCRAPE_TIMEOUT
    if not 0 < timeout < float("inf"):
        timeout = DEFAULT_SCRAPE_TIMEOUT
    return max(0.05, min(timeout, MAX_SCRAPE_TIMEOUT) - offset)


class _Families(Collector):
    """Adapts an already-built list of families to prometheus_client's encoders."""

    def __init__(self, families: Iterable[Any]):
        self._families = list(families)

    def collect(self) -> Iterable[Any]:
        return self._families


async def metrics(request: Request, account: str | None = None) -> web.StreamResponse:
    encoder, content_type = choose_encoder(request.headers.get("Accept") or "")
    compress = "gzip" in (request.headers.get("Accept-Encoding") or "")

    def encode(families: list[Any]) -> bytes:
        body: bytes = encoder(_Families(families))
        return gzip.compress(body, compresslevel=5) if compress else body

    budget = scrape_budget(request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
                           request.server.timeout_offset)
    body = await request.exporter.exposition_async(time.monotonic() + budget, account, encode)
    response = web.Response(status=HTTPStatus.OK, body=body,
                            headers={"Content-Type": content_type})
    if compress:
        response.headers["Content-Encoding"] = "gzip"
    return response


async def probe(request: Request) -> web.StreamResponse:
    names = request.query("account")
    if len(names) != 1 or not names[0]:
        return plain(HTTPStatus.BAD_REQUEST, "exactly one account parameter is required")
    config = request.exporter.config
    if config.account(names[0]) is None:
        # Never the name given: it could be a token pasted into the wrong place, and its
        # echo (redacted or not) would say whether it is one.
        return plain(HTTPStatus.BAD_REQUEST,
                     config.misdirected(names[0]) or "no configured account of that name")
    return await metrics(request, names[0])


async def landing(request: Request) -> web.StreamResponse:
    exporter = request.exporter
    path = html.escape(request.server.telemetry_path)
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
    return web.Response(status=HTTPStatus.OK, body=page.encode(), content_type="text/html",
                        charset="utf-8")


async def healthy(request: Request) -> web.StreamResponse:
    return plain(HTTPStatus.OK, "Healthy")


async def ready(request: Request) -> web.StreamResponse:
    return plain(HTTPStatus.OK, "Ready")


async def reload(request: Request) -> web.StreamResponse:
    # As Prometheus: the lifecycle API is off unless --web.enable-lifecycle; SIGHUP always works.
    if not request.server.enable_lifecycle:
        return plain(HTTPStatus.FORBIDDEN, "Lifecycle API is not enabled.")
    error = await request.exporter.reload_async()
    if error is None:
        return plain(HTTPStatus.OK, "config reloaded")
    return plain(HTTPStatus.BAD_REQUEST, f"config reload failed: {error}")


def _api_refusal(request: Request) -> web.Response | None:
    """Bearer containers.api_token, compared in constant time; the refusal, or None.
    Without a configured token the API is closed, never open by default."""
    token = request.exporter.config.containers.api_token
    if not token:
        return json_response(HTTPStatus.FORBIDDEN, {
            "error": "the container API is disabled: set containers.api_token in the config"})
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        return json_response(HTTPStatus.UNAUTHORIZED,
                             {"error": "a valid bearer token is required"},
                             {"WWW-Authenticate": 'Bearer realm="threads-exporter"'})
    return None


def _store_unavailable(message: str) -> web.Response:
    return json_response(HTTPStatus.SERVICE_UNAVAILABLE, {"error": message},
                         {"Retry-After": STORE_RETRY_AFTER})


async def list_containers(request: Request) -> web.StreamResponse:
    refusal = _api_refusal(request)
    if refusal is not None:
        return refusal
    accounts = request.query("account")
    try:
        async with asyncio.timeout(request.server.limits.body_timeout):
            listing = await request.exporter.containers_async(accounts[-1] if accounts else None)
    except StoreError as e:
        return _store_unavailable(str(e))
    except TimeoutError:
        return _store_unavailable("the container state file did not answer in time")
    return json_response(HTTPStatus.OK, {"containers": listing})


async def read_body(request: Request) -> bytes | web.Response:
    """The whole body, within the size cap and the body deadline; else the refusal (and the
    connection is closed, so nothing unread is ever parsed as a next request)."""
    raw, limits = request.raw, request.server.limits
    if raw.content_length is not None and raw.content_length > limits.max_body:
        response = plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"request body larger than {limits.max_body} bytes")
        response.force_close()
        return response
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout):
            while chunk := await raw.content.readany():
                size += len(chunk)
                if size > limits.max_body:
                    response = plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                     f"request body larger than {limits.max_body} bytes")
                    response.force_close()
                    return response
                chunks.append(chunk)
    except TimeoutError:
        response = plain(HTTPStatus.REQUEST_TIMEOUT, "request body not received in time")
        response.force_close()
        return response
    return b"".join(chunks)


async def register_container(request: Request) -> web.StreamResponse:
    refusal = _api_refusal(request)
    if refusal is not None:
        return refusal
    body = await read_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        payload = None
    if not isinstance(payload, dict):
        return json_response(HTTPStatus.BAD_REQUEST, {
            "error": 'expected a JSON object {"account": NAME, "id": CONTAINER_ID}'})
    account, cid = payload.get("account"), payload.get("id")
    if not isinstance(account, str) or not account:
        return json_response(HTTPStatus.BAD_REQUEST, {
            "error": "account: a configured account name (a string) is required"})
    if not isinstance(cid, str) or not valid_container_id(cid):
        return json_response(HTTPStatus.BAD_REQUEST, {
            "error": "id: a container id is a string of digits"})
    misdirected = request.exporter.config.misdirected(account)
    if misdirected is not None:
        return json_response(HTTPStatus.MISDIRECTED_REQUEST, {"error": misdirected})
    try:
        async with asyncio.timeout(request.server.limits.body_timeout):
            new, entry = await request.exporter.register_async(account, cid)
    except UnknownAccount:
        return json_response(HTTPStatus.NOT_FOUND,
                             {"error": f"account: no configured account named {shown(account)}"})
    except StoreError as e:
        return _store_unavailable(str(e))
    except TimeoutError:
        return _store_unavailable("the container state file did not answer in time")
    return json_response(HTTPStatus.CREATED if new else HTTPStatus.OK, entry)


def route_table(telemetry_path: str) -> dict[str, dict[str, Route]]:
    return {
        "/": {"GET": landing},
        telemetry_path: {"GET": metrics},
        "/probe": {"GET": probe},
        "/-/healthy": {"GET": healthy},
        "/-/ready": {"GET": ready},
        "/-/reload": {"POST": reload, "PUT": reload},
        CONTAINERS_PATH: {"GET": list_containers, "POST": register_container},
    }
