"""Waiting for what a test checks, with a bound, instead of racing it.

    wait_for(lambda: fake.calls("tok"), until=lambda n: n == 1)   # -> the value that passed
    eventually(check_reload_failed, timeout=10)                   # -> once its asserts pass

Both fail with the last thing they observed, so a timeout explains itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition was not reached in time."""


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", repr(fn))


def wait_for(probe: Callable[[], T], until: Callable[[T], Any] | None = None, *,
             timeout: float = 10.0, interval: float = 0.05, what: str | None = None) -> T:
    """Call `probe` until its value passes `until` (by default: is truthy) and return that
    value; after `timeout` seconds fail with the last value observed."""
    end = time.monotonic() + timeout
    while True:
        last = probe()
        if until(last) if until is not None else last:
            return last
        if time.monotonic() >= end:
            raise WaitTimeout(f"{what or _name(probe)}: not reached within {timeout}s; "
                              f"last observed: {last!r}")
        time.sleep(interval)


def eventually(check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.1) -> T:
    """Call `check` until it returns without an AssertionError and return its result; after
    `timeout` seconds the last AssertionError is raised, marked as a timeout."""
    end = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError as e:
            if time.monotonic() >= end:
                raise WaitTimeout(f"{_name(check)}: still failing after {timeout}s: {e}") \
                    from e
        time.sleep(interval)
