"""FHIR write-side routes: create, update, patch, delete, batch and transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.audit import AccessRecord, patients_in
from gateway.auth import Principal
from gateway.errors import FhirError, invalid
from gateway.fhir import (
    ID_RE,
    activity_of,
    informational,
    interactions,
    is_fhirpath_patch,
    parse_json,
    process_bundle,
    record_writes,
    require_resource,
    validate_resource,
)
from gateway.search import MAX_INT_DIGITS, RESULT_PARAMS, SearchAccess
from gateway.settings import Settings
from gateway.store import StoredResource

from .audit import note_of, note_resources
from .auth import authenticate, require_fhir, row_filter, search_access
from .context import AppContext, base_url, ctx_of
from .fhir_common import (
    as_given,
    check_path_id,
    check_type,
    given_body,
    parse_if_match,
    write_conditions,
    write_response,
)
from .negotiation import check_content_type, fhir_response, prefer, read_body, response_type

router = APIRouter(prefix="/fhir", tags=["FHIR"])
T = TypeVar("T")


class _Writer(NamedTuple):
    """Who writes, what they may see, the answer's media type and the app, for one write route."""

    principal: Principal
    access: SearchAccess
    media: str
    ctx: AppContext


def _writer(request: Request, rtype: str, rid: str | None, letter: str) -> _Writer:
    """A write route's checks, in the order clients see them: 401, the type, the id, 403."""
    authenticate(request)  # 401 before anything is said about the URL
    check_type(rtype)
    if rid is not None:
        check_path_id(rid)
    principal = require_fhir(request, rtype, letter)
    return _Writer(principal, search_access(request, principal), response_type(request), ctx_of(request))


