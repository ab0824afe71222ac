"""The Threads API client: endpoints, one retry of a transient failure, the call budget.

Tokens travel in the ``access_token`` query parameter (as in every Meta example), so request
URLs are secrets. Nothing here formats a URL or an httpx exception into a message: errors are
built from the reason, the Graph error code and the redacted Graph message only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import httpx

from threads_exporter.config import Account, ApiConfig, valid_container_id
from threads_exporter.fields import quota_fields
from threads_exporter.graph.errors import (
    BAD_RESPONSE,
    CONNECTION,
    PERMISSION,
    TIMEOUT,
    ApiError,
    graph_error,
)
from threads_exporter.graph.gate import Gate
from threads_exporter.graph.parse import (
    ContainerStatus,
    Quota,
    parse_container,
    parse_debug_token,
    parse_me,
    parse_publishing_limit,
)
from threads_exporter.graph.stats import ApiStats
from threads_exporter.graph.transport import Transport

log = logging.getLogger(__name__)
T = TypeVar("T")


class ThreadsClient:
    """Async calls to the Threads API sharing one budget of max_concurrency connections.

    One client lives as long as the exporter; a config reload that changes the API settings
    swaps its transport in place (reconfigure), so its users never hold a stale client.
    """

    def __init__(self, api: ApiConfig, stats: ApiStats | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.stats = stats or ApiStats()
        self._test_transport = transport
        self._setup(api)
        # Quota groups each account's token cannot read: (account, token fingerprint) -> groups.
        self._denied: dict[tuple[str, int], frozenset[str]] = {}

    def _setup(self, api: ApiConfig) -> None:
        self.api = api
        self._gate = Gate(api.max_concurrency, reserved=max(1, api.max_concurrency // 32))
        self._transport = Transport(f"{api.base_url}/{api.version}", api.max_concurrency,
                                    api.timeout_seconds, self._test_transport)

    @property
    def poll_capacity(self) -> int:
        """How many container polls may be in flight at once; the rest is kept for quotas."""
        return self._gate.poll_slots

    async def reconfigure(self, api: ApiConfig) -> None:
        """Adopt new API settings; calls in flight finish on the old connections' budget."""
        if api == self.api:
            return
        old = self._transport
        self._setup(api)
        await old.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def _get(self, account: Account, endpoint: str, path: str, params: dict[str, str],
                   deadline: float, parse: Callable[[bytes], T], poll: bool = False) -> T:
        """One GET with at most one retry of a transient failure (server_error, timeout,
        connection), while the deadline allows. A container poll (poll=True) yields the
        connection budget to quota readings. `params` may name its own access_token."""
        params = {"access_token": account.access_token, **params}
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
        gate, transport = self._gate, self._transport  # a reload may swap both meanwhile
        await gate.acquire(poll)
        try:
            remaining = min(self.api.timeout_seconds, deadline - time.monotonic())
            if remaining <= 0:
                raise ApiError(TIMEOUT, "deadline passed before the request could start")
            start = time.monotonic()
            reason = None
            try:
                async with asyncio.timeout(remaining):  # no extra task, unlike wait_for
                    status, body, usage = await transport.get(path, params)
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
            except Exception as e:
                # Anything else an answer can make happen (a body httpx cannot decode, a
                # parser meeting what it never expected) is a bad answer: classified,
                # counted and paced like one, never a success and never an escape.
                reason = BAD_RESPONSE
                raise ApiError(BAD_RESPONSE, f"unexpected {type(e).__name__}") from None
            finally:
                self.stats.record(account.name, endpoint, time.monotonic() - start, reason)
        finally:
            gate.release(poll)

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
            raise next((r for r in results if isinstance(r, ApiError)), combined)
        return found

    def denied_groups(self, account: Account) -> frozenset[str]:
        return self._denied.get((account.name, hash(account.access_token)), frozenset())

    async def container_status(self, account: Account, container_id: str,
                               deadline: float) -> ContainerStatus:
        if not valid_container_id(container_id):
            raise ValueError("a container id is a string of digits")
        return await self._get(account, "container", f"/{container_id}",
                               {"fields": "status,error_message"}, deadline, parse_container,
                               poll=True)

    async def token_expiry(self, account: Account, deadline: float) -> float | None:
        """The token's expiry from debug_token, asked with the app access token where one is
        configured (apps in development mode refuse it asked with the token itself)."""
        params = {"input_token": account.access_token}
        if account.app_access_token:
            params["access_token"] = account.app_access_token
        return await self._get(account, "debug_token", "/debug_token", params, deadline,
                               parse_debug_token)

    async def token_user_id(self, account: Account, deadline: float) -> str:
        """The id of the user the account's token belongs to (GET /me?fields=id)."""
        return await self._get(account, "me", "/me", {"fields": "id"}, deadline, parse_me)
