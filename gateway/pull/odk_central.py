"""ODK Central: the OData Submissions feed of one form.

Three passes per pull, each ordered by its own timestamp and each with its own cursor:
new submissions (``__system/submissionDate``), edited or reviewed ones (``__system/updatedAt``:
an edit or a review state such as ``rejected``, which the odk set's ``retract:`` takes back), and
deleted ones (``__system/deletedAt``: Central lists a deleted submission only when the filter
names ``deletedAt``; the row then carries it, and ``retract:`` takes back what it produced).
``$expand=*`` brings repeat groups inline; ``@odata.nextLink`` pages on. A cursor uses ``ge``,
so records sharing the last stored timestamp are read again (unchanged, so nothing is written)
rather than skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import orjson

from gateway import jsonio
from gateway.pull.base import Page, PullError
from gateway.pull.config import PullOptions
from gateway.pull.http import Fetcher

__all__ = ["OdkCentral"]

#: pass name → the __system field it filters and orders on
PASSES = (("submitted", "submissionDate"), ("updated", "updatedAt"), ("deleted", "deletedAt"))
EPOCH = "1970-01-01T00:00:00.000Z"


class OdkCentral:
    """Pulls one ODK Central form's submissions (see the module docstring)."""

    def __init__(self, options: PullOptions, fetcher: Fetcher) -> None:
        self.options = options
        self.fetcher = fetcher
        form = quote(options.form or "", safe="")
        self.url = f"{options.base_url}/v1/projects/{options.project}/forms/{form}.svc/Submissions"

    def start(self, since: str | None) -> str | None:
        """Every pass from ``since`` (an ISO timestamp as Central writes them)."""
        return None if since is None else _encode({name: since for name, _ in PASSES})

    async def pages(self, cursor: str | None) -> AsyncIterator[Page]:
        """The submissions after each pass's cursor, oldest first."""
        marks = _decode(cursor)
        for name, field in PASSES:
            since = marks.get(name) or EPOCH
            params: dict[str, str] | None = {
                "$filter": f"__system/{field} ge {since}",
                "$orderby": f"__system/{field} asc",
                "$expand": "*",
                "$top": str(self.options.page_size),
            }
            url = self.url
            while True:
                answer = await self.fetcher.get(url, params)
                rows = answer.get("value") if isinstance(answer, dict) else None
                if not isinstance(rows, list):
                    raise PullError(f"source {self.fetcher.source}: the OData answer has no value list")
                for row in rows:
                    stamp = (row.get("__system") or {}).get(field) if isinstance(row, dict) else None
                    if isinstance(stamp, str) and stamp > marks.get(name, ""):
                        marks[name] = stamp
                yield Page(rows, _encode(marks))
                next_link = answer.get("@odata.nextLink")
                if not rows or not isinstance(next_link, str):
                    break
                url, params = next_link, None


def _encode(marks: dict[str, str]) -> str:
    return jsonio.dumps(marks, option=orjson.OPT_SORT_KEYS).decode()


def _decode(cursor: str | None) -> dict[str, str]:
    if not cursor:
        return {}
    try:
        marks = jsonio.loads(cursor)
    except orjson.JSONDecodeError as exc:
        raise PullError(f"the saved ODK Central cursor is not JSON: {cursor[:80]!r}") from exc
    return {k: v for k, v in marks.items() if isinstance(v, str)} if isinstance(marks, dict) else {}
