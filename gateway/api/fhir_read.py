"""FHIR read-side routes: metadata, read, vread, history, search, $everything."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.auth import Principal
from gateway.errors import FhirError, gone, not_found
from gateway.fhir import bundles, issue, outcome_of, subset
from gateway.fhir import not_modified as copy_is_current
from gateway.r4 import RESOURCE_TYPES
from gateway.search import (
    MAX_INT_DIGITS,
    DateFormatError,
    SearchError,
    SearchQuery,
    date_range,
    encode_cursor,
    non_negative_int,
)
from gateway.store import SearchResult, StoredResource, is_golden, linked_ids

from .audit import note_of, note_patients, note_query
from .auth import authenticate, require_fhir, row_filter, search_access
from .context import base_url, ctx_of
from .fhir_common import as_given, check_path_id, check_type, version_headers
from .negotiation import fhir_response, prefer, read_body, response_type

router = APIRouter(prefix="/fhir", tags=["FHIR"])
# $everything is the patient's record; the audit trail about them is not part of it.
_EVERYTHING_TYPES = sorted(t for t in RESOURCE_TYPES if t != "AuditEvent")
# What datetime can hold; a time-zone offset can move 0001-01-01 or 9999-12-31 past it.
_EARLIEST, _LATEST = datetime(1, 1, 1, tzinfo=UTC).timestamp(), datetime(9999, 12, 31, tzinfo=UTC).timestamp()


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(request: Request) -> Response:
    """The CapabilityStatement (no authentication needed)."""
    media = response_type(request)
    # http.html#capabilities: mode=full|normative is this statement (servers may ignore the mode and
    # return the whole of it; "normal", accepted before, still is); terminology asks for a
    # TerminologyCapabilities, which a server without a terminology service has none of.
    mode = request.query_params.get("mode")
    if mode == "terminology":
        raise FhirError("mode=terminology: this server has no terminology service (no TerminologyCapabilities)",
                        status=400, code="not-supported", expression=["mode"])
    if mode not in (None, "full", "normative", "normal"):
        raise FhirError(f"mode must be full, normative or terminology, not {mode!r}", status=400, code="invalid",
                        expression=["mode"])
    return fhir_response(ctx_of(request).capability_for(base_url(request)), media_type=media)


@router.get("/_history", summary="System history")
async def system_history(request: Request) -> Response:
    """History of every resource: it enumerates every type, so it needs ``s`` on all of them (SMART v2)."""
    principal = authenticate(request)
    if not principal.can("*", "s"):
        raise FhirError("system history needs system/*.s", status=403, code="forbidden")
    return await _history(request, principal, None, None)


@router.get("/{rtype}", summary="Search (GET)")
async def search_get(request: Request, rtype: str) -> Response:
    """Search a resource type with query parameters."""
    authenticate(request)  # 401 before anything is said about the URL
    check_type(rtype)
    require_fhir(request, rtype, "s")
    return await _search(request, rtype, list(request.query_params.multi_items()))


@router.post("/{rtype}/_search", summary="Search (POST)")
async def search_post(request: Request, rtype: str) -> Response:
    """Search with form-encoded parameters in the body (and the query string)."""
    authenticate(request)  # 401 before anything is said about the URL
    check_type(rtype)
    require_fhir(request, rtype, "s")
    ctx = ctx_of(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if body and media not in ("application/x-www-form-urlencoded", ""):
        raise FhirError("POST _search takes application/x-www-form-urlencoded", status=415, code="not-supported")
    try:
        form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise FhirError("the form body is not UTF-8", status=400, code="structure") from exc
    return await _search(request, rtype, [*request.query_params.multi_items(), *form])


@router.get("/{rtype}/_history", summary="Type history")
async def type_history(request: Request, rtype: str) -> Response:
    """History of all resources of one type."""
    authenticate(request)  # 401 before anything is said about the URL
    check_type(rtype)
    principal = require_fhir(request, rtype, "s")
    return await _history(request, principal, rtype, None)


@router.get("/{rtype}/{rid}", summary="Read")
async def read(request: Request, rtype: str, rid: str) -> Response:
    """The current version of a resource."""
    authenticate(request)  # 401 before anything is said about the URL
    check_type(rtype)
    check_path_id(rid)  # before the store sees it: PostgreSQL fails on a NUL in an id
    principal = require_fhir(request, rtype, "r")
    media = response_type(request)
    ctx = ctx_of(request)
    if principal.policy is None:
        res = await ctx.read(ctx.store.read, rtype, rid)
    else:  # one query: the row only if the policy shows it
        res = await ctx.read(partial(ctx.store.read, rtype, rid, policy=row_filter(request, principal)))
    if res is None:
        raise not_found(f"{rtype}/{rid} is not known")
    if res.deleted:
        raise FhirError(f"{rtype}/{rid} has been deleted", status=410, code="deleted",
                        headers={"ETag": res.etag})
    record = note_of(request)
    if record is not None:
        record.touched(rtype, rid, res.version, res.content)
    headers = version_headers(res)
    summary, elements = _read_subset(request)
    if not_modified(request, res):
        return Response(status_code=304, headers=headers)
    res = shown(principal, [res])[0]
    return fhir_response(_subset_content(res.content, summary, elements), media_type=media, headers=headers)


@router.get("/{rtype}/{rid}/_history", summary="Instance history")
async def instance_history(request: Request, rtype: str, rid: str) -> Response:
    """Every version of one resource, newest first."""
    authenticate(request)  # 401 before anything is said about the URL
    check_type(rtype)
    check_path_id(rid)
    principal = require_fhir(request, rtype, "r")
    if principal.policy is not None and not await _visible(request, principal, rtype, rid):
        raise not_found(f"{rtype}/{rid} is not known")
    return await _history(request, principal, rtype, rid)


@router.get("/{rtype}/{rid}/_history/{vid}", summary="Version read")
async def vread(request: Request, rtype: str, rid: str, vid: str) -> Response:
    """One version of a resource."""
    authenticate(request)  # 401 before anything is said about the URL
    check_type(rtype)
    check_path_id(rid)
    principal = require_fhir(request, rtype, "r")
    media = response_type(request)
    if not (vid.isascii() and vid.isdigit()) or len(vid) > MAX_INT_DIGITS or (vid[0] == "0" and vid != "0"):
        raise not_found(f"{rtype}/{rid} has no version {vid[:20]!r}")
    ctx = ctx_of(request)
    res = await ctx.read(ctx.store.vread, rtype, rid, int(vid))
    if res is None or (principal.policy is not None and not await _version_visible(request, principal, res)):
        raise not_found(f"{rtype}/{rid} has no version {vid}")
    if res.deleted:
        raise gone(f"version {vid} of {rtype}/{rid} is a deletion")
    record = note_of(request)
    if record is not None:
        record.touched(rtype, rid, res.version, res.content)
    summary, elements = _read_subset(request)
    if not_modified(request, res):  # a version never changes: the client's copy stays good
        return Response(status_code=304, headers=version_headers(res))
    content = _subset_content(shown(principal, [res])[0].content, summary, elements)
    return fhir_response(content, media_type=media, headers=version_headers(res))


@router.get("/Patient/{rid}/$everything", summary="Patient $everything")
async def everything(request: Request, rid: str) -> Response:
    """The patient and every resource that refers to them, in pages."""
    authenticate(request)  # 401 before anything is said about the URL
    check_path_id(rid)
    principal = require_fhir(request, "Patient", "r")
    media = response_type(request)
    ctx = ctx_of(request)
    # With a data policy, one query: the Patient only if the policy shows it (as a read does).
    patient = await ctx.read(partial(ctx.store.read, "Patient", rid, policy=row_filter(request, principal)))
    if patient is None:
        raise not_found(f"Patient/{rid} is not known")
    if patient.deleted:
        raise gone(f"Patient/{rid} has been deleted")
    count, offset = _paging(request, ctx.settings.search.default_count, ctx.settings.search.max_count)
    wanted, since, used = _everything_params(request)
    # Every resource in a visible Patient's compartment refers to that Patient, so the data
    # policy lets it through, except other Patients (linked records, a golden record): the policy
    # judges a Patient by itself, so those it does not show are left out. The scopes decide the types.
    allowed = search_access(request, principal).returnable(_EVERYTHING_TYPES)
    types = [t for t in (allowed if allowed is not None else _EVERYTHING_TYPES) if wanted is None or t in wanted]
    # A golden record's compartment is its person's: every linked source record's too.
    body = jsonio.loads(patient.content)
    linked = linked_ids(body, "seealso") if is_golden(body) else []
    policy = row_filter(request, principal)
    if linked and policy is not None and policy.applies_to("Patient"):
        linked = sorted(await ctx.read(ctx.store.visible, policy, "Patient", linked))
    hidden: list[str] = []
    if policy is not None and policy.applies_to("Patient") and (wanted is None or "Patient" in wanted):
        others, _ = await ctx.query(ctx.store.compartment, "Patient", rid, _MAX_LINKED, 0, ["Patient"], linked)
        shown_ids = await ctx.read(ctx.store.visible, policy, "Patient", [p.id for p in others])
        hidden = [p.id for p in others if p.id not in shown_ids]
    # The Patient leads the first page (and counts in _count and the total) when asked for.
    lead = int((wanted is None or "Patient" in wanted) and (since is None or patient.last_updated >= since))
    # A next link's _cursor names the last resource read: its page starts after it, so resources read
    # and deleted meanwhile move nothing (as a search's pages); one more is read to know if more follow.
    raw_cursor = request.query_params.get("_cursor") or None
    after = _everything_after(raw_cursor) if raw_cursor is not None else None
    first = offset == 0 and lead == 1 and after is None
    size = max(count - 1, 0) if first else count
    related, total = await ctx.query(ctx.store.compartment, "Patient", rid, size + 1, max(offset - lead, 0), types,
                                     linked, since, hidden, after)
    more, related = len(related) > size, related[:size]
    following = _everything_cursor(related[-1]) if related else raw_cursor
    matches = shown(principal, ([patient] if first and count > 0 else []) + related)
    base = base_url(request)
    links = bundles.page_links(f"{base}/Patient/{rid}/$everything", used, count, offset, total + lead, len(matches),
                               None, cursor=raw_cursor, after=following, more=more)
    body = bundles.searchset(base, matches, total=total + lead, links=links)
    return fhir_response(body, media_type=media)


#: Patients linking to one Patient (its golden record, the records linked to it) looked at for the data policy.
_MAX_LINKED = 1000

#: Patient/$everything's parameters (R4 OperationDefinition Patient-everything) the gateway takes, and
#: the general parameters of every interaction that change nothing in the answer (http.html#parameters:
#: _format is negotiated before, _pretty is a hint the compact JSON ignores, as a search does).
_EVERYTHING_PARAMS = frozenset({"_count", "_offset", "_since", "_type", "_format", "_pretty", "_cursor"})


def _everything_cursor(res: StoredResource) -> str:
    """The ``_cursor`` of the $everything page after ``res`` (its last resource): its type and id."""
    return base64.urlsafe_b64encode(jsonio.dumps([res.type, res.id])).decode("ascii").rstrip("=")


def _everything_after(raw: str) -> tuple[str, str]:
    """A $everything ``_cursor`` as (type, id); 400 when it is not one of this server's links."""
    try:
        found = jsonio.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        found = None
    if not (isinstance(found, list) and len(found) == 2 and all(isinstance(v, str) and v for v in found)
            and found[0] in RESOURCE_TYPES and "\x00" not in found[1]):
        raise FhirError("_cursor is not a cursor of this server's paging links", status=400, code="invalid",
                        expression=["_cursor"])
    return found[0], found[1]


