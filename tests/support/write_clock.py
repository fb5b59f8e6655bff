"""The time the store stamps on the versions it writes, set by a test instead of slept for."""

from __future__ import annotations

from datetime import datetime

import pytest

from gateway.store import writes


class WriteClock:
    """Stands in for the ``time`` module of ``gateway.store.writes`` (only there): each version
    written is last updated at the instant last given to ``set``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: str = "2024-01-01T00:00:00Z") -> None:
        self.now = 0.0
        self.set(start)
        monkeypatch.setattr(writes, "time", self)

    def set(self, instant: str) -> None:
        """Stamp the writes that follow with ``instant`` (ISO 8601, with a time zone)."""
        self.now = datetime.fromisoformat(instant).timestamp()

    def time(self) -> float:
        """What ``time.time()`` answers in ``gateway.store.writes``."""
        return self.now
