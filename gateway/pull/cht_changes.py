"""CHT: the CouchDB ``_changes`` feed of the ``medic`` database.

Read from the cursor (CouchDB's ``last_seq``, opaque) with ``include_docs=true``, one batch of
``limit`` changes per request until ``pending`` is 0. Each record document is wrapped as
``{"doc": ...}`` like the CHT outbound push the cht set maps; a deleted document comes as
``{"_id", "_rev", "_deleted": true}`` and the set's ``retract:`` takes back what it produced.
Documents that are not records (tasks, targets, forms, settings, design documents) are
skipped, as ``pull.doc_types`` says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway import jsonio
from gateway.pull.base import Page, PullError
from gateway.pull.config import PullOptions
from gateway.pull.http import Fetcher

__all__ = ["ChtChanges"]


class ChtChanges:
    """Pulls one CHT instance's changed documents (see the module docstring)."""

    def __init__(self, options: PullOptions, fetcher: Fetcher) -> None:
        self.options = options
        self.fetcher = fetcher
        self.url = f"{options.base_url}/{options.database}/_changes"

    def start(self, since: str | None) -> str | None:
        """The cursor of changes after sequence ``since`` (``0``: from the beginning)."""
        return None if since is None else jsonio.dumps(since).decode()

    async def pages(self, cursor: str | None) -> AsyncIterator[Page]:
        """Changed record documents after ``cursor``, in sequence order."""
        since: Any = jsonio.loads(cursor) if cursor else 0
        while True:
            params = {
                "since": since if isinstance(since, str) else str(since),
                "include_docs": "true",
                "limit": str(self.options.page_size),
                "style": "main_only",
            }
            answer = await self.fetcher.get(self.url, params)
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or "last_seq" not in answer:
                raise PullError(f"source {self.fetcher.source}: the _changes answer has no results or last_seq")
            records = [wrapped for change in results if (wrapped := self._record(change)) is not None]
            since = answer["last_seq"]
            yield Page(records, jsonio.dumps(since).decode())
            if not results or not answer.get("pending"):
                break

    def _record(self, change: Any) -> dict[str, Any] | None:
        if not isinstance(change, dict) or str(change.get("id", "")).startswith("_design/"):
            return None
        doc = change.get("doc")
        if change.get("deleted") or (isinstance(doc, dict) and doc.get("_deleted")):
            return {"doc": {"_id": change.get("id"), "_rev": (doc or {}).get("_rev"), "_deleted": True}}
        if not isinstance(doc, dict) or doc.get("type") not in self.options.doc_types:
            return None
        if doc.get("type") == "data_record" and doc.get("form") in self.options.skip_forms:
            return None  # a referral outcome the gateway wrote back: not a CHW's record
        return {"doc": doc}
