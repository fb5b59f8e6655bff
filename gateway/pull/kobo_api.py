"""KoboToolbox: the data endpoint of one asset, ``/api/v2/assets/{uid}/data/``.

Read in ``_submission_time`` order from the cursor (a Mongo-style ``query`` with ``$gte``, so
submissions sharing the last stored time are read again rather than skipped), ``start``/``limit``
pages following ``next``. A submission whose validation status becomes "not approved" is
taken back by the kobo set's ``retract:`` when it is read again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway import jsonio
from gateway.pull.base import Page, PullError
from gateway.pull.config import PullOptions
from gateway.pull.http import Fetcher

__all__ = ["KoboApi"]


class KoboApi:
    """Pulls one KoboToolbox asset's submissions (see the module docstring)."""

    def __init__(self, options: PullOptions, fetcher: Fetcher) -> None:
        self.options = options
        self.fetcher = fetcher
        self.url = f"{options.base_url}/api/v2/assets/{options.asset}/data/"

    def start(self, since: str | None) -> str | None:
        """The cursor of submissions received at or after ``since`` (``YYYY-MM-DDTHH:MM:SS``, UTC)."""
        return since

    async def pages(self, cursor: str | None) -> AsyncIterator[Page]:
        """Submissions received at or after ``cursor``, oldest first."""
        query = {"_submission_time": {"$gte": cursor}} if cursor else {}
        params: dict[str, str] | None = {
            "format": "json",
            "query": jsonio.dumps(query).decode(),
            "sort": jsonio.dumps({"_submission_time": 1}).decode(),
            "start": "0",
            "limit": str(self.options.page_size),
        }
        url = self.url
        mark = cursor or ""
        while True:
            answer = await self.fetcher.get(url, params)
            rows = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(rows, list):
                raise PullError(f"source {self.fetcher.source}: the Kobo answer has no results list")
            for row in rows:
                stamp = row.get("_submission_time") if isinstance(row, dict) else None
                if isinstance(stamp, str) and stamp > mark:
                    mark = stamp
            yield Page(rows, mark)
            next_url = answer.get("next")
            if not rows or not isinstance(next_url, str) or not next_url:
                break
            url, params = next_url, None