def _everything_params(request: Request) -> tuple[set[str] | None, datetime | None, list[tuple[str, str]]]:
    """``_type`` (the types wanted; None: all), ``_since`` and the pairs the page links repeat;
    400 for a bad value, and for ``start``/``end`` (care dates), which the gateway does not judge."""
    wanted: set[str] | None = None
    since: datetime | None = None
    used: list[tuple[str, str]] = []
    for key, value in request.query_params.multi_items():
        if key in ("start", "end"):
            raise FhirError(f"$everything's {key} (care dates) is not supported; use _since or a search",
                            status=400, code="not-supported", expression=[key])
        if key not in _EVERYTHING_PARAMS:
            raise FhirError(f"unknown $everything parameter {key[:40]!r}", status=400, code="not-supported",
                            expression=[key[:40]])
        if key == "_type":
            names = [name.strip() for name in value.split(",") if name.strip()]
            unknown = [name for name in names if name not in RESOURCE_TYPES]
            if unknown or not names:
                raise FhirError(f"_type: unknown resource type {(unknown or [value])[0][:40]!r}", status=400,
                                code="invalid", expression=["_type"])
            wanted = (wanted or set(names)) & set(names)
            used.append((key, value))
        elif key == "_since":
            since = _since(value)
            used.append((key, value))
    return wanted, since, used


