"""CHT's CouchDB database and its ``_changes`` feed (CouchDB 3 API).

``GET /{db}/_changes?since=&include_docs=true&limit=`` answers ``{"results": [{"seq", "id",
"changes": [{"rev"}], "doc", "deleted"?}], "last_seq", "pending"}``. A document appears once, at
the sequence of its latest change; a deleted one as ``{"_id", "_rev", "_deleted": true}`` with
``"deleted": true``. Sequences are opaque strings ``"<n>-g1AAAA…"``; ``since`` takes one back
(or ``0``, or ``now``).

``PUT /{db}/{docid}`` writes a document as CouchDB's document API does (CHT's API passes it
through for users allowed to write): ``201 {"ok": true, "id", "rev"}``; a document that
exists already, written without its current ``_rev``, is refused with ``409 {"error":
"conflict", "reason": "Document update conflict."}`` and changes nothing (so a client can make
a write idempotent by choosing the id); ids starting with ``_`` are ``400 illegal_docid``.
``GET /{db}/{docid}`` answers the document with its ``_rev``, or ``404 {"error": "not_found",
"reason": "missing"|"deleted"}``; ``DELETE /{db}/{docid}?rev=`` deletes it (a tombstone), 409
without its current ``rev``.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

_DELETED = "_deleted"


class CouchDb:
    """Documents of one CHT database with their change sequence."""

    def __init__(self) -> None:
        self.seq = 0
        self.docs: dict[str, tuple[int, dict[str, Any]]] = {}

    @staticmethod
    def seq_text(n: int) -> str:
        """An opaque-looking sequence as CouchDB 3 writes them."""
        return f"{n}-g1AAAA{hashlib.sha1(str(n).encode()).hexdigest()[:16]}"

    def put(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Create or update a document (a copy; its ``_rev`` moves)."""
        doc = copy.deepcopy(doc)
        previous = self.docs.get(doc["_id"])
        generation = int(str(previous[1]["_rev"]).split("-")[0]) + 1 if previous else 1
        doc["_rev"] = f"{generation}-{hashlib.md5(repr(sorted(doc.items())).encode()).hexdigest()}"
        self.seq += 1
        self.docs[doc["_id"]] = (self.seq, doc)
        return doc

    def write(self, doc_id: str, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``PUT /{db}/{doc_id}``: the status and body CouchDB answers."""
        if doc_id.startswith("_"):
            return 400, {"error": "illegal_docid", "reason": "Only reserved document ids may start with underscore."}
        current = self.docs.get(doc_id)
        if current is not None and not current[1].get(_DELETED) and doc.get("_rev") != current[1]["_rev"]:
            return 409, {"error": "conflict", "reason": "Document update conflict."}
        stored = self.put({**doc, "_id": doc_id})
        return 201, {"ok": True, "id": doc_id, "rev": stored["_rev"]}

    def read(self, doc_id: str) -> tuple[int, dict[str, Any]]:
        """``GET /{db}/{doc_id}``: the document with its ``_rev``, or CouchDB's 404."""
        current = self.docs.get(doc_id)
        if current is None:
            return 404, {"error": "not_found", "reason": "missing"}
        if current[1].get(_DELETED):
            return 404, {"error": "not_found", "reason": "deleted"}
        return 200, copy.deepcopy(current[1])

    def remove(self, doc_id: str, rev: str | None) -> tuple[int, dict[str, Any]]:
        """``DELETE /{db}/{doc_id}?rev=``: a tombstone; the current ``rev`` is required (409 otherwise)."""
        current = self.docs.get(doc_id)
        if current is None or current[1].get(_DELETED):
            return 404, {"error": "not_found", "reason": "deleted" if current else "missing"}
        if rev != current[1]["_rev"]:
            return 409, {"error": "conflict", "reason": "Document update conflict."}
        self.delete(doc_id)
        return 200, {"ok": True, "id": doc_id, "rev": self.docs[doc_id][1]["_rev"]}

    def reports(self, form: str) -> list[dict[str, Any]]:
        """The live ``data_record`` documents of ``form`` (copies)."""
        return [copy.deepcopy(doc) for _, doc in self.docs.values()
                if doc.get("type") == "data_record" and doc.get("form") == form and not doc.get(_DELETED)]  # fmt: skip

    def delete(self, doc_id: str) -> None:
        """Delete a document: a tombstone revision."""
        _, doc = self.docs[doc_id]
        generation = int(str(doc["_rev"]).split("-")[0]) + 1
        self.seq += 1
        self.docs[doc_id] = (self.seq, {"_id": doc_id, "_rev": f"{generation}-deleted", _DELETED: True})

    def changes(self, query: dict[str, str]) -> dict[str, Any]:
        """The ``_changes`` answer."""
        since_text = query.get("since", "0")
        since = self.seq if since_text == "now" else int(since_text.split("-")[0])
        pending = sorted((seq, doc) for seq, doc in self.docs.values() if seq > since)
        limit = int(query["limit"]) if "limit" in query else None
        batch = pending[:limit] if limit is not None else pending
        results = []
        for seq, doc in batch:
            item: dict[str, Any] = {"seq": self.seq_text(seq), "id": doc["_id"], "changes": [{"rev": doc["_rev"]}]}
            if doc.get(_DELETED):
                item["deleted"] = True
            if query.get("include_docs") == "true":
                item["doc"] = copy.deepcopy(doc)
            results.append(item)
        last = batch[-1][0] if batch else since
        return {"results": results, "last_seq": self.seq_text(last), "pending": len(pending) - len(batch)}
