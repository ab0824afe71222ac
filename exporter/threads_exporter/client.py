"""Threads API client: HTTP, error classification, parsing and redaction.

Tokens travel in the ``access_token`` query parameter (as in every Meta example), so request
URLs are secrets. Nothing here formats a URL or an httpx exception into a message: errors are
built from the reason, the Graph error code and the redacted Graph message only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx

from threads_exporter.config import Account, ApiConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

# Reasons, as in the contract's threads_api_errors_total{reason}.
TOKEN_INVALID = "token_invalid"
RATE_LIMITED = "rate_limited"
PERMISSION = "permission"
INVALID_REQUEST = "invalid_request"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION = "connection"
BAD_RESPONSE = "bad_response"
REASONS = (TOKEN_INVALID, RATE_LIMITED, PERMISSION, INVALID_REQUEST, SERVER_ERROR, TIMEOUT,
           CONNECTION, BAD_RESPONSE)
TRANSIENT = frozenset({SERVER_ERROR, TIMEOUT, CONNECTION})

CONTAINER_STATUSES = ("IN_PROGRESS", "FINISHED", "PUBLISHED", "ERROR", "EXPIRED")

# API field names for each quota group: (usage field, config field).
QUOTA_FIELDS: dict[str, tuple[str, str]] = {
    "posts": ("quota_usage", "config"),
    "replies": ("reply_quota_usage", "reply_config"),
    "deletes": ("delete_quota_usage", "delete_config"),
    "location_searches": ("location_search_quota_usage", "location_search_config"),
}

POOL_SIZE = 8  # connections per httpx pool (see ThreadsClient)
HEADERS = {"User-Agent": "threads-exporter", "Accept-Encoding": "gzip, deflate"}
MAX_BODY_BYTES = 1 << 20  # documented answers are tiny; anything bigger is not the API
_SANE_MAX = 10**12  # larger counts are not a real quota
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# --- redaction -----------------------------------------------------------------------------


class Redactor:
    """Masks every known secret, and anything shaped like a token parameter, in text."""

    _PARAM = re.compile(r"((?:access_token|input_token)=)[^&\s\"']+", re.IGNORECASE)
    _BEARER = re.compile(r"(Bearer\s+)[^\s\"']+", re.IGNORECASE)

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        with self._lock:
            self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self.set_secrets((*self._secrets, *secrets))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "<redacted>")
        text = self._PARAM.sub(r"\1<redacted>", text)
        return self._BEARER.sub(r"\1<redacted>", text)


REDACT = Redactor()


# --- errors and classification -------------------------------------------------------------


class ApiError(Exception):
    """A failed call. The message is safe to log: it never holds a URL or a token."""

    def __init__(self, reason: str, message: str, code: int | None = None,
                 transient: bool = False):
        self.reason = reason
        self.code = code
        self.transient = transient or reason in TRANSIENT
        text = REDACT(message)[:300]
        super().__init__(f"{reason}: {text}" + (f" (code {code})" if code is not None else ""))


def reason_for_code(code: int) -> str | None:
    if code == 190:
        return TOKEN_INVALID
    if code in (4, 17, 32, 613):
        return RATE_LIMITED
    if code == 10 or 200 <= code <= 299:
        return PERMISSION
    if code in (1, 2):
        return SERVER_ERROR
    if code == 100:
        return INVALID_REQUEST
    return None


def reason_for_status(status: int) -> str:
    if status == 429:
        return RATE_LIMITED
    if status in (401,):
        return TOKEN_INVALID
    if status == 403:
        return PERMISSION
    if status >= 500:
        return SERVER_ERROR
    return INVALID_REQUEST


def graph_error(status: int, body: bytes) -> ApiError | None:
    """The error a response carries, or None for a success. Graph code first, status second."""
    payload = _json(body)
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        reason = (reason_for_code(code) if code is not None else None) or (
            reason_for_status(status) if status >= 400 else INVALID_REQUEST
        )
        message = err.get("message")
        message = message if isinstance(message, str) else "Graph API error"
        return ApiError(reason, message, code, transient=err.get("is_transient") is True)
    if status >= 400:
        return ApiError(reason_for_status(status), f"HTTP {status} without a Graph error body")
    if payload is None:
        return ApiError(BAD_RESPONSE, f"HTTP {status} body is not JSON")
    return None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


# --- parsing (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    usage: int
    total: int
    duration: int


@dataclass(frozen=True)
class ContainerStatus:
    status: str
    error_message: str | None = None


def quota_fields(groups: Iterable[str]) -> str:
    return ",".join(f for g in groups for f in QUOTA_FIELDS[g])


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != int(value) or not 0 <= value <= _SANE_MAX:
        return None
    return int(value)


def parse_publishing_limit(body: bytes, groups: Sequence[str]) -> dict[str, Quota]:
    """Quota readings for the requested groups present in a response.

    A group whose fields are missing or malformed is left out (unknown, never 0). A response
    with none of the requested groups is an error.
    """
    payload = _json(body)
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise ApiError(BAD_RESPONSE, "publishing limit response has no data list")
    if not data or not isinstance(data[0], dict):
        raise ApiError(BAD_RESPONSE, "publishing limit response has empty data")
    row = data[0]
    found: dict[str, Quota] = {}
    for group in groups:
        usage_key, config_key = QUOTA_FIELDS[group]
        config = row.get(config_key)
        if not isinstance(config, dict):
            continue
        usage = _count(row.get(usage_key))
        total = _count(config.get("quota_total"))
        duration = _count(config.get("quota_duration"))
        if usage is None or total is None or not duration:
            continue
        found[group] = Quota(usage=usage, total=total, duration=duration)
    if not found:
        raise ApiError(BAD_RESPONSE, "publishing limit response holds none of the quota fields")
    return found


def parse_container(body: bytes) -> ContainerStatus:
    payload = _json(body)
    status = payload.get("status") if isinstance(payload, dict) else None
    if status not in CONTAINER_STATUSES:
        raise ApiError(BAD_RESPONSE, "container response has no known status")
    message = payload.get("error_message")
    if status != "ERROR" or not isinstance(message, str) or not message:
        message = None
    return ContainerStatus(status=status, error_message=message)


def parse_debug_token(body: bytes) -> float | None:
    """expires_at as a Unix time; None when the token never expires (expires_at 0)."""
    payload = _json(body)
    data = payload.get("data") if isinstance(payload, dict) else None
    expires = data.get("expires_at") if isinstance(data, dict) else None
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires < 0:
        raise ApiError(BAD_RESPONSE, "debug_token response has no expires_at")
    return float(expires) or None


USAGE_HEADERS = {"x-app-usage": "app", "x-business-use-case-usage": "business"}
USAGE_KINDS = ("call_count", "total_cputime", "total_time")


def parse_usage_headers(headers: Mapping[str, str]) -> dict[tuple[str, str], float]:
    """Call-volume usage from Graph's usage headers as {(scope, kind): ratio}.

    Whether graph.threads.net sends them is not documented: absent or malformed headers
    give nothing, and nothing else depends on them.
    """
    found: dict[tuple[str, str], float] = {}
    for header, scope in USAGE_HEADERS.items():
        payload = _json(headers[header].encode()) if header in headers else None
        if not isinstance(payload, dict):
            continue
        entries = [payload] if scope == "app" else [
            e for v in payload.values() if isinstance(v, list) for e in v if isinstance(e, dict)]
        for entry in entries:
            for kind in USAGE_KINDS:
                percent = entry.get(kind)
                if isinstance(percent, (int, float)) and not isinstance(percent, bool) \
                        and 0 <= percent <= 10_000:
                    found[(scope, kind)] = max(found.get((scope, kind), 0.0), percent / 100)
    return found


# --- accounting ----------------------------------------------------------------------------


@dataclass
class ApiStats:
    """Counts of calls, errors and latencies, read by the collector at scrape time."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # endpoint -> (bucket counts aligned with DURATION_BUCKETS plus +Inf, sum)
    durations: dict[str, tuple[list[int], float]] = field(default_factory=dict)

    # (account, scope, kind) -> latest call-volume usage ratio Meta reported in headers
    usage: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def record_usage(self, account: str, usage: dict[tuple[str, str], float]) -> None:
        for (scope, kind), ratio in usage.items():
            self.usage[(account, scope, kind)] = ratio

    def record(self, account: str, endpoint: str, seconds: float, reason: str | None) -> None:
        key = (account, endpoint)
        self.requests[key] = self.requests.get(key, 0) + 1
        if reason is not None:
            ekey = (account, endpoint, reason)
            self.errors[ekey] = self.errors.get(ekey, 0) + 1
        buckets, total = self.durations.get(endpoint) or ([0] * (len(DURATION_BUCKETS) + 1), 0.0)
        buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.durations[endpoint] = (buckets, total + seconds)


