"""CommCare HQ: the Form API (v1) or the Case API (v2) of one project space.

Both are read in ``indexed_on`` order from the cursor (the last ``indexed_on`` stored; ``gte``, so
records sharing it are read again rather than skipped): ``indexed_on`` changes whenever HQ
re-indexes a form or case (an edit, an archive, a case update or close), so changes come again
and the set's ``retract:`` takes back archived forms and closed cases. Pages follow ``next``
(Form API: ``meta.next``; Case API v2: ``next``), both relative or absolute URLs.

A Form API form has the shape of a forwarded form (``form_json``). A Case API v2 case renames
what case forwarding (``case_json``) sends, so it is handed over in the forwarding shape
(``case_name``, ``case_type``, ``date_opened``, ``external_id``, ``owner_id`` back inside
``properties``; ``last_modified``/``server_last_modified`` as ``date_modified``/
``server_date_modified``): one mapping set serves forwarded and pulled cases.
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
            if self.options.endpoint == "form":
                # Referral outcomes the gateway submitted itself are not a CHW's records.
                kept = [row for row in rows if _xmlns(row) not in self.options.skip_xmlns]
            else:
                kept = [as_forwarded(row) for row in rows]
            yield Page(kept, mark)
            meta = answer.get("meta")
            next_url: Any = meta.get("next") if isinstance(meta, dict) else answer.get("next")
            if not rows or not isinstance(next_url, str) or not next_url:
                break
            url, params = urljoin(url, next_url), None


def _xmlns(row: Any) -> Any:
    form = row.get("form") if isinstance(row, dict) else None
    return form.get("@xmlns") if isinstance(form, dict) else None


#: Case API v2 keys that case forwarding keeps inside ``properties``
_SPECIAL = ("case_name", "case_type", "date_opened", "external_id", "owner_id")
_RENAMED = {"last_modified": "date_modified", "server_last_modified": "server_date_modified"}


def as_forwarded(case: Any) -> Any:
    """A Case API v2 case in the shape case forwarding sends (see the module docstring)."""
    if not isinstance(case, dict):
        return case
    out = {_RENAMED.get(key, key): value for key, value in case.items() if key not in _SPECIAL}
    properties = dict(case.get("properties") or {})
    for key in _SPECIAL:
        if key in case:
            properties.setdefault(key, case[key])
    out["properties"] = properties
    return out
