"""KoboToolbox's submission data of an asset, ``GET /api/v2/assets/{uid}/data/``.

``{"count", "next", "previous", "results": [...]}``; ``start``/``limit`` paging with absolute
``next``; ``query`` a Mongo-style JSON filter (``{"_submission_time": {"$gte": "…"}}``, also
``$gt``/``$lt``/``$lte`` and plain equality); ``sort`` a JSON ``{"field": 1|-1}``.
``_submission_time`` is naive UTC to the second, ``_id`` a number.
"""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlencode

from source_sandbox.clock import ServerClock

_OPS = {"$gte": str.__ge__, "$gt": str.__gt__, "$lte": str.__le__, "$lt": str.__lt__}


class Kobo:
    """Submissions per asset uid."""

    def __init__(self, clock: ServerClock) -> None:
        self.clock = clock
        self.assets: dict[str, list[dict[str, Any]]] = {}
        self._next_id = 1000

    def submit(self, asset: str, row: dict[str, Any]) -> dict[str, Any]:
        """A new submission (a copy, given a new ``_id`` and ``_submission_time``)."""
        row = copy.deepcopy(row)
        self._next_id += 1
        row["_id"] = self._next_id
        row["_submission_time"] = self.clock.kobo()
        self.assets.setdefault(asset, []).append(row)
        return row

    def data(self, base: str, asset: str, query: dict[str, str]) -> dict[str, Any]:
        """The data endpoint's answer (ValueError on a query it cannot read)."""
        rows = list(self.assets.get(asset, []))
        where = json.loads(query.get("query") or "{}")
        for field, condition in where.items():
            if isinstance(condition, dict):
                for op, bound in condition.items():
                    rows = [r for r in rows if isinstance(r.get(field), str) and _OPS[op](r[field], bound)]
            else:
                rows = [r for r in rows if r.get(field) == condition]
        for field, direction in json.loads(query.get("sort") or "{}").items():
            rows.sort(key=lambda r: str(r.get(field, "")), reverse=direction == -1)
        start = int(query.get("start", "0"))
        limit = min(int(query.get("limit", "1000")), 30000)
        page = rows[start:start + limit]
        more = start + limit < len(rows)
        kept = {k: v for k, v in query.items() if k != "start"}
        url = f"{base}/api/v2/assets/{asset}/data/"
        return {
            "count": len(rows),
            "next": f"{url}?{urlencode({**kept, 'start': start + limit})}" if more else None,
            "previous": None,
            "results": copy.deepcopy(page),
        }