# -- shared bodies ---------------------------------------------------------------------------


def _read_subset(request: Request) -> tuple[str | None, list[str] | None]:
    """A read's ``_summary`` (true, text, data; false: the whole resource) and ``_elements`` (400 if bad)."""
    params = request.query_params
    summary = params.get("_summary") or None  # empty: not there (search.html)
    if summary is not None and summary not in ("true", "text", "data", "false"):
        raise FhirError("_summary on a read must be true, text, data or false", status=400, code="invalid",
                        expression=["_summary"])
    raw = params.get("_elements") or None
    elements = [e.strip() for e in raw.split(",") if e.strip()] if raw is not None else None
    return (None if summary == "false" else summary), elements


def _subset_content(content: bytes, summary: str | None, elements: list[str] | None) -> bytes:
    """The resource as ``_summary``/``_elements`` ask (tagged SUBSETTED), or unchanged."""
    if summary is None and elements is None:
        return content
    return jsonio.dumps(subset(jsonio.loads(content), summary, elements))


def not_modified(request: Request, res: StoredResource) -> bool:
    """Whether the client's copy is current (RFC 9110 13.1.2-3), so a read answers 304."""
    return copy_is_current(res, request.headers.get("if-none-match"), request.headers.get("if-modified-since"))


async def _version_visible(request: Request, principal: Principal, res: StoredResource) -> bool:
    """Whether the principal's data policy lets it see this version: the resource as it is now, and
    the version by what it says (an older version may be about a Patient the client may not see)."""
    if not await _visible(request, principal, res.type, res.id):
        return False
    ctx = ctx_of(request)
    return bool(await ctx.read(ctx.store.visible_versions, row_filter(request, principal), [res]))


