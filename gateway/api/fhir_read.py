"""FHIR read-side routes: metadata, read, vread, history, search, $everything."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.auth import Principal
from gateway.errors import FhirError, gone, invalid, not_found
from gateway.fhir import (
    bundles,
    check_capability_mode,
    everything_bundle,
    history_bundle,
    issue,
    outcome_of,
    parse_json,
    read_subset,
    subset,
)
from gateway.fhir import not_modified as copy_is_current
from gateway.search import MAX_INT_DIGITS, SearchError, SearchQuery, encode_cursor
from gateway.store import SearchResult, StoredResource

from .audit import note_of, note_patients, note_query
from .auth import authenticate, require_fhir, row_filter, search_access
from .context import base_url, ctx_of
from .fhir_common import as_given, check_path_id, check_type, version_headers
from .negotiation import fhir_response, prefer, read_body, response_type

router = APIRouter(prefix="/fhir", tags=["FHIR"])


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(request: Request) -> Response:
    """The CapabilityStatement (no authentication needed)."""
    media = response_type(request)
    check_capability_mode(request.query_params.multi_items())
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
    media = _media(request)
    if body and media not in ("application/x-www-form-urlencoded", ""):
        raise FhirError("POST _search takes application/x-www-form-urlencoded", status=415, code="not-supported")
    return await _search(request, rtype, [*request.query_params.multi_items(), *_form(body)])


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
    return await _everything(request, principal, rid, request.query_params.multi_items())


@router.post("/Patient/{rid}/$everything", summary="Patient $everything (POST)")
async def everything_post(request: Request, rid: str) -> Response:
    """``$everything`` invoked by POST (operations.html): its parameters in a ``Parameters`` body,
    or a form, besides any in the query string."""
    authenticate(request)
    check_path_id(rid)
    principal = require_fhir(request, "Patient", "r")
    ctx = ctx_of(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    items = [*request.query_params.multi_items(), *_operation_parameters(body, _media(request))]
    return await _everything(request, principal, rid, items)


async def _everything(request: Request, principal: Principal, rid: str, items: list[tuple[str, str]]) -> Response:
    media = response_type(request)
    ctx = ctx_of(request)
    # Not inlined: a Bundle's GET entries run this very function (``gateway.fhir.entry_operations``).
    body = await ctx.query(partial(everything_bundle, ctx.store, base_url(request), rid, items,
                                   default_count=ctx.settings.search.default_count,
                                   max_count=ctx.settings.search.max_count, access=search_access(request, principal)))
    return fhir_response(body, media_type=media)


def _media(request: Request) -> str:
    """The request body's media type, without parameters, in lower case ("" when not said)."""
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def _form(body: bytes) -> list[tuple[str, str]]:
    """The fields of a form-encoded body (400 when it is not UTF-8)."""
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise FhirError("the form body is not UTF-8", status=400, code="structure") from exc


def _operation_parameters(body: bytes, media: str) -> list[tuple[str, str]]:
    """An operation's parameters from a POST body: a form, or a ``Parameters`` resource whose
    parameters each hold one primitive ``value[x]`` (400 naming the one that does not)."""
    if not body.strip():
        return []
    if media == "application/x-www-form-urlencoded":
        return _form(body)
    if media not in ("application/fhir+json", "application/json", ""):
        raise FhirError("an operation takes a Parameters resource (application/fhir+json) or a form",
                        status=415, code="not-supported")
    data = parse_json(body)
    if not isinstance(data, dict) or data.get("resourceType") != "Parameters":
        raise invalid("the body of an operation must be a Parameters resource", ["Parameters"])
    listed = data.get("parameter") or []
    if not isinstance(listed, list):
        raise invalid("Parameters.parameter must be a list", ["Parameters.parameter"])
    items: list[tuple[str, str]] = []
    for n, parameter in enumerate(listed):
        where = f"Parameters.parameter[{n}]"
        name = parameter.get("name") if isinstance(parameter, dict) else None
        values = [v for k, v in parameter.items() if k.startswith("value")] if isinstance(name, str) else []
        if not name or len(values) != 1 or isinstance(values[0], dict | list):
            raise invalid("each parameter needs a name and one primitive value[x]", [where])
        value = values[0]
        items.append((name, ("true" if value else "false") if isinstance(value, bool) else str(value)))
    return items


# -- shared bodies ---------------------------------------------------------------------------


def _read_subset(request: Request) -> tuple[str | None, list[str] | None]:
    """A read's ``_summary`` (true, text, data; false: the whole resource) and ``_elements`` (400 if bad)."""
    return read_subset(request.query_params.multi_items())


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


async def _history(request: Request, principal: Principal, rtype: str | None, rid: str | None) -> Response:
    ctx = ctx_of(request)
    media = response_type(request)
    strict = prefer(request).get("handling") == "strict"
    # Not inlined: a Bundle's GET entries run this very function (``gateway.fhir.entry_operations``).
    body = await ctx.query(partial(history_bundle, ctx.store, base_url(request), rtype, rid,
                                   request.query_params.multi_items(), default_count=ctx.settings.search.default_count,
                                   max_count=ctx.settings.search.max_count, access=search_access(request, principal),
                                   strict=strict))
    return fhir_response(body, media_type=media)
