"""What each HTTP path answers: metrics, probe, landing page, health, reload, containers.

Every answer that carries text goes through the redactor, and none quotes what a client sent
beyond a configured account name: an error page must not become an oracle or an echo.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import html
import json
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from threads_exporter import __version__
from threads_exporter.app import (
    FULL,
    INVALID,
    KNOWN,
    NEW,
    UNKNOWN,
    Exporter,
    StoreError,
)
from threads_exporter.config import valid_container_id
from threads_exporter.redact import REDACT, shown

if TYPE_CHECKING:
    from threads_exporter.web.server import HttpServer

T = TypeVar("T")
CONTAINERS_PATH = "/api/v1/containers"
DEFAULT_SCRAPE_TIMEOUT = 10.0  # Prometheus' default scrape_timeout
MAX_SCRAPE_TIMEOUT = 300.0
STORE_RETRY_AFTER = "5"  # seconds, for a registration the state file could not take
PAGE_SIZE = 1000  # containers in a listing page unless ?limit= says otherwise
MAX_PAGE_SIZE = 10_000
MAX_BATCH = 1000  # registrations in one POST


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


async def metrics(request: Request, account: str | None = None) -> web.StreamResponse:
    encoder, content_type = choose_encoder(request.headers.get("Accept") or "")
    compress = "gzip" in (request.headers.get("Accept-Encoding") or "")

    budget = scrape_budget(request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
                           request.server.timeout_offset)
    body = await request.exporter.exposition_async(time.monotonic() + budget, account, encoder,
                                                   gzip=compress)
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


async def _from_store(request: Request, work: Awaitable[T]) -> T | web.Response:
    """What a store call gives, or 503 with Retry-After when the state file fails or does
    not answer within the request deadline (a hung disk)."""
    try:
        async with asyncio.timeout(request.server.limits.body_timeout):
            return await work
    except StoreError as e:
        message = str(e)
    except TimeoutError:
        message = "the container state file did not answer in time"
    return json_response(HTTPStatus.SERVICE_UNAVAILABLE, {"error": message},
                         {"Retry-After": STORE_RETRY_AFTER})


def _cursor(key: tuple[float, str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _key(cursor: str) -> tuple[float, str, str] | None:
    try:
        t, account, cid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        return None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not isinstance(account, str) \
            or not isinstance(cid, str):
        return None
    return float(t), account, cid


async def list_containers(request: Request) -> web.StreamResponse:
    refusal = _api_refusal(request)
    if refusal is not None:
        return refusal
    accounts, limits, afters = (request.query(n) for n in ("account", "limit", "after"))
    limit = PAGE_SIZE
    if limits:
        if not limits[-1].isdigit() or not 1 <= int(limits[-1]) <= MAX_PAGE_SIZE:
            return json_response(HTTPStatus.BAD_REQUEST, {
                "error": f"limit: a whole number from 1 to {MAX_PAGE_SIZE}"})
        limit = int(limits[-1])
    after = _key(afters[-1]) if afters else None
    if afters and after is None:
        return json_response(HTTPStatus.BAD_REQUEST, {
            "error": "after: not a cursor this exporter gave (use the previous page's next)"})
    page = await _from_store(request, request.exporter.containers_async(
        accounts[-1] if accounts else None, limit, after))
    if isinstance(page, web.Response):
        return page
    listing, more = page
    return json_response(HTTPStatus.OK, {"containers": listing,
                                         "next": _cursor(more) if more else None})


async def read_body(request: Request) -> bytes | web.Response:
    """The whole body, within the size cap and the body deadline; else the refusal (and the
    connection is closed, so nothing unread is ever parsed as a next request)."""
    raw, limits = request.raw, request.server.limits
    if raw.content_length is not None and raw.content_length > limits.max_body:
        response = plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"request body larger than {limits.max_body} bytes")
        response.force_close()
        return response
    if raw.version >= (1, 1) and raw.headers.get("Expect", "").lower() == "100-continue":
        # As Go's net/http does at a handler's first read: a client that asked waits for
        # this before sending its body (curl waits a second, then sends anyway).
        await raw.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        raw.writer.output_size = 0  # the answer proper has not begun
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
    if isinstance(payload, list):
        return await _register_many(request, payload)
    if not isinstance(payload, dict):
        return json_response(HTTPStatus.BAD_REQUEST, {
            "error": 'expected a JSON object {"account": NAME, "id": CONTAINER_ID}, or an '
                     f"array of at most {MAX_BATCH} of them"})
    problem = _entry_problem(payload)
    if problem is not None:
        return json_response(HTTPStatus.BAD_REQUEST, {"error": problem})
    account, cid = payload["account"], payload["id"]
    misdirected = request.exporter.config.misdirected(account)
    if misdirected is not None:
        return json_response(HTTPStatus.MISDIRECTED_REQUEST, {"error": misdirected})
    done = await _from_store(request, request.exporter.register_batch_async([(account, cid)]))
    if isinstance(done, web.Response):
        return done
    [(outcome, entry)] = done
    status, error = _OUTCOMES[outcome]
    if error is not None:
        return json_response(status, {"error": error.format(account=shown(account))})
    return json_response(status, entry)


def _entry_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return 'expected {"account": NAME, "id": CONTAINER_ID}'
    account, cid = item.get("account"), item.get("id")
    if not isinstance(account, str) or not account:
        return "account: a configured account name (a string) is required"
    if not isinstance(cid, str) or not valid_container_id(cid):
        return "id: a container id is a string of digits"
    return None


# Outcome of one registration -> (HTTP status, error text or None for the listing entry).
_OUTCOMES: dict[str, tuple[int, str | None]] = {
    NEW: (HTTPStatus.CREATED, None),
    KNOWN: (HTTPStatus.OK, None),
    UNKNOWN: (HTTPStatus.NOT_FOUND, "account: no configured account named {account}"),
    INVALID: (HTTPStatus.BAD_REQUEST, "id: a container id is a string of digits"),
    FULL: (HTTPStatus.TOO_MANY_REQUESTS, "the account already tracks "
           "containers.max_tracked_per_account containers that are still polled; wait for "
           "some to finish or expire, or raise the limit"),
}


async def _register_many(request: Request, items: list[Any]) -> web.StreamResponse:
    """A batch: 200 with one result per item, in order; the valid ones in one transaction."""
    if not 1 <= len(items) <= MAX_BATCH:
        return json_response(HTTPStatus.BAD_REQUEST, {
            "error": f"a batch holds 1 to {MAX_BATCH} registrations"})
    results: list[dict[str, Any]] = []
    todo: list[tuple[int, str, str]] = []
    config = request.exporter.config
    for i, item in enumerate(items):
        problem = _entry_problem(item)
        account = item.get("account") if isinstance(item, dict) else None
        cid = item.get("id") if isinstance(item, dict) else None
        result: dict[str, Any] = {"account": account if isinstance(account, str) else None,
                                  "id": cid if isinstance(cid, str) else None}
        if problem is not None or not isinstance(account, str) or not isinstance(cid, str):
            result.update(status=HTTPStatus.BAD_REQUEST, error=problem)
        elif (misdirected := config.misdirected(account)) is not None:
            result.update(status=HTTPStatus.MISDIRECTED_REQUEST, error=misdirected)
        else:
            todo.append((i, account, cid))
        results.append(result)
    if todo:
        done = await _from_store(request, request.exporter.register_batch_async(
            [(a, c) for _, a, c in todo]))
        if isinstance(done, web.Response):
            return done
        for (i, account, _), (outcome, _) in zip(todo, done, strict=True):
            status, error = _OUTCOMES[outcome]
            results[i]["status"] = status
            if error is not None:
                results[i]["error"] = error.format(account=shown(account))
    return json_response(HTTPStatus.OK, {"results": results})


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
