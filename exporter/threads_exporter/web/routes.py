"""What each HTTP path answers: metrics, probe, landing page, health, reload, containers."""

from __future__ import annotations

import gzip
import hmac
import html
import json
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from threads_exporter import __version__
from threads_exporter.app import StoreError, UnknownAccount
from threads_exporter.config import ACCOUNT_NAME, valid_container_id

if TYPE_CHECKING:
    from threads_exporter.web.server import Handler

CONTAINERS_PATH = "/api/v1/containers"
DEFAULT_SCRAPE_TIMEOUT = 10.0  # Prometheus' default scrape_timeout
MAX_SCRAPE_TIMEOUT = 300.0

Route = Callable[["Handler"], None]


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


def metrics(h: Handler, account: str | None = None) -> None:
    encoder, content_type = choose_encoder(h.headers.get("Accept") or "")
    compress = "gzip" in (h.headers.get("Accept-Encoding") or "")

    def encode(families: list[Any]) -> bytes:
        body = encoder(_Families(families))
        return gzip.compress(body, compresslevel=5) if compress else body

    budget = scrape_budget(h.headers.get("X-Prometheus-Scrape-Timeout-Seconds"),
                           h.server.timeout_offset)
    body = h.server.exporter.exposition(time.monotonic() + budget, account, encode)
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
                    config.misdirected(names[0]) or f"unknown account {shown}")
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
    accounts = h.query.get("account")
    account = accounts[-1] if accounts else None
    try:
        listing = h.server.exporter.containers(account)
    except StoreError as e:
        h.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e)})
        return
    h.send_json(HTTPStatus.OK, {"containers": listing})


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
    if not isinstance(cid, str) or not valid_container_id(cid):
        h.send_json(HTTPStatus.BAD_REQUEST, {"error": "id: a container id is a string of "
                                             "digits"})
        return
    misdirected = h.server.exporter.config.misdirected(account)
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
