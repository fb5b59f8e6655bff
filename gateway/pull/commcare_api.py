"""CommCare HQ: the Form API (v1) or the Case API (v2) of one project space.

Both are read in ``indexed_on`` order from the cursor (the last ``indexed_on`` stored; ``gte``, so
records sharing it are read again rather than skipped): ``indexed_on`` changes whenever HQ
re-indexes a form or case (an edit, an archive, a case update or close), so changes come again
and the set's ``retract:`` takes back archived forms and closed cases. Pages follow ``next``
(Form API: ``meta.next``; Case API v2: ``next``), both relative or absolute URLs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

from gateway.pull.base import Page, PullError
from gateway.pull.config import PullOptions
from gateway.pull.http import Fetcher

__all__ = ["CommCareApi"]


class CommCareApi:
    """Pulls one CommCare project space's forms or cases (see the module docstring)."""

    def __init__(self, options: PullOptions, fetcher: Fetcher) -> None:
        self.options = options
        self.fetcher = fetcher
        kind = "form/v1" if options.endpoint == "form" else "case/v2"
        self.url = f"{options.base_url}/a/{options.domain}/api/{kind}/"

    def start(self, since: str | None) -> str | None:
        """The cursor of records indexed at or after ``since`` (ISO timestamp)."""
        return since

    async def pages(self, cursor: str | None) -> AsyncIterator[Page]:
        """Forms or cases indexed at or after ``cursor``, oldest first."""
        params: dict[str, str] | None = {"limit": str(self.options.page_size), "format": "json"}
        assert params is not None
        if self.options.endpoint == "form":
            params["order_by"] = "indexed_on"
            if cursor:
                params["indexed_on_start"] = cursor
        else:
            if cursor:
                params["indexed_on.gte"] = cursor
            if self.options.case_type:
                params["case_type"] = self.options.case_type
        url = self.url
        mark = cursor or ""
        while True:
            answer = await self.fetcher.get(url, params)
            if not isinstance(answer, dict):
                raise PullError(f"source {self.fetcher.source}: the CommCare answer is not an object")
            rows = answer.get("objects" if self.options.endpoint == "form" else "cases")
            if not isinstance(rows, list):
                raise PullError(f"source {self.fetcher.source}: the CommCare answer has no record list")
            for row in rows:
                stamp = row.get("indexed_on") if isinstance(row, dict) else None
                if isinstance(stamp, str) and stamp > mark:
                    mark = stamp
            yield Page(rows, mark)
            meta = answer.get("meta")
            next_url: Any = meta.get("next") if isinstance(meta, dict) else answer.get("next")
            if not rows or not isinstance(next_url, str) or not next_url:
                break
            url, params = urljoin(url, next_url), None
