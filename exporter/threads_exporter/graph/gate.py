"""The budget of requests in flight, shared by quota readings (first) and container polls."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


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
