"""Media container tracking: the polling policy, scrape-driven polling and the metrics.

The policy is pure functions over plain data (a stored Row in, a Change out). The
ContainerTracker runs on the exporter's event loop: during a scrape it polls the containers
that are due, as many as fit before the scrape deadline, and reports aggregates from the
store. All SQLite work runs on one dedicated thread, so a slow disk never blocks the loop.

Meta's guidance: poll a container once a minute for at most five minutes. So IN_PROGRESS is
polled every poll_interval for stuck_after (5 min), then counted as stuck and polled slowly;
FINISHED waits for its publisher (hours, possibly) and is polled slowly; PUBLISHED, ERROR and
EXPIRED are never polled again; a container without a final status after expire_after (24 h)
has expired by Meta's rules and is marked EXPIRED without another call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from threads_exporter.client import (
    CONTAINER_STATUSES,
    RATE_LIMITED,
    TOKEN_INVALID,
    ApiError,
    ContainerStatus,
    ThreadsClient,
)
from threads_exporter.collector import histogram_buckets
from threads_exporter.config import Config, ContainersConfig, TrackedContainer, valid_container_id
from threads_exporter.store import Change, Row, Store, StoreError, StoreLocked, Tallies

log = logging.getLogger(__name__)
T = TypeVar("T")

IN_PROGRESS, FINISHED, PUBLISHED, ERROR, EXPIRED = CONTAINER_STATUSES
FINAL = frozenset({PUBLISHED, ERROR, EXPIRED})
PROCESSED = frozenset({FINISHED, ERROR})  # processing is over: processing_seconds observed
ERROR_MESSAGES = (
    "FAILED_DOWNLOADING_VIDEO", "FAILED_PROCESSING_AUDIO", "FAILED_PROCESSING_VIDEO",
    "INVALID_ASPEC_RATIO", "INVALID_BIT_RATE", "INVALID_DURATION", "INVALID_FRAME_RATE",
    "INVALID_AUDIO_CHANNELS", "INVALID_AUDIO_CHANNEL_LAYOUT", "UNKNOWN",
)
OTHER = "OTHER"
PROCESSING_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
PROCESSING_LABELS = (*map(floatToGoString, PROCESSING_BUCKETS), "+Inf")

# Counter families in the store.
STATUS_CHANGES = "status_changes"
ERRORS = "errors"
PROCESSING = "processing"
PROCESSING_SUM = "sum"  # the label of the histogram's sum in PROCESSING

# Failures that will fail for every container of the account: stop asking until next scrape.
ACCOUNT_WIDE = frozenset({RATE_LIMITED, TOKEN_INVALID})
PRUNE_EVERY = 60.0  # seconds between retention sweeps
MAX_DUE_BATCH = 20_000
COMMIT_EVERY = 0.02  # seconds: poll results are committed in batches at most this often


# --- the policy (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    poll_interval: float = 60.0
    stuck_poll_interval: float = 300.0
    finished_poll_interval: float = 900.0
    stuck_after: float = 300.0
    expire_after: float = 86400.0
    retention: float = 48 * 3600.0

    @classmethod
    def from_config(cls, c: ContainersConfig) -> Policy:
        return cls(c.poll_interval_seconds, c.stuck_poll_interval_seconds,
                   c.finished_poll_interval_seconds, c.stuck_after_seconds,
                   c.expire_after_seconds, c.retention_seconds)


def poll_interval(status: str | None, age: float, policy: Policy) -> float | None:
    """Seconds until the next poll of a container in a status, or None: never again."""
    if status in FINAL:
        return None
    if status == FINISHED:
        interval = policy.finished_poll_interval
    elif status == IN_PROGRESS and age >= policy.stuck_after:
        interval = policy.stuck_poll_interval
    else:
        interval = policy.poll_interval  # IN_PROGRESS for now, or never answered yet
    return max(interval, policy.poll_interval)


def next_poll_at(status: str | None, registered_at: float, polled_at: float,
                 policy: Policy) -> float | None:
    interval = poll_interval(status, polled_at - registered_at, policy)
    return None if interval is None else polled_at + interval


def is_stuck(status: str | None, registered_at: float, now: float, policy: Policy) -> bool:
    return status == IN_PROGRESS and now - registered_at >= policy.stuck_after


def is_expired(row: Row, now: float, policy: Policy) -> bool:
    """Older than expire_after with no final answer: Meta has expired it by now."""
    return row.status not in FINAL and now - row.registered_at >= policy.expire_after


def error_label(message: str | None) -> str:
    return message if message in ERROR_MESSAGES else OTHER


def processing_label(seconds: float) -> str:
    return PROCESSING_LABELS[bisect_left(PROCESSING_BUCKETS, seconds)]


def _reach(row: Row, status: str, now: float, message: str | None,
           ) -> tuple[frozenset[str], list[tuple[str, str, str, float]]]:
    """Statuses now reached and the counter increments for the newly reached ones.

    PUBLISHED implies FINISHED: a pipeline that publishes between two polls must still count
    as processed, or fast publishers would vanish from processing_seconds.
    """
    reached = {status} | ({FINISHED} if status == PUBLISHED else set())
    new = reached - row.reached
    a = row.account
    counters = [(STATUS_CHANGES, a, s, 1.0) for s in sorted(new)]
    if ERROR in new:
        counters.append((ERRORS, a, error_label(message), 1.0))
    if new & PROCESSED and not row.reached & PROCESSED:
        seconds = max(0.0, now - row.registered_at)
        counters += [(PROCESSING, a, processing_label(seconds), 1.0),
                     (PROCESSING, a, PROCESSING_SUM, seconds)]
    return row.reached | reached, counters


def observed(row: Row, answer: ContainerStatus, polled_at: float, now: float,
             policy: Policy) -> Change:
    """The change a successful poll makes."""
    reached, counters = _reach(row, answer.status, now, answer.error_message)
    final = answer.status in FINAL
    return Change(row.account, row.id, row.status, row.polls, {
        "status": answer.status,
        "error_message": answer.error_message,
        "reached": reached,
        "first_seen": row.first_seen if row.first_seen is not None else now,
        "last_seen": now,
        "last_polled": polled_at,
        "polls": row.polls + 1,
        "last_error": None,
        "next_poll_at": next_poll_at(answer.status, row.registered_at, polled_at, policy),
        "finished_at": (row.finished_at or now) if final else None,
    }, tuple(counters))


def failed(row: Row, error: ApiError, polled_at: float, policy: Policy) -> Change:
    """A failed poll: the last known status stays, the poll still counts for the pacing."""
    return Change(row.account, row.id, row.status, row.polls, {
        "last_polled": polled_at,
        "polls": row.polls + 1,
        "poll_errors": row.poll_errors + 1,
        "last_error": str(error),
        "next_poll_at": next_poll_at(row.status, row.registered_at, polled_at, policy),
    })


def expired(row: Row, now: float) -> Change:
    """Mark a container EXPIRED without asking the API."""
    reached, counters = _reach(row, EXPIRED, now, None)
    return Change(row.account, row.id, row.status, row.polls, {
        "status": EXPIRED,
        "error_message": None,
        "reached": reached,
        "last_error": "no final status within the expiry time; marked EXPIRED without a call",
        "next_poll_at": None,
        "finished_at": now,
    }, tuple(counters))


# --- metric families (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class ContainerSnapshot:
    store_ok: bool
    tallies: Tallies | None = None
    enabled: bool = True


def container_families(snapshot: ContainerSnapshot, accounts: Sequence[str]) -> list[Metric]:
    """Container metrics of the given accounts; every series exists from the start (zeros),
    so rate() and alerts work from the first error on."""
    if not snapshot.enabled:
        return []
    health = GaugeMetricFamily("threads_container_store_up", "1 if the container state file "
                               "is usable (its last write succeeded), else 0")
    health.add_metric([], 1 if snapshot.store_ok else 0)
    t = snapshot.tallies
    if t is None:
        return [health]
    containers = GaugeMetricFamily("threads_containers", "Tracked containers now in each "
                                   "status", labels=["account", "status"])
    changes = CounterMetricFamily("threads_container_status_changes", "Tracked containers "
                                  "that reached a status (each container counted once per "
                                  "status)", labels=["account", "status"])
    errors = CounterMetricFamily("threads_container_errors", "Containers that ended in ERROR, "
                                 "by error_message", labels=["account", "error_message"])
    stuck = GaugeMetricFamily("threads_containers_stuck", "Containers IN_PROGRESS for longer "
                              "than the stuck threshold (5 minutes)", labels=["account"])
    backlog = GaugeMetricFamily("threads_containers_poll_backlog", "Containers whose poll is "
                                "due but has not been made yet", labels=["account"])
    processing = HistogramMetricFamily("threads_container_processing_seconds", "Time from "
                                       "registration to FINISHED or ERROR",
                                       labels=["account"])
    c = t.counters
    for a in accounts:
        for s in CONTAINER_STATUSES:
            containers.add_metric([a, s], t.counts.get((a, s), 0))
            changes.add_metric([a, s], c.get((STATUS_CHANGES, a, s), 0))
        for m in (*ERROR_MESSAGES, OTHER):
            errors.add_metric([a, m], c.get((ERRORS, a, m), 0))
        stuck.add_metric([a], t.stuck.get(a, 0))
        backlog.add_metric([a], t.backlog.get(a, 0))
        counts = [int(c.get((PROCESSING, a, le), 0)) for le in PROCESSING_LABELS]
        processing.add_metric([a], histogram_buckets(PROCESSING_BUCKETS, counts),
                              c.get((PROCESSING, a, PROCESSING_SUM), 0.0))
    return [health, containers, changes, errors, stuck, backlog, processing]


def _time(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(row: Row, now: float, policy: Policy) -> dict[str, Any]:
    """One container as the listing API shows it."""
    return {
        "account": row.account, "id": row.id, "status": row.status,
        "error_message": row.error_message,
        "stuck": is_stuck(row.status, row.registered_at, now, policy),
        "registered_at": _time(row.registered_at), "first_seen": _time(row.first_seen),
        "last_seen": _time(row.last_seen), "last_polled": _time(row.last_polled),
        "next_poll_at": _time(row.next_poll_at), "finished_at": _time(row.finished_at),
        "polls": row.polls, "poll_errors": row.poll_errors, "last_error": row.last_error,
    }


# --- the tracker ---------------------------------------------------------------------------


class UnknownAccount(LookupError):
    """No configured account of that name."""


class ContainerTracker:
    def __init__(self, client: ThreadsClient, config: Config, store: Store | None,
                 store_error: str | None = None, *,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.client = client
        self.store = store
        self.store_error = store_error
        self.clock = clock
        self.monotonic = monotonic
        self.reconfigure(config)
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="state-store")
        self._inflight: set[tuple[str, str]] = set()
        # Polling rounds by scope (None: all accounts); overlapping scrapes share one.
        self._rounds: dict[tuple[str, ...] | None, asyncio.Task[None]] = {}
        self._pending: list[Change] = []
        self._flusher: asyncio.Task[None] | None = None
        # Done once the results now pending, and the batch being committed, are committed.
        self._queued: asyncio.Future[None] | None = None
        self._committing: asyncio.Future[None] | None = None
        self._last_prune = 0.0
        self._last = ContainerSnapshot(store_ok=False)
        # Seconds one poll takes; decides how many polls still fit before a deadline.
        self.latency = min(0.5, client.api.timeout_seconds)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.policy = Policy.from_config(config.containers)
        if self.store is not None and config.containers.state_path != self.store.path:
            log.warning("containers.state_path changes take effect after a restart",
                        extra={"state_path": self.store.path})
        elif self.store is None and tracking_enabled(config.containers):
            try:
                self.store, self.store_error = open_store(config.containers.state_path)
            except StoreLocked as e:
                log.error("container tracking not started", extra={"error": str(e)})
                self.store_error = str(e)

    @property
    def store_ok(self) -> bool:
        return self.store is not None and self.store_error is None

    # --- the state store, on its own thread ---

    def _require(self) -> Store:
        if self.store is None:
            raise StoreError(self.store_error or "no container state file")
        return self.store

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the store thread; StoreError marks the store failing."""
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)
        except StoreError as e:
            if self.store_error != str(e):
                log.error("container state store failing; container polling paused, quota "
                          "metrics unaffected", extra={"error": str(e)})
            self.store_error = str(e)
            raise
        return result

    def _recovered(self) -> None:
        if self.store_error is not None:
            log.info("container state store writable again", extra={"path": self.store.path
                                                                    if self.store else None})
            self.store_error = None

    # --- registration and listing ---

    async def register(self, account: str, container_id: str) -> tuple[bool, dict[str, Any]]:
        """Track a container; (True if new, its listing entry). Committed before returning."""
        if self.config.account(account) is None:
            raise UnknownAccount(account)
        if not valid_container_id(container_id):
            raise ValueError("a container id is digits only")
        now = self.clock()
        store = self._require()
        (new,) = await self._db(store.register, account, [container_id], now)
        row = await self._db(store.get, account, container_id)
        self._recovered()
        if new:
            log.info("container registered", extra={"account": account, "id": container_id})
        return new, describe(row, now, self.policy) if row else {}

    async def track(self, entries: Iterable[TrackedContainer]) -> int:
        """Register the config's containers in one transaction; returns how many were new."""
        by_account: dict[str, list[str]] = {}
        for e in entries:
            by_account.setdefault(e.account, []).append(e.id)
        if not by_account or self.store is None:
            return 0
        now = self.clock()
        store = self.store

        def register_all() -> int:
            return sum(sum(store.register(a, ids, now)) for a, ids in by_account.items())

        try:
            return await self._db(register_all)
        except StoreError:
            return 0

    async def listing(self, account: str | None = None) -> list[dict[str, Any]]:
        rows = await self._db(self._require().listing, account)
        now = self.clock()
        return [describe(r, now, self.policy) for r in rows]

    # --- scraping ---

    async def scrape(self, deadline: float, names: Sequence[str] | None = None,
                     ) -> ContainerSnapshot:
        """Poll what is due and fits before the deadline (monotonic), then report. Never
        later than the deadline: a slow disk yields the previous snapshot instead."""
        if self.store is None:
            return ContainerSnapshot(store_ok=False, enabled=self.store_error is not None)
        try:
            return await asyncio.wait_for(self._scrape(deadline, names),
                                          max(0.0, deadline - self.monotonic()))
        except TimeoutError:
            log.warning("container state not read before the scrape deadline; reporting the "
                        "previous reading")
        except StoreError:
            pass
        except Exception:  # a bug here must not cost the quota metrics their scrape
            log.exception("container tracking failed during a scrape")
        return ContainerSnapshot(store_ok=False, tallies=self._last.tallies)

    async def _scrape(self, deadline: float, names: Sequence[str] | None) -> ContainerSnapshot:
        await self._db(self._maintain, self.clock())
        self._recovered()
        # Keep back time to commit results and read the tallies after the last poll.
        reserve = min(0.25, 0.2 * max(0.0, deadline - self.monotonic()))
        poll_deadline = deadline - reserve
        scope = tuple(names) if names is not None else None
        round_ = self._rounds.get(scope)
        if round_ is None or round_.done():
            round_ = asyncio.create_task(self._poll_round(scope, poll_deadline))
            self._rounds[scope] = round_
        await asyncio.wait({round_}, timeout=max(0.0, poll_deadline - self.monotonic()))
        await self._flush()
        now = self.clock()
        tallies = await self._db(self._require().tallies, now, now - self.policy.stuck_after)
        self._last = ContainerSnapshot(store_ok=self.store_error is None, tallies=tallies)
        return self._last

    def _maintain(self, now: float) -> None:
        """On the store thread: expire what is too old, prune, prove the disk is writable."""
        store = self._require()
        old = store.unfinished_since(now - self.policy.expire_after)
        if old:  # a poll in flight meanwhile is dropped by the store's compare-and-set
            store.apply(expired(r, now) for r in old)
        if now - self._last_prune >= PRUNE_EVERY:
            store.prune(now - self.policy.retention)
            self._last_prune = now
        store.heartbeat(now)

    async def _poll_round(self, scope: tuple[str, ...] | None, poll_deadline: float) -> None:
        """Poll due containers, oldest-due first, with a few workers; a worker starts a poll
        only if it can finish before the deadline, so nothing queues up past it. Each worker
        makes at least one poll, so a deadline shorter than one poll still makes progress
        (its answer lands after the scrape and shows in the next one)."""
        configured = {a.name for a in self.config.accounts}
        accounts = [a for a in (scope or configured) if a in configured]
        if not accounts:
            return
        workers = self.client.gate.poll_slots  # the client keeps the rest for quotas
        blocked: set[str] = set()  # accounts failing account-wide in this round
        first = True
        # Fetch about as many as the time left allows, poll them, and fetch more while time
        # remains (the estimate of a poll's latency improves as answers come in).
        while first or poll_deadline - self.monotonic() >= self.latency:
            room = max(0.0, poll_deadline - self.monotonic())
            limit = min(MAX_DUE_BATCH, workers * (int(room / max(self.latency, 0.005)) + 1))
            try:
                rows = await self._db(self._require().due, self.clock(), limit,
                                      sorted(accounts))
            except StoreError:
                return
            queue = deque(r for r in rows
                          if r.key not in self._inflight and r.account not in blocked)
            if not queue or self.store_error is not None:
                return
            await asyncio.gather(*(self._work(queue, blocked, poll_deadline, first)
                                   for _ in range(min(workers, len(queue)))))
            first = False

    async def _work(self, queue: deque[Row], blocked: set[str], poll_deadline: float,
                    first: bool) -> None:
        while queue and (first or self.monotonic() + self.latency <= poll_deadline):
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

    # --- committing results in batches (one fsync for many polls) ---

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
                await self._db(self._require().apply, batch)
            except StoreError:
                pass  # lost polls only: the statuses are read again at the next poll
            finally:
                self._inflight.difference_update((c.account, c.id) for c in batch)
                if self._committing is not None:
                    self._committing.set_result(None)

    async def _flush(self) -> None:
        """Wait until what was polled so far is committed; results that a concurrent round
        produces meanwhile go into later commits and do not hold this scrape up."""
        commits = [f for f in (self._committing, self._queued) if f is not None]
        if self._pending:
            self._kick()
        for commit in commits:
            await asyncio.shield(commit)

    async def aclose(self) -> None:
        """Stop polling, commit what was polled, close the store."""
        for task in self._rounds.values():
            task.cancel()
        for task in self._rounds.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(StoreError):
            await self._flush()
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(self._db_thread, self.store.close)
        self._db_thread.shutdown(wait=False)


def tracking_enabled(c: ContainersConfig) -> bool:
    """Without an API token or tracked containers nothing can be registered: no state file
    is created (and several such exporters may share a working directory)."""
    return bool(c.api_token or c.track)


def open_store(path: str) -> tuple[Store | None, str | None]:
    """The store, or (None, the error) when the file is unusable. A lock held by another
    exporter is not tolerated: StoreLocked propagates and start-up fails."""
    try:
        return Store(path), None
    except StoreLocked:
        raise
    except StoreError as e:
        log.error("container state file unusable; container tracking disabled, quota metrics "
                  "unaffected", extra={"error": str(e)})
        return None, str(e)

