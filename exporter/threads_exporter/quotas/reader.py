"""Quota readings per scrape: TTL cache, one shared request per account, backoff, token expiry.

Runs on the exporter's event loop and turns a scrape into plain Readings; the families are
built from those elsewhere (quotas.families).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from threads_exporter.config import Account, Config
from threads_exporter.graph.client import ThreadsClient
from threads_exporter.graph.errors import (
    BAD_RESPONSE,
    INVALID_REQUEST,
    RATE_LIMITED,
    TIMEOUT,
    TOKEN_INVALID,
    ApiError,
)
from threads_exporter.graph.parse import Quota

log = logging.getLogger(__name__)

# Backoff after a failed reading: (first delay, longest delay) in seconds. Errors that will not
# heal by retrying soon (throttling, a dead token) wait longer.
BACKOFF = (15.0, 300.0)
SLOW_BACKOFF = (60.0, 900.0)


@dataclass(frozen=True)
class Reading:
    """The latest quota reading of one account, as a scrape reports it."""

    account: str
    quotas: dict[str, Quota] | None  # None when the reading failed
    error_reason: str | None = None
    error_message: str | None = None
    last_success: float | None = None  # Unix time
    token_expiry: float | None = None

    @property
    def up(self) -> bool:
        return self.quotas is not None


@dataclass
class _AccountState:
    account: Account
    quotas: dict[str, Quota] | None = None
    fresh_until: float = 0.0  # monotonic
    last_success: float | None = None  # wall clock
    error: ApiError | None = None
    retry_at: float = 0.0  # monotonic
    failures: int = 0
    task: asyncio.Future[None] | None = None  # a reading queued or in flight
    token_expiry: float | None = None
    token_checked_at: float | None = None  # monotonic
    token_task: asyncio.Future[None] | None = None
    verified: bool = False  # a numeric user_id was checked against the token's user
    misconfigured: ApiError | None = None  # the user_id is not the token's: no more calls
    reading: tuple[tuple[object, ...], Reading] | None = None  # the latest, and what it came of


def backoff_delay(reason: str, failures: int) -> float:
    first, longest = SLOW_BACKOFF if reason in (RATE_LIMITED, TOKEN_INVALID) else BACKOFF
    return float(min(longest, first * 2 ** max(0, failures - 1)))


@dataclass
class QuotaReader:
    """Readings of every account, fresh for the cache TTL, one request per account in flight
    however many scrapes ask; a failed account backs off instead of hammering the API."""

    client: ThreadsClient
    config: Config
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _states: dict[str, _AccountState] = field(default_factory=dict)
    # Readings wait here, not as tasks: 10,000 accounts as 20,000 tasks parked at the
    # connection budget cost ~50 MB of coroutine frames; a queued call is a few hundred bytes.
    _queue: deque[tuple[Callable[[], Coroutine[Any, Any, None]], asyncio.Future[None]]] = \
        field(default_factory=deque)
    _workers: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.reconfigure(self.config)

    def reconfigure(self, config: Config) -> None:
        """Adopt a new config; accounts whose name and token are unchanged keep their cache."""
        self.config = config
        states = {}
        for account in config.accounts:
            old = self._states.get(account.name)
            if old is not None and old.account == account:
                states[account.name] = old
            else:
                states[account.name] = _AccountState(account)
        self._states = states

    async def scrape(self, deadline: float, names: Sequence[str] | None = None) -> list[Reading]:
        """Readings of the named accounts (all by default), waiting for fresh ones until
        the deadline (a monotonic time). Accounts not done by then read as timed out; their
        requests go on and fill the cache for the next scrape."""
        states = [self._states[n] for n in (names if names is not None else self._states)]
        waits: list[asyncio.Future[None]] = []
        for state in states:
            task = self._refresh(state, deadline)
            if task is not None:
                waits.append(task)
            token_task = self._check_token(state, deadline)
            if token_task is not None:
                waits.append(token_task)
        if waits:
            await asyncio.wait(waits, timeout=max(0.0, deadline - self.clock()))
        return [self._reading(s) for s in states]

    def _refresh(self, state: _AccountState, deadline: float) -> asyncio.Future[None] | None:
        now = self.clock()
        if state.task is not None:
            return state.task  # another scrape already asked: share its request
        if state.misconfigured is not None:
            return None  # until a reload fixes the config
        if state.quotas is not None and now < state.fresh_until:
            return None
        if state.error is not None and now < state.retry_at:
            return None
        state.task = self._start(partial(self._read, state, deadline))
        return state.task

    async def _read(self, state: _AccountState, deadline: float) -> None:
        # The first attempt always gets its full timeout even past this scrape's deadline, so
        # a slow account's answer still lands in the cache for the next scrape.
        deadline = max(deadline, self.clock() + self.client.api.timeout_seconds)
        try:
            if not state.verified and state.account.user_id != "me":
                await self._verify(state, deadline)
            quotas = await self.client.read_quotas(state.account, deadline)
        except Exception as e:
            if e is state.misconfigured:
                state.error, state.quotas = state.misconfigured, None
            elif isinstance(e, ApiError):
                error = e
            else:  # never let one account's bug take down a scrape
                log.exception("quota reading crashed", extra={"account": state.account.name})
                error = ApiError(BAD_RESPONSE, f"unexpected {type(e).__name__}")
            self._failed(state, error)
        else:
            state.quotas = quotas
            state.error = None
            state.failures = 0
            state.fresh_until = self.clock() + self.config.cache_ttl_seconds
            state.last_success = self.wall()
        finally:
            state.task = None

    async def _verify(self, state: _AccountState, deadline: float) -> None:
        """A numeric user_id must be the token's user: a wrong one answers with errors that
        read as Meta outages (code 2) or permissions, so it is caught here, once."""
        account = state.account
        actual = await self.client.token_user_id(account, deadline)
        if actual != account.user_id:
            state.misconfigured = ApiError(
                INVALID_REQUEST, f"user_id {account.user_id} is not the user of the account's "
                f"token ({actual}); fix user_id in the config (or use 'me')")
            log.error("user_id does not belong to the account's token; no quota readings "
                      "until the config is fixed", extra={
                          "account": account.name, "user_id": account.user_id,
                          "token_user_id": actual})
            raise state.misconfigured
        state.verified = True

    def _failed(self, state: _AccountState, error: ApiError) -> None:
        state.failures += 1
        state.error = error
        state.quotas = None
        state.retry_at = self.clock() + backoff_delay(error.reason, state.failures)
        log.warning("quota reading failed", extra={
            "account": state.account.name, "reason": error.reason, "error": str(error),
            "retry_in_seconds": round(state.retry_at - self.clock(), 1)})

    def _check_token(self, state: _AccountState, deadline: float) -> asyncio.Future[None] | None:
        """Ask debug_token rarely; a failure leaves the expiry unknown and threads_up alone."""
        if state.token_task is not None:
            return state.token_task
        now = self.clock()
        checked = state.token_checked_at
        if checked is not None and now - checked < self.config.token_check_interval_seconds:
            return None
        state.token_checked_at = now
        state.token_task = self._start(partial(self._read_token, state, deadline))
        return state.token_task

    def _start(self, call: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Future[None]:
        """Queue a call; done when the call is. As many workers as requests may be in flight
        take calls from the queue in order."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append((call, done))
        if len(self._workers) < self.client.api.max_concurrency:
            worker = asyncio.create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return done

    async def _work(self) -> None:
        while self._queue:
            call, done = self._queue.popleft()
            try:
                await call()
            except Exception:  # a bug in one call must not stop the calls queued after it
                log.exception("quota call crashed")
            finally:
                if not done.done():
                    done.set_result(None)

    async def _read_token(self, state: _AccountState, deadline: float) -> None:
        deadline = max(deadline, self.clock() + self.client.api.timeout_seconds)
        try:
            state.token_expiry = await self.client.token_expiry(state.account, deadline)
        except ApiError as e:
            state.token_expiry = None
            log.info("token expiry unknown", extra={
                "account": state.account.name, "reason": e.reason, "error": str(e)})
        finally:
            state.token_task = None

    def _reading(self, state: _AccountState) -> Reading:
        # The same Reading while nothing changed: the exposition then reuses its encoding
        # without comparing it field by field (10,000 of them every scrape).
        key = (state.quotas, state.error, state.task is None, state.last_success,
               state.token_expiry)
        if state.reading is None or state.reading[0] != key:
            state.reading = (key, self._new_reading(state))
        return state.reading[1]

    def _new_reading(self, state: _AccountState) -> Reading:
        name = state.account.name
        last, expiry = state.last_success, state.token_expiry
        if state.quotas is not None and state.task is None:
            return Reading(name, dict(state.quotas), last_success=last, token_expiry=expiry)
        if state.error is not None and state.task is None:
            return Reading(name, None, state.error.reason, str(state.error), last, expiry)
        return Reading(name, None, TIMEOUT, "no answer before the scrape deadline", last, expiry)
