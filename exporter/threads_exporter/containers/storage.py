"""The state store on its own thread: store calls off the event loop, and the store's health.

All SQLite work runs on one dedicated thread, so a slow disk never blocks the event loop.
A StoreError from any call marks the store failing (container_store_up 0) until a later
write succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from threads_exporter.containers.store import Store, StoreError, StoreLocked

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class Storage:
    """One Store (or the reason there is none), used from the event loop."""

    def __init__(self, store: Store | None, error: str | None = None):
        self.store = store
        self.error = error
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="state-store")

    @property
    def ok(self) -> bool:
        return self.store is not None and self.error is None

    def open(self, path: str) -> None:
        """Open a store where there was none (a reload turned tracking on)."""
        try:
            self.store, self.error = open_store(path)
        except StoreLocked as e:
            log.error("container tracking not started", extra={"error": str(e)})
            self.error = str(e)

    def require(self) -> Store:
        if self.store is None:
            raise StoreError(self.error or "no container state file")
        return self.store

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the store thread; StoreError marks the store failing."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except StoreError as e:
            if self.error != str(e):
                log.error("container state store failing; container polling paused, quota "
                          "metrics unaffected", extra={"error": str(e)})
            self.error = str(e)
            raise

    def recovered(self) -> None:
        """A write succeeded: the store is usable again."""
        if self.error is not None:
            log.info("container state store writable again",
                     extra={"path": self.store.path if self.store else None})
            self.error = None

    async def aclose(self) -> None:
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self.store.close)
        self._thread.shutdown(wait=False)