async def _resource_body(request: Request, ctx: AppContext, rtype: str) -> dict[str, Any]:
    check_content_type(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    data = require_resource(parse_json(body, max_depth=ctx.settings.max_json_depth))
    return validate_resource(data, expected_type=rtype)


async def _write(
    request: Request,
    ctx: AppContext,
    author: str,
    media: str,
    interaction: Callable[..., interactions.WriteOutcome],
    *args: Any,
    readable: bool = True,
    viewer: Principal | None = None,
    **kwargs: Any,
) -> Response:
    """Run one write interaction in its own store transaction and answer as ``Prefer`` asks
    (without the resource if the client may not read it: ``readable``; as its data policy gives
    resources to ``viewer``, e.g. de-identified)."""
    outcome = await _in_transaction(request, ctx, author, interaction, *args, **kwargs)
    res = outcome.resource
    if viewer is not None and res.content:
        # The answer is the stored resource (a matched If-None-Exist, a patch, kept identifiers),
        # not only what the client sent: it gets it as its reads would.
        res = replace(res, content=as_given(viewer, res.content))
    return write_response(request, res, outcome.status, media, base_url(request), readable=readable)


async def _in_transaction(
    request: Request, ctx: AppContext, author: str, interaction: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """``interaction(tx, *args, **kwargs)`` inside one store transaction, on a worker thread, with a
    Provenance naming ``author`` for what it wrote, in the same transaction."""
    written: list[tuple[StoredResource, str]] = []

    def work() -> T:
        written.clear()  # the lane may run it again (its first run rolled back)
        with ctx.store.transaction() as tx:
            result = interaction(tx, *args, **kwargs)
            written.extend(_written(result))
            if written:
                record_writes(tx, written, author)
            return result

    result = await ctx.write_unit(work)
    note_resources(request, [res for res, _ in written], ctx.settings.audit.max_entities)
    return result


def _patch_limits(settings: Settings) -> interactions.PatchLimits:
    """A patched resource may grow to what a request body may hold."""
    return interactions.PatchLimits(settings.max_body_bytes, settings.max_json_depth)


def _written(result: object) -> list[tuple[StoredResource, str]]:
    """The versions a write interaction stored, with their activity (a matched conditional create stored none)."""
    if isinstance(result, interactions.WriteOutcome):
        return [(result.resource, activity_of(result.resource, result.status == 201))] if result.changed else []
    if isinstance(result, StoredResource):
        return [(result, "DELETE")]
    if isinstance(result, list):
        return [(res, "DELETE") for res in result if isinstance(res, StoredResource)]
    return []


def _query_string(request: Request) -> str:
    """Search parameters of a conditional interaction (result parameters dropped)."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in RESULT_PARAMS]
    return urlencode(items)


@router.post("/{rtype}", summary="Create")
async def create(request: Request, rtype: str) -> Response:
    """Create a resource (conditional with If-None-Exist)."""
    principal, access, media, ctx = _writer(request, rtype, None, "c")
    data = await _resource_body(request, ctx, rtype)
    # fhirpy's get_or_create puts the condition in the query string instead of the
    # standard header; honouring it avoids silently creating duplicates.
    if_none_exist = request.headers.get("if-none-exist") or _query_string(request) or None

    return await _write(request, ctx, principal.name, media, interactions.create, ctx.parser, data,
                        if_none_exist=if_none_exist, access=access, viewer=principal)


@router.put("/{rtype}/{rid}", summary="Update")
async def update(request: Request, rtype: str, rid: str) -> Response:
    """Update a resource, or create it with this id (update-as-create)."""
    principal, access, media, ctx = _writer(request, rtype, rid, "u")
    if_match, conditions = parse_if_match(request), write_conditions(request)
    data = await _resource_body(request, ctx, rtype)

    # The stored version keeps identifiers and links the gateway wrote (DHIS2 UIDs, identity links)
    # that the client did not send: a client that may update but not read the type gets no body back.
    return await _write(request, ctx, principal.name, media, interactions.update, data, rtype, rid,
                        if_match=if_match, conditions=conditions, access=access,
                        readable=access.may_return(rtype),
                        viewer=principal)


@router.put("/{rtype}", summary="Conditional update")
async def conditional_update(request: Request, rtype: str) -> Response:
    """Update the one resource the query matches, or create it."""
    principal, access, media, ctx = _writer(request, rtype, None, "u")
    query = _query_string(request)
    if not query:
        raise invalid("PUT to a type URL needs search parameters (conditional update)")
    if_match, conditions = parse_if_match(request), write_conditions(request)
    data = await _resource_body(request, ctx, rtype)

    return await _write(request, ctx, principal.name, media, interactions.conditional_update, ctx.parser, data,
                        rtype, query, if_match=if_match, conditions=conditions, access=access,
                        viewer=principal)


#: A JSON Patch, or a FHIRPath Patch (a Parameters resource) as FHIR JSON.
_PATCH_TYPES = {"application/json-patch+json", "application/fhir+json", "application/json", "application/json+fhir"}


@router.patch("/{rtype}/{rid}", summary="Patch (JSON Patch or FHIRPath Patch)")
async def patch(request: Request, rtype: str, rid: str) -> Response:
    """Apply a JSON Patch document (``application/json-patch+json``) or a FHIRPath Patch (a Parameters
    resource, ``application/fhir+json``) to a resource."""
    principal, access, media, ctx = _writer(request, rtype, rid, "u")
    check_content_type(request, _PATCH_TYPES)
    content_type = request.headers.get("content-type")
    if content_type is None:
        raise FhirError("PATCH needs Content-Type: application/json-patch+json (a JSON Patch) or"
                        " application/fhir+json (a FHIRPath Patch)", status=415, code="not-supported")
    if_match, conditions = parse_if_match(request), write_conditions(request)
    operations = parse_json(await read_body(request, ctx.settings.max_body_bytes),
                            max_depth=ctx.settings.max_json_depth)
    media_type = content_type.split(";")[0].strip().lower()
    # A JSON Patch is sometimes sent as plain application/json; its body (an array) says which it is.
    json_patch = media_type == "application/json-patch+json" or (
        media_type == "application/json" and isinstance(operations, list))
    if json_patch and not isinstance(operations, list):
        raise invalid("a JSON Patch document must be an array of operations", code="structure")
    if not json_patch and not is_fhirpath_patch(operations):
        raise invalid("a FHIR JSON PATCH body must be a FHIRPath Patch (a Parameters resource); send a JSON Patch"
                      " as application/json-patch+json", ["Parameters"], code="structure")

    # A patched resource is mostly what was stored before, not what the client sent: a client
    # that may update but not read the type gets no body back (as with Prefer: return=minimal).
    readable = access.may_return(rtype)
    return await _write(request, ctx, principal.name, media, interactions.patch, rtype, rid, operations,
                        if_match=if_match, conditions=conditions, access=access, readable=readable,
                        viewer=principal, limits=_patch_limits(ctx.settings))


@router.delete("/{rtype}/{rid}", summary="Delete")
async def delete(request: Request, rtype: str, rid: str) -> Response:
    """Delete a resource (later reads answer 410 Gone)."""
    principal, access, media, ctx = _writer(request, rtype, rid, "d")

    if_match, conditions = parse_if_match(request), write_conditions(request)
    deleted = await _in_transaction(request, ctx, principal.name, interactions.delete, rtype, rid,
                                    if_match=if_match, conditions=conditions, access=access) is not None
    text = f"{rtype}/{rid} deleted" if deleted else f"{rtype}/{rid} was not there; nothing to delete"
    return fhir_response(informational(text), media_type=media)


@router.delete("/{rtype}", summary="Conditional delete")
async def conditional_delete(request: Request, rtype: str) -> Response:
    """Delete the single resource a query matches."""
    principal, access, media, ctx = _writer(request, rtype, None, "d")
    query = _query_string(request)
    if not query:
        raise invalid("DELETE on a type URL needs search parameters (conditional delete)")

    if_match, conditions = parse_if_match(request), write_conditions(request)
    deleted = await _in_transaction(request, ctx, principal.name, interactions.conditional_delete, ctx.parser,
                                    rtype, query, if_match=if_match, conditions=conditions, access=access)
    return fhir_response(informational(f"{len(deleted)} {rtype} deleted"), media_type=media)


@router.post("", summary="Batch or transaction", include_in_schema=False)
@router.post("/", summary="Batch or transaction")
async def batch_or_transaction(request: Request) -> Response:
    """Process a batch or transaction Bundle."""
    principal = authenticate(request)
    media = response_type(request)
    ctx = ctx_of(request)
    check_content_type(request)
    bundle = parse_json(await read_body(request, ctx.settings.max_body_bytes), max_depth=ctx.settings.max_json_depth)
    base = base_url(request)
    wanted = prefer(request).get("return")
    minimal = wanted in ("minimal", "OperationOutcome")
    record = note_of(request)
    if record is not None and isinstance(bundle, dict) and bundle.get("type") == "batch":
        record.interaction = "batch"

    policy = row_filter(request, principal)
    can = principal.can
    if ctx.settings.subscriptions.enabled:
        # Subscriptions live beside the stored resources (``fhir_subscriptions``): a Bundle entry
        # must not store one where no handshake, owner or matching would ever see it.
        def can(rtype: str, letter: str) -> bool:
            return rtype != "Subscription" and principal.can(rtype, letter)

    def work() -> dict[str, Any]:
        response = process_bundle(ctx.store, ctx.parser, bundle, base, can=can, policy=policy,
                                  return_resources=not minimal, author=principal.name,
                                  deidentified=principal.deidentified, patch_limits=_patch_limits(ctx.settings),
                                  capability=partial(ctx.capability_for, base))
        if record is not None:  # on the worker thread: the request's own JSON, already parsed
            _note_bundle(record, bundle, response, ctx.settings.audit.max_entities, base)
        return response

    response = await ctx.write(work)
    if wanted == "OperationOutcome":
        _write_outcomes(bundle, response)
    if principal.deidentified or principal.limits_rows:
        _given_entries(principal, response)
    return fhir_response(response, media_type=media)


def _write_outcomes(bundle: dict[str, Any], response: dict[str, Any]) -> None:
    """``Prefer: return=OperationOutcome``: each write entry answers with ``response.outcome``, as a
    REST write would answer with an OperationOutcome (the entries of the response follow the request's)."""
    for entry, answer in zip(bundle.get("entry") or [], response.get("entry", []), strict=False):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            continue
        method = request.get("method")
        result = answer.get("response")
        if method not in ("POST", "PUT", "PATCH", "DELETE") or not isinstance(result, dict) or "outcome" in result:
            continue
        answer.pop("resource", None)
        location = result.get("location")
        if method == "DELETE" or not isinstance(location, str):
            text = f"{request.get('url')} deleted" if method == "DELETE" else "done"
        else:
            target, _, version = location.partition("/_history/")
            status = str(result.get("status", ""))
            done = "created" if status.startswith("201") else "found (ifNoneExist)" if method == "POST" else "stored"
            text = f"{target} version {version} {done}"
        result["outcome"] = informational(text)


def _given_entries(principal: Principal, bundle: dict[str, Any]) -> None:
    """Every resource a batch/transaction response carries, searchsets included, as the principal
    may be given it (``given_body``: de-identified, without the matcher's links)."""
    for entry in bundle.get("entry", []):
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") == "Bundle":
            _given_entries(principal, resource)
        else:
            entry["resource"] = given_body(principal, resource)


def _note_bundle(
    record: AccessRecord, bundle: dict[str, Any], response: dict[str, Any], limit: int, base: str
) -> None:
    """The versions a Bundle's entries wrote or read (their response locations, the URL of a delete,
    the instance a history or $everything entry reads) and the patients its resources refer to,
    for the first ``limit`` entries."""
    for entry, answer in list(zip(bundle.get("entry") or [], response.get("entry", []), strict=False))[:limit]:
        location = answer.get("response", {}).get("location")
        if not isinstance(location, str) and isinstance(entry, dict):
            request = entry.get("request")
            method, url = (request.get("method"), request.get("url")) if isinstance(request, dict) else (None, None)
            location = url if method == "DELETE" else _read_instance(url, base) if method in ("GET", "HEAD") else None
        if isinstance(location, str) and "?" not in location:
            rtype, _, rest = location.partition("/")
            rid, _, version = rest.partition("/_history/")
            if rid:
                # A DELETE entry's URL is the client's: its version may be any text ("²".isdigit() holds).
                known = version.isascii() and version.isdigit() and len(version) <= MAX_INT_DIGITS
                record.touched(rtype, rid, int(version) if known else None)
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            record.patients.update(patients_in(jsonio.dumps(resource)))
        # What the entry answered with: a read's resource, a search's (or history's) Bundle, whose
        # patients a REST read or search would name too.
        given = answer.get("resource")
        if isinstance(given, dict):
            inner = given.get("entry") if given.get("resourceType") == "Bundle" else None
            found = [e.get("resource") for e in inner if isinstance(e, dict)] if isinstance(inner, list) else [given]
            for res in found[:limit]:
                kind, key = (res.get("resourceType"), res.get("id")) if isinstance(res, dict) else (None, None)
                if isinstance(kind, str) and isinstance(key, str):  # stored resources: both always there
                    record.concerning(kind, key, jsonio.dumps(res))


def _read_instance(url: Any, base: str) -> str | None:
    """The ``Type/id`` an instance history or ``$everything`` entry reads (as the audit names the
    path's instance over REST), else None."""
    if not isinstance(url, str):
        return None
    parts = [p for p in url.removeprefix(base + "/").split("?")[0].split("/") if p]
    if len(parts) == 3 and parts[2] in ("_history", "$everything") and ID_RE.match(parts[1]):
        return f"{parts[0]}/{parts[1]}"
    return None
