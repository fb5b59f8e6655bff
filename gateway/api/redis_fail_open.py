"""``FailOpen``: a limit kept in Redis lets requests through while Redis fails, and says so.

A rate limit or a login throttle must not take the API down with Redis: while Redis fails the
limit is not asked (for ``pause`` seconds after each failure, so a dead server costs a request
one timeout, not each request), and a warning says so at most once a minute.
"""

from __future__ import annotations

import logging

__all__ = ["FailOpen"]

_WARN_EVERY = 60.0


class FailOpen:
    """When a Redis-backed limit last failed, and whether it is skipped now."""

    def __init__(self, log: logging.Logger, warning: str, pause: float = 1.0) -> None:
        """``warning`` is logged with the error's type name (``%s``) when Redis fails."""
        self._log = log
        self._warning = warning
        self._pause = pause
        self._down_until = float("-inf")
        self._next_warning = float("-inf")

    def skipping(self, now: float) -> bool:
        """Whether the limit is not asked at ``now`` (Redis failed less than ``pause`` ago)."""
        return now < self._down_until

    def failed(self, now: float, exc: BaseException) -> None:
        """Redis failed at ``now``: skip the limit for a pause; warn unless warned within a minute."""
        self._down_until = now + self._pause
        if now >= self._next_warning:
            self._next_warning = now + _WARN_EVERY
            self._log.warning(self._warning, type(exc).__name__)
