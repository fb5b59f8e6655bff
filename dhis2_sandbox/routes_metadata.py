"""Metadata and system endpoints: ``/api/<collection>``, ``/api/system/*``, ``/api/me``."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from dhis2_sandbox.catalog import COLLECTIONS
from dhis2_sandbox.context import ApiError, StateDep, UserDep
from dhis2_sandbox.fields import FilterError, apply_fields, matches_filters, parse_fields
from dhis2_sandbox.tracker_payload import generate_uid

__all__ = ["router"]

router = APIRouter()

_SINGULAR = {
    "organisationUnits": "OrganisationUnit",
    "optionSets": "OptionSet",
    "options": "Option",
    "trackedEntityAttributes": "TrackedEntityAttribute",
    "trackedEntityTypes": "TrackedEntityType",
    "categoryOptions": "CategoryOption",
    "categories": "Category",
    "categoryCombos": "CategoryCombo",
    "categoryOptionCombos": "CategoryOptionCombo",
    "dataElements": "DataElement",
    "programs": "Program",
    "programStages": "ProgramStage",
    "dataSets": "DataSet",
}


@router.get("/api/system/info")
def system_info(state: StateDep, user: UserDep, request: Request) -> dict[str, Any]:
    """``/api/system/info`` with the emulated version."""
    info = dict(state.catalog.system)
    info["version"] = state.settings.version
    info["contextPath"] = str(request.base_url).rstrip("/")
    return info


@router.get("/api/system/ping", response_class=PlainTextResponse)
def system_ping(state: StateDep) -> str:
    """Liveness check, removed in 2.42 (no authentication, as in DHIS2)."""
    if state.version >= (2, 42):
        raise ApiError(404, "Resource not found: system/ping")
    return "pong"


@router.get("/api/ping", response_class=PlainTextResponse)
def ping() -> str:
    """Liveness check, where ``/api/system/ping`` moved in 2.42 (served for every version here:
    the recorded facts do not say since when it exists)."""
    return "pong"


@router.get("/api/system/id")
def system_ids(user: UserDep, limit: int = 1) -> dict[str, list[str]]:
    """Server-generated UIDs."""
    return {"codes": [generate_uid() for _ in range(max(1, min(limit, 10_000)))]}


@router.get("/api/me")
def me(user: UserDep) -> dict[str, Any]:
    """The authenticated user."""
    roots = list(user.capture_org_units or [])
    return {
        "username": user.username,
        "id": user.username,
        "authorities": ["ALL"] if user.can_write else ["M_dhis-web-dashboard"],
        "organisationUnits": [{"id": uid} for uid in roots],
    }


def _check_metadata_access(user: UserDep) -> None:
    if not user.can_read_metadata:
        raise ApiError(403, "You don't have the proper permissions to read objects of this type.")


@router.get("/api/{collection}")
def list_metadata(collection: str, request: Request, state: StateDep, user: UserDep) -> JSONResponse:
    """A paged, filtered metadata list (``{"pager": …, "<collection>": […]}``)."""
    if collection not in COLLECTIONS:
        raise ApiError(404, f"Resource not found: {collection}")
    _check_metadata_access(user)
    query = request.query_params
    try:
        specs = parse_fields(",".join(query.getlist("fields")) or "id,displayName")
        objects = [
            obj
            for obj in state.catalog.collections[collection]
            if matches_filters(
                obj,
                query.getlist("filter"),
                state.catalog.by_id.get,
                any_of=query.get("rootJunction") == "OR",
            )
        ]
    except FilterError as exc:
        raise ApiError(400, str(exc), error_code="E7651") from exc
    order = query.get("order")
    if order:
        prop, _, direction = order.partition(":")
        objects.sort(
            key=lambda obj: str(obj.get(prop, "")).lower(), reverse=direction.lower() in ("desc", "idesc")
        )
    body: dict[str, Any] = {}
    if query.get("paging", "true").lower() != "false":
        page_size = max(1, int(query.get("pageSize", "50")))
        total = len(objects)
        page_count = max(1, math.ceil(total / page_size))
        page = min(max(1, int(query.get("page", "1"))), page_count)
        pager: dict[str, Any] = {"page": page, "pageCount": page_count, "total": total, "pageSize": page_size}
        base = str(request.url).split("?")[0]
        params = [(k, v) for k, v in query.multi_items() if k != "page"]
        if page < page_count:
            pager["nextPage"] = f"{base}?{urlencode([*params, ('page', str(page + 1))])}"
        if page > 1:
            pager["prevPage"] = f"{base}?{urlencode([*params, ('page', str(page - 1))])}"
        body["pager"] = pager
        objects = objects[(page - 1) * page_size : page * page_size]
    body[collection] = [apply_fields(obj, specs, state.catalog.by_id.get) for obj in objects]
    return JSONResponse(body)


@router.get("/api/{collection}/{uid}")
def get_metadata(collection: str, uid: str, request: Request, state: StateDep, user: UserDep) -> JSONResponse:
    """One metadata object (all fields unless ``fields`` says otherwise)."""
    if collection not in COLLECTIONS:
        raise ApiError(404, f"Resource not found: {collection}/{uid}")
    _check_metadata_access(user)
    obj = state.catalog.get(collection, uid)
    if obj is None:
        raise ApiError(404, f"{_SINGULAR[collection]} with id {uid} could not be found.", error_code="E1005")
    try:
        specs = parse_fields(",".join(request.query_params.getlist("fields")) or "*")
    except FilterError as exc:
        raise ApiError(400, str(exc), error_code="E7651") from exc
    return JSONResponse(apply_fields(obj, specs, state.catalog.by_id.get))
