"""FHIR write interactions, shared by the REST routes and Bundle processing.

Each function runs inside an open store transaction (``StoreTransaction``) on a worker
thread, so a conditional create's search and its write, or a whole transaction Bundle,
see one consistent database state and commit or roll back together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

import jsonpatch
import jsonpointer
import orjson

from gateway import jsonio
from gateway.errors import FhirError, gone, invalid, not_found
from gateway.fhir.deidentification import without_matcher_links
from gateway.fhir.fhirpath_patch import apply_fhirpath_patch, is_fhirpath_patch
from gateway.fhir.parse import json_depth
from gateway.fhir.validate import validate_resource
from gateway.search import TRUSTED, QueryParser, SearchAccess, SearchError, format_instant
from gateway.store import PreparedWrite, StoredResource, StoreReads, StoreTransaction, VersionConflict, is_golden

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """The result of one write interaction."""

    status: int  # 200 or 201
    resource: StoredResource
    changed: bool = True  # False when a conditional create found an existing match, or skip_unchanged wrote nothing


def check_id(rid: str, where: str = "id") -> str:
    """Refuse ids FHIR does not allow (``[A-Za-z0-9\\-.]{1,64}``)."""
    if not ID_RE.match(rid):
        raise invalid(f"{rid[:70]!r} is not a valid FHIR id", [where])
    return rid


def not_modified(res: StoredResource, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """Whether the client's copy of ``res`` is current (RFC 9110 13.1.2-3), so a read answers 304.

    ``If-None-Match`` (a list of ETags, or ``*`` for any) wins over ``If-Modified-Since``
    (an HTTP date: the version is not newer, to the second Last-Modified shows). A date that
    cannot be parsed is ignored, as RFC 9110 asks.
    """
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/").strip('"') for tag in if_none_match.split(",")]
        return "*" in tags or str(res.version) in tags
    if if_modified_since is None:
        return False
    try:
        when = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False
    if when.tzinfo is None:
        return False  # not an HTTP date (those are GMT)
    return res.last_updated.replace(microsecond=0) <= when


@dataclass(frozen=True, slots=True)
class WriteConditions:
    """A write's HTTP preconditions besides an ``If-Match`` version: ``If-Match: *`` (``exists``),
    ``If-None-Match`` (``*`` or ETags) and, when there is no ``If-Match``, ``If-Unmodified-Since``
    (RFC 9110 13.1.1-2, 13.1.4), evaluated against the current version inside the write's transaction:
    412 when one is false."""

    none_match: str | None = None
    unmodified_since: datetime | None = None
    exists: bool = False

    def check(self, current: StoredResource | None) -> None:
        """412 unless the conditions hold for ``current`` (a deleted resource has no current version)."""
        if current is None or current.deleted:
            if self.exists:
                what = "it is not there" if current is None else f"{current.type}/{current.id} is deleted"
                raise FhirError(f"If-Match: *, but {what}", status=412, code="conflict", expression=["If-Match"])
            return
        if self.none_match is not None and not_modified(current, self.none_match, None):
            raise FhirError(
                f"If-None-Match, but {current.type}/{current.id} is there at version {current.version}",
                status=412, code="conflict", expression=["If-None-Match"],
            )  # fmt: skip
        if self.unmodified_since is not None and current.last_updated.replace(microsecond=0) > self.unmodified_since:
            raise FhirError(
                f"{current.type}/{current.id} was modified since the If-Unmodified-Since date"
                f" (version {current.version}, {format_instant(current.last_updated.timestamp())})",
                status=412, code="conflict", expression=["If-Unmodified-Since"],
            )  # fmt: skip


def search_matches(
    tx: StoreTransaction, parser: QueryParser, rtype: str, query_string: str, what: str, *, access: SearchAccess
) -> list[StoredResource]:
    """Resources matching a conditional-interaction query (at most 2 are needed), if ``access`` allows it."""
    items = parse_qsl(query_string.lstrip("?"), keep_blank_values=True)
    if not items:
        raise invalid(f"{what} needs search parameters", [what])
    try:
        query = parser.parse(rtype, items, strict=True, access=access)
    except SearchError as exc:
        raise FhirError(f"{what}: {exc}", status=400, code=exc.code, expression=[what]) from exc
    if not (query.criteria or query.ids or query.last_updated):
        # Only result parameters (_count, _sort, …): it would match every resource of the type.
        raise invalid(f"{what} needs at least one search criterion, not only result parameters", [what])
    query.count, query.total = 2, "none"
    return tx.search(query).resources


def create(
    tx: StoreTransaction,
    parser: QueryParser,
    resource: dict[str, Any],
    *,
    if_none_exist: str | None = None,
    rid: str | None = None,
    access: SearchAccess,
    method: str = "POST",
) -> WriteOutcome:
    """``POST [type]``, optionally conditional (``If-None-Exist``); ``method``: what history shows
    made the resource (``PUT`` for a conditional update that creates it)."""
    rtype = resource["resourceType"]
    if if_none_exist:
        found = search_matches(tx, parser, rtype, if_none_exist, "If-None-Exist", access=access)
        if len(found) > 1:
            raise FhirError("If-None-Exist matches more than one resource", status=412, code="duplicate")
        if found:
            return WriteOutcome(200, found[0], changed=False)
    body = {k: v for k, v in resource.items() if k != "id"}
    require_not_golden(tx, access, rtype, rid, body)
    was_in = in_own_subtree(tx, access, rtype, rid)
    result = tx.create(body, rid=rid, method=method)
    require_visible_after(tx, access, result.resource)
    require_subtree_kept(tx, access, result.resource, was_in)
    return WriteOutcome(201, result.resource)


def require_not_golden(
    tx: StoreReads, access: SearchAccess, rtype: str, rid: str | None, body: dict[str, Any] | None = None
) -> None:
    """403 when a client writes a golden record, or tags a Patient as one.

    Golden records are the gateway's: built from the source Patients linked to them (identity
    matching), rebuilt whenever a member changes, so a client's edit would be lost silently at the
    next change, and a deletion would leave every member referring to nothing. A Patient a client
    tags as golden would be skipped by matching and by the destinations that leave golden records
    out. Clients change the source records instead (or merge and unmerge through the admin API).
    """
    if access is TRUSTED or rtype != "Patient":
        return
    if body is not None and is_golden(body):
        raise FhirError(
            "a client may not tag a Patient as a golden record (meta.tag urn:chw-gateway:identity|golden):"
            " golden records are written by the gateway's identity matching",
            status=403, code="forbidden", expression=["Patient.meta.tag"],
        )  # fmt: skip
    if rid is None:
        return
    current = tx.read(rtype, rid)
    if current is not None and not current.deleted and b'"golden"' in current.content:
        if is_golden(jsonio.loads(current.content)):
            raise FhirError(
                f"Patient/{rid} is a golden record, written by the gateway's identity matching from the source"
                " records linked to it: change those records, or merge and unmerge through /admin/identity",
                status=403, code="forbidden",
            )  # fmt: skip


def require_visible_before(tx: StoreReads, access: SearchAccess, rtype: str, rid: str) -> None:
    """403 when the client's data policy hides the live resource ``rtype/rid`` it is about to change."""
    policy = access.policy
    if policy is None or not policy.applies_to(rtype):
        return
    current = tx.read(rtype, rid)
    if current is not None and not current.deleted and rid not in tx.visible(policy, rtype, [rid]):
        raise FhirError(f"{rtype}/{rid} is outside the client's data policy", status=403, code="forbidden")