# --- the connection budget -----------------------------------------------------------------


class Gate:
    """The budget of requests in flight, shared by quota readings and container polls.

    Quota readings come first: a freed slot goes to a waiting reading before any waiting
    poll, and polls never hold the last `reserved` slots, so a reading starts at once even
    while every poll hangs on a slow API, and thousands of due polls never delay the quota
    metrics by more than one in-flight poll's latency. A freed slot is handed straight to the
    waiter it wakes, so no newcomer can take it in between.
    """

    def __init__(self, slots: int, reserved: int):
        self._free = slots
        # With a single slot, polls may use it too (readings still go first).
        self.poll_slots = max(1, slots - reserved)
        self._polls = 0  # slots held by polls
        self._readings: deque[asyncio.Future[None]] = deque()
        self._waiting_polls: deque[asyncio.Future[None]] = deque()

    async def acquire(self, poll: bool) -> None:
        if self._free and (not poll or self._polls < self.poll_slots):
            self._take(poll)
            return
        queue = self._waiting_polls if poll else self._readings
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                with contextlib.suppress(ValueError):  # unless release() dropped it already
                    queue.remove(waiter)
            else:  # cancelled just after being handed a slot: pass it on
                self.release(poll)
            raise

    def release(self, poll: bool) -> None:
        self._free += 1
        self._polls -= poll
        if not self._hand(self._readings, False) and self._polls < self.poll_slots:
            self._hand(self._waiting_polls, True)

    def _hand(self, queue: deque[asyncio.Future[None]], poll: bool) -> bool:
        """Give the free slot to the first waiter in a queue still waiting, if any."""
        while queue:
            waiter = queue.popleft()
            if not waiter.done():  # a cancelled one is its task's to forget
                self._take(poll)
                waiter.set_result(None)
                return True
        return False

    def _take(self, poll: bool) -> None:
        self._free -= 1
        self._polls += poll


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for a URL (HTTPS_PROXY, ALL_PROXY, NO_PROXY), which
    httpx clients honour and bare transports do not."""
    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


# --- the client ----------------------------------------------------------------------------


class ThreadsClient:
    """Async calls to the Threads API sharing one budget of max_concurrency connections."""

    def __init__(self, api: ApiConfig, stats: ApiStats | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.api = api
        self.stats = stats or ApiStats()
        self.gate = Gate(api.max_concurrency, reserved=max(1, api.max_concurrency // 32))
        # httpcore 1.0's pool does O(connections^2) bookkeeping on every request and response
        # (encode/httpcore#1035): milliseconds of CPU per call at 64 connections. So the budget
        # is split into pools of at most POOL_SIZE, and each call takes the one with most room.
        count = 1 if transport is not None else -(-api.max_concurrency // POOL_SIZE)
        sizes = [api.max_concurrency // count + (i < api.max_concurrency % count)
                 for i in range(count)]
        # Transports, not clients: an httpx client's per-request work (request merging,
        # redirect and auth flows, cookie jar) cost ~0.1 ms of CPU per call, none of it needed.
        self._url = f"{api.base_url}/{api.version}"
        proxy = env_proxy(self._url)
        self._pools: list[httpx.AsyncBaseTransport] = [transport] if transport is not None else [
            httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=size,
                                                         max_keepalive_connections=size),
                                     proxy=proxy)
            for size in sizes]
        self._extensions = {"timeout": httpx.Timeout(api.timeout_seconds).as_dict()}
        self._room = sizes  # free connections per pool; the gate keeps one free somewhere
        # Quota groups each account's token cannot read: (account, token fingerprint) -> groups.
        self._denied: dict[tuple[str, int], frozenset[str]] = {}

    async def aclose(self) -> None:
        await asyncio.gather(*(pool.aclose() for pool in self._pools))

    async def _get(self, account: Account, endpoint: str, path: str, params: dict[str, str],
                   deadline: float, parse: Callable[[bytes], T], poll: bool = False) -> T:
        """One GET with at most one retry of a transient failure, while the deadline allows.
        A container poll (poll=True) yields the connection budget to quota readings."""
        try:
            return await self._attempt(account, endpoint, path, params, deadline, parse, poll)
        except ApiError as first:
            if not first.transient or deadline - time.monotonic() < 0.05:
                raise
            log.debug("retrying after transient failure", extra={
                "account": account.name, "endpoint": endpoint, "error": str(first)})
            return await self._attempt(account, endpoint, path, params, deadline, parse, poll)

    async def _attempt(self, account: Account, endpoint: str, path: str,
                       params: dict[str, str], deadline: float, parse: Callable[[bytes], T],
                       poll: bool) -> T:
        await self.gate.acquire(poll)
        try:
            remaining = min(self.api.timeout_seconds, deadline - time.monotonic())
            if remaining <= 0:
                raise ApiError(TIMEOUT, "deadline passed before the request could start")
            start = time.monotonic()
            reason = None
            try:
                async with asyncio.timeout(remaining):  # no extra task, unlike wait_for
                    status, body, usage = await self._fetch(
                        path, {**params, "access_token": account.access_token})
                self.stats.record_usage(account.name, usage)
                error = graph_error(status, body)
                if error is not None:
                    raise error
                # Parsed here so a body of the wrong shape counts as a failed call.
                return parse(body)
            except ApiError as e:
                reason = e.reason
                raise
            except (TimeoutError, httpx.TimeoutException):
                reason = TIMEOUT
                raise ApiError(TIMEOUT, f"no answer within {remaining:.2f}s") from None
            except (httpx.TransportError, OSError) as e:
                # The exception text may carry the URL: only its type is kept.
                reason = CONNECTION
                raise ApiError(CONNECTION, type(e).__name__) from None
            finally:
                self.stats.record(account.name, endpoint, time.monotonic() - start, reason)
        finally:
            self.gate.release(poll)

    async def _fetch(self, path: str, params: dict[str, str]
                     ) -> tuple[int, bytes, dict[tuple[str, str], float]]:
        request = httpx.Request("GET", f"{self._url}{path}?{urlencode(params)}",
                                headers=HEADERS, extensions=self._extensions)
        pool = max(range(len(self._pools)), key=self._room.__getitem__)
        self._room[pool] -= 1
        try:
            response = await self._pools[pool].handle_async_request(request)
            try:
                chunks = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise ApiError(BAD_RESPONSE,
                                       f"response larger than {MAX_BODY_BYTES} bytes")
                    chunks.append(chunk)
                return (response.status_code, b"".join(chunks),
                        parse_usage_headers(response.headers))
            finally:
                await response.aclose()
        finally:
            self._room[pool] += 1

    # --- endpoints ---

    async def publishing_limit(self, account: Account, groups: Sequence[str],
                               deadline: float) -> dict[str, Quota]:
        return await self._get(account, "publishing_limit",
                               f"/{account.user_id}/threads_publishing_limit",
                               {"fields": quota_fields(groups)}, deadline,
                               lambda body: parse_publishing_limit(body, groups))

    async def read_quotas(self, account: Account, deadline: float) -> dict[str, Quota]:
        """All readable quota groups of an account.

        When the combined request fails for a permission, ask group by group and remember the
        groups this token cannot read, so a token without threads_delete still reports posts.
        """
        key = (account.name, hash(account.access_token))
        denied = self._denied.get(key, frozenset())
        groups = [g for g in account.quotas if g not in denied]
        if not groups:
            raise ApiError(PERMISSION, "the token can read none of the configured quota groups")
        try:
            return await self.publishing_limit(account, groups, deadline)
        except ApiError as e:
            if e.reason != PERMISSION or len(groups) == 1:
                raise
            combined = e
        results = await asyncio.gather(
            *(self.publishing_limit(account, [g], deadline) for g in groups),
            return_exceptions=True)
        found: dict[str, Quota] = {}
        newly_denied = set()
        for group, result in zip(groups, results, strict=True):
            if isinstance(result, ApiError):
                if result.reason == PERMISSION:
                    newly_denied.add(group)
            elif isinstance(result, BaseException):
                raise result
            else:
                found.update(result)
        if newly_denied:
            self._denied[key] = denied | newly_denied
            log.info("token cannot read some quota groups; not asking for them again", extra={
                "account": account.name, "groups": ",".join(sorted(newly_denied))})
        if not found:
            first_error = next((r for r in results if isinstance(r, ApiError)), combined)
            raise first_error
        return found

    def denied_groups(self, account: Account) -> frozenset[str]:
        return self._denied.get((account.name, hash(account.access_token)), frozenset())

    async def container_status(self, account: Account, container_id: str,
                               deadline: float) -> ContainerStatus:
        if not container_id.isdigit() or not container_id.isascii():
            raise ValueError("a container id is digits only")
        return await self._get(account, "container", f"/{container_id}",
                               {"fields": "status,error_message"}, deadline, parse_container,
                               poll=True)

    async def token_expiry(self, account: Account, deadline: float) -> float | None:
        return await self._get(account, "debug_token", "/debug_token",
                               {"input_token": account.access_token}, deadline,
                               parse_debug_token)

