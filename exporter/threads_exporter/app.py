"""The running exporter's lifecycle: one event loop thread that owns the client, the quota
reader and the container tracker; scrapes by deadline, registration, reload, shutdown.

A scrape takes a plain snapshot on the loop; its families are built and encoded off the
loop (from per-account fragments that outlive the scrape, see exposition.py).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

from threads_exporter import __version__
from threads_exporter.calls import api_families, call_families, latency_family
from threads_exporter.config import Config, ConfigError, load_config
from threads_exporter.containers.families import (
    ContainerSnapshot,
    Inputs,
    container_families,
    pressure_families,
    pressure_inputs,
    status_families,
    status_inputs,
)
from threads_exporter.containers.storage import open_store
from threads_exporter.containers.store import StoreError, Tallies
from threads_exporter.containers.tracker import (
    FULL,
    INVALID,
    KNOWN,
    NEW,
    UNKNOWN,
    ContainerTracker,
    TooMany,
    UnknownAccount,
    tracking_enabled,
)
from threads_exporter.exposition import Encoder, Exposition, Families, Part, gzipped
from threads_exporter.graph.client import ThreadsClient
from threads_exporter.graph.stats import ApiStats
from threads_exporter.metrics import gauge
from threads_exporter.quotas.families import quota_families
from threads_exporter.quotas.reader import QuotaReader, Reading
from threads_exporter.redact import REDACT

log = logging.getLogger(__name__)
T = TypeVar("T")
# Encoding one account's share of a part (say its quota families) afresh: a generous guess
# until a scrape has measured it (~0.05-0.1 ms on this decade's CPUs).
ENCODE_SECONDS_GUESS = 0.0002

# What register() and containers() raise, for the HTTP front to answer (it imports no deeper).
__all__ = ["FULL", "INVALID", "KNOWN", "NEW", "UNKNOWN", "Exporter", "Snapshot", "StoreError",
           "TooMany", "UnknownAccount"]


@dataclass(frozen=True)
class Snapshot:
    readings: list[Reading]
    stats: ApiStats
    containers: ContainerSnapshot


class Exporter:
    def __init__(self, config: Config, config_path: str | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.config = config.without_track()
        self.config_path = config_path
        self.reload_ok = True
        self.reloaded_at = time.time()
        # What rendering costs, learnt from scrapes: seconds besides encoding fragments, and
        # seconds per fragment encoded afresh (decaying maxima).
        self._render_fixed = 0.0
        self._encode_seconds = ENCODE_SECONDS_GUESS
        self._exposition = Exposition()
        # The latest tallies and their inputs per account: while a half of the tallies is
        # unchanged, its inputs are the same objects, which the exposition compares by
        # identity instead of by value, 10,000 accounts each scrape.
        self._status_seen: tuple[Any, Inputs] = (None, {})
        self._pressure_seen: tuple[Any, Inputs] = (None, {})
        REDACT.set_secrets(config.secrets())
        # First, so a state file locked by another exporter fails start-up before anything runs.
        store, store_error = (open_store(config.containers.state_path)
                              if tracking_enabled(config.containers) else (None, None))
        self.stats = ApiStats()
        # The standard process and runtime metrics, as every client_python exporter has them,
        # in a registry of their own: the global one is no business of a library user's.
        self._runtime = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._runtime)
        PlatformCollector(registry=self._runtime)
        GCCollector(registry=self._runtime)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="threads-api",
                                        daemon=True)
        self._thread.start()
        self.client: ThreadsClient = self.call(self._make_client(config, transport))
        self.quotas = QuotaReader(self.client, self.config)
        self.tracker = ContainerTracker(self.client, config, store, store_error)
        self.call(self.tracker.track(config.containers.track))
        self._reload_lock = asyncio.Lock()  # bound to the loop that first uses it

    async def _make_client(self, config: Config,
                           transport: httpx.AsyncBaseTransport | None) -> ThreadsClient:
        # The client's gate and pools belong to the loop: build them on it.
        return ThreadsClient(config.api, self.stats, transport=transport)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the exporter's loop from another thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # --- scraping ---

    def scrape(self, deadline: float, account: str | None = None) -> list[Metric]:
        """Every family of a scrape (one account's for /probe) that must end by the deadline
        (a time.monotonic() value)."""
        return self._families(self._wait(deadline, account), account)

    def exposition(self, deadline: float, account: str | None, encoder: Encoder,
                   finish: Callable[[bytes], bytes] | None = None, *,
                   gzip: bool = False) -> bytes:
        return self.call(self.exposition_async(deadline, account, encoder, finish, gzip=gzip),
                         timeout=max(0.0, deadline - time.monotonic()) + 10)

    async def exposition_async(self, deadline: float, account: str | None, encoder: Encoder,
                               finish: Callable[[bytes], bytes] | None = None, *,
                               gzip: bool = False) -> bytes:
        """A scrape, encoded, gzip-compressed if asked, then passed through `finish`. Building and
        encoding the families is CPU work and runs off the loop, so API calls in flight never
        stall behind it; the time it took is kept in reserve from later scrapes' deadlines,
        so a large exposition still arrives in time."""
        # Kept back from the deadline: rendering at the worst, when every account's readings
        # changed (10,000 accounts failing at once), so that even that scrape is in time.
        # Before the first scrape, as if every account had all four parts.
        shares = self._exposition.shares or 4 * len(self.config.accounts)
        reserve = (self._render_fixed + self._encode_seconds * shares
                   if account is None else 0.0)
        snapshot = await self._snapshot(max(deadline - reserve, time.monotonic() + 0.05),
                                        None if account is None else [account], deadline)
        start = time.monotonic()

        def render() -> bytes:
            if account is not None:
                body = encoder(Families(self._families(snapshot, account)))
                body = gzipped([body]) if gzip else body
            else:
                body = self._encode(snapshot, encoder, gzip)
            return body if finish is None else finish(body)

        encoded = await asyncio.get_running_loop().run_in_executor(None, render)
        if account is None:
            # Decaying maxima: one slow render is remembered for a while, not for ever.
            took, e = time.monotonic() - start, self._exposition
            self._render_fixed = max(took - e.miss_seconds, self._render_fixed * 0.8)
            if e.misses >= 100:  # enough to tell the cost of one
                self._encode_seconds = max(e.miss_seconds / e.misses, self._encode_seconds * 0.8)
        return encoded

    def _encode(self, snapshot: Snapshot, encoder: Encoder, gzip: bool) -> bytes:
        names = [a.name for a in self.config.accounts]
        stats = snapshot.stats
        readings = snapshot.readings
        parts: list[Part[Any]] = [
            Part("quotas", lambda pairs: quota_families(r for _, r in pairs),
                 [r.account for r in readings], readings),
            Part("calls", call_families, names, [stats.of(a) for a in names])]
        tail = [latency_family(stats)]
        containers = snapshot.containers
        tail += container_families(ContainerSnapshot(containers.store_ok, None,
                                                     containers.enabled), names)
        tallies = containers.tallies
        if containers.enabled and tallies is not None:
            status, pressure = self._account_inputs(tallies)
            parts += [
                Part("container statuses",
                     lambda pairs: status_families(tallies, [a for a, _ in pairs]),
                     names, [status.get(a, ()) for a in names]),
                Part("container pressure",
                     lambda pairs: pressure_families(tallies, [a for a, _ in pairs]),
                     names, [pressure.get(a, ()) for a in names])]
        tail += self._own_families()
        tail += self._runtime_families()
        return self._exposition.encode(encoder, parts, tail, gzip=gzip)

    def _account_inputs(self, t: Tallies) -> tuple[Inputs, Inputs]:
        # Renders of two scrapes may run at once (on the executor's threads): each works on
        # its own copy, so neither returns the other's inputs.
        status = self._status_seen
        if status[0] != (t.counts, t.counters):
            status = self._status_seen = ((t.counts, t.counters), status_inputs(t))
        pressure = self._pressure_seen
        if pressure[0] != (t.stuck, t.backlog, t.unanswered):
            pressure = self._pressure_seen = ((t.stuck, t.backlog, t.unanswered),
                                              pressure_inputs(t))
        return status[1], pressure[1]

    def _wait(self, deadline: float, account: str | None) -> Snapshot:
        deadline = max(deadline, time.monotonic() + 0.05)
        names = None if account is None else [account]
        return self.call(self._snapshot(deadline, names),
                         timeout=deadline - time.monotonic() + 5)

    def _families(self, snapshot: Snapshot, account: str | None) -> list[Metric]:
        families = quota_families(snapshot.readings)
        if account is not None:
            return (families + api_families(snapshot.stats, {account})
                    + container_families(snapshot.containers, [account]))
        return (families + api_families(snapshot.stats)
                + container_families(snapshot.containers, [a.name for a in self.config.accounts])
                + self._own_families() + list(self._runtime_families()))

    async def _snapshot(self, deadline: float, names: list[str] | None,
                        poll_until: float | None = None) -> Snapshot:
        """The readings and tallies as of the deadline; container polls may go on until
        `poll_until` (the scrape's own deadline) while the scrape is rendered."""
        readings, containers = await asyncio.gather(
            self.quotas.scrape(deadline, names),
            self.tracker.scrape(deadline, names, poll_until))
        return Snapshot(readings, self.stats.copy(), containers)

    def _own_families(self) -> list[Metric]:
        info = gauge("threads_exporter_build_info")
        info.add_metric([__version__, platform.python_version()], 1)
        reload = gauge("threads_exporter_config_last_reload_successful")
        reload.add_metric([], 1 if self.reload_ok else 0)
        reloaded = gauge("threads_exporter_config_last_reload_success_timestamp_seconds")
        reloaded.add_metric([], self.reloaded_at)
        return [info, reload, reloaded]

    def _runtime_families(self) -> Iterable[Metric]:
        return self._runtime.collect()

    # --- containers (from HTTP handler threads and the demo) ---

    async def register_async(self, account: str, container_id: str,
                             ) -> tuple[bool, dict[str, Any]]:
        """Track a container: (new?, its listing entry); committed to disk on return.
        Raises UnknownAccount, ValueError for a bad id, StoreError for an unusable disk."""
        return await self.tracker.register(account, container_id)

    async def register_batch_async(self, entries: list[tuple[str, str]],
                                   ) -> list[tuple[str, dict[str, Any]]]:
        """Track many containers in one transaction; (outcome, listing entry) for each."""
        return await self.tracker.register_batch(entries)

    async def containers_async(self, account: str | None = None, limit: int = -1,
                               after: tuple[float, str, str] | None = None,
                               ) -> tuple[list[dict[str, Any]], tuple[float, str, str] | None]:
        """A page of tracked containers, oldest first, and the key of the next page."""
        return await self.tracker.listing(account, limit, after)

    def register(self, account: str, container_id: str) -> tuple[bool, dict[str, Any]]:
        return self.call(self.register_async(account, container_id), timeout=30)

    def containers(self, account: str | None = None) -> list[dict[str, Any]]:
        """Every tracked container (for tests and the demo; HTTP clients page)."""
        return self.call(self.containers_async(account), timeout=30)[0]

    # --- config ---

    def reload(self) -> str | None:
        """Re-read the config file; returns the error, or None. A bad config is not adopted."""
        return self.call(self.reload_async(), timeout=60)

    async def reload_async(self) -> str | None:
        if self.config_path is None:
            return "no config file to reload (demo mode)"
        path = self.config_path
        async with self._reload_lock:  # reloads one after the other: the newest file wins
            try:
                config = (await asyncio.get_running_loop().run_in_executor(
                    None, load_config, path)).for_shard(self.config.shard)
            except ConfigError as e:
                self.reload_ok = False
                log.error("config reload failed; keeping the running config",
                          extra={"error": str(e)})
                return str(e)
            REDACT.add_secrets(config.secrets())
            await self._adopt(config)
            self.config = config.without_track()
            self.reload_ok = True
            self.reloaded_at = time.time()
            log.info("config reloaded", extra={"accounts": len(config.accounts)})
            return None

    async def _adopt(self, config: Config) -> None:
        await self.client.reconfigure(config.api)
        self.quotas.reconfigure(config.without_track())
        self.tracker.reconfigure(config)
        await self.tracker.track(config.containers.track)

    async def _shutdown(self) -> None:
        # Cancel in-flight calls first: cut off by the closing pool instead, they would be
        # retried and logged as failures on the way out.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.tracker.aclose()
        await self.client.aclose()

    def close(self) -> None:
        try:
            self.call(self._shutdown(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