def require_visible_after(tx: StoreTransaction, access: SearchAccess, written: StoredResource) -> None:
    """403 (the transaction rolls back) when the client could not see what it just wrote."""
    policy = access.policy
    if policy is None or written.deleted or not policy.applies_to(written.type):
        return
    if written.id not in tx.visible(policy, written.type, [written.id]):
        what = "be a Patient it may see" if written.type == "Patient" else "refer to a Patient it may see"
        raise FhirError(
            f"the {written.type} would be outside the client's data policy (it must {what})",
            status=403, code="forbidden",
        )  # fmt: skip


def in_own_subtree(tx: StoreTransaction, access: SearchAccess, rtype: str, rid: str | None) -> bool | None:
    """Before an Organization write: is it in the subtree of the client's organisations policy now?
    None when nothing needs checking (no such policy, another type)."""
    policy = access.policy
    if policy is None or rtype != "Organization" or not policy.policy.organizations:
        return None
    return rid is not None and rid in tx.in_subtree(policy.policy, [rid])


def require_subtree_kept(
    tx: StoreTransaction, access: SearchAccess, written: StoredResource, was_in: bool | None
) -> None:
    """403 (the transaction rolls back) when an Organization write widens the client's own policy.

    Organizations are not limited rows, but an organisations policy shows the Patients managed
    anywhere below its Organizations (``partOf``): moving an Organization in (or creating one that a
    Patient or another Organization already names) would show the client Patients it may not see.
    An Organization nobody names may enter, and any may be edited, moved within or out of the tree.
    """
    policy = access.policy
    if was_in is None or was_in or written.deleted or policy is None:
        return
    if written.id in tx.in_subtree(policy.policy, [written.id]) and tx.organization_named(written.id):
        raise FhirError(
            f"Organization/{written.id} would come under the client's own Organizations and bring the Patients"
            " managed there (or below it) into its data policy; an unrestricted client must place it",
            status=403, code="forbidden",
        )  # fmt: skip


