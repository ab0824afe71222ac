"""The running exporter: one event loop thread that owns the client and the collector.

HTTP handler threads hand scrapes to the loop and get plain snapshots back; metric families
are then built in the handler thread, fresh for every scrape.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from prometheus_client.core import GaugeMetricFamily, Metric

from threads_exporter import __version__
from threads_exporter.client import REDACT, ApiStats, ThreadsClient
from threads_exporter.collector import (
    QuotaCollector,
    Reading,
    api_families,
    copy_stats,
    quota_families,
)
from threads_exporter.config import Config, ConfigError, load_config
from threads_exporter.tracker import (
    ContainerSnapshot,
    ContainerTracker,
    container_families,
    open_store,
    tracking_enabled,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_SCRAPE_TIMEOUT = 10.0  # Prometheus' default scrape_timeout
MAX_SCRAPE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Snapshot:
    readings: list[Reading]
    stats: ApiStats
    containers: ContainerSnapshot


def scrape_budget(header: str | None, offset: float) -> float:
    """Seconds a scrape may spend: Prometheus' announced timeout minus a safety margin."""
    try:
        timeout = float(header) if header else DEFAULT_SCRAPE_TIMEOUT
    except ValueError:
        timeout = DEFAULT_SCRAPE_TIMEOUT
    if not 0 < timeout < float("inf"):
        timeout = DEFAULT_SCRAPE_TIMEOUT
    return max(0.05, min(timeout, MAX_SCRAPE_TIMEOUT) - offset)


class Exporter:
    def __init__(self, config: Config, config_path: str | None = None, *,
                 timeout_offset: float = 0.5,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.config_path = config_path
        self.timeout_offset = timeout_offset
        self.reload_ok = True
        self._render_reserve = 0.0  # seconds the last expositions took to build and encode
        self._transport = transport
        self._reload_lock = threading.Lock()
        REDACT.set_secrets(config.secrets())
        # First, so a state file locked by another exporter fails start-up before anything runs.
        store, store_error = (open_store(config.containers.state_path)
                              if tracking_enabled(config.containers) else (None, None))
        self.stats = ApiStats()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="threads-api",
                                        daemon=True)
        self._thread.start()
        self.client: ThreadsClient = self.call(self._make_client(config))
        self.collector = QuotaCollector(self.client, config)
        self.tracker = ContainerTracker(self.client, config, store, store_error)
        self.call(self.tracker.track(config.containers.track))

    async def _make_client(self, config: Config) -> ThreadsClient:
        # The client's semaphore and pool belong to the loop: build them on it.
        return ThreadsClient(config.api, self.stats, transport=self._transport)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the exporter's loop from another thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # --- scraping ---

    def scrape(self, scrape_timeout_header: str | None = None,
               account: str | None = None) -> list[Metric]:
        return self._families(self._wait(scrape_timeout_header, account), account)

    def exposition(self, scrape_timeout_header: str | None, account: str | None,
                   encode: Callable[[list[Metric]], T]) -> T:
        """A scrape, encoded. The time encoding took is kept in reserve from later scrapes'
        budgets, so a large exposition still reaches Prometheus before its timeout."""
        snapshot = self._wait(scrape_timeout_header, account)
        start = time.monotonic()
        encoded = encode(self._families(snapshot, account))
        # A decaying maximum: one slow render is remembered for a while, not for ever.
        self._render_reserve = max(time.monotonic() - start, self._render_reserve * 0.8)
        return encoded

    def _wait(self, scrape_timeout_header: str | None, account: str | None) -> Snapshot:
        budget = scrape_budget(scrape_timeout_header,
                               self.timeout_offset + self._render_reserve)
        deadline = time.monotonic() + budget
        names = None if account is None else [account]
        return self.call(self._snapshot(deadline, names), timeout=budget + 5)

    def _families(self, snapshot: Snapshot, account: str | None) -> list[Metric]:
        families = quota_families(snapshot.readings)
        if account is not None:
            return (families + api_families(snapshot.stats, {account})
                    + container_families(snapshot.containers, [account]))
        return (families + api_families(snapshot.stats)
                + container_families(snapshot.containers, [a.name for a in self.config.accounts])
                + self._own_families())

    async def _snapshot(self, deadline: float, names: list[str] | None) -> Snapshot:
        readings, containers = await asyncio.gather(self.collector.scrape(deadline, names),
                                                    self.tracker.scrape(deadline, names))
        return Snapshot(readings, copy_stats(self.stats), containers)

    # --- containers (from HTTP handler threads and the demo) ---

    def register(self, account: str, container_id: str) -> tuple[bool, dict[str, Any]]:
        """Track a container: (new?, its listing entry); committed to disk on return.
        Raises UnknownAccount, ValueError for a bad id, StoreError for an unusable disk."""
        return self.call(self.tracker.register(account, container_id), timeout=30)

    def containers(self, account: str | None = None) -> list[dict[str, Any]]:
        return self.call(self.tracker.listing(account), timeout=30)

    def _own_families(self) -> list[Metric]:
        info = GaugeMetricFamily("threads_exporter_build_info", "Version of the exporter; "
                                 "always 1", labels=["version", "python_version"])
        info.add_metric([__version__, platform.python_version()], 1)
        reload = GaugeMetricFamily("threads_config_last_reload_successful",
                                   "1 if the last config reload succeeded, else 0")
        reload.add_metric([], 1 if self.reload_ok else 0)
        return [info, reload]

    # --- config ---

    def reload(self) -> str | None:
        """Re-read the config file; returns the error, or None. A bad config is not adopted."""
        if self.config_path is None:
            return "no config file to reload (demo mode)"
        with self._reload_lock:
            try:
                config = load_config(self.config_path).for_shard(self.config.shard)
            except ConfigError as e:
                self.reload_ok = False
                log.error("config reload failed; keeping the running config",
                          extra={"error": str(e)})
                return str(e)
            REDACT.add_secrets(config.secrets())
            self.call(self._adopt(config))
            self.config = config
            self.reload_ok = True
            log.info("config reloaded", extra={"accounts": len(config.accounts)})
            return None

    async def _shutdown(self) -> None:
        # Cancel in-flight calls first: cut off by the closing pool instead, they would be
        # retried and logged as failures on the way out.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.tracker.aclose()
        await self.client.aclose()

    async def _adopt(self, config: Config) -> None:
        if config.api != self.client.api:
            old = self.client
            self.client = await self._make_client(config)
            self.collector.client = self.client
            self.tracker.client = self.client
            await old.aclose()
        self.collector.reconfigure(config)
        self.tracker.reconfigure(config)
        await self.tracker.track(config.containers.track)

    def close(self) -> None:
        try:
            self.call(self._shutdown(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
