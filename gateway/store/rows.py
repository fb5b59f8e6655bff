"""Row shapes shared by the SQL store's read and write sides."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from gateway import jsonio

# ``meta.tag`` of a golden Patient, re-exported here: defined with the data policies, which never
# show one to a client whose rows they limit.
from gateway.search import GOLDEN_TAG_CODE as GOLDEN_TAG_CODE
from gateway.search import GOLDEN_TAG_SYSTEM as GOLDEN_TAG_SYSTEM
from gateway.search import from_epoch
from gateway.store.base import StoredResource

COLUMNS = "r.rtype, r.id, r.version, r.lu, r.deleted, r.content"
VERSION_META = ("versionId", "lastUpdated")
INDEX_TABLES = ("idx_token", "idx_string", "idx_date", "idx_ref", "idx_number")


class Cursor(Protocol):
    """The DB-API cursor subset the store uses (sqlite3 and psycopg both fit)."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...
    def executemany(self, sql: Any, params: Any, /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    @property
    def rowcount(self) -> int: ...


def to_resource(row: Sequence[Any]) -> StoredResource:
    """A ``COLUMNS`` row as a ``StoredResource``."""
    return StoredResource(
        type=row[0], id=row[1], version=row[2], last_updated=from_epoch(row[3]),
        deleted=bool(row[4]), content=bytes(row[5]),
    )  # fmt: skip


#: ``Identifier.type`` coding system of the identifiers the gateway itself keeps on a resource
#: (e.g. the DHIS2 UID a delivery got back). They are not the sender's content: an update
#: without them keeps them, and they do not count when deciding whether content changed.
KEPT_IDENTIFIER_TYPE = "urn:chw-gateway:identifier-type"
_KEPT_MARK = KEPT_IDENTIFIER_TYPE.encode()


#: Extension URL on the ``Patient.link`` elements the gateway's identity matcher added: like kept
#: identifiers, an update without them keeps them and they do not count as content, so a source
#: re-sending its record neither drops the link nor makes a new version.
KEPT_LINK_EXTENSION = "urn:chw-gateway:identity-link"
_KEPT_LINK_MARK = KEPT_LINK_EXTENSION.encode()


def is_kept_link(link: Any) -> bool:
    """Whether a ``Patient.link`` element is one the gateway added (see ``KEPT_LINK_EXTENSION``)."""
    return isinstance(link, dict) and any(
        isinstance(e, dict) and e.get("url") == KEPT_LINK_EXTENSION for e in link.get("extension") or []
    )


def kept_links(body: dict[str, Any]) -> list[Any]:
    """The resource's ``link`` elements the gateway keeps."""
    found = body.get("link") if body.get("resourceType") == "Patient" else None
    return [item for item in found if is_kept_link(item)] if isinstance(found, list) else []


def is_golden(body: dict[str, Any]) -> bool:
    """Whether a Patient is a golden record (see ``GOLDEN_TAG_SYSTEM``)."""
    tags = (body.get("meta") or {}).get("tag") or []
    return any(isinstance(t, dict) and t.get("system") == GOLDEN_TAG_SYSTEM and t.get("code") == GOLDEN_TAG_CODE
               for t in tags)  # fmt: skip


#: The code of the identity matcher's review Tasks ("Same person?"): the gateway's own worklist.
REVIEW_TASK_SYSTEM = "urn:chw-gateway:task"
REVIEW_TASK_CODE = "identity-review"


def is_review_task(body: dict[str, Any]) -> bool:
    """Whether a Task is an identity review pair (see ``REVIEW_TASK_CODE``), not a referral or order."""
    codings = (body.get("code") or {}).get("coding") or []
    return any(isinstance(c, dict) and c.get("system") == REVIEW_TASK_SYSTEM and c.get("code") == REVIEW_TASK_CODE
               for c in codings)  # fmt: skip


def linked_ids(body: dict[str, Any], *types: str) -> list[str]:
    """Ids of the Patients the resource's kept links of ``types`` point to, in link order."""
    found = []
    for link in kept_links(body):
        reference = (link.get("other") or {}).get("reference")
        if link.get("type") in types and isinstance(reference, str) and reference.startswith("Patient/"):
            found.append(reference.partition("/")[2])
    return found


def is_kept_identifier(identifier: Any) -> bool:
    """Whether an identifier is one the gateway keeps (see ``KEPT_IDENTIFIER_TYPE``)."""
    if not isinstance(identifier, dict):
        return False
    codings = (identifier.get("type") or {}).get("coding") if isinstance(identifier.get("type"), dict) else None
    return isinstance(codings, list) and any(
        isinstance(c, dict) and c.get("system") == KEPT_IDENTIFIER_TYPE for c in codings
    )


def kept_identifiers(body: dict[str, Any]) -> list[Any]:
    """The resource's identifiers the gateway keeps."""
    found = body.get("identifier")
    return [item for item in found if is_kept_identifier(item)] if isinstance(found, list) else []


def without_kept_identifiers(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the identifiers and ``Patient.link`` elements the gateway keeps."""
    out = body
    for element, kept in (("identifier", is_kept_identifier), ("link", is_kept_link)):
        found = out.get(element)
        if not isinstance(found, list):
            continue
        others = [item for item in found if not kept(item)]
        out = {key: value for key, value in out.items() if key != element}
        if others:
            out[element] = others
    return out


def hash_body(body: dict[str, Any]) -> str:
    """Hash of a resource's content without version metadata and kept identifiers."""
    data = jsonio.dumps(body, option=orjson.OPT_SORT_KEYS)
    if _KEPT_MARK in data or _KEPT_LINK_MARK in data:
        data = jsonio.dumps(without_kept_identifiers(body), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()


def has_kept_identifiers(content: bytes) -> bool:
    """Whether stored JSON may hold identifiers or links the gateway keeps (a cheap byte test)."""
    return _KEPT_MARK in content or _KEPT_LINK_MARK in content
