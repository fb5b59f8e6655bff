"""The stand-ins' server clock: strictly increasing, so every change has its own time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class ServerClock:
    """Starts at ``start`` and moves one second per reading."""

    def __init__(self, start: datetime = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)) -> None:
        self._now = start

    def now(self) -> datetime:
        """The next instant."""
        self._now += timedelta(seconds=1)
        return self._now

    def odata(self) -> str:
        """ODK Central's form: ``2025-06-01T08:00:01.000Z``."""
        return self.now().strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"

    def commcare(self) -> str:
        """CommCare's form: ``2025-06-01T08:00:01.000000Z``."""
        return self.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def kobo(self) -> str:
        """Kobo's ``_submission_time``: naive UTC, seconds."""
        return self.now().strftime("%Y-%m-%dT%H:%M:%S")