def stale_version(if_match: int, now: str) -> FhirError:
    """The 412 for an ``If-Match`` version that is not the current one; ``now`` says what is."""
    return FhirError(f"If-Match names version {if_match}, but {now}", status=412, code="conflict")


def _current(version: int | None, rtype: str, rid: str) -> str:
    return f"the current version is {version}" if version is not None else f"{rtype}/{rid} is not there"


def update(
    tx: StoreTransaction,
    resource: dict[str, Any],
    rtype: str,
    rid: str,
    *,
    if_match: int | None = None,
    conditions: WriteConditions | None = None,
    skip_unchanged: bool = False,
    prepared: PreparedWrite | None = None,
    access: SearchAccess = TRUSTED,
    method: str = "PUT",
) -> WriteOutcome:
    """``PUT [type]/[id]`` with update-as-create and optional ``If-Match``; ``method``: what history
    shows made the version (``PATCH`` for a patch)."""
    body_id = resource.get("id")
    if body_id is None:
        raise invalid("the resource must carry its id for an update", [f"{rtype}.id"], code="required")
    if body_id != rid:
        raise invalid(f"the resource id {str(body_id)[:70]!r} does not match the URL id {rid!r}", [f"{rtype}.id"])
    require_visible_before(tx, access, rtype, rid)
    require_not_golden(tx, access, rtype, rid, resource)
    if conditions is not None:
        conditions.check(tx.read(rtype, rid))
    was_in = in_own_subtree(tx, access, rtype, rid)
    try:
        result = tx.update(resource, if_match=if_match, skip_unchanged=skip_unchanged, prepared=prepared,
                           method=method)
    except VersionConflict as exc:
        if if_match is None:  # only an If-Match makes a version conflict
            raise
        raise stale_version(if_match, _current(exc.current, rtype, rid)) from exc
    require_visible_after(tx, access, result.resource)
    require_subtree_kept(tx, access, result.resource, was_in)
    return WriteOutcome(201 if result.created else 200, result.resource, changed=not result.unchanged)


def conditional_update(
    tx: StoreTransaction,
    parser: QueryParser,
    resource: dict[str, Any],
    rtype: str,
    query_string: str,
    *,
    if_match: int | None = None,
    conditions: WriteConditions | None = None,
    access: SearchAccess,
) -> WriteOutcome:
    """``PUT [type]?query``: create on no match, update on one, 412 on several; with ``If-Match``
    (``if_match``), only while that version is the match's current one (412 otherwise, as for an update)."""
    found = search_matches(tx, parser, rtype, query_string, "conditional update", access=access)
    if len(found) > 1:
        raise FhirError("the conditional update matches more than one resource", status=412, code="duplicate")
    if not found:
        if if_match is not None:
            # A version of nothing cannot be current: never create behind an If-Match (RFC 9110 13.1.1).
            raise stale_version(if_match, "the conditional update matches nothing")
        if conditions is not None:
            conditions.check(None)  # If-Match: * (never create behind it)
        body_id = resource.get("id")
        if body_id is not None:
            return update(tx, resource, rtype, check_id(str(body_id)), access=access)
        return create(tx, parser, resource, access=access, method="PUT")
    target = found[0]
    if resource.get("id") not in (None, target.id):
        raise invalid("the resource id does not match the resource the condition found", [f"{rtype}.id"])
    return update(tx, {**resource, "id": target.id}, rtype, target.id, if_match=if_match,
                  conditions=conditions, access=access)


