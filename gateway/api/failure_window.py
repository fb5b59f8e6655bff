"""Failure windows: the login throttle's counter protocol and its in-process implementation.

A key's window opens with its first failure and lasts ``window`` seconds; within it the
failures add up, and once they reach the key's limit every attempt is refused until the
window closes. A closed window is the same as no entry, which is how both implementations
bound their memory (this one sweeps such entries out, the Redis one lets its keys expire).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

__all__ = ["FailureCounter", "InProcessCounter", "count_failure", "wait_of"]


class FailureCounter(Protocol):
    """Failure counts by key (a client address, a client name), with the window given on each call."""

    async def wait(self, limits: Mapping[str, int], window: float) -> float:
        """Seconds until every key in ``limits`` is below its limit again (0: an attempt may go ahead)."""
        ...

    async def failed(self, keys: Sequence[str], window: float) -> None:
        """Count one failure against each of ``keys``."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def wait_of(count: int, start: float, now: float, limit: int, window: float) -> float:
    """Seconds a key holding ``count`` failures in the window opened at ``start`` stays refused (0: not).

    The Redis script does the same in Lua.
    """
    if count < limit or now >= start + window:
        return 0.0
    # A clock that reads earlier than ``start`` (another process's) never makes it longer than a window.
    return min(window, start + window - now)


def count_failure(count: int, start: float, now: float, window: float) -> tuple[int, float]:
    """The count and window start after one more failure at ``now``."""
    if count <= 0 or now >= start + window:
        return 1, now
    return count + 1, start


class InProcessCounter:
    """Failure windows in this process's memory (one gateway process, or one count per process)."""

    def __init__(self, now: Callable[[], float] = time.monotonic, *, max_keys: int = 100_000,
                 sweep_seconds: float = 60.0) -> None:
        self._now = now
        self._max_keys = max_keys
        self._sweep_seconds = sweep_seconds
        self._next_sweep = now() + sweep_seconds
        # key -> (failures, window start, window length)
        self._entries: dict[str, tuple[int, float, float]] = {}

    async def wait(self, limits: Mapping[str, int], window: float) -> float:
        """Seconds until every key in ``limits`` is below its limit again."""
        now = self._now()
        longest = 0.0
        for key, limit in limits.items():
            entry = self._entries.get(key)
            if entry is not None:
                longest = max(longest, wait_of(entry[0], entry[1], now, limit, window))
        return longest

    async def failed(self, keys: Sequence[str], window: float) -> None:
        """Count one failure against each of ``keys``."""
        now = self._now()
        if now >= self._next_sweep or len(self._entries) + len(keys) > self._max_keys:
            self._sweep(now, room=len(keys))
        for key in keys:
            count, start, _ = self._entries.pop(key, (0, now, window))
            count, start = count_failure(count, start, now, window)
            self._entries[key] = (count, start, window)  # re-inserted: the dict stays in order of last failure

    def _sweep(self, now: float, room: int = 0) -> None:
        # Keys come from requests (addresses, claimed client names), so besides dropping closed
        # windows the table is capped: when still full, the half that failed longest ago goes.
        self._entries = {key: entry for key, entry in self._entries.items() if now < entry[1] + entry[2]}
        if len(self._entries) + room > self._max_keys:
            for key in list(self._entries)[: len(self._entries) - self._max_keys // 2]:
                del self._entries[key]
        self._next_sweep = now + self._sweep_seconds

    def __len__(self) -> int:
        """Keys held (closed windows may linger until the next sweep)."""
        return len(self._entries)

    async def aclose(self) -> None:
        """Nothing to release."""