async def _visible(request: Request, principal: Principal, rtype: str, rid: str) -> bool:
    """Whether the principal's data policy lets it see ``rtype/rid`` (live)."""
    policy = row_filter(request, principal)
    if policy is None or not policy.applies_to(rtype):
        return True
    ctx = ctx_of(request)
    return rid in await ctx.read(ctx.store.visible, policy, rtype, [rid])


def shown(principal: Principal, resources: list[StoredResource]) -> list[StoredResource]:
    """The resources as the principal may be given them: de-identified when its policy says so, and
    without the identity matcher's links when its policy limits rows (see ``as_given``)."""
    if not principal.deidentified and not principal.limits_rows:
        return resources
    return [r if r.deleted or not r.content else replace(r, content=as_given(principal, r.content)) for r in resources]


async def _search(request: Request, rtype: str, items: list[tuple[str, str]]) -> Response:
    ctx = ctx_of(request)
    principal = authenticate(request)
    media = response_type(request)
    strict = prefer(request).get("handling") == "strict"
    try:
        query = ctx.parser.parse(rtype, items, strict=strict, access=search_access(request, principal))
    except SearchError as exc:
        raise FhirError(str(exc), status=400, code=exc.code, expression=exc.expression) from exc
    note_query(request, query.used)
    result: SearchResult = await ctx.query(ctx.store.search, query)
    if note_of(request) is not None:
        note_patients(request, [*result.resources, *result.included], ctx.settings.audit.max_entities)
    result.resources, result.included = shown(principal, result.resources), shown(principal, result.included)
    base = base_url(request)
    links = bundles.page_links(f"{base}/{rtype}", query.used, query.count, query.offset, result.total,
                               len(result.resources), result.snapshot, paged=query.summary != "count",
                               cursor=query.cursor, more=result.more,
                               after=None if result.after is None else encode_cursor(*result.after))
    transform = _subsetted(query, [*result.resources, *result.included])
    outcome = None
    if query.warnings:
        outcome = outcome_of([issue("not-supported", w, severity="warning") for w in query.warnings])
    body = bundles.searchset(base, result.resources, total=result.total, links=links, included=result.included,
                             outcome=outcome, transform=transform)
    return fhir_response(body, media_type=media)