def delete(
    tx: StoreTransaction, rtype: str, rid: str, *, if_match: int | None = None,
    conditions: WriteConditions | None = None, access: SearchAccess = TRUSTED,
) -> StoredResource | None:
    """``DELETE [type]/[id]``: idempotent, so deleting twice is not an error; with ``If-Match``
    (``if_match``), only while that version is the current one (412 otherwise, as for an update)."""
    require_visible_before(tx, access, rtype, rid)
    require_not_golden(tx, access, rtype, rid)
    if if_match is not None:
        current = tx.read(rtype, rid)
        now = None if current is None or current.deleted else current.version
        if now != if_match:
            raise stale_version(if_match, _current(now, rtype, rid))
    if conditions is not None:
        conditions.check(tx.read(rtype, rid))
    return tx.delete(rtype, rid)


def conditional_delete(
    tx: StoreTransaction, parser: QueryParser, rtype: str, query_string: str, *, if_match: int | None = None,
    conditions: WriteConditions | None = None, access: SearchAccess,
) -> list[StoredResource]:
    """``DELETE [type]?query``: deletes a single match (412 on several; with ``If-Match``, 412 unless
    that version is the match's current one); returns the tombstones written."""
    found = search_matches(tx, parser, rtype, query_string, "conditional delete", access=access)
    if len(found) > 1:
        raise FhirError("the conditional delete matches more than one resource", status=412, code="multiple-matches")
    if if_match is not None and (not found or found[0].version != if_match):
        now = _current(found[0].version, rtype, found[0].id) if found else "the condition matches nothing"
        raise stale_version(if_match, now)
    if conditions is not None:
        for res in found:
            conditions.check(res)
        if not found:
            conditions.check(None)  # If-Match: * with nothing to delete
    for res in found:
        require_not_golden(tx, access, rtype, res.id)
    tombstones = [tx.delete(rtype, res.id) for res in found]
    return [t for t in tombstones if t is not None]


@dataclass(frozen=True, slots=True)
class PatchLimits:
    """What a patched resource may grow to: what a request body may be (``max_body_bytes``,
    ``max_json_depth``). ``copy`` operations may copy no more bytes than that in all, or thirty
    copies of an array into itself would build a resource of 2**30 of its elements."""

    max_bytes: int = 10 * 1024 * 1024
    max_depth: int = 64


#: the limits of the default settings
DEFAULT_PATCH_LIMITS = PatchLimits()


def patch(
    tx: StoreTransaction, rtype: str, rid: str, operations: Any, *, if_match: int | None = None,
    conditions: WriteConditions | None = None, access: SearchAccess = TRUSTED,
    limits: PatchLimits = DEFAULT_PATCH_LIMITS,
) -> WriteOutcome:
    """``PATCH [type]/[id]`` with a JSON Patch document (a list of operations, within ``limits``) or a
    FHIRPath Patch (a ``Parameters`` resource, ``gateway.fhir.fhirpath_patch``).

    A patch applies to the stored resource, so whether it applies, and whether what it leaves is
    valid, tells what is stored (an ``add`` of a period's end that fails ``per-1`` bounds its start;
    a binary search finds it). A client that may update the type but not read it (SMART's ``u``
    without ``r`` or ``s``), or whose data policy de-identifies what it reads, may therefore not
    patch at all (403): it may still replace the resource whole (PUT). A client whose policy limits
    rows patches the resource as it reads it, without the identity matcher's links (they are kept,
    as for its updates).
    """
    fhirpath = is_fhirpath_patch(operations)
    if access.deidentified or not access.may_return(rtype):
        why = (
            "the client's data policy de-identifies what it reads"
            if access.may_return(rtype)
            else f"the client's scopes do not allow reading {rtype} (needs system/{rtype}.r or .s)"
        )
        raise FhirError(f"a patch applies to the stored {rtype}, and whether it applies tells what is stored;"
                        f" {why} (replace it whole with PUT)", status=403, code="forbidden")
    current = tx.read(rtype, rid)
    if current is None:
        raise not_found(f"{rtype}/{rid} is not known")
    require_visible_before(tx, access, rtype, rid)
    if current.deleted:
        raise gone(f"{rtype}/{rid} has been deleted")
    if conditions is not None:
        conditions.check(current)
    if if_match is not None and current.version != if_match:
        # Before the patch is applied: a stale client's patch may not fit what is stored now (a 422),
        # but what it needs to hear is that it patched another version.
        raise stale_version(if_match, _current(current.version, rtype, rid))
    document = jsonio.loads(current.content)
    if access.policy is not None:
        document = without_matcher_links(document)
    if fhirpath:
        try:
            patched = apply_fhirpath_patch(document, operations)
        except RecursionError as exc:
            raise _too_deep(rtype, limits) from exc
    else:
        patched = _json_patched(document, operations, rtype, limits)
    if json_depth(patched, limits.max_depth) > limits.max_depth:
        raise _too_deep(rtype, limits)
    if not isinstance(patched, dict) or patched.get("resourceType") != rtype or patched.get("id") != rid:
        raise FhirError("a patch may not change resourceType or id", status=422, code="processing")
    validate_resource(patched, expected_type=rtype)
    return update(tx, patched, rtype, rid, if_match=if_match, access=access, method="PATCH")


