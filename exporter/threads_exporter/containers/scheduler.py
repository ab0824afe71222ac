"""Scrape-driven polling: due containers, oldest first, as many as fit before the deadline;
their results committed in batches (one fsync for many polls)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from threads_exporter.config import Config
from threads_exporter.containers.policy import Policy, failed, observed
from threads_exporter.containers.storage import Storage
from threads_exporter.containers.store import Change, Row, StoreError
from threads_exporter.fields import ERROR
from threads_exporter.graph.client import ThreadsClient
from threads_exporter.graph.errors import BAD_RESPONSE, RATE_LIMITED, TOKEN_INVALID, ApiError

log = logging.getLogger(__name__)

# Failures that will fail for every container of the account: stop asking until next scrape.
ACCOUNT_WIDE = frozenset({RATE_LIMITED, TOKEN_INVALID})
MAX_DUE_BATCH = 4_000
IDLE_STEP = 1.0  # seconds between due queries while nothing is due, at most
MIN_IDLE_STEP = 0.05  # and at least (polled results are committed within COMMIT_EVERY)
COMMIT_EVERY = 0.02  # seconds: poll results are committed in batches at most this often


def idle_wait(soonest: float | None, now: float) -> float:
    """Seconds to wait, with nothing due now, before looking again: until the soonest
    container is due (`soonest`, a Unix time; None: none tracked), within the idle steps."""
    if soonest is None:
        return IDLE_STEP
    return min(IDLE_STEP, max(MIN_IDLE_STEP, soonest - now))


class Scheduler:
    def __init__(self, client: ThreadsClient, storage: Storage, config: Config,
                 policy: Policy, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.client = client
        self.storage = storage
        self.config = config
        self.policy = policy
        self.clock = clock
        self.monotonic = monotonic
        self._inflight: set[tuple[str, str]] = set()
        # Polling rounds by scope (None: all accounts); overlapping scrapes share one.
        self._rounds: dict[tuple[str, ...] | None, asyncio.Task[None]] = {}
        self._until: dict[tuple[str, ...] | None, float] = {}  # each round's deadline
        # Set while a round has nothing due and waits for something to be; a scrape wakes it.
        self._idle: dict[tuple[str, ...] | None, asyncio.Event] = {}
        self._wake: dict[tuple[str, ...] | None, asyncio.Event] = {}
        # Accounts failing account-wide (throttled, dead token): skipped until the next scrape.
        self._blocked: dict[tuple[str, ...] | None, set[str]] = {}
        self._pending: list[Change] = []
        self._flusher: asyncio.Task[None] | None = None
        # Done once the results now pending, and the batch being committed, are committed.
        self._queued: asyncio.Future[None] | None = None
        self._committing: asyncio.Future[None] | None = None
        # Seconds one poll takes; decides how many polls still fit before a deadline.
        self.latency = min(0.5, client.api.timeout_seconds)

    async def poll(self, scope: tuple[str, ...] | None, poll_deadline: float,
                   poll_until: float | None = None) -> None:
        """Poll what is due in a scope until the deadline, then wait for its commit. With
        `poll_until` (later), the round goes on polling until then in the background: the
        scrape is rendered and sent meanwhile, and what lands shows in the next scrape."""
        until = poll_deadline if poll_until is None else max(poll_until, poll_deadline)
        idle = self._idle.setdefault(scope, asyncio.Event())
        self._blocked.setdefault(scope, set()).clear()
        round_ = self._rounds.get(scope)
        if round_ is None or round_.done():
            self._until[scope] = until
            idle.clear()
            round_ = asyncio.create_task(self._round(scope))
            self._rounds[scope] = round_
        else:  # a later scrape extends the round under way, and wakes it if it waits
            self._until[scope] = max(self._until[scope], until)
            idle.clear()
            self._wake.setdefault(scope, asyncio.Event()).set()
        # Until what is due now is polled (the round is idle or over), or the deadline.
        caught_up = asyncio.ensure_future(idle.wait())
        try:
            await asyncio.wait({round_, caught_up}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=max(0.0, poll_deadline - self.monotonic()))
        finally:
            caught_up.cancel()
        await self.flush()

    def wake(self) -> None:
        """Something became due (a registration): idle rounds look again now."""
        for event in self._wake.values():
            event.set()

    async def _round(self, scope: tuple[str, ...] | None) -> None:
        """Poll due containers, oldest-due first, with a few workers; a worker starts a poll
        only if it can finish before the deadline, so nothing queues up past it. Each worker
        makes at least one poll, so a deadline shorter than one poll still makes progress
        (its answer lands after the scrape and shows in the next one)."""
        configured = {a.name for a in self.config.accounts}
        accounts = [a for a in (scope or configured) if a in configured]
        if not accounts:
            return
        workers = self.client.poll_capacity  # the client keeps the rest for quotas
        blocked = self._blocked.setdefault(scope, set())
        idle = self._idle.setdefault(scope, asyncio.Event())
        wake = self._wake.setdefault(scope, asyncio.Event())
        first = True
        # Fetch about as many as the time left allows, poll them, and fetch more while time
        # remains (the estimate of a poll's latency improves as answers come in).
        while first or self._until[scope] - self.monotonic() >= self.latency:
            room = max(0.0, self._until[scope] - self.monotonic())
            limit = min(MAX_DUE_BATCH, workers * (int(room / max(self.latency, 0.005)) + 1))
            # Accounts failing account-wide, or gone in a reload, are left out of the
            # query, so their due containers neither fill the batch nor count as due.
            active = sorted(a for a in accounts
                            if a not in blocked and self.config.account(a) is not None)
            try:
                rows = await self.storage.run(self.storage.require().due, self.clock(), limit,
                                              active) if active else []
            except StoreError:
                return
            queue = deque(r for r in rows if r.key not in self._inflight)
            if self.storage.error is not None:
                return
            if not queue:
                # Nothing due: look again when the next container is due, or in a while (a
                # registration or a scrape may bring something sooner; a scrape wakes the
                # round), until the round ends, so containers are polled at their own
                # interval between scrapes too, not a step late.
                if rows:  # due, but in flight: until its result is committed
                    committing = self._flusher is not None and not self._flusher.done()
                    wait = MIN_IDLE_STEP if committing else IDLE_STEP
                else:
                    try:
                        soonest = await self.storage.run(self.storage.require().next_due,
                                                         active) if active else None
                    except StoreError:
                        return
                    wait = idle_wait(soonest, self.clock())
                if self._until[scope] - self.monotonic() < wait:
                    return
                wake.clear()
                idle.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
                idle.clear()
                continue
            await asyncio.gather(*(self._work(queue, blocked, scope, first)
                                   for _ in range(min(workers, len(queue)))))
            first = False

    async def _work(self, queue: deque[Row], blocked: set[str], scope: tuple[str, ...] | None,
                    first: bool) -> None:
        while queue and (first or self.monotonic() + self.latency <= self._until[scope]):
            row = queue.popleft()
            if row.account in blocked or row.key in self._inflight:
                continue
            first = False
            try:
                await self._poll(row, blocked)
            except Exception:  # one container's bug must not end the round
                log.exception("container poll crashed", extra={
                    "account": row.account, "id": row.id})

    async def _poll(self, row: Row, blocked: set[str]) -> None:
        account = self.config.account(row.account)
        if account is None:
            return
        # In flight until its result is committed: a due query before that would see the
        # container as still due and poll it twice.
        self._inflight.add(row.key)
        polled_at = self.clock()
        started = self.monotonic()
        try:
            answer = await self.client.container_status(
                account, row.id, started + self.client.api.timeout_seconds)
        except ApiError as e:
            if e.reason in ACCOUNT_WIDE:
                blocked.add(row.account)
            log.debug("container poll failed; keeping the last known status", extra={
                "account": row.account, "id": row.id, "error": str(e)})
            change = failed(row, e, polled_at, self.policy)
        except Exception as e:  # a bug must still pace the container, or it is polled at once
            log.exception("container poll crashed", extra={"account": row.account, "id": row.id})
            change = failed(row, ApiError(BAD_RESPONSE, f"unexpected {type(e).__name__}"),
                            polled_at, self.policy)
        except BaseException:
            self._inflight.discard(row.key)
            raise
        else:
            change = observed(row, answer, polled_at, self.clock(), self.policy)
            if answer.status != row.status:
                log.log(logging.INFO if answer.status == ERROR else logging.DEBUG,
                        "container status changed", extra={
                    "account": row.account, "id": row.id, "from": row.status,
                    "to": answer.status, "error_message": answer.error_message})
        finally:
            self.latency = 0.8 * self.latency + 0.2 * (self.monotonic() - started)
        if not self._pending:
            self._queued = asyncio.get_running_loop().create_future()
        self._pending.append(change)
        self._kick()

    # --- committing results in batches ---

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())

    async def _flush_pending(self) -> None:
        while self._pending:
            # Let answers gather: a commit's fsync and page writes, and a trip to the store
            # thread, then serve a few dozen polls instead of one or two (it cost 0.1 ms of
            # CPU per poll). They stay in flight meanwhile, so none is polled again.
            await asyncio.sleep(COMMIT_EVERY)
            batch, self._pending = self._pending, []
            self._committing, self._queued = self._queued, None
            try:
                await self.storage.run(self.storage.require().apply, batch)
            except StoreError:
                pass  # lost polls only: the statuses are read again at the next poll
            finally:
                self._inflight.difference_update((c.account, c.id) for c in batch)
                if self._committing is not None:
                    self._committing.set_result(None)

    async def flush(self) -> None:
        """Wait until what was polled so far is committed; results that a concurrent round
        produces meanwhile go into later commits and do not hold this scrape up."""
        commits = [f for f in (self._committing, self._queued) if f is not None]
        if self._pending:
            self._kick()
        for commit in commits:
            await asyncio.shield(commit)

    async def aclose(self) -> None:
        """Stop polling and commit what was polled."""
        for task in self._rounds.values():
            task.cancel()
        for task in self._rounds.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(StoreError):
            await self.flush()