def _subsetted(query: SearchQuery, resources: list[StoredResource]) -> dict[tuple[str, str], bytes] | None:
    if query.summary is None and query.elements is None:
        return None
    out = {}
    for res in resources:
        data: dict[str, Any] = jsonio.loads(res.content)
        out[(res.type, res.id)] = jsonio.dumps(subset(data, query.summary, query.elements))
    return out


def _paging(request: Request, default: int, maximum: int) -> tuple[int, int]:
    # An empty value is no value (search.html), as in a search.
    raw_count = request.query_params.get("_count") or str(default)
    raw_offset = request.query_params.get("_offset") or "0"
    try:
        return non_negative_int(raw_count, "_count", cap=maximum), non_negative_int(raw_offset, "_offset")
    except SearchError as exc:
        raise FhirError("_count and _offset must be non-negative integers", status=400, code="invalid",
                        expression=exc.expression or ["_count"]) from exc


def _since(raw: str) -> datetime:
    """A ``_since`` value as the instant it starts at (400 if it is no FHIR instant or date)."""
    try:
        return _instant(date_range(raw)[0])
    except DateFormatError as exc:
        raise FhirError(f"_since: {exc}", status=400, code="invalid", expression=["_since"]) from exc


def _instant(epoch: float) -> datetime:
    """Epoch seconds as a datetime, held inside what datetime can hold."""
    return datetime.fromtimestamp(min(max(epoch, _EARLIEST), _LATEST), UTC)


#: ``_at`` values one history takes: each is one more test of every version, with its next one's lookup.
MAX_AT_VALUES = 10
_COMPARATOR = re.compile(r"(eq|ne|gt|lt|ge|le|sa|eb|ap)\d", re.ASCII)


def _at(values: list[str]) -> list[tuple[datetime, datetime]]:
    """History's ``_at`` values (repeats: any of them) as ``[lo, hi)`` periods; 400 naming ``_at``
    for a value that is no FHIR date, dateTime or instant, a comparator, or too many values."""
    if len(values) > MAX_AT_VALUES:
        raise FhirError(f"_at takes at most {MAX_AT_VALUES} values", status=400, code="too-costly",
                        expression=["_at"])
    periods: list[tuple[datetime, datetime]] = []
    for value in values:
        if _COMPARATOR.match(value):
            # R4's _at is a date(Time) with no prefix; _since gives the lower bound "ge" would.
            raise FhirError(f"_at takes no comparator ({value[:2]}): a date, dateTime or instant, the versions"
                            " current during it", status=400, code="invalid", expression=["_at"])
        try:
            lo, hi = date_range(value)
        except DateFormatError as exc:
            raise FhirError(f"_at: {exc}", status=400, code="invalid", expression=["_at"]) from exc
        periods.append((_instant(lo), _instant(hi)))
    return periods