def _json_patched(document: Any, operations: Any, rtype: str, limits: PatchLimits) -> Any:
    """``document`` with the JSON Patch ``operations`` applied (``FhirError`` 422 when they do not apply)."""
    if not isinstance(operations, list):
        raise invalid("a JSON Patch document must be an array of operations (or send a FHIRPath Patch:"
                      " a Parameters resource)", code="structure")
    try:
        jsonpatch.JsonPatch(operations)  # every operation well formed before any applies
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        raise FhirError(f"the JSON Patch is not valid: {exc}", status=422, code="processing") from exc
    try:
        return _apply_within(operations, document, limits)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        # jsonpatch's messages quote the stored resource ("member 'x' not found in {...}", "1970-01-01
        # is not equal to ..."), which a client allowed to update but not read must not see.
        raise FhirError(_patch_failure(exc), status=422, code="processing") from exc
    except RecursionError as exc:  # copying or comparing a value nested past Python's stack
        raise _too_deep(rtype, limits) from exc


def _apply_within(operations: list[Any], document: Any, limits: PatchLimits) -> Any:
    """Apply the operations (a valid JSON Patch) one by one to ``document`` (parsed for this patch
    alone, so changed in place), counting the bytes ``copy`` operations copy against ``limits.max_bytes``."""
    copied = 0
    for n, operation in enumerate(operations):
        source = operation.get("from") if isinstance(operation, dict) else None
        if isinstance(source, str) and operation.get("op") == "copy":
            value = jsonpointer.JsonPointer(source).resolve(document)
            try:
                copied += len(jsonio.dumps(value))
            except orjson.JSONEncodeError as exc:  # nested past orjson's 254 levels
                raise RecursionError from exc
            if copied > limits.max_bytes:
                raise FhirError(
                    f"the JSON Patch copies more than {limits.max_bytes} bytes, what a request body may"
                    f" hold (operation {n})", status=422, code="too-costly",
                )
        document = jsonpatch.JsonPatch([operation]).apply(document, in_place=True)
    return document


def _too_deep(rtype: str, limits: PatchLimits) -> FhirError:
    return FhirError(f"the patched {rtype} would nest deeper than {limits.max_depth} levels, as no request"
                     " body may", status=422, code="too-costly")


def _patch_failure(exc: Exception) -> str:
    """Why a JSON Patch could not be applied, naming the operation's path but no stored value."""
    op = getattr(exc, "op", None)
    where = getattr(op, "location", None) or (op.get("path") if isinstance(op, dict) else None)
    at = f" at {str(where)[:100]!r}" if isinstance(where, str) else ""
    if isinstance(exc, jsonpatch.JsonPatchTestFailed):
        return f"JSON Patch test failed{at}"
    if isinstance(exc, jsonpatch.InvalidJsonPatch):
        return f"the JSON Patch is not valid{at}: {exc}"  # about the patch alone, not the resource
    return f"the JSON Patch cannot be applied{at}: the path does not fit the resource"
