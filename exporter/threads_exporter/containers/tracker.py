"""The container service: registration, listing and a scrape's polling and tallies.

Runs on the exporter's event loop; the policy, scheduling, storage and metric families are
each in their own module of this package.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from threads_exporter.config import Config, ContainersConfig, TrackedContainer, valid_container_id
from threads_exporter.containers.families import ContainerSnapshot
from threads_exporter.containers.listing import describe
from threads_exporter.containers.policy import Policy, expired
from threads_exporter.containers.scheduler import Scheduler
from threads_exporter.containers.storage import Storage
from threads_exporter.containers.store import Row, Store, StoreError
from threads_exporter.graph.client import ThreadsClient

log = logging.getLogger(__name__)

PRUNE_EVERY = 60.0  # seconds between retention sweeps
MAX_CARRY = 300.0  # seconds polling goes on after a scrape, at most (the longest usual interval)
# Seconds between proofs that the disk takes writes when nothing else is written: each is an
# fsync, which scrapes every few seconds must not each pay for. While the store is failing,
# every scrape tries again, so recovery shows at once.
HEARTBEAT_EVERY = 15.0


class UnknownAccount(LookupError):
    """No configured account of that name."""


class TooMany(Exception):
    """The account tracks containers.max_tracked_per_account containers still polled."""

    def __init__(self, account: str, cap: int):
        super().__init__(f"the account already tracks {cap} containers that are still polled "
                         "(containers.max_tracked_per_account); wait for some to finish or "
                         "expire, or raise the limit")


# What registering one container did.
NEW, KNOWN, FULL, UNKNOWN, INVALID = "new", "known", "full", "unknown", "invalid"


def tracking_enabled(c: ContainersConfig) -> bool:
    """Without an API token or tracked containers nothing can be registered: no state file
    is created (and several such exporters may share a working directory)."""
    return bool(c.api_token or c.track)


class ContainerTracker:
    def __init__(self, client: ThreadsClient, config: Config, store: Store | None,
                 store_error: str | None = None, *,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.storage = Storage(store, store_error)
        self.clock = clock
        self.monotonic = monotonic
        self.config = config
        self.policy = Policy.from_config(config.containers)
        self.scheduler = Scheduler(client, self.storage, config, self.policy,
                                   clock=clock, monotonic=monotonic)
        self._last_prune = 0.0
        self._last_heartbeat = float("-inf")
        self._last = ContainerSnapshot(store_ok=False)
        self._scraped: dict[tuple[str, ...] | None, float] = {}  # latest scrape, by scope
        self.reconfigure(config)

    @property
    def store(self) -> Store | None:
        return self.storage.store

    def reconfigure(self, config: Config) -> None:
        """Adopt a config; its `track` entries are for track(), and are not kept here."""
        kept = config.without_track()
        self.config = kept
        self.policy = Policy.from_config(config.containers)
        self.scheduler.config, self.scheduler.policy = kept, self.policy
        store = self.storage.store
        if store is not None and config.containers.state_path != store.path:
            log.warning("containers.state_path changes take effect after a restart",
                        extra={"state_path": store.path})
        elif store is None and tracking_enabled(config.containers):
            self.storage.open(config.containers.state_path)

    # --- registration and listing ---

    async def register(self, account: str, container_id: str) -> tuple[bool, dict[str, Any]]:
        """Track a container; (True if new, its listing entry). Committed before returning.
        Raises UnknownAccount, ValueError for a bad id, TooMany past the account's cap."""
        [(status, entry)] = await self.register_batch([(account, container_id)])
        if status == UNKNOWN:
            raise UnknownAccount(account)
        if status == FULL:
            raise TooMany(account, self.config.containers.max_tracked_per_account)
        if status == INVALID:
            raise ValueError("a container id is a string of digits")
        return status == NEW, entry

    async def register_batch(self, entries: Sequence[tuple[str, str]],
                             ) -> list[tuple[str, dict[str, Any]]]:
        """Track many containers in one transaction: (NEW, KNOWN, FULL, UNKNOWN or INVALID,
        the listing entry of a tracked one) for each, in order."""
        results: list[tuple[str, dict[str, Any]]] = [("", {})] * len(entries)
        valid: list[int] = []
        for i, (account, cid) in enumerate(entries):
            if self.config.account(account) is None:
                results[i] = (UNKNOWN, {})
            elif not valid_container_id(cid):
                results[i] = (INVALID, {})
            else:
                valid.append(i)
        if not valid:
            return results
        now = self.clock()
        store = self.storage.require()
        pairs = [entries[i] for i in valid]
        cap = self.config.containers.max_tracked_per_account

        def register() -> list[tuple[str, Row | None]]:
            statuses = store.register_many(pairs, now, cap)
            return [(st, store.get(a, c) if st != FULL else None)
                    for st, (a, c) in zip(statuses, pairs, strict=True)]

        done = await self.storage.run(register)
        self.storage.recovered()
        if any(status == NEW for status, _ in done):
            self.scheduler.wake()  # polled at once if polling goes on between scrapes
        for i, (status, row) in zip(valid, done, strict=True):
            results[i] = (status, describe(row, now, self.policy) if row else {})
            if status == NEW:
                log.info("container registered", extra={"account": entries[i][0],
                                                        "id": entries[i][1]})
        return results

    async def track(self, entries: Iterable[TrackedContainer]) -> int:
        """Register the config's containers in one transaction; returns how many were new."""
        by_account: dict[str, list[str]] = {}
        for e in entries:
            by_account.setdefault(e.account, []).append(e.id)
        store = self.storage.store
        if not by_account or store is None:
            return 0
        now = self.clock()

        def register_all() -> int:
            return sum(sum(store.register(a, ids, now)) for a, ids in by_account.items())

        try:
            return await self.storage.run(register_all)
        except StoreError:
            return 0

    async def listing(self, account: str | None = None, limit: int = -1,
                      after: tuple[float, str, str] | None = None,
                      ) -> tuple[list[dict[str, Any]], tuple[float, str, str] | None]:
        """A page of the listing, oldest first, and the key to ask for the next (None: the
        last page)."""
        rows = await self.storage.run(self.storage.require().listing, account,
                                      -1 if limit < 0 else limit + 1, after)
        more = 0 <= limit < len(rows)
        rows = rows[:limit] if more else rows
        now = self.clock()
        last = rows[-1] if more else None
        return ([describe(r, now, self.policy) for r in rows],
                (last.registered_at, last.account, last.id) if last else None)

    # --- scraping ---

    async def scrape(self, deadline: float, names: Sequence[str] | None = None,
                     poll_until: float | None = None) -> ContainerSnapshot:
        """Poll what is due and fits before the deadline (monotonic), then report. Never
        later than the deadline: a slow disk yields the previous snapshot instead. Polling
        goes on until `poll_until` (the scrape's own deadline, past the snapshot's) in the
        background."""
        if self.storage.store is None:
            return ContainerSnapshot(store_ok=False, enabled=self.storage.error is not None)
        try:
            return await asyncio.wait_for(self._scrape(deadline, names, poll_until),
                                          max(0.0, deadline - self.monotonic()))
        except TimeoutError:
            # Slow is not broken: store_up says whether the file takes writes, and a scrape
            # that ran out of time says nothing about that.
            log.warning("container state not read before the scrape deadline; reporting the "
                        "previous reading")
            return ContainerSnapshot(store_ok=self.storage.ok, tallies=self._last.tallies)
        except StoreError:
            pass
        except Exception:  # a bug here must not cost the quota metrics their scrape
            log.exception("container tracking failed during a scrape")
        return ContainerSnapshot(store_ok=False, tallies=self._last.tallies)

    async def _scrape(self, deadline: float, names: Sequence[str] | None,
                      poll_until: float | None) -> ContainerSnapshot:
        scope = tuple(names) if names is not None else None
        started = self.monotonic()
        previous, self._scraped[scope] = self._scraped.get(scope), started
        if poll_until is not None and previous is not None:
            # Polling goes on until about when the next scrape comes, so containers are polled
            # at their own interval, not only while a scrape waits; with no scraper it stops.
            poll_until = max(poll_until, started + min(started - previous, MAX_CARRY))
        await self.storage.run(self._maintain, self.clock())
        self.storage.recovered()
        # Keep back time to commit results and read the tallies after the last poll.
        reserve = min(0.25, 0.2 * max(0.0, deadline - self.monotonic()))
        await self.scheduler.poll(scope, deadline - reserve, poll_until)
        now = self.clock()
        tallies = await self.storage.run(self.storage.require().tallies, now,
                                         now - self.policy.stuck_after)
        self._last = ContainerSnapshot(store_ok=self.storage.error is None, tallies=tallies)
        return self._last

    def _maintain(self, now: float) -> None:
        """On the store thread: expire what is too old, prune, prove the disk is writable."""
        store = self.storage.require()
        old = store.unfinished_since(now - self.policy.expire_after)
        if old:  # a poll in flight meanwhile is dropped by the store's compare-and-set
            store.apply(expired(r, now) for r in old)
        if now - self._last_prune >= PRUNE_EVERY:
            store.prune(now - self.policy.retention)
            self._last_prune = now
        if self.storage.error is not None or now - self._last_heartbeat >= HEARTBEAT_EVERY:
            store.heartbeat(now)
            self._last_heartbeat = now

    async def aclose(self) -> None:
        """Stop polling, commit what was polled, close the store."""
        await self.scheduler.aclose()
        await self.storage.aclose()