async def _history(request: Request, principal: Principal, rtype: str | None, rid: str | None) -> Response:
    ctx = ctx_of(request)
    media = response_type(request)
    count, offset = _paging(request, ctx.settings.search.default_count, ctx.settings.search.max_count)
    if "_list" in request.query_params:  # R4's other history parameter: refused, not ignored
        raise FhirError("history's _list is not supported", status=400, code="not-supported", expression=["_list"])
    summary, elements = _history_subset(request)
    raw_since = request.query_params.get("_since")
    since = _since(raw_since) if raw_since else None
    # An empty value is no value, as for _since; several are the versions current in any of them.
    raw_at = [value for value in request.query_params.getlist("_at") if value]
    at = _at(raw_at)
    # Paging newest first: versions written after the first page would push every later page one
    # place down (an entry on two pages). The links carry the first page's newest instant, in ms.
    snapshot = _history_snapshot(request.query_params.get("_snapshot"))
    until = None if snapshot is None else datetime.fromtimestamp(snapshot / 1000, UTC)
    policy = row_filter(request, principal)
    versions, total = await ctx.query(
        lambda: ctx.store.history(rtype, rid, since=since, count=count, offset=offset, policy=policy, until=until,
                                  at=at)
    )
    if snapshot is None and offset == 0 and versions:
        snapshot = round(versions[0].last_updated.timestamp() * 1000)
    versions = [] if summary == "count" else shown(principal, versions)
    if summary is not None or elements is not None:
        versions = [v if v.deleted or not v.content else
                    replace(v, content=_subset_content(v.content, summary, elements)) for v in versions]
    if rid is not None and total == 0:
        # No version since ``_since`` or at ``_at`` is an empty history of a resource that exists, not a 404.
        assert rtype is not None
        if (since is None and not at) or await ctx.read(ctx.store.read, rtype, rid) is None:
            raise not_found(f"{rtype}/{rid} is not known")
    base = base_url(request)
    url = f"{base}/{rtype}/{rid}/_history" if rid else f"{base}/{rtype}/_history" if rtype else f"{base}/_history"
    used = [(key, request.query_params[key]) for key in ("_since", "_summary", "_elements")
            if request.query_params.get(key)]
    used += [("_at", value) for value in raw_at]
    links = bundles.page_links(url, used, count, offset, total, len(versions), snapshot, paged=summary != "count")
    return fhir_response(bundles.history(base, versions, total=total, links=links), media_type=media)


_HISTORY_PARAMS = frozenset({"_count", "_offset", "_since", "_at", "_list", "_snapshot", "_summary", "_elements",
                             "_format", "_pretty"})


def _history_subset(request: Request) -> tuple[str | None, list[str] | None]:
    """History's ``_summary`` (``count`` too) and ``_elements``; under ``Prefer: handling=strict``
    a parameter history does not take is refused (lenient: ignored, as a search ignores one)."""
    if prefer(request).get("handling") == "strict":
        unknown = sorted({key for key in request.query_params if key not in _HISTORY_PARAMS})
        if unknown:
            raise FhirError(f"history does not take {', '.join(unknown)}", status=400, code="not-supported",
                            expression=unknown)
    if request.query_params.get("_summary") == "count":
        return "count", None
    try:
        return _read_subset(request)
    except FhirError as exc:
        raise FhirError("_summary on a history must be true, text, data, count or false", status=400,
                        code="invalid", expression=["_summary"]) from exc


def _history_snapshot(raw: str | None) -> int | None:
    """A history link's ``_snapshot`` (the newest instant its pages show, epoch ms), or None."""
    if raw is None:
        return None
    try:
        return non_negative_int(raw, "_snapshot")
    except SearchError as exc:
        raise FhirError("_snapshot must be a non-negative integer", status=400, code="invalid",
                        expression=["_snapshot"]) from exc

